//! Chaos benchmark: the real `steady` binary in front of testkit backends that die, come
//! back, fail, stall or all go away, under a bounded closed-loop load; prints figures.
//!
//! ```text
//! chaos        # run every scenario and print the table (bench/chaos.sh)
//! ```
//!
//! Scenarios (the issue's numbering): 1 kill one of three backends hard mid-run;
//! 2 restart it on the same port; 3 a backend answering 500 and one that stalls, then a
//! third failing while `max_ejection_percent` is reached; 4 every endpoint down, with and
//! without panic routing, then one back. Backends run in this process; steady runs as a
//! child process on loopback ports and is killed when a scenario ends, whatever happens.
//! Settings come from the environment: `STEADY_BIN` (target/release/steady),
//! `WORKDIR` (a temp dir), `LOAD_WORKERS` (4), `STEADY_WORKERS` (2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use steady_testkit::harness::{self, metric_sum, Load, SteadyProcess};
use steady_testkit::{Backend, Fault};

/// Common settings of every scenario.
struct Bench {
    bin: PathBuf,
    dir: PathBuf,
    load_workers: usize,
    steady_workers: usize,
    /// Rows of the result table: scenario, figure, value.
    rows: Vec<(String, String, String)>,
}

impl Bench {
    fn row(&mut self, scenario: &str, figure: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        eprintln!("[chaos] {scenario}: {figure}: {value}");
        self.rows
            .push((scenario.to_string(), figure.to_string(), value));
    }

