//! The tools the harness compares and the commands it runs for each.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The HDiffPatch driver, written next to the results at run time so the
/// harness needs nothing but the romdelta executable.
pub const HDIFFPATCH_DRIVER: &str = include_str!("../../../scripts/hdiffpatch-peer.py");

/// A tool of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    /// romdelta itself, run through its executable.
    Romdelta,
    /// Debian's `bsdiff`/`bspatch` 4.3.
    Bsdiff,
    /// `xdelta3 -9 -S djw -B <source size>`.
    Xdelta3,
    /// `zstd -19 --long=31 --patch-from -T2`.
    Zstd19,
    /// `zstd --ultra -22 --long=31 --patch-from -T2`.
    Zstd22,
    /// HDiffPatch through the PyPI package `hdiffpatch` (zstd level 21, window 2^24).
    HDiffPatch,
    /// HDiffPatch's own command-line tools, as its users run them:
    /// `hdiffz -m-6 -SD -c-zstd-21-24 -p-2` and `hpatchz`.
    Hdiffz,
}

impl Tool {
    /// Every tool, in the order of the table.
    pub const ALL: [Tool; 7] = [
        Tool::Romdelta,
        Tool::Bsdiff,
        Tool::Xdelta3,
        Tool::Zstd19,
        Tool::Zstd22,
        Tool::HDiffPatch,
        Tool::Hdiffz,
    ];

    /// The name `--peers` takes.
    pub fn key(self) -> &'static str {
        match self {
            Tool::Romdelta => "romdelta",
            Tool::Bsdiff => "bsdiff",
            Tool::Xdelta3 => "xdelta3",
            Tool::Zstd19 => "zstd19",
            Tool::Zstd22 => "zstd22",
            Tool::HDiffPatch => "hdiffpatch",
            Tool::Hdiffz => "hdiffz",
        }
    }

    /// The tool and its settings, as the table shows them.
    pub fn label(self, threads: u16) -> String {
        match self {
            Tool::Romdelta => format!("romdelta `--threads {threads}`"),
            Tool::Bsdiff => "bsdiff 4.3 (Debian)".into(),
            Tool::Xdelta3 => "`xdelta3 -9 -S djw -B <source size>`".into(),
            Tool::Zstd19 => "`zstd -19 --long=31 --patch-from -T2`".into(),
            Tool::Zstd22 => "`zstd --ultra -22 --long=31 --patch-from -T2`".into(),
            Tool::HDiffPatch => {
                "HDiffPatch (`hdiffz -m-6 -c-zstd-21-24`, PyPI `hdiffpatch`)".into()
            }
            Tool::Hdiffz => "HDiffPatch native (`hdiffz -m-6 -SD -c-zstd-21-24 -p-2`)".into(),
        }
    }

    /// Parses `all` or a comma-separated list of [`Tool::key`] names.
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Tool>> {
        if list.trim() == "all" {
            return Ok(Tool::ALL.to_vec());
        }
        let mut tools = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let tool = Tool::ALL
                .into_iter()
                .find(|t| t.key() == name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown peer {name:?}: use all or a comma list of {}",
                        Tool::ALL.map(Tool::key).join(",")
                    )
                })?;
            if !tools.contains(&tool) {
                tools.push(tool);
            }
        }
        if tools.is_empty() {
            anyhow::bail!("--peers names no tool");
        }
        tools.sort();
        Ok(tools)
    }

    /// Why the tool cannot run on this machine, if it cannot: `python` is
    /// the interpreter of the `hdiffpatch` peer, `dirs` where the `hdiffz`
    /// peer's executables are looked for.
    pub fn missing(self, python: &str, dirs: &[PathBuf]) -> Option<String> {
        if self == Tool::Hdiffz {
            let absent: Vec<&str> = ["hdiffz", "hpatchz"]
                .into_iter()
                .filter(|b| find_in_dirs(b, dirs).is_none())
                .collect();
            if absent.is_empty() {
                return None;
            }
            let place = match hdiffz_cache_bin() {
                // The usual search: name PATH rather than spell it out.
                Some(cache) if dirs == hdiffz_dirs() => {
                    format!("on PATH or in {}", cache.display())
                }
                _ => {
                    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                    format!("in {}", dirs.join(":"))
                }
            };
            return Some(format!("{} not found {place}", absent.join(", ")));
        }
        let need: &[&str] = match self {
            Tool::Romdelta | Tool::Hdiffz => &[],
            Tool::Bsdiff => &["bsdiff", "bspatch"],
            Tool::Xdelta3 => &["xdelta3"],
            Tool::Zstd19 | Tool::Zstd22 => &["zstd"],
            Tool::HDiffPatch => &[python],
        };
        let absent: Vec<&str> = need
            .iter()
            .copied()
            .filter(|b| find_in_path(b).is_none())
            .collect();
        if !absent.is_empty() {
            return Some(format!("{} not found", absent.join(", ")));
        }
        if self == Tool::HDiffPatch {
            let ok = Command::new(python)
                .args(["-c", "import hdiffpatch"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Some(format!("python module hdiffpatch not found by {python}"));
            }
        }
        None
    }
}

