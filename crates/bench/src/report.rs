//! The results: rows, ratios, and their Markdown and JSON forms.

use crate::{Config, Tool};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The version of the JSON layout (`schema` in `results.json`).
pub const SCHEMA: u32 = 1;

/// Which pair a row was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The images as given.
    Full,
    /// The first [`crate::PREFIX_BYTES`] of both images.
    Prefix,
}

impl Input {
    /// The name used in file names and JSON.
    pub fn key(self) -> &'static str {
        match self {
            Input::Full => "full",
            Input::Prefix => "prefix",
        }
    }

    /// The name used in the table.
    pub fn text(self) -> &'static str {
        match self {
            Input::Full => "full pair",
            Input::Prefix => "256 MiB prefix",
        }
    }
}

/// How a tool's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Diff and apply finished (see `exact` for the output).
    Ok,
    /// The diff or the apply exited with an error or was killed.
    Failed,
    /// The diff or the apply ran past the time limit and was killed.
    TimedOut,
    /// Not run: it would need more memory than is available.
    Skipped,
    /// Not run: the tool is not installed.
    Missing,
    /// Not run: the tool takes single files and the input is a directory.
    NotApplicable,
}

impl Status {
    /// Whether the tool tried and did not finish (so it gets a prefix rerun).
    pub fn unfinished(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut | Status::Skipped)
    }
}

/// One tool on one pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The tool (its `--peers` name in JSON).
    #[serde(with = "tool_key")]
    pub tool: Tool,
    /// The tool and its settings, as the table shows them.
    pub label: String,
    /// The pair it ran on.
    pub input: Input,
    /// How it ended.
    pub status: Status,
    /// Size of the patch.
    pub patch_bytes: Option<u64>,
    /// Size of the target it was made for.
    pub target_bytes: u64,
    /// `patch_bytes` as a percentage of `target_bytes`.
    pub percent_of_target: Option<f64>,
    /// Wall time of the diff job.
    pub diff_wall_s: Option<f64>,
    /// Peak RSS of the diff job.
    pub diff_peak_rss_bytes: Option<u64>,
    /// Wall time of the apply job (apply and `sync`).
    pub apply_wall_s: Option<f64>,
    /// Peak RSS of the apply job.
    pub apply_peak_rss_bytes: Option<u64>,
    /// Whether the applied output's SHA-256 equals the target's.
    pub exact: Option<bool>,
    /// Why it did not run or finish, or anything else worth knowing.
    pub note: String,
    /// The diff command as run.
    pub diff_command: Option<String>,
    /// The apply command as run.
    pub apply_command: Option<String>,
}

mod tool_key {
    use crate::Tool;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Tool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.key())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tool, D::Error> {
        let name = String::deserialize(d)?;
        Tool::ALL
            .into_iter()
            .find(|t| t.key() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown tool {name:?}")))
    }
}

impl Row {
    /// A row not run yet.
    pub fn new(tool: Tool, threads: u16, input: Input, target_bytes: u64) -> Self {
        Row {
            tool,
            label: tool.label(threads),
            input,
            status: Status::Failed,
            patch_bytes: None,
            target_bytes,
            percent_of_target: None,
            diff_wall_s: None,
            diff_peak_rss_bytes: None,
            apply_wall_s: None,
            apply_peak_rss_bytes: None,
            exact: None,
            note: String::new(),
            diff_command: None,
            apply_command: None,
        }
    }

    /// Records the patch size and its share of the target.
    pub fn set_patch_bytes(&mut self, bytes: u64) {
        self.patch_bytes = Some(bytes);
        self.percent_of_target = Some(100.0 * bytes as f64 / self.target_bytes.max(1) as f64);
    }

    /// One line for the progress log.
    pub fn summary(&self) -> String {
        format!(
            "{} bytes, diff {} s / {}, apply {} s / {}, exact {}{}",
            opt(self.patch_bytes, thousands),
            opt(self.diff_wall_s, secs),
            opt(self.diff_peak_rss_bytes, human_bytes),
            opt(self.apply_wall_s, secs),
            opt(self.apply_peak_rss_bytes, human_bytes),
            opt(self.exact, yes_no),
            if self.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.note)
            }
        )
    }

    fn finished(&self) -> bool {
        self.status == Status::Ok
    }
}

/// romdelta against one peer on the same pair: romdelta's figure divided by the peer's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    /// The peer (its `--peers` name).
    #[serde(with = "tool_key")]
    pub peer: Tool,
    /// The pair both ran on.
    pub input: Input,
    /// romdelta's patch bytes ÷ the peer's.
    pub size: f64,
    /// romdelta's diff wall time ÷ the peer's.
    pub diff_time: f64,
    /// romdelta's apply wall time ÷ the peer's.
    pub apply_time: f64,
}

/// A ROM the harness was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RomInfo {
    /// The path as given.
    pub path: String,
    /// Total bytes (of every image, for a directory).
    pub bytes: u64,
    /// Whether it is a directory of `NAME.img` images.
    pub directory: bool,
}

impl RomInfo {
    /// Describes the ROM at `path`.
    pub fn new(path: &Path, bytes: u64, directory: bool) -> Self {
        RomInfo {
            path: path.display().to_string(),
            bytes,
            directory,
        }
    }
}

