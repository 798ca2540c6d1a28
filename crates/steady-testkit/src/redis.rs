//! A real `redis-server` on a free loopback port, for tests of Redis-backed features.
//!
//! The server keeps nothing on disk (`--save ""`, no AOF), listens on 127.0.0.1 only,
//! and dies with its handle. [`RedisServer::kill`] and [`RedisServer::restart`] simulate
//! an outage and a recovery on the same port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at finding a free port; another process may grab the probed one first.
const START_ATTEMPTS: usize = 5;

/// A `redis-server` process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// The running process; `None` after [`RedisServer::kill`] or [`RedisServer::stop`].
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed or does not come up within 10 s.
    pub fn start() -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = crate::free_port();
            match spawn(port) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (also while it is down).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the process at once (SIGKILL), as a crash would; connections are reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server cleanly (`SHUTDOWN NOSAVE`), killing it if it does not exit
    /// within a second.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Redis answers nothing to a successful SHUTDOWN; it just closes the connection.
        let _ = command(self.addr(), b"SHUTDOWN NOSAVE\r\n");
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill) or
    /// [`stop`](Self::stop)), with an empty data set. Kills it first if it still runs.
    ///
    /// # Panics
    ///
    /// If the server does not come back within 10 s (for instance because another
    /// process took the port meanwhile).
    pub fn restart(&mut self) {
        self.kill();
        match spawn(self.port) {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("redis-server did not restart on port {}: {e}", self.port),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `redis-server` on `port` and waits for `PING`; the error says why it failed.
fn spawn(port: u16) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--protected-mode", "yes"])
        .args(["--loglevel", "warning"])
        .args(["--logfile", ""])
        // Nothing should be written, but if anything is, it goes to the temp dir.
        .arg("--dir")
        .arg(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!(
                    "redis-server not found: install Debian's redis-server package (.ci/run does)"
                );
            }
            panic!("cannot run redis-server: {e}");
        });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server exited ({status}): {}",
                output(&mut child)
            ));
        }
        if command(addr, b"PING\r\n").is_ok_and(|answer| answer.starts_with("+PONG")) {
            // Nobody reads the log from here on; a full pipe must not stall the server
            // (which ignores SIGPIPE once up, so closed pipes are harmless).
            drop(child.stdout.take());
            drop(child.stderr.take());
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}: {}",
                output(&mut child)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one inline command and returns the first bytes of the answer.
fn command(addr: SocketAddr, line: &[u8]) -> std::io::Result<String> {
    let timeout = Duration::from_millis(200);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(line)?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// What an exited server printed, for error messages.
fn output(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(out) = child.stdout.as_mut() {
        let _ = out.read_to_string(&mut text);
    }
    if let Some(err) = child.stderr.as_mut() {
        let _ = err.read_to_string(&mut text);
    }
    text.trim().to_string()
}