/// Whether `p` is a file with an execute bit.
fn is_exe(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The executable `name` as the shell would find it on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    find_in_dirs(
        name,
        &std::env::split_paths(&std::env::var_os("PATH")?).collect::<Vec<_>>(),
    )
}

/// The executable `name` in the first of `dirs` that holds one.
pub fn find_in_dirs(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|dir| dir.join(name)).find(|p| is_exe(p))
}

/// Where `scripts/install-peers.sh` builds HDiffPatch's `hdiffz` and
/// `hpatchz` into: `${XDG_CACHE_HOME:-$HOME/.cache}/romdelta-peers/hdiffpatch-2.6.0/bin`
/// (none without either variable).
pub fn hdiffz_cache_bin() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let cache = match var("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(var("HOME")?).join(".cache"),
    };
    Some(cache.join("romdelta-peers/hdiffpatch-2.6.0/bin"))
}

/// Where the `hdiffz` peer's executables are looked for, in order: the
/// directories of `PATH`, then [`hdiffz_cache_bin`].
pub fn hdiffz_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(hdiffz_cache_bin());
    dirs
}

/// Everything a tool's commands need to know.
pub struct JobPaths<'a> {
    /// The source image (or ROM directory, for romdelta).
    pub source: &'a Path,
    /// The target image (or ROM directory).
    pub target: &'a Path,
    /// Where the diff writes its patch.
    pub patch: &'a Path,
    /// Where the apply writes the new image.
    pub output: &'a Path,
    /// Bytes of the source (for `xdelta3 -B`).
    pub source_bytes: u64,
}

/// Settings that are not paths.
pub struct ToolSettings<'a> {
    /// The romdelta executable.
    pub romdelta: &'a Path,
    /// `--threads` of romdelta diff and apply.
    pub threads: u16,
    /// Extra arguments for romdelta diff.
    pub romdelta_args: &'a [String],
    /// The Python interpreter for HDiffPatch.
    pub python: &'a str,
    /// The HDiffPatch driver script.
    pub hdiffpatch_driver: &'a Path,
    /// HDiffPatch's `hdiffz` executable.
    pub hdiffz: &'a Path,
    /// HDiffPatch's `hpatchz` executable.
    pub hpatchz: &'a Path,
}

/// The smallest `-B` xdelta3 accepts is far below any image; larger is a
/// source window that holds the whole source.
fn xdelta_window(source_bytes: u64) -> u64 {
    source_bytes.max(1 << 20)
}

