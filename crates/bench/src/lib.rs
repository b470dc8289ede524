//! romdelta's benchmark harness: romdelta and its peers on one image pair,
//! one job at a time, every tool run as a child process and measured alike.
//!
//! For each tool [`run`] writes a patch (the diff job) and applies it (the
//! apply job, followed by `sync` inside the same job), and records the patch
//! size, the wall time and peak RSS of both jobs, and whether the applied
//! output's SHA-256 equals the target's. Before each job it syncs and tries
//! to drop the page cache. A peer that does not finish on the full pair
//! (time limit, not enough memory, failure) is run again on prefixes of both
//! images, beside romdelta on the same prefixes. [`Report`] renders the
//! results as Markdown and JSON; [`chart::write`] draws package size against
//! diff time.

#![warn(missing_docs)]

pub mod chart;
pub mod measure;
mod report;
pub mod tools;

#[cfg(test)]
mod tests;

pub use report::{human_bytes, Input, Ratio, Report, RomInfo, Row, Status};
pub use tools::Tool;

use anyhow::Context as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Bytes of each image a peer that did not finish is run on again: 256 MiB.
pub const PREFIX_BYTES: u64 = 256 << 20;

/// The note of a peer that is not installed.
pub const MISSING_NOTE: &str = "missing: install with scripts/install-peers.sh";

/// What to run and where to put the results.
#[derive(Debug, Clone)]
pub struct Config {
    /// The romdelta executable (the CLI passes its own `current_exe`).
    pub romdelta: PathBuf,
    /// The source image, or directory of `NAME.img` images.
    pub source: PathBuf,
    /// The target image, or directory of `NAME.img` images.
    pub target: PathBuf,
    /// The tools to run (romdelta is always run).
    pub tools: Vec<Tool>,
    /// Where results, logs and temporary files go.
    pub out_dir: PathBuf,
    /// Time limit of each job.
    pub timeout: Duration,
    /// `--threads` of romdelta diff and apply.
    pub threads: u16,
    /// Extra arguments for romdelta diff.
    pub romdelta_args: Vec<String>,
    /// Sync and drop the page cache before each job.
    pub drop_caches: bool,
    /// Bytes of each image for reruns of peers that did not finish.
    pub prefix_bytes: u64,
    /// The Python interpreter that runs the HDiffPatch driver.
    pub python: String,
    /// Where HDiffPatch's own `hdiffz` and `hpatchz` are looked for, in order.
    pub hdiffz_dirs: Vec<PathBuf>,
}

impl Config {
    /// A configuration with the defaults: every tool, `bench-out`, one hour
    /// per job, 2 threads, caches dropped, 256 MiB prefixes, `python3`,
    /// `hdiffz`/`hpatchz` looked for on `PATH` and then where
    /// `scripts/install-peers.sh` builds them ([`tools::hdiffz_dirs`]).
    pub fn new(romdelta: PathBuf, source: PathBuf, target: PathBuf) -> Self {
        Config {
            romdelta,
            source,
            target,
            tools: Tool::ALL.to_vec(),
            out_dir: PathBuf::from("bench-out"),
            timeout: Duration::from_secs(3600),
            threads: 2,
            romdelta_args: Vec::new(),
            drop_caches: true,
            prefix_bytes: PREFIX_BYTES,
            python: "python3".into(),
            hdiffz_dirs: tools::hdiffz_dirs(),
        }
    }
}

/// A ROM as the harness sees it: its total size and the SHA-256 of each image.
struct Rom {
    is_dir: bool,
    bytes: u64,
    /// (image name, or "" for a single image; digest), sorted by name.
    digests: Vec<(String, [u8; 32])>,
}

/// The `NAME.img` images of a directory, sorted.
fn images_of(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".img") && e.file_type()?.is_file() {
            v.push((name, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

fn hash_file(path: &Path) -> anyhow::Result<(u64, [u8; 32])> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let d = romdelta_rom::sha256_file(&f, len)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((len, d))
}

impl Rom {
    fn read(path: &Path) -> anyhow::Result<Rom> {
        if path.is_dir() {
            let mut bytes = 0;
            let mut digests = Vec::new();
            for (name, p) in images_of(path)? {
                let (len, d) = hash_file(&p)?;
                bytes += len;
                digests.push((name, d));
            }
            anyhow::ensure!(
                !digests.is_empty(),
                "{}: no NAME.img images",
                path.display()
            );
            Ok(Rom {
                is_dir: true,
                bytes,
                digests,
            })
        } else {
            let (bytes, d) = hash_file(path)?;
            Ok(Rom {
                is_dir: false,
                bytes,
                digests: vec![(String::new(), d)],
            })
        }
    }

    /// Whether `output` holds exactly this ROM's images.
    fn matches(&self, output: &Path) -> bool {
        self.digests.iter().all(|(name, d)| {
            let p = if name.is_empty() {
                output.to_path_buf()
            } else {
                output.join(name)
            };
            hash_file(&p).map(|(_, h)| h == *d).unwrap_or(false)
        })
    }
}

fn remove(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// The last non-empty line of a log file, for a failure's note.
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().chars().take(160).collect())
        .unwrap_or_default()
}

/// One pair of inputs the tools run on.
struct Pair<'a> {
    input: Input,
    source: &'a Path,
    target: &'a Path,
    source_rom_bytes: u64,
    target_rom: &'a Rom,
}

