//! Progress on stderr (a bar on a terminal, or JSON lines), `-q`, and
//! human-readable sizes.

use crate::args::ProgressMode;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);
static MODE: OnceLock<ProgressMode> = OnceLock::new();

/// Sets the global output settings (`-q`, `--progress`), once, at start.
pub fn configure(quiet: bool, mode: ProgressMode) {
    QUIET.store(quiet, Ordering::Relaxed);
    let _ = MODE.set(mode);
}

/// Whether `-q` was given: human-readable output is not printed.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `println!` unless `-q` was given.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::progress::quiet() {
            println!($($arg)*);
        }
    };
}

/// Progress of one command over `total` bytes: a bar, JSON lines on
/// stderr, or nothing.
pub enum Progress {
    /// Nothing is shown.
    Hidden,
    /// An indicatif bar on a terminal.
    Bar(ProgressBar),
    /// JSON lines, at most ten a second plus the last.
    Json {
        /// The command (`diff`, `apply`, ...).
        what: &'static str,
        /// Bytes in all.
        total: u64,
        /// When the last line was written.
        last: Mutex<Option<Instant>>,
    },
}

impl Progress {
    /// Moves the progress to `done` bytes.
    pub fn set_position(&self, done: u64) {
        match self {
            Progress::Hidden => {}
            Progress::Bar(b) => b.set_position(done),
            Progress::Json { what, total, last } => {
                let mut last = last.lock().expect("not poisoned");
                if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) && done < *total {
                    return;
                }
                *last = Some(Instant::now());
                json_line(what, done, *total, false);
            }
        }
    }

    /// Ends the progress (clears a bar; a last JSON line says `done`).
    pub fn finish(&self) {
        match self {
            Progress::Hidden => {}
            Progress::Bar(b) => b.finish_and_clear(),
            Progress::Json { what, total, .. } => json_line(what, *total, *total, true),
        }
    }
}

fn json_line(what: &str, done: u64, total: u64, finished: bool) {
    let line = serde_json::json!({
        "event": if finished { "done" } else { "progress" },
        "command": what,
        "bytes_done": done,
        "bytes_total": total,
    });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Writes a warning on standard error, whatever `-q`: a JSON line
/// (`{"event": "warning", "message": ...}`) with `--progress json`, so
/// that standard error stays JSON lines, else `romdelta: warning: ...`.
pub fn warn(message: &str) {
    let mut err = std::io::stderr().lock();
    if MODE.get() == Some(&ProgressMode::Json) {
        let line = serde_json::json!({"event": "warning", "message": message});
        let _ = writeln!(err, "{line}");
    } else {
        let _ = writeln!(err, "romdelta: warning: {message}");
    }
}

/// Progress over `total` bytes of `what`, as `--progress` asks: with
/// `auto`, a bar only when stderr is a terminal and the output is neither
/// JSON nor quiet.
pub fn bar(json: bool, total: u64, what: &'static str) -> Progress {
    match MODE.get().copied().unwrap_or(ProgressMode::Auto) {
        ProgressMode::None => Progress::Hidden,
        ProgressMode::Json => Progress::Json {
            what,
            total,
            last: Mutex::new(None),
        },
        ProgressMode::Auto if json || quiet() || !std::io::stderr().is_terminal() => {
            Progress::Hidden
        }
        ProgressMode::Auto => {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>6} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(what.to_string());
            Progress::Bar(b)
        }
    }
}

/// `bytes` as a short human-readable size.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
