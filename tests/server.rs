//! A real HTTP server for the tests (Debian's nginx on 127.0.0.1) and a
//! fault-injecting TCP proxy in front of it: connections reset after N
//! bytes, stalled, slowed, or answered 503 or 404 without reaching the
//! server. Both stop when dropped.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The nginx binary, if installed.
pub fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether a test that needs nginx runs (or must fail: ROMDELTA_REQUIRE_TOOLS).
pub fn have_nginx() -> bool {
    let have = nginx_binary().is_some();
    if !have {
        assert!(
            std::env::var_os("ROMDELTA_REQUIRE_TOOLS").is_none(),
            "nginx is not installed (apt-get install nginx-light)"
        );
        eprintln!("skipped: nginx is not installed");
    }
    have
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx serving `root` on 127.0.0.1.
pub struct Nginx {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with a configuration of its own in a temporary
    /// directory, serving the files of `root`.
    pub fn serve(root: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            let d = dir.path().display();
            std::fs::write(
                &conf,
                format!(
                    "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                     error_log {d}/error.log warn;\n\
                     events {{ worker_connections 64; }}\n\
                     http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
                     proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
                     uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                     default_type application/octet-stream;\n  sendfile on;\n\
                     server {{ listen 127.0.0.1:{port}; root {}; location / {{ }} }}\n}}\n",
                    root.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(nginx_binary().expect("have_nginx checked"))
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    if err.contains("Address already in use") {
                        break;
                    }
                    panic!("nginx exited ({status}): {err}");
                }
                if TcpStream::connect(addr).is_ok() {
                    return Nginx {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nginx did not start");
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to the next connections.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Reset the next connection after this many bytes from the server.
    pub reset_after: Option<u64>,
    /// Stop forwarding the next connection after this many bytes, for
    /// `stall.1`.
    pub stall: Option<(u64, Duration)>,
    /// Forward at most this many bytes a second.
    pub bytes_per_second: Option<u64>,
    /// Answer the next `.1` requests with status `.0` (503, 404, ...)
    /// without reaching the server.
    pub answer: Option<(u16, u32)>,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`.
pub struct FaultProxy {
    /// Its address.
    pub addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
    /// Bytes sent from the server to the client, headers included.
    pub downstream: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Starts the proxy.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let downstream = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (f, s, d, c) = (
            faults.clone(),
            stop.clone(),
            downstream.clone(),
            connections.clone(),
        );
        std::thread::spawn(move || {
            // Bounded: the proxy ends when dropped, or after ten minutes.
            let started = Instant::now();
            while !s.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
                match listener.accept() {
                    Ok((client, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        let plan = {
                            let mut g = f.lock().unwrap();
                            let plan = g.clone();
                            // One-shot faults apply to one connection.
                            g.reset_after = None;
                            g.stall = None;
                            if let Some((code, n)) = g.answer {
                                g.answer = (n > 1).then_some((code, n - 1));
                            }
                            plan
                        };
                        let d = d.clone();
                        std::thread::spawn(move || serve(client, upstream, plan, d));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        FaultProxy {
            addr,
            faults,
            stop,
            downstream,
            connections,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the faults of the next connections.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut client: TcpStream, upstream: SocketAddr, plan: Faults, sent: Arc<AtomicU64>) {
    client.set_nonblocking(false).unwrap();
    if let Some((code, _)) = plan.answer {
        // Read the request head, then answer without the server.
        let mut buf = [0u8; 4096];
        let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = client.read(&mut buf);
        let reason = if code == 404 {
            "Not Found"
        } else {
            "Service Unavailable"
        };
        let _ = client.write_all(
            format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    // No Nagle delay on forwarded pieces (40 ms a request otherwise).
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Client to server: as it comes.
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = c_in.read(&mut buf) {
            if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    // Server to client: with the faults.
    let mut server = server;
    let mut buf = [0u8; 16 * 1024];
    let mut forwarded = 0u64;
    let started = Instant::now();
    loop {
        let mut n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(limit) = plan.reset_after {
            if forwarded + n as u64 >= limit {
                n = (limit - forwarded) as usize;
                let _ = client.write_all(&buf[..n]);
                sent.fetch_add(n as u64, Ordering::SeqCst);
                reset(&client);
                return;
            }
        }
        if let Some((at, pause)) = plan.stall {
            if forwarded + n as u64 >= at {
                let k = (at - forwarded) as usize;
                let _ = client.write_all(&buf[..k]);
                sent.fetch_add(k as u64, Ordering::SeqCst);
                std::thread::sleep(pause);
                reset(&client);
                return;
            }
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        forwarded += n as u64;
        sent.fetch_add(n as u64, Ordering::SeqCst);
        if let Some(rate) = plan.bytes_per_second {
            let due = Duration::from_secs_f64(forwarded as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Closes `s` with a TCP reset (SO_LINGER 0).
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a properly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}