struct Runner<'a> {
    cfg: &'a Config,
    work: PathBuf,
    logs: PathBuf,
    driver: PathBuf,
    caches_dropped: bool,
    log: &'a mut dyn FnMut(&str),
}

impl Runner<'_> {
    /// Drops caches (if asked), then runs one job with its output in `log`.
    fn job(
        &mut self,
        mut cmd: std::process::Command,
        log: &Path,
    ) -> anyhow::Result<measure::Measurement> {
        if self.cfg.drop_caches {
            self.caches_dropped &= measure::drop_caches();
        }
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let what = tools::describe(&cmd);
        measure::run(cmd, self.cfg.timeout).with_context(|| format!("running {what}"))
    }

    fn run_tool(&mut self, tool: Tool, pair: &Pair) -> anyhow::Result<Row> {
        let cfg = self.cfg;
        let mut row = Row::new(tool, cfg.threads, pair.input, pair.target_rom.bytes);
        if tool != Tool::Romdelta {
            if let Some(why) = tool.missing(&cfg.python, &cfg.hdiffz_dirs) {
                row.status = Status::Missing;
                row.note = format!("{MISSING_NOTE} ({why})");
                return Ok(row);
            }
            if pair.source.is_dir() || pair.target_rom.is_dir {
                row.status = Status::NotApplicable;
                row.note = "n/a for directories: peers take single files".into();
                return Ok(row);
            }
        }
        if tool == Tool::Bsdiff {
            let need = tools::bsdiff_memory_needed(pair.source_rom_bytes);
            if let Some(avail) = measure::available_memory() {
                if need > avail {
                    row.status = Status::Skipped;
                    row.note = format!(
                        "skipped: needs ~17 × source bytes of memory ({} > {} available)",
                        human_bytes(need),
                        human_bytes(avail)
                    );
                    return Ok(row);
                }
            }
        }
        let stem = format!("{}-{}", tool.key(), pair.input.key());
        let patch = self.work.join(format!("{stem}.patch"));
        let output = self.work.join(format!("{stem}.out"));
        remove(&patch);
        remove(&output);
        let paths = tools::JobPaths {
            source: pair.source,
            target: pair.target,
            patch: &patch,
            output: &output,
            source_bytes: pair.source_rom_bytes,
        };
        let native = |name: &str| {
            tools::find_in_dirs(name, &cfg.hdiffz_dirs).unwrap_or_else(|| PathBuf::from(name))
        };
        let (hdiffz, hpatchz) = (native("hdiffz"), native("hpatchz"));
        let settings = tools::ToolSettings {
            romdelta: &cfg.romdelta,
            threads: cfg.threads,
            romdelta_args: &cfg.romdelta_args,
            python: &cfg.python,
            hdiffpatch_driver: &self.driver,
            hdiffz: &hdiffz,
            hpatchz: &hpatchz,
        };
        let diff = tool.diff_command(&paths, &settings);
        let apply = tool.apply_command(&paths, &settings);
        row.diff_command = Some(tools::describe(&diff));
        row.apply_command = Some(tools::describe(&apply));

        (self.log)(&format!("{} ({}): diff", tool.key(), pair.input.text()));
        let diff_log = self.logs.join(format!("{stem}-diff.log"));
        let m = self.job(diff, &diff_log)?;
        row.diff_wall_s = Some(m.wall.as_secs_f64());
        row.diff_peak_rss_bytes = Some(m.peak_rss_bytes);
        if !m.exit.success() {
            mark_failed(&mut row, "diff", m.exit, cfg.timeout, &diff_log);
            remove(&patch);
            return Ok(row);
        }
        let patch_bytes = std::fs::metadata(&patch)
            .with_context(|| format!("{} wrote no patch", tool.key()))?
            .len();
        row.set_patch_bytes(patch_bytes);

        (self.log)(&format!("{} ({}): apply", tool.key(), pair.input.text()));
        let apply_log = self.logs.join(format!("{stem}-apply.log"));
        let m = self.job(apply, &apply_log)?;
        row.apply_wall_s = Some(m.wall.as_secs_f64());
        row.apply_peak_rss_bytes = Some(m.peak_rss_bytes);
        if !m.exit.success() {
            mark_failed(&mut row, "apply", m.exit, cfg.timeout, &apply_log);
        } else {
            row.status = Status::Ok;
            let exact = pair.target_rom.matches(&output);
            row.exact = Some(exact);
            if !exact {
                row.note = "output differs from the target".into();
            }
        }
        remove(&patch);
        remove(&output);
        (self.log)(&format!(
            "{} ({}): {}",
            tool.key(),
            pair.input.text(),
            row.summary()
        ));
        Ok(row)
    }
}