    async fn steady(&self, name: &str, yaml: &str) -> Result<SteadyProcess, String> {
        let yaml = yaml.replace("{workers}", &self.steady_workers.to_string());
        SteadyProcess::start(&self.bin, &self.dir, name, &yaml).await
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async {
        tokio::select! {
            code = run() => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("[chaos] interrupted; stopping steady and the backends");
                130
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

async fn run() -> i32 {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            .clamp(1, 64)
    };
    let mut bench = Bench {
        bin: std::env::var("STEADY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("target/release/steady")),
        dir: std::env::var("WORKDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                std::env::temp_dir().join(format!("steady-chaos.{}", std::process::id()))
            }),
        load_workers: env("LOAD_WORKERS", 4),
        steady_workers: env("STEADY_WORKERS", 2),
        rows: Vec::new(),
    };
    if !bench.bin.exists() {
        eprintln!("[chaos] {} not found (set STEADY_BIN)", bench.bin.display());
        return 2;
    }
    let started = Instant::now();
    let mut code = 0;
    for (name, result) in [
        ("kill and restart", kill_and_restart(&mut bench).await),
        ("500 and stall", eject(&mut bench).await),
        (
            "all down, panic_threshold 0",
            all_down(&mut bench, ", panic_threshold: 0").await,
        ),
        (
            "all down, default panic_threshold",
            all_down(&mut bench, "").await,
        ),
    ] {
        if let Err(e) = result {
            eprintln!("[chaos] {name}: {e}");
            bench.row(name, "error", e);
            code = 1;
        }
    }
    println!("| scenario | figure | value |");
    println!("|---|---|---|");
    for (scenario, figure, value) in &bench.rows {
        println!("| {scenario} | {figure} | {value} |");
    }
    println!();
    println!(
        "Load: {} closed-loop workers (one request at a time each); steady `runtime.workers: {}`; \
         whole run {:.1} s.",
        bench.load_workers,
        bench.steady_workers,
        started.elapsed().as_secs_f64()
    );
    code
}

fn endpoints(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("{{address: '{a}'}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The config of scenarios 1, 2 and 4 (the chaos tests use the same).
fn resilient_config(addrs: &[SocketAddr], passive_extra: &str) -> String {
    format!(
        "runtime: {{workers: {{workers}}}}
admin: {{bind: '{{admin}}'}}
listeners: [{{name: web, bind: '{{listen}}'}}]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: 30s
    retries: {{attempts: 3, on: [connect-failure, reset, 502, 503], backoff: 10ms}}
upstreams:
  - name: app
    balance: round-robin
    connect_timeout: 1s
    health:
      active:
        http: {{path: /healthz}}
        interval: 300ms
        timeout: 250ms
        healthy_threshold: 2
        unhealthy_threshold: 2
      passive: {{consecutive_failures: 3, max_ejection_percent: 50{passive_extra}}}
    endpoints: [{}]
",
        endpoints(addrs)
    )
}

async fn endpoint_state(steady: &SteadyProcess, addr: SocketAddr) -> serde_json::Value {
    let ups = steady.upstreams().await;
    ups["upstreams"][0]["endpoints"]
        .as_array()
        .and_then(|eps| {
            eps.iter()
                .find(|e| e["address"] == serde_json::json!(addr.to_string()))
                .cloned()
        })
        .unwrap_or_default()
}

/// Failed attempts that steady retried elsewhere.
fn retried(metrics: &str) -> f64 {
    ["connect-failure", "reset", "status", "timeout"]
        .iter()
        .map(|r| {
            metric_sum(
                metrics,
                "steady_retries_total",
                &[&format!("reason=\"{r}\"")],
            )
        })
        .sum()
}

/// The non-zero `steady_retries_total` series, by reason.
fn retry_reasons(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("steady_retries_total{"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
            let value = l.rsplit_once(' ')?.1;
            (value != "0").then(|| format!("{reason} {value}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Failed requests grouped by what the client saw, most common first.
fn failure_kinds(samples: &[harness::Sample]) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for s in samples.iter().filter(|s| !s.ok()) {
        let kind = match &s.result {
            Ok(r) => format!("{} {}", r.status, r.error.as_deref().unwrap_or("")),
            Err(e) => e.chars().take(60).collect(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    kinds
        .iter()
        .map(|(k, n)| format!("{n} × {}", k.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Scenarios 1 and 2.
async fn kill_and_restart(bench: &mut Bench) -> Result<(), String> {
    const S: &str = "1-2 kill one of 3, restart";
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let mut c = Backend::start("c").await;
    for backend in [&a, &b, &c] {
        backend.set_fault(Fault::Delay(Duration::from_millis(2)));
    }
    let c_addr = c.addr();
    let steady = bench
        .steady("kill", &resilient_config(&[a.addr(), b.addr(), c_addr], ""))
        .await?;
    let load = Load::start(
        steady.addr,
        "/work",
        bench.load_workers,
        500_000,
        Duration::from_secs(30),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let before = retried(&steady.metrics().await);
    c.kill().await;
    let killed = load.elapsed();
    let mut out_of_rotation = None;
    let (mut last, mut last_change) = (before, killed);
    // Until the retry counter has been still for 2 s (at most 15 s).
    while load.elapsed() < killed + Duration::from_secs(15) {
        let now = retried(&steady.metrics().await);
        if now != last {
            (last, last_change) = (now, load.elapsed());
        }
        if out_of_rotation.is_none() && endpoint_state(&steady, c_addr).await["available"] == false
        {
            out_of_rotation = Some(load.elapsed());
        }
        if out_of_rotation.is_some() && load.elapsed() > last_change + Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = Backend::start_on("c", c_addr)
        .await
        .map_err(|e| format!("rebind c: {e}"))?;
    let restarted = load.elapsed();
    let mut back = None;
    while load.elapsed() < restarted + Duration::from_secs(10) {
        back = load
            .samples()
            .iter()
            .filter(|s| s.sent > restarted && s.backend() == Some("c"))
            .map(|s| s.done)
            .min();
        if back.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.stop().await;
    let retries = retry_reasons(&steady.metrics().await);
    let failed = samples.iter().filter(|s| !s.ok()).count();
    let logs = steady.logs();

    bench.row(S, "requests sent", samples.len());
    bench.row(S, "failed client requests", failed);
    if failed > 0 {
        bench.row(S, "failures", failure_kinds(&samples));
    }
    bench.row(
        S,
        "attempts still sent to the dead endpoint (retried elsewhere)",
        last - before,
    );
    bench.row(S, "steady_retries_total by reason", retries);
    bench.row(
        S,
        "kill → out of rotation (`available: false`)",
        out_of_rotation.map_or("never".into(), |t| ms(t - killed)),
    );
    bench.row(
        S,
        "kill → last attempt to the dead endpoint",
        ms(last_change - killed),
    );
    bench.row(
        S,
        "what took it out",
        if logs.contains("endpoint ejected") {
            "passive ejection (log `endpoint ejected`)"
        } else {
            "active health check"
        },
    );
    bench.row(
        S,
        "restart → restarted endpoint serves traffic",
        back.map_or("never".into(), |t| ms(t - restarted)),
    );
    bench.row(
        S,
        "requests served by the restarted endpoint",
        samples
            .iter()
            .filter(|s| s.sent > restarted && s.backend() == Some("c"))
            .count(),
    );
    drop(c);
    Ok(())
}

/// Scenario 3.
async fn eject(bench: &mut Bench) -> Result<(), String> {
    const S: &str = "3 a 500-er and a staller";
    let good = Backend::start("good").await;
    let flaky = Backend::start("flaky").await;
    let erring = Backend::start("erring").await;
    erring.set_fault(Fault::Status(500));
    let staller = Backend::start("staller").await;
    staller.set_fault(Fault::Stall);
    let yaml = format!(
        "runtime: {{workers: {{workers}}}}
admin: {{bind: '{{admin}}'}}
listeners: [{{name: web, bind: '{{listen}}'}}]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: 30s
    retries: {{attempts: 3, on: [connect-failure, reset, 5xx, timeout], per_try_timeout: 500ms, backoff: 10ms}}
upstreams:
  - name: app
    balance: round-robin
    health:
      passive: {{consecutive_failures: 3, base_ejection: 30s, max_ejection_percent: 50}}
    endpoints: [{}]
",
        endpoints(&[good.addr(), flaky.addr(), erring.addr(), staller.addr()])
    );
    let steady = bench.steady("eject", &yaml).await?;
    let load = Load::start(
        steady.addr,
        "/work",
        bench.load_workers,
        500_000,
        Duration::from_secs(30),
    );
    let mut ejected_at = [None, None];
    while load.elapsed() < Duration::from_secs(15) && ejected_at.iter().any(Option::is_none) {
        for (i, addr) in [erring.addr(), staller.addr()].into_iter().enumerate() {
            if ejected_at[i].is_none() && endpoint_state(&steady, addr).await["ejected"] == true {
                ejected_at[i] = Some(load.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A third endpoint fails; 50 % of 4 are already out.
    flaky.set_fault(Fault::Status(500));
    let third = load.elapsed();
    let mut max_ejected = 0.0f64;
    while load.elapsed() < third + Duration::from_secs(3) {
        max_ejected = max_ejected.max(metric_sum(
            &steady.metrics().await,
            "steady_endpoint_ejected",
            &[],
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let samples = load.stop().await;
    let retries = retry_reasons(&steady.metrics().await);
    let logs = steady.logs();
    let failed = samples.iter().filter(|s| !s.ok()).count();
    let after_third = samples.iter().filter(|s| s.sent > third);
    let good_served = after_third
        .clone()
        .filter(|s| s.backend() == Some("good"))
        .count();

    bench.row(S, "requests sent", samples.len());
    bench.row(S, "failed client requests", failed);
    if failed > 0 {
        bench.row(S, "failures", failure_kinds(&samples));
    }
    bench.row(S, "steady_retries_total by reason", retries);
    for (who, at) in ["500-er", "staller"].iter().zip(ejected_at) {
        bench.row(
            S,
            &format!("start → {who} ejected"),
            at.map_or("never".into(), ms),
        );
    }
    bench.row(
        S,
        "`endpoint ejected` log lines",
        logs.matches("endpoint ejected").count(),
    );
    bench.row(
        S,
        "max ejected after a third endpoint failed (configured `max_ejection_percent`)",
        format!(
            "{max_ejected} of 4 = {:.0} % (50 %)",
            max_ejected * 100.0 / 4.0
        ),
    );
    bench.row(
        S,
        "`ejection skipped: max_ejection_percent reached` log lines",
        logs.matches("ejection skipped").count(),
    );
    bench.row(
        S,
        "after the third failed: requests answered by the last good endpoint",
        format!("{good_served} of {}", after_third.count()),
    );
    Ok(())
}

/// Scenario 4.
async fn all_down(bench: &mut Bench, passive_extra: &str) -> Result<(), String> {
    let s = if passive_extra.is_empty() {
        "4 all down, panic_threshold 50 (default)".to_string()
    } else {
        "4 all down, panic_threshold 0".to_string()
    };
    let mut a = Backend::start("a").await;
    let mut b = Backend::start("b").await;
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let steady = bench
        .steady(
            "alldown",
            &resilient_config(&[a_addr, b_addr], passive_extra),
        )
        .await?;
    let client = harness::http_client();
    let get = || harness::get(&client, steady.addr, "/", Duration::from_secs(10));
    a.kill().await;
    b.kill().await;
    let killed = Instant::now();
    loop {
        if endpoint_state(&steady, a_addr).await["available"] == false
            && endpoint_state(&steady, b_addr).await["available"] == false
        {
            break;
        }
        if killed.elapsed() > Duration::from_secs(15) {
            return Err("endpoints never went out".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = Vec::new();
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let sent = Instant::now();
        let answer = match get().await {
            Ok(r) => format!("{} {}", r.status, r.body.trim()),
            Err(e) => format!("no answer: {e}"),
        };
        latencies.push(sent.elapsed());
        *answers.entry(answer).or_insert(0) += 1;
    }
    latencies.sort_unstable();
    let b = Backend::start_on("b", b_addr)
        .await
        .map_err(|e| format!("rebind b: {e}"))?;
    let restarted = Instant::now();
    let mut recovered = None;
    while restarted.elapsed() < Duration::from_secs(10) {
        if get().await.is_ok_and(|r| r.status == 200) {
            recovered = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (answer, n) in &answers {
        bench.row(
            &s,
            "answers while all down (of 200)",
            format!("{n} × `{answer}`"),
        );
    }
    bench.row(
        &s,
        "latency while all down: p50 / p99 / max",
        format!(
            "{} / {} / {}",
            ms_fine(latencies[latencies.len() / 2]),
            ms_fine(latencies[latencies.len() * 99 / 100]),
            ms_fine(latencies[latencies.len() - 1])
        ),
    );
    bench.row(
        &s,
        "one endpoint back → first 200",
        recovered.map_or("never".into(), ms),
    );
    drop(b);
    Ok(())
}

fn ms_fine(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
