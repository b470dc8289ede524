//! Getting bytes from a repository: `file://` paths and `http(s)://` URLs,
//! whole files (bounded) and byte ranges (HTTP Range requests).
//!
//! Every fetch is bounded: a server that sends more than was asked for is
//! cut off and refused. Transient failures (a dropped or refused
//! connection, a stalled transfer, a 5xx answer, a body cut short) are
//! retried a bounded number of times, a range continuing from the last
//! byte received; a 4xx answer is final.

use romdelta_tuf::FetchError;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How fetches behave.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// A transfer with no byte for this long is given up (then retried).
    pub stall: Duration,
    /// Connecting longer than this fails the attempt.
    pub connect: Duration,
    /// First pause between attempts; doubled each time.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            attempts: 6,
            stall: Duration::from_secs(30),
            connect: Duration::from_secs(15),
            backoff: Duration::from_millis(200),
        }
    }
}

/// Fetches from one repository's URLs; counts the bytes it received.
pub struct Transport {
    agent: ureq::Agent,
    opts: FetchOptions,
    received: AtomicU64,
}

/// One attempt's failure: whether another attempt may help.
enum Attempt {
    Final(FetchError),
    Retry(String),
}

impl Transport {
    /// A transport with `opts`.
    pub fn new(opts: FetchOptions) -> Transport {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect))
            .timeout_per_read(Some(opts.stall))
            .timeout_recv_response(Some(opts.stall))
            .max_redirects(0)
            .build()
            .new_agent();
        Transport {
            agent,
            opts,
            received: AtomicU64::new(0),
        }
    }

    /// Bytes received so far (bodies only).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The length of the file at `url`: a file's size, or the total of the
    /// `Content-Range` a one-byte Range request is answered with.
    pub fn length(&self, url: &str) -> Result<u64, FetchError> {
        if let Some(path) = url.strip_prefix("file://") {
            return std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => FetchError::NotFound,
                    _ => FetchError::Other(format!("{path}: {e}")),
                });
        }
        self.retrying(|| {
            let resp = self
                .agent
                .get(url)
                .header("Range", "bytes=0-0")
                .call()
                .map_err(|e| Attempt::Retry(e.to_string()))?;
            match resp.status().as_u16() {
                206 => {
                    let cr = content_range(&resp);
                    total_of(&cr).ok_or_else(|| {
                        Attempt::Final(FetchError::Refused(format!(
                            "no length in Content-Range {cr:?}"
                        )))
                    })
                }
                s => Err(unexpected(s, 0)),
            }
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been tried
    /// [`FetchOptions::attempts`] times, pausing between tries (the
    /// backoff, doubled each time).
    fn retrying<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, Attempt>,
    ) -> Result<T, FetchError> {
        let mut last = String::new();
        for n in 0..self.opts.attempts.max(1) {
            if n > 0 {
                std::thread::sleep(self.opts.backoff * 2u32.saturating_pow(n - 1).min(32));
            }
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry(why)) => last = why,
            }
        }
        Err(FetchError::Other(format!(
            "gave up after {} attempts: {last}",
            self.opts.attempts.max(1)
        )))
    }

    /// Appends bytes `[start, end)` of `url` to `out`, retrying transient
    /// failures from the last byte received; `total`, if known, is the
    /// file's signed length, which the server's must equal.
    pub fn get_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        total: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), FetchError> {
        self.get_with(url, start, Some(end), total, Some(total), out)
    }

    /// Appends bytes `[start, end)` of `url` to `out`, retrying transient
    /// failures from the last byte received. `end` = `None`: to the end of
    /// the file, which must not pass `max` bytes.
    fn get(
        &self,
        url: &str,
        start: u64,
        end: Option<u64>,
        max: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), FetchError> {
        self.get_with(url, start, end, max, None, out)
    }

    fn get_with(
        &self,
        url: &str,
        start: u64,
        end: Option<u64>,
        max: u64,
        total: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), FetchError> {
        let base = out.len();
        self.retrying(|| {
            let from = start + (out.len() - base) as u64;
            if end.is_some_and(|e| from >= e) {
                return Ok(());
            }
            self.attempt(url, from, end, max, total, base, out)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        url: &str,
        from: u64,
        end: Option<u64>,
        max: u64,
        total: Option<u64>,
        base: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Attempt> {
        if let Some(path) = url.strip_prefix("file://") {
            return self.read_file(path, from, end, max, total, out);
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Attempt::Final(FetchError::Other(format!(
                "{url}: only file://, http:// and https:// URLs are read"
            ))));
        }
        let mut req = self.agent.get(url);
        let ranged = from > 0 || end.is_some();
        if ranged {
            let r = match end {
                Some(e) => format!("bytes={from}-{}", e - 1),
                None => format!("bytes={from}-"),
            };
            req = req.header("Range", r);
        }
        let resp = req.call().map_err(|e| Attempt::Retry(e.to_string()))?;
        match resp.status().as_u16() {
            200 if !ranged => {}
            206 if ranged => {
                // The range must be the one asked for.
                let cr = content_range(&resp);
                if !cr.starts_with(&format!("bytes {from}-")) {
                    return Err(Attempt::Final(FetchError::Refused(format!(
                        "asked for bytes {from}.., the server sent {cr:?}"
                    ))));
                }
                // The server's idea of the file's length must be the signed one.
                if let (Some(t), Some(s)) = (total, total_of(&cr)) {
                    if s != t {
                        return Err(Attempt::Final(length_error(s, t)));
                    }
                }
            }
            s => return Err(unexpected(s, from)),
        }
        let want = end.map_or(max.saturating_sub(from), |e| e - from);
        let mut body = resp.into_body().into_reader().take(want + 1);
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got += n as u64;
                    self.received.fetch_add(n as u64, Ordering::Relaxed);
                    if got > want {
                        return Err(Attempt::Final(FetchError::TooLong(end.unwrap_or(max))));
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                Err(e) => {
                    return Err(Attempt::Retry(format!(
                        "after {} bytes: {e}",
                        out.len() - base
                    )))
                }
            }
        }
        if end.is_some_and(|e| from + got < e) {
            return Err(Attempt::Retry(format!(
                "the body ended after {} of {want} bytes",
                got
            )));
        }
        Ok(())
    }

    fn read_file(
        &self,
        path: &str,
        from: u64,
        end: Option<u64>,
        max: u64,
        total: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), Attempt> {
        use std::os::unix::fs::FileExt as _;
        let f = std::fs::File::open(path).map_err(|e| {
            Attempt::Final(match e.kind() {
                std::io::ErrorKind::NotFound => FetchError::NotFound,
                _ => FetchError::Other(format!("{path}: {e}")),
            })
        })?;
        let len = f
            .metadata()
            .map_err(|e| Attempt::Final(FetchError::Other(e.to_string())))?
            .len();
        if let Some(t) = total {
            if len != t {
                return Err(Attempt::Final(length_error(len, t)));
            }
        }
        let stop = match end {
            Some(e) if e > len => {
                return Err(Attempt::Final(FetchError::Refused(format!(
                    "{path} is {len} bytes, shorter than its signed length {e}"
                ))))
            }
            Some(e) => e,
            None if len > max => return Err(Attempt::Final(FetchError::TooLong(max))),
            None => len,
        };
        let at = out.len();
        out.resize(at + (stop - from) as usize, 0);
        f.read_exact_at(&mut out[at..], from)
            .map_err(|e| Attempt::Final(FetchError::Other(format!("{path}: {e}"))))?;
        self.received.fetch_add(stop - from, Ordering::Relaxed);
        Ok(())
    }
}