/// Marks `row` as timed out or failed in its `what` job (diff or apply),
/// with the last line of the job's log as the reason.
fn mark_failed(row: &mut Row, what: &str, exit: measure::Exit, timeout: Duration, log: &Path) {
    row.status = if exit == measure::Exit::TimedOut {
        Status::TimedOut
    } else {
        Status::Failed
    };
    row.note = match exit {
        measure::Exit::TimedOut => format!("{what} timed out after {} s", timeout.as_secs()),
        e => format!("{what}: {e}: {}", last_line(log)),
    };
}

/// Writes the first `bytes` bytes of `from` into `to`.
fn write_prefix(from: &Path, to: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut src = File::open(from)
        .with_context(|| format!("opening {}", from.display()))?
        .take(bytes);
    let mut dst = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    std::io::copy(&mut src, &mut dst).with_context(|| format!("writing {}", to.display()))?;
    dst.sync_all()?;
    Ok(())
}

/// Runs every tool of `cfg` on the pair, and the reruns on prefixes; `log`
/// receives a line as each job starts and ends. Patches, outputs and prefix
/// images are removed as soon as they are measured; the jobs' own output
/// stays in `OUT/logs`.
pub fn run(cfg: &Config, log: &mut dyn FnMut(&str)) -> anyhow::Result<Report> {
    let source_rom = Rom::read(&cfg.source)?;
    let target_rom = Rom::read(&cfg.target)?;
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let work = cfg.out_dir.join("work");
    let logs = cfg.out_dir.join("logs");
    remove(&work);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&logs)?;
    let driver = work.join("hdiffpatch-peer.py");
    std::fs::write(&driver, tools::HDIFFPATCH_DRIVER)?;
    let mut runner = Runner {
        cfg,
        work: work.clone(),
        logs,
        driver,
        caches_dropped: cfg.drop_caches,
        log,
    };
    let mut tools = cfg.tools.clone();
    if !tools.contains(&Tool::Romdelta) {
        tools.insert(0, Tool::Romdelta);
    }
    let full = Pair {
        input: Input::Full,
        source: &cfg.source,
        target: &cfg.target,
        source_rom_bytes: source_rom.bytes,
        target_rom: &target_rom,
    };
    let mut rows = Vec::new();
    for &t in &tools {
        rows.push(runner.run_tool(t, &full)?);
    }

    let unfinished: Vec<Tool> = rows
        .iter()
        .filter(|r| r.tool != Tool::Romdelta && r.status.unfinished())
        .map(|r| r.tool)
        .collect();
    let larger = source_rom.bytes > cfg.prefix_bytes || target_rom.bytes > cfg.prefix_bytes;
    let mut prefix_bytes = None;
    if !unfinished.is_empty() && larger && !source_rom.is_dir && !target_rom.is_dir {
        let ps = work.join("prefix-source.img");
        let pt = work.join("prefix-target.img");
        (runner.log)(&format!(
            "{} did not finish on the full pair: running on {} prefixes",
            unfinished
                .iter()
                .map(|t| t.key())
                .collect::<Vec<_>>()
                .join(", "),
            human_bytes(cfg.prefix_bytes)
        ));
        write_prefix(&cfg.source, &ps, cfg.prefix_bytes)?;
        write_prefix(&cfg.target, &pt, cfg.prefix_bytes)?;
        let prefix_target = Rom::read(&pt)?;
        let pair = Pair {
            input: Input::Prefix,
            source: &ps,
            target: &pt,
            source_rom_bytes: std::fs::metadata(&ps)?.len(),
            target_rom: &prefix_target,
        };
        prefix_bytes = Some(cfg.prefix_bytes);
        let result = std::iter::once(Tool::Romdelta)
            .chain(unfinished)
            .map(|t| runner.run_tool(t, &pair))
            .collect::<anyhow::Result<Vec<_>>>();
        remove(&ps);
        remove(&pt);
        rows.extend(result?);
    }
    let caches_dropped = runner.caches_dropped;
    remove(&work);

    Ok(Report::new(
        cfg,
        RomInfo::new(&cfg.source, source_rom.bytes, source_rom.is_dir),
        RomInfo::new(&cfg.target, target_rom.bytes, target_rom.is_dir),
        prefix_bytes,
        caches_dropped,
        rows,
    ))
}

/// Writes `results.md`, `results.json` and `chart.png` into the output
/// directory; returns the report with its chart fields filled in.
pub fn write_outputs(mut report: Report, out_dir: &Path) -> anyhow::Result<Report> {
    let chart = out_dir.join("chart.png");
    let font = chart::find_font();
    chart::write(&report, &chart, font.as_deref())
        .with_context(|| format!("drawing {}", chart.display()))?;
    report.chart_font = font.map(|p| p.display().to_string());
    std::fs::write(out_dir.join("results.md"), report.to_markdown())?;
    std::fs::write(out_dir.join("results.json"), report.to_json())?;
    Ok(report)
}
