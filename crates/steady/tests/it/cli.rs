//! The binary as a user runs it: `check`, `serve` with SIGTERM, and `demo`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_steady");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("steady-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Kills the child if a test fails before it exits.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    http_get_with(addr, path, "")
}

/// GET with extra header lines (each ending in `\r\n`).
fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: demo\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A backend answering `ok` to every request, after 700 ms for paths with `/slow`.
fn ok_backend() -> SocketAddr {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let mut path = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if path.is_empty() {
                        path = line.clone();
                    }
                    if line == "\r\n" {
                        if path.contains("/slow") {
                            std::thread::sleep(Duration::from_millis(700));
                        }
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                        path.clear();
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_accepts_a_good_file() {
    let path = write_config(
        "good.yaml",
        "listeners: [{name: web, bind: '127.0.0.1:8080'}]\nroutes: [{name: r, listener: web, upstream: app}]\nupstreams: [{name: app, endpoints: [{address: '127.0.0.1:9001'}]}]\n",
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_reports_every_problem_with_location_and_exits_1() {
    let path = write_config(
        "bad.yaml",
        "listeners:\n  - name: web\n    bind: 127.0.0.1:8080\nroutes:\n  - name: r\n    listener: web\n    match: {path_prefx: /v1}\n    upstream: nope\nupstreams:\n  - name: app\n    balance: round-robin\n    endpoints: [{address: '127.0.0.1:9001'}]\n",
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:7:"), "{err}");
    assert!(err.contains("path_prefix"), "suggestion missing: {err}");
    assert!(err.contains("nope"), "unknown upstream not reported: {err}");
}

#[test]
fn check_reports_a_missing_file() {
    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/steady.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_answers_and_drains_on_sigterm() {
    // A backend that answers slowly: the in-flight request must finish after SIGTERM.
    let backend_addr = ok_backend();
    let (port, admin) = (free_port(), free_port());
    let path = write_config(
        "serve.yaml",
        &format!(
            "runtime: {{workers: 1, drain_timeout: 5s}}\nadmin: {{bind: '127.0.0.1:{admin}'}}\nlisteners: [{{name: web, bind: '127.0.0.1:{port}'}}]\nroutes: [{{name: r, listener: web, upstream: app}}]\nupstreams: [{{name: app, endpoints: [{{address: '{backend_addr}'}}]}}]\n"
        ),
    );
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for_port(addr);
    wait_for_port(admin_addr);
    assert!(http_get(addr, "/").ends_with("ok"));
    assert!(http_get(admin_addr, "/readyz").contains("200 OK"));
    assert!(http_get(admin_addr, "/metrics").contains("steady_requests_total"));

    let slow = std::thread::spawn(move || http_get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(200));
    let kill = Command::new("kill")
        .args(["-TERM", &guard.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let answer = slow.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request lost: {answer:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "steady did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn drain_delay_fails_readyz_first_and_keeps_serving() {
    let backend_addr = ok_backend();
    let (port, admin) = (free_port(), free_port());
    let path = write_config(
        "drain-delay.yaml",
        &format!(
            "runtime: {{workers: 1, drain_delay: 1500ms, drain_timeout: 5s}}\nadmin: {{bind: '127.0.0.1:{admin}'}}\nlisteners: [{{name: web, bind: '127.0.0.1:{port}'}}]\nroutes: [{{name: r, listener: web, upstream: app}}]\nupstreams: [{{name: app, endpoints: [{{address: '{backend_addr}'}}]}}]\n"
        ),
    );
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for_port(addr);
    wait_for_port(admin_addr);
    assert!(http_get(admin_addr, "/readyz").contains("200 OK"));
    let kill = Command::new("kill")
        .args(["-TERM", &guard.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Not ready at once...
    let deadline = Instant::now() + Duration::from_secs(5);
    while !http_get(admin_addr, "/readyz").contains("503") {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...yet new connections are still accepted and served during the delay.
    assert!(http_get(addr, "/").ends_with("ok"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "steady did not exit after the delay"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_refuses_an_invalid_config() {
    let path = write_config("invalid.yaml", "listeners: 12\n");
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid.yaml:1:"));
}

#[test]
fn demo_balances_and_serves_admin() {
    let child = Command::new(BIN)
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let mut out = BufReader::new(guard.0.stdout.take().unwrap());
    let (mut gateway, mut admin) = (None, None);
    let mut line = String::new();
    while gateway.is_none() || admin.is_none() {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "demo exited early");
        let addr = || {
            line.split("http://")
                .nth(1)
                .unwrap()
                .trim()
                .trim_end_matches('/')
                .parse::<SocketAddr>()
                .unwrap()
        };
        if line.trim_start().starts_with("gateway") {
            gateway = Some(addr());
        } else if line.trim_start().starts_with("admin") {
            admin = Some(addr());
        }
    }
    let (gateway, admin) = (gateway.unwrap(), admin.unwrap());
    let mut names = std::collections::HashSet::new();
    for _ in 0..3 {
        let answer = http_get(gateway, "/hello");
        let name = answer
            .split("\"backend\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        names.insert(name);
    }
    assert_eq!(
        names.len(),
        3,
        "round robin over three demo backends: {names:?}"
    );
    let ups = http_get(admin, "/api/upstreams");
    assert_eq!(ups.matches("\"available\": true").count(), 3, "{ups}");
    assert!(http_get(admin, "/metrics").contains("steady_requests_total{"));
    let slos = http_get(admin, "/api/slos");
    assert!(slos.contains("\"name\": \"demo-availability\""), "{slos}");

    // Content negotiation: OpenMetrics for Prometheus, classic text for everyone else.
    let classic = http_get(admin, "/metrics");
    assert!(
        classic.contains("content-type: text/plain; version=0.0.4"),
        "{classic}"
    );
    assert!(classic.contains("# TYPE steady_requests_total counter"));
    assert!(!classic.contains("# EOF"));
    let om = http_get_with(
        admin,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    );
    assert!(
        om.contains("content-type: application/openmetrics-text"),
        "{om}"
    );
    assert!(om.contains("# TYPE steady_requests counter"));
    assert!(om.trim_end().ends_with("# EOF"));
}

/// A backend answering `text` to every request on keep-alive connections.
fn text_backend(text: &'static str) -> SocketAddr {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", text.len());
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(text.as_bytes());
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

/// A config with admin on `admin`, listener `web` on `port` and one upstream at `backend`.
fn reload_config(port: u16, admin: u16, backend: SocketAddr) -> String {
    format!(
        "runtime: {{workers: 1, drain_timeout: 5s}}\nadmin: {{bind: '127.0.0.1:{admin}'}}\nlisteners: [{{name: web, bind: '127.0.0.1:{port}'}}]\nroutes: [{{name: r, listener: web, upstream: app}}]\nupstreams: [{{name: app, endpoints: [{{address: '{backend}'}}]}}]\n"
    )
}

/// Replaces the file the way editors and `kubectl` do: a new file renamed over it.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `probe` until it returns true or 10 s pass.
fn eventually(what: &str, log: &std::path::Path, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened; steady said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Body of an answer read off a keep-alive connection (content-length framed).
fn keep_alive_get(s: &mut BufReader<TcpStream>, path: &str) -> String {
    write!(s.get_mut(), "GET {path} HTTP/1.1\r\nHost: demo\r\n\r\n").unwrap();
    let mut len = 0;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(s.read_line(&mut line).unwrap() > 0, "connection closed");
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

fn spawn_serve(path: &std::path::Path, log: &std::path::Path, extra: &[&str]) -> Guard {
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(path)
        .args(extra)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Guard(child)
}

#[test]
fn serve_reloads_a_changed_file_and_keeps_the_old_config_while_it_is_broken() {
    let (one, two) = (text_backend("one"), text_backend("two"));
    let (port, admin) = (free_port(), free_port());
    let path = write_config("watched.yaml", &reload_config(port, admin, one));
    let log = path.with_extension("log");
    let _guard = spawn_serve(&path, &log, &[]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for_port(addr);
    wait_for_port(admin_addr);
    let mut kept = BufReader::new(TcpStream::connect(addr).unwrap());
    kept.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(keep_alive_get(&mut kept, "/"), "one");

    // A broken file is refused and the old config keeps serving.
    replace_file(&path, "listeners: [{nmae: web}]\n");
    eventually("a refused reload", &log, || {
        http_get(admin_addr, "/metrics")
            .contains("steady_config_reloads_total{result=\"failure\"} 1")
    });
    assert!(http_get(addr, "/").ends_with("one"));
    assert!(http_get(admin_addr, "/metrics").contains("steady_config_last_reload_successful 0"));
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("watched.yaml:1:14"),
        "the problem is reported with its place:\n{said}"
    );

    // Fixed, pointing at the other backend: it applies, even while a neighbour in the
    // same directory (an access log, say) is written every 10 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let neighbour = {
        let (stop, file) = (stop.clone(), path.with_extension("neighbour"));
        std::thread::spawn(move || {
            for i in 0..1000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                std::fs::write(&file, format!("line {i}\n")).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    replace_file(&path, &reload_config(port, admin, two));
    eventually("the new routing", &log, || {
        http_get(addr, "/").ends_with("two")
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    neighbour.join().unwrap();
    assert!(http_get(admin_addr, "/metrics").contains("steady_config_last_reload_successful 1"));
    // The connection opened before both reloads still works, now routed anew.
    assert_eq!(keep_alive_get(&mut kept, "/"), "two");
}

#[test]
fn sighup_reloads_the_config_file() {
    let (one, two) = (text_backend("one"), text_backend("two"));
    let (port, admin) = (free_port(), free_port());
    let path = write_config("sighup.yaml", &reload_config(port, admin, one));
    let log = path.with_extension("log");
    let guard = spawn_serve(&path, &log, &["--no-watch"]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for_port(addr);
    wait_for_port(admin_addr);
    assert!(http_get(addr, "/").ends_with("one"));

    std::fs::write(&path, reload_config(port, admin, two)).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &guard.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("the new routing after SIGHUP", &log, || {
        http_get(addr, "/").ends_with("two")
    });
    let metrics = http_get(admin_addr, "/metrics");
    assert!(
        metrics.contains("steady_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
}

/// POSTs an empty body to `path` and returns the whole answer.
fn http_post(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn admin_post_reload_applies_or_explains() {
    let (one, two) = (text_backend("one"), text_backend("two"));
    let (port, admin) = (free_port(), free_port());
    let path = write_config("admin-reload.yaml", &reload_config(port, admin, one));
    let log = path.with_extension("log");
    let _guard = spawn_serve(&path, &log, &["--no-watch"]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for_port(addr);
    wait_for_port(admin_addr);

    std::fs::write(&path, "listeners: [{nmae: web}]\n").unwrap();
    let refused = http_post(admin_addr, "/reload");
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains("admin-reload.yaml:1:14"), "{refused}");
    assert!(http_get(addr, "/").ends_with("one"));

    std::fs::write(&path, reload_config(port, admin, two)).unwrap();
    let applied = http_post(admin_addr, "/reload");
    assert!(applied.starts_with("HTTP/1.1 200"), "{applied}");
    assert!(
        applied.contains("\"upstreams_changed\": [\n    \"app\"\n  ]"),
        "{applied}"
    );
    // The answer comes after the reload: the new routing is in force.
    assert!(http_get(addr, "/").ends_with("two"));
    assert!(http_get(admin_addr, "/reload").starts_with("HTTP/1.1 405"));
}