/// Everything one run of the harness measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The version of this layout.
    pub schema: u32,
    /// Seconds since the Unix epoch when the report was made.
    pub unix_time: u64,
    /// The source ROM.
    pub source: RomInfo,
    /// The target ROM.
    pub target: RomInfo,
    /// Bytes of each image in the prefix rows, if there are any.
    pub prefix_bytes: Option<u64>,
    /// `--threads` of romdelta diff and apply.
    pub threads: u16,
    /// Extra arguments given to romdelta diff.
    pub romdelta_args: Vec<String>,
    /// The time limit of each job.
    pub timeout_s: u64,
    /// Whether the page cache was dropped before every job.
    pub caches_dropped: bool,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// Memory of the machine.
    pub mem_total_bytes: Option<u64>,
    /// One row per tool and pair.
    pub rows: Vec<Row>,
    /// romdelta against each peer that finished on the same pair.
    pub ratios: Vec<Ratio>,
    /// The font of the chart's text; none means the chart has no text.
    pub chart_font: Option<String>,
}

fn opt<T: Copy>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2}")
    } else {
        format!("{s:.1}")
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    let head = digits.len() % 3;
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 3 == head % 3 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units, three significant digits: `55 MB`, `2.82 GB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 || v >= 100.0 {
        format!("{v:.0} {}", units[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", units[u])
    } else {
        format!("{v:.2} {}", units[u])
    }
}

impl Report {
    /// Assembles a report from the rows, computing the ratios.
    pub fn new(
        cfg: &Config,
        source: RomInfo,
        target: RomInfo,
        prefix_bytes: Option<u64>,
        caches_dropped: bool,
        rows: Vec<Row>,
    ) -> Self {
        let ratios = ratios(&rows);
        Report {
            schema: SCHEMA,
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            source,
            target,
            prefix_bytes,
            threads: cfg.threads,
            romdelta_args: cfg.romdelta_args.clone(),
            timeout_s: cfg.timeout.as_secs(),
            caches_dropped,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            mem_total_bytes: crate::measure::total_memory(),
            rows,
            ratios,
            chart_font: None,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// The report as Markdown: a few lines on the setup, the table, the ratios.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "Source {} ({} bytes{}), target {} ({} bytes{}); one job at a time, \
             time limit {} s per job; page cache {} before each job; \
             every apply followed by `sync` inside its timed job; {} CPUs, {} memory.\n\n",
            self.source.path,
            thousands(self.source.bytes),
            if self.source.directory {
                ", directory"
            } else {
                ""
            },
            self.target.path,
            thousands(self.target.bytes),
            if self.target.directory {
                ", directory"
            } else {
                ""
            },
            self.timeout_s,
            if self.caches_dropped {
                "dropped"
            } else {
                "NOT dropped"
            },
            self.cpus,
            opt(self.mem_total_bytes, human_bytes),
        );
        s += "| tool | input | patch bytes | % of target | diff wall s | diff peak RSS | apply wall s | apply peak RSS | exact | note |\n";
        s += "|---|---|---:|---:|---:|---:|---:|---:|:---:|---|\n";
        for r in &self.rows {
            let exact = match r.status {
                Status::Ok => opt(r.exact, yes_no),
                _ => "–".into(),
            };
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.label,
                r.input.text(),
                opt(r.patch_bytes, thousands),
                opt(r.percent_of_target, |p| format!("{p:.2}%")),
                opt(r.diff_wall_s, secs),
                opt(r.diff_peak_rss_bytes, human_bytes),
                opt(r.apply_wall_s, secs),
                opt(r.apply_peak_rss_bytes, human_bytes),
                exact,
                r.note.replace('|', "\\|"),
            );
        }
        if !self.romdelta_args.is_empty() {
            s += &format!(
                "\nromdelta diff ran with extra arguments `{}`.\n",
                self.romdelta_args.join(" ")
            );
        }
        if !self.ratios.is_empty() {
            s += "\nRatios, romdelta ÷ peer on the same pair (below 1: romdelta smaller or faster):\n";
            for q in &self.ratios {
                s += &format!(
                    "- vs {} ({}): size {:.2} ×, diff time {:.2} ×, apply time {:.2} ×\n",
                    q.peer.key(),
                    q.input.text(),
                    q.size,
                    q.diff_time,
                    q.apply_time
                );
            }
        }
        s
    }
}

fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for me in rows
        .iter()
        .filter(|r| r.tool == Tool::Romdelta && r.finished())
    {
        for peer in rows
            .iter()
            .filter(|r| r.tool != Tool::Romdelta && r.input == me.input && r.finished())
        {
            let (Some(a), Some(b)) = (me.patch_bytes, peer.patch_bytes) else {
                continue;
            };
            // Finished rows have both times.
            let div =
                |x: Option<f64>, y: Option<f64>| x.unwrap_or(0.0) / y.unwrap_or(0.0).max(1e-6);
            out.push(Ratio {
                peer: peer.tool,
                input: me.input,
                size: a as f64 / b.max(1) as f64,
                diff_time: div(me.diff_wall_s, peer.diff_wall_s),
                apply_time: div(me.apply_wall_s, peer.apply_wall_s),
            });
        }
    }
    out
}