/// The `Content-Range` header of an answer ("" when there is none).
fn content_range(resp: &ureq::http::Response<ureq::Body>) -> String {
    resp.headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The file length a `Content-Range` gives (`bytes A-B/TOTAL`).
fn total_of(content_range: &str) -> Option<u64> {
    content_range
        .rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
}

/// What an answer other than the one asked for means (`from`: the first
/// byte asked for): 200 to a ranged request, 404, 416 and other 4xx are
/// final; anything else (5xx) may pass.
fn unexpected(status: u16, from: u64) -> Attempt {
    match status {
        200 => Attempt::Final(FetchError::Other(
            "the server ignores Range requests (200 to a ranged request): resumable downloads need a server that answers 206".into(),
        )),
        404 | 403 | 410 => Attempt::Final(FetchError::NotFound),
        416 => Attempt::Final(FetchError::Refused(format!(
            "the server has no bytes from {from} (416): the file is shorter than its signed length"
        ))),
        s if (400..500).contains(&s) => Attempt::Final(FetchError::Other(format!("HTTP {s}"))),
        s => Attempt::Retry(format!("HTTP {s}")),
    }
}

/// A served file whose length is not its signed one.
fn length_error(served: u64, signed: u64) -> FetchError {
    if served > signed {
        FetchError::Refused(format!(
            "the server's file is {served} bytes, {} more than its signed length {signed}: refused as endless data",
            served - signed
        ))
    } else {
        FetchError::Refused(format!(
            "the server's file is {served} bytes, shorter than its signed length {signed}"
        ))
    }
}

impl romdelta_tuf::Fetcher for Transport {
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        let mut out = Vec::new();
        self.get(url, 0, None, max_len, &mut out)?;
        Ok(out)
    }
}