fn cmd<S: AsRef<std::ffi::OsStr>>(program: &Path, args: &[S]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

impl Tool {
    /// The command that writes the patch.
    pub fn diff_command(self, p: &JobPaths, s: &ToolSettings) -> Command {
        let (src, tgt, patch) = (
            p.source.as_os_str(),
            p.target.as_os_str(),
            p.patch.as_os_str(),
        );
        match self {
            Tool::Romdelta => {
                let mut c = cmd(
                    s.romdelta,
                    &["diff".as_ref(), src, tgt, "-o".as_ref(), patch],
                );
                c.arg("--threads").arg(s.threads.to_string());
                c.args(s.romdelta_args);
                c
            }
            Tool::Bsdiff => cmd(Path::new("bsdiff"), &[src, tgt, patch]),
            Tool::Xdelta3 => {
                let b = xdelta_window(p.source_bytes).to_string();
                let mut c = cmd(
                    Path::new("xdelta3"),
                    &["-f", "-9", "-S", "djw", "-B", &b, "-e", "-s"],
                );
                c.args([src, tgt, patch]);
                c
            }
            Tool::Zstd19 | Tool::Zstd22 => {
                let mut c = Command::new("zstd");
                c.args(["-q", "-f"]);
                if self == Tool::Zstd22 {
                    c.args(["--ultra", "-22"]);
                } else {
                    c.arg("-19");
                }
                let mut from = std::ffi::OsString::from("--patch-from=");
                from.push(src);
                c.args([
                    "--long=31".as_ref(),
                    from.as_os_str(),
                    "-T2".as_ref(),
                    tgt,
                    "-o".as_ref(),
                    patch,
                ]);
                c
            }
            Tool::HDiffPatch => {
                let mut c = Command::new(s.python);
                c.arg(s.hdiffpatch_driver)
                    .arg("diff")
                    .args([src, tgt, patch]);
                c
            }
            Tool::Hdiffz => {
                // -m-6: all in memory, match score 6; -SD: one compressed
                // stream (step size 256 KiB); zstd level 21, window 2^24;
                // two threads. hdiffz checks the patch by applying it, as it
                // does unless given -d. -f: overwrite (the harness removes
                // the patch first anyway).
                let mut c = cmd(s.hdiffz, &["-m-6", "-SD", "-c-zstd-21-24", "-p-2", "-f"]);
                c.args([src, tgt, patch]);
                c
            }
        }
    }

    /// The command that applies the patch; `sync` runs after it inside the
    /// same job (`sh -c '"$@" && sync'`), so writing back is timed too.
    pub fn apply_command(self, p: &JobPaths, s: &ToolSettings) -> Command {
        let (src, patch, out) = (
            p.source.as_os_str(),
            p.patch.as_os_str(),
            p.output.as_os_str(),
        );
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |a: &std::ffi::OsStr| argv.push(a.to_owned());
        match self {
            Tool::Romdelta => {
                for a in [
                    s.romdelta.as_os_str(),
                    "apply".as_ref(),
                    patch,
                    "--source".as_ref(),
                    src,
                    "-o".as_ref(),
                    out,
                    "--threads".as_ref(),
                ] {
                    push(a);
                }
                push(s.threads.to_string().as_ref());
                push("--insecure-no-verify".as_ref());
                // A package made under --apply-memory N is applied with
                // as much memory.
                if let Some(mib) = apply_memory(s.romdelta_args) {
                    push("--max-memory".as_ref());
                    push(mib.as_ref());
                }
            }
            Tool::Bsdiff => {
                for a in ["bspatch".as_ref(), src, out, patch] {
                    push(a);
                }
            }
            Tool::Xdelta3 => {
                let b = xdelta_window(p.source_bytes).to_string();
                for a in [
                    "xdelta3".as_ref(),
                    "-f".as_ref(),
                    "-B".as_ref(),
                    b.as_ref(),
                    "-d".as_ref(),
                    "-s".as_ref(),
                    src,
                    patch,
                    out,
                ] {
                    push(a);
                }
            }
            Tool::Zstd19 | Tool::Zstd22 => {
                let mut from = std::ffi::OsString::from("--patch-from=");
                from.push(src);
                for a in [
                    "zstd".as_ref(),
                    "-q".as_ref(),
                    "-f".as_ref(),
                    "-d".as_ref(),
                    "--long=31".as_ref(),
                    from.as_os_str(),
                    patch,
                    "-o".as_ref(),
                    out,
                ] {
                    push(a);
                }
            }
            Tool::HDiffPatch => {
                for a in [
                    s.python.as_ref(),
                    s.hdiffpatch_driver.as_os_str(),
                    "apply".as_ref(),
                    src,
                    out,
                    patch,
                ] {
                    push(a);
                }
            }
            Tool::Hdiffz => {
                // hpatchz's defaults: the source streamed through an 8 MiB
                // cache, one thread. -f: overwrite.
                for a in [s.hpatchz.as_os_str(), "-f".as_ref(), src, patch, out] {
                    push(a);
                }
            }
        }
        let mut c = Command::new("sh");
        c.args(["-c", "\"$@\" && sync", "sh"]).args(argv);
        c
    }
}

/// A command as a shell would take it, for the report.
pub fn describe(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word`, single-quoted if the shell would not take it as one plain word.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Memory the Debian bsdiff needs for a source of `source_bytes`: about 17
/// bytes per source byte (the old file and two arrays of 8-byte offsets
/// for its suffix sort).
pub fn bsdiff_memory_needed(source_bytes: u64) -> u64 {
    17 * source_bytes
}

/// The value of `--apply-memory` (`--apply-memory N` or `--apply-memory=N`)
/// in romdelta diff arguments.
pub fn apply_memory(args: &[String]) -> Option<&str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--apply-memory" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix("--apply-memory=") {
            return Some(v);
        }
    }
    None
}
