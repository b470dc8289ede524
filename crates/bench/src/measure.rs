//! Running one job as a child process: wall time, peak RSS, time limit.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// A signal ended it (not one the harness sent).
    Signal(i32),
    /// It ran past the time limit and was killed with its process group.
    TimedOut,
}

impl Exit {
    /// Whether the job finished with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::TimedOut => f.write_str("timed out"),
        }
    }
}

/// What one job cost.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// How the job ended.
    pub exit: Exit,
    /// Wall time from spawning to reaping the child.
    pub wall: Duration,
    /// Peak resident set of the child or of any descendant it waited for,
    /// in bytes (`ru_maxrss` of `wait4`).
    pub peak_rss_bytes: u64,
}

/// Runs `cmd` in its own process group and waits for it with `wait4`.
///
/// Wall time is measured with [`Instant`] from just before the spawn to the
/// reaping of the child. Peak RSS is the `ru_maxrss` that `wait4` reports:
/// on Linux it is the largest of the child's own and of every descendant it
/// waited for, so `sh -c "apply && sync"` counts the apply. A child still
/// running after `timeout` is killed with its whole process group and
/// reported as [`Exit::TimedOut`].
pub fn run(mut cmd: Command, timeout: Duration) -> io::Result<Measurement> {
    cmd.process_group(0);
    let started = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    // The child is reaped below with wait4; `Child` must not wait for it.
    drop(child);
    let mut pause = Duration::from_millis(1);
    let mut timed_out = false;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is plain old data, written by the kernel.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        // SAFETY: valid pointers to live locals; `pid` is our own child.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            let wall = started.elapsed();
            let exit = if timed_out {
                Exit::TimedOut
            } else if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else {
                Exit::Signal(libc::WTERMSIG(status))
            };
            return Ok(Measurement {
                exit,
                wall,
                peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
            });
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if started.elapsed() >= timeout {
            // SAFETY: signals the process group the child leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            timed_out = true;
            continue;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Flushes dirty pages and tries to empty the page cache
/// (`echo 3 > /proc/sys/vm/drop_caches`); returns whether the cache was dropped.
pub fn drop_caches() -> bool {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

/// Bytes of memory the kernel reports as available (`MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    meminfo_field("MemAvailable:")
}

/// Bytes of memory in the machine (`MemTotal`), if known.
pub fn total_memory() -> Option<u64> {
    meminfo_field("MemTotal:")
}

fn meminfo_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}