/// A remote file of known (signed) length read by ranges, as a package
/// source. Reads are served from windows (1/64 of the file, 16 KiB to
/// 1 MiB), each fetched with one Range request and dropped once all its
/// bytes were read, at most 16 MiB of them at once: an apply reads each
/// byte once, so each byte is downloaded once, and one that resumes
/// downloads only what it has not written yet.
pub struct RangeFile {
    transport: std::sync::Arc<Transport>,
    url: String,
    len: u64,
    window: u64,
    cache: Mutex<Vec<Window>>,
    fetching: Mutex<()>,
    error: Mutex<Option<FetchError>>,
    received: AtomicU64,
}

/// The most bytes of windows held at once.
const CACHE_BYTES: u64 = 16 << 20;

/// A fetched window and how many of its bytes were read.
struct Window {
    start: u64,
    bytes: Vec<u8>,
    consumed: usize,
}

impl RangeFile {
    /// The file at `url`, `len` bytes long as signed metadata says.
    pub fn new(transport: std::sync::Arc<Transport>, url: &str, len: u64) -> Self {
        // Windows of 1/64 of the file, 16 KiB to 1 MiB: what a cut loses
        // is small next to the file.
        let window = (len / 64).clamp(16 << 10, 1 << 20);
        RangeFile {
            transport,
            url: url.to_string(),
            len,
            window,
            cache: Mutex::new(Vec::new()),
            fetching: Mutex::new(()),
            error: Mutex::new(None),
            received: AtomicU64::new(0),
        }
    }

    /// Bytes of this file received (windows fetched whole; a window cut
    /// and resumed counts once per attempt's bytes in the transport's
    /// count, once here).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The error of the fetch that failed, if one did.
    pub fn take_error(&self) -> Option<FetchError> {
        self.error.lock().expect("not poisoned").take()
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Copies what window `start` holds from `at` into `dst` if it is
    /// cached; a window all of whose bytes were read is dropped.
    fn copy_cached(&self, start: u64, at: u64, dst: &mut [u8]) -> Option<usize> {
        let mut c = self.cache.lock().expect("not poisoned");
        let i = c.iter().position(|w| w.start == start)?;
        let w = &mut c[i];
        let from = (at - start) as usize;
        let n = dst.len().min(w.bytes.len() - from);
        dst[..n].copy_from_slice(&w.bytes[from..from + n]);
        w.consumed += n;
        if w.consumed >= w.bytes.len() {
            c.remove(i);
        }
        Some(n)
    }

    /// Fetches window `start` into the cache, making room first: windows
    /// read whole are gone already, so the oldest goes.
    fn fetch_window(&self, start: u64) -> std::io::Result<()> {
        let _one = self.fetching.lock().expect("not poisoned");
        if self
            .cache
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|w| w.start == start)
        {
            return Ok(());
        }
        let end = (start + self.window).min(self.len);
        let mut buf = Vec::with_capacity((end - start) as usize);
        self.transport
            .get_range(&self.url, start, end, self.len, &mut buf)
            .map_err(|e| {
                let io = std::io::Error::other(format!("{}: {e}", self.url));
                *self.error.lock().expect("not poisoned") = Some(e);
                io
            })?;
        self.received.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let mut c = self.cache.lock().expect("not poisoned");
        while !c.is_empty() && (c.len() as u64 + 1) * self.window > CACHE_BYTES {
            c.remove(0);
        }
        c.push(Window {
            start,
            bytes: buf,
            consumed: 0,
        });
        Ok(())
    }

    /// Fills `buf` from `offset`; reading past the signed length is an
    /// error, whatever the server has.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("past the {} bytes the signed metadata gives it", self.len),
                )
            })?;
        let mut at = offset;
        while at < end {
            let start = at / self.window * self.window;
            let dst = (at - offset) as usize;
            match self.copy_cached(start, at, &mut buf[dst..]) {
                Some(n) => at += n as u64,
                None => self.fetch_window(start)?,
            }
        }
        Ok(())
    }
}

impl romdelta_apply::PackageSource for RangeFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        RangeFile::read_exact_at(self, buf, offset)
    }
}
