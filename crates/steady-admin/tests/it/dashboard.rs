//! The dashboard in a real browser: Debian's headless Chromium loads `/dashboard` from an
//! in-process gateway under bounded load, twice, and the page shows live numbers that
//! change, the endpoint table and the recent events, without one console message (the
//! page logs nothing, so any message is an error: an exception, a rejected promise).
//! A screenshot is left under `target/dashboard/` for people and CI artifacts.
//!
//! Chromium runs with `--dump-dom` and `--virtual-time-budget`: it loads the page, lets
//! its timers run (polls go to the real admin listener) and prints the DOM; with
//! `--enable-logging=stderr` console messages appear on stderr as `:CONSOLE`.
//! Set `STEADY_CHROMIUM` to use another binary than `/usr/bin/chromium`.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use steady_testkit::Backend;

/// What one headless Chromium run printed.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs Chromium headless on `url` with `args`, killing it after a generous deadline.
fn chromium(url: &str, profile: &Path, args: &[&str]) -> Run {
    let binary = std::env::var("STEADY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut child = Command::new(&binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            // Nothing but loopback: every other name fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{binary} not found ({e}): install Debian's chromium package (.ci/run does)")
        });
    // Read both pipes on threads so a chatty Chromium never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run {
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Loads `url`, lets the page poll for a few (virtual) seconds and returns its DOM.
/// Fails on any console message.
fn dump_dom(url: &str, profile: &Path) -> String {
    let run = chromium(url, profile, &["--virtual-time-budget=4000", "--dump-dom"]);
    assert_no_console_messages(&run.stderr);
    assert!(
        run.stdout.contains("id=\"routes-body\""),
        "no dashboard in the DOM:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run.stdout
}

fn assert_no_console_messages(stderr: &str) {
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "the page logged to the console (an uncaught error?):\n{}",
        console.join("\n")
    );
}

/// The text of the element with `id` in a dumped DOM (its first text run).
fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(rest[start..end].trim())
}

/// A number shown by the element with `id`.
fn number_of(dom: &str, id: &str) -> f64 {
    let text = text_of(dom, id).unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("#{id} shows `{text}`, not a number"))
}

/// GETs `path` over HTTP/1.1 and returns the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    common::get(addr, path).await.1
}

/// Where test output that should outlive the test goes: the workspace's target dir.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A directory removed at drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_numbers_in_headless_chromium() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app}}]
upstreams:
  - name: app
    endpoints: [{{address: {}}}]
    health:
      active: {{http: {{path: /}}, interval: 200ms, timeout: 150ms}}
slos: [{{name: api-availability, routes: [api], objective: 99.9%}}]
slo_state: {{path: {}}}
",
        backend.addr(),
        std::env::temp_dir()
            .join(format!("steady-dashboard-slo-{}.json", std::process::id()))
            .display()
    );
    let config = steady_config::parse(&yaml, "<test>").unwrap();
    let steady = common::start_yaml(&yaml).await;
    let (gateway, web, admin_addr) = (steady.gateway.clone(), steady.web, steady.admin);
    // A reload, so the events panel has something to list.
    gateway.reload(&config).await.unwrap();

    // Bounded background load: a request every few milliseconds until the test ends,
    // at most 50 000 requests or two minutes.
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (done, sent) = (done.clone(), sent.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            for _ in 0..50_000 {
                if done.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                http_get(web, "/").await;
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    while sent.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let profile = std::env::temp_dir().join(format!("steady-chromium-{}", std::process::id()));
    let _profile = TempDir(profile.clone());
    let url = format!("http://{admin_addr}/dashboard");
    let (first, second, shot) = tokio::task::spawn_blocking(move || {
        let first = dump_dom(&url, &profile);
        std::thread::sleep(Duration::from_millis(1500));
        let second = dump_dom(&url, &profile);
        let dir = target_dir().join("dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap_or(dir);
        let shot = dir.join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        let run = chromium(
            &url,
            &profile,
            &[
                "--virtual-time-budget=4000",
                "--window-size=1280,900",
                "--hide-scrollbars",
                &format!("--screenshot={}", shot.display()),
            ],
        );
        assert_no_console_messages(&run.stderr);
        (first, second, shot)
    })
    .await
    .unwrap();
    done.store(true, Ordering::Relaxed);
    load.await.unwrap();

    // Live numbers: the route's request count grew between the two loads, and the
    // page polled more than once, so it shows a rate.
    let (before, after) = (
        number_of(&first, "route-api-total"),
        number_of(&second, "route-api-total"),
    );
    assert!(before >= 20.0, "{before}");
    assert!(
        after > before,
        "requests did not grow: {before} then {after}"
    );
    assert!(number_of(&second, "poll-count") >= 2.0);
    let rate = number_of(&second, "route-api-rps");
    assert!(rate.is_finite() && rate >= 0.0, "{rate}");
    assert_eq!(text_of(&second, "status"), Some("live"));

    // The endpoint table, from /api/upstreams.
    let row = format!("ep-app-{}", backend.addr().to_string().replace(':', "_"));
    assert!(second.contains(&format!("id=\"{row}\"")), "{second}");
    number_of(&second, &format!("{row}-inflight"));
    assert!(second.contains(&backend.addr().to_string()));

    // Recent events, from /api/events.
    assert!(second.contains("kind-reload"), "{second}");
    assert!(second.contains("config reloaded"), "{second}");

    // The SLO table, from /api/slos: no errors, so the whole budget is left.
    assert!(second.contains("id=\"slo-api-availability\""), "{second}");
    assert_eq!(
        text_of(&second, "slo-api-availability-budget"),
        Some("100.0%")
    );
    assert_eq!(
        text_of(&second, "slo-api-availability-achieved"),
        Some("100.000%")
    );

    // The percentile plot is there (it says "no data" until the route has latency).
    assert!(second.contains("id=\"percentile-chart\""));

    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("dashboard screenshot: {}", shot.display());
    drop(steady);
}
