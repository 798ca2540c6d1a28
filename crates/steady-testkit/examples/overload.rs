//! Overload benchmark: steady in front of a fixed-capacity backend, loaded open-loop at a
//! multiple of that capacity, with and without adaptive concurrency.
//!
//! ```text
//! overload                              # orchestrate all runs, print the tables (bench/overload.sh)
//! overload backend CAPACITY SERVICE_MS  # just the backend, until stdin closes or SIGTERM
//! ```
//!
//! The orchestrator starts a [`CapacityBackend`] (in a child process, so its sockets do
//! not count against this process's open-file limit), writes steady configs into a temp
//! dir, runs `steady serve` for each run and sends it requests on a fixed schedule
//! (open loop: request `i` is due at `i / rate` whatever happened to the earlier ones).
//! Latency is counted from the moment a request was due, so a generator that falls
//! behind charges the wait to the latency instead of hiding it.
//!
//! Everything goes to 127.0.0.1, every run is bounded in requests and time, and every
//! process it starts is stopped before it exits. Settings come from the environment;
//! see `bench/README.md` ("Overload").

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use steady_testkit::{free_port, CapacityBackend};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

const PRIORITY_HEADER: &str = "x-steady-priority";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workers = env_parse("GEN_WORKERS", 1usize).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match args.first().map(String::as_str) {
        Some("backend") => runtime.block_on(backend_main(&args[1..])),
        None | Some("run") => runtime.block_on(async {
            // Returning drops the running steady and backend handles, which stop them.
            tokio::select! {
                code = orchestrate() => code,
                _ = interrupted() => {
                    say("interrupted; stopping steady and the backend");
                    130
                }
            }
        }),
        Some(other) => {
            eprintln!(
                "usage: overload [run] | overload backend CAPACITY SERVICE_MS (got `{other}`)"
            );
            2
        }
    };
    // Connection tasks of the load client may still be parked; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------
// settings

/// What the orchestrator runs, read from the environment.
#[derive(Debug, Clone)]
struct Settings {
    /// Backend workers.
    capacity: usize,
    /// Time each request holds a backend worker.
    service: Duration,
    /// Offered load of the overload runs, as a multiple of capacity.
    multiplier: f64,
    /// Length of each overload run's schedule.
    duration: Duration,
    /// Offered load of the unloaded baseline, in percent of capacity.
    baseline_pct: f64,
    /// Length of the baseline's schedule.
    baseline_duration: Duration,
    /// steady's route timeout (504 after it).
    route_timeout: Duration,
    /// The load generator gives up on a request after this long.
    client_timeout: Duration,
    /// Percent of requests sent as `critical` in the priority runs; the rest are `sheddable`.
    critical_pct: u32,
    /// YAML flow mapping for the upstream's `concurrency:` block.
    concurrency: String,
    /// Which runs, in order.
    runs: Vec<RunKind>,
    /// The steady binary.
    steady_bin: PathBuf,
    /// CPU list for steady and the backend (`taskset -c`); empty: no pinning.
    server_cpu: String,
    /// Pause between runs, so the previous run's sockets close.
    settle: Duration,
    /// Normal traffic (at the baseline rate) before a spike, not counted: the spike hits
    /// a gateway that was already serving, as it would in production.
    warmup: Duration,
    /// Width of the rows of the per-run detail tables.
    detail_bin: Duration,
    /// Directory for configs and logs.
    workdir: PathBuf,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let capacity = env_parse("CAPACITY", 10usize);
        if capacity == 0 {
            return Err("CAPACITY must be at least 1".into());
        }
        let service = env_duration("SERVICE_MS", "20ms")?;
        let route_timeout = env_duration("TIMEOUT", "1s")?;
        let client_timeout = env_duration(
            "CLIENT_TIMEOUT",
            &format!("{}ms", route_timeout.as_millis() + 1000),
        )?;
        let runs = std::env::var("RUNS")
            .unwrap_or_else(|_| "baseline,none,adaptive,priority".into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| RunKind::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let steady_bin = std::env::var("STEADY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("target/release/steady"));
        let workdir = match std::env::var("WORKDIR") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) => std::env::temp_dir().join(format!("steady-overload.{}", std::process::id())),
        };
        let settings = Settings {
            capacity,
            service,
            multiplier: env_parse("MULTIPLIER", 10.0f64),
            duration: env_duration("DURATION", "10s")?,
            baseline_pct: env_parse("BASELINE_PCT", 30.0f64),
            baseline_duration: env_duration("BASELINE_DURATION", "5s")?,
            route_timeout,
            client_timeout,
            critical_pct: env_parse("CRITICAL_PCT", 5u32).min(100),
            concurrency: std::env::var("CONCURRENCY").unwrap_or_else(|_| "{}".into()),
            runs,
            steady_bin,
            server_cpu: std::env::var("SERVER_CPU").unwrap_or_default(),
            settle: env_duration("SETTLE", "1s")?,
            warmup: env_duration("WARMUP", "2s")?,
            detail_bin: env_duration("DETAIL_BIN", "1s")?.max(Duration::from_millis(10)),
            workdir,
        };
        // Bounds, so a typo cannot start an unbounded or enormous run.
        if settings.duration > Duration::from_secs(120)
            || settings.baseline_duration > Duration::from_secs(120)
            || settings.warmup > Duration::from_secs(120)
        {
            return Err("DURATION, BASELINE_DURATION and WARMUP are capped at 120s".into());
        }
        if settings.offered_rate() > 50_000.0 {
            return Err(format!(
                "offered rate {:.0}/s is over the 50,000/s cap",
                settings.offered_rate()
            ));
        }
        if settings.service.is_zero() {
            return Err("SERVICE_MS must be more than 0".into());
        }
        Ok(settings)
    }

    /// Requests per second the backend can serve.
    fn capacity_rate(&self) -> f64 {
        self.capacity as f64 / self.service.as_secs_f64()
    }

    fn offered_rate(&self) -> f64 {
        self.capacity_rate() * self.multiplier
    }
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("[overload] ignoring {name}={v}: not a number");
            default
        }),
        _ => default,
    }
}

/// Reads a duration like `10s`, `500ms`, `1.5s` or a bare number (seconds, except for
/// `SERVICE_MS`, where a bare number is milliseconds).
fn env_duration(name: &str, default: &str) -> Result<Duration, String> {
    let raw = std::env::var(name).unwrap_or_else(|_| default.to_string());
    let raw = raw.trim();
    let bare_unit = if name.ends_with("_MS") { 0.001 } else { 1.0 };
    let (number, scale) = if let Some(n) = raw.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = raw.strip_suffix('s') {
        (n, 1.0)
    } else {
        (raw, bare_unit)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("{name}={raw}: expected a duration like 10s or 500ms"))
}

// ---------------------------------------------------------------------------------------
// runs

/// One kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunKind {
    /// Unloaded, through steady without a limit: the reference p99.
    Baseline,
    /// Overload through steady without a limit.
    NoProtection,
    /// Overload through steady with adaptive concurrency; every request `normal`.
    Adaptive,
    /// Overload with adaptive concurrency and a critical/sheddable mix.
    Priority,
}

impl RunKind {
    fn parse(s: &str) -> Result<RunKind, String> {
        match s {
            "baseline" => Ok(RunKind::Baseline),
            "none" | "no-protection" => Ok(RunKind::NoProtection),
            "adaptive" => Ok(RunKind::Adaptive),
            "priority" | "priorities" => Ok(RunKind::Priority),
            other => Err(format!(
                "unknown run `{other}` in RUNS (use baseline,none,adaptive,priority)"
            )),
        }
    }

    fn label(self) -> &'static str {
        match self {
            RunKind::Baseline => "unloaded baseline",
            RunKind::NoProtection => "no protection",
            RunKind::Adaptive => "adaptive concurrency",
            RunKind::Priority => "adaptive + priorities",
        }
    }

    fn limited(self) -> bool {
        matches!(self, RunKind::Adaptive | RunKind::Priority)
    }

    /// Whether requests carry a critical/sheddable mix. The no-protection run sends the
    /// same mix as the priority run (steady ignores it there), so the classes compare.
    fn mixed(self) -> bool {
        matches!(self, RunKind::NoProtection | RunKind::Priority)
    }
}

/// Priority a request is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// No priority header.
    Plain,
    /// `x-steady-priority: critical`.
    Critical,
    /// `x-steady-priority: sheddable`.
    Sheddable,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Plain => "normal",
            Class::Critical => "critical",
            Class::Sheddable => "sheddable",
        }
    }

    /// Spreads `pct` percent of critical requests evenly over the sequence.
    fn of(i: u64, mixed: bool, pct: u32) -> Class {
        if !mixed {
            Class::Plain
        } else if (i * u64::from(pct)) % 100 < u64::from(pct) {
            Class::Critical
        } else {
            Class::Sheddable
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// A response with this status and `x-steady-error` (if any), body read in full.
    Status(u16, Option<String>),
    /// No full response within the client timeout.
    Timeout,
    /// Connect or protocol failure.
    Error(String),
}

/// One request's record.
#[derive(Debug, Clone)]
struct Sample {
    /// When it was due, from the start of the schedule.
    due: Duration,
    /// How late the generator actually started it.
    lag: Duration,
    /// From due to the last body byte (or to the failure).
    latency: Duration,
    class: Class,
    outcome: Outcome,
}

/// Everything measured in one run.
#[derive(Debug, Default)]
struct RunReport {
    kind: Option<RunKind>,
    /// Why the run did not happen.
    skipped: Option<String>,
    rate: f64,
    duration: Duration,
    samples: Vec<Sample>,
    /// Requests still unanswered when the run's deadline passed (counted as timeouts).
    abandoned: usize,
    /// Backend `served` during the run.
    backend_served: u64,
    /// Highest concurrency the backend saw (over the whole session).
    backend_max_concurrent: u64,
    /// Longest backend queue seen during the run's session.
    backend_max_waiting: u64,
    /// steady's admission metrics, sampled once a second: (second, line -> value).
    metrics: Vec<(u64, BTreeMap<String, f64>)>,
    /// How busy each CPU was while the load ran.
    cpu: Option<Vec<CpuBusy>>,
    /// CPU seconds used while the load ran by the generator, steady and the backend.
    process_cpu: [f64; 3],
}

/// Counts of one slice of samples.
#[derive(Debug, Default, Clone)]
struct Tally {
    sent: usize,
    ok: usize,
    shed: usize,
    gateway_timeout: usize,
    other_status: usize,
    timeouts: usize,
    errors: usize,
    /// Latencies of the 200s, sorted.
    ok_latency: Vec<Duration>,
}

impl Tally {
    fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Tally {
        let mut t = Tally::default();
        for s in samples {
            t.sent += 1;
            match &s.outcome {
                Outcome::Status(200, _) => {
                    t.ok += 1;
                    t.ok_latency.push(s.latency);
                }
                Outcome::Status(503, _) => t.shed += 1,
                Outcome::Status(504, _) => t.gateway_timeout += 1,
                Outcome::Status(_, _) => t.other_status += 1,
                Outcome::Timeout => t.timeouts += 1,
                Outcome::Error(_) => t.errors += 1,
            }
        }
        t.ok_latency.sort_unstable();
        t
    }

    fn ok_quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.ok_latency, q)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

// ---------------------------------------------------------------------------------------
// orchestration

async fn orchestrate() -> i32 {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[overload] {e}");
            return 2;
        }
    };
    if !settings.steady_bin.exists() {
        eprintln!(
            "[overload] steady binary {} not found (build it or set STEADY_BIN)",
            settings.steady_bin.display()
        );
        return 2;
    }
    if let Err(e) = std::fs::create_dir_all(&settings.workdir) {
        eprintln!(
            "[overload] cannot create {}: {e}",
            settings.workdir.display()
        );
        return 2;
    }
    let client = load_client(settings.client_timeout);

    say(&format!(
        "capacity {} workers x {:?} = {:.0} req/s; offered {:.0} req/s; workdir {}",
        settings.capacity,
        settings.service,
        settings.capacity_rate(),
        settings.offered_rate(),
        settings.workdir.display()
    ));
    let idle_before = machine_busy(Duration::from_secs(1)).await;
    if let Some(busy) = &idle_before {
        if busy.iter().any(|c| c.busy > 10.0) {
            say(&format!(
                "WARNING: machine not idle before the runs: {}",
                fmt_busy(busy)
            ));
        }
    }

    let started = Instant::now();
    let mut reports = Vec::new();
    for (n, kind) in settings.runs.iter().copied().enumerate() {
        if n > 0 {
            tokio::time::sleep(settings.settle).await;
        }
        let report = run_one(&settings, &client, kind).await;
        if let Some(why) = &report.skipped {
            say(&format!("{}: skipped ({why})", kind.label()));
        } else {
            let t = Tally::of(report.samples.iter());
            say(&format!(
                "{}: {} sent, {} ok, {} shed, {} 504, {} timeouts/errors, p99 {}",
                kind.label(),
                t.sent,
                t.ok,
                t.shed,
                t.gateway_timeout,
                t.timeouts + t.errors + t.other_status,
                fmt_ms(t.ok_quantile(0.99))
            ));
        }
        reports.push(report);
    }
    print_report(
        &settings,
        &reports,
        started.elapsed(),
        idle_before.as_deref(),
    );
    let _ = std::fs::remove_dir_all(&settings.workdir).map_err(|_| ());
    0
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn say(msg: &str) {
    eprintln!("[overload] {msg}");
}

fn load_client(timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

async fn run_one(settings: &Settings, client: &HttpClient, kind: RunKind) -> RunReport {
    let mut report = RunReport {
        kind: Some(kind),
        ..RunReport::default()
    };
    let (rate, duration) = match kind {
        RunKind::Baseline => (
            settings.capacity_rate() * settings.baseline_pct / 100.0,
            settings.baseline_duration,
        ),
        _ => (settings.offered_rate(), settings.duration),
    };
    report.rate = rate;
    report.duration = duration;

    let port = free_port();
    let mut admin = free_port();
    while admin == port {
        admin = free_port();
    }
    let name = match kind {
        RunKind::Baseline => "baseline",
        RunKind::NoProtection => "none",
        RunKind::Adaptive => "adaptive",
        RunKind::Priority => "priority",
    };
    // A fresh backend per run: no queue or counters left over from the previous one.
    let mut backend = match BackendProcess::start(settings) {
        Ok(b) => b,
        Err(e) => {
            report.skipped = Some(format!("backend: {e}"));
            return report;
        }
    };
    let config = steady_config(settings, kind, port, admin, backend.addr);
    let config_path = settings.workdir.join(format!("steady-{name}.yaml"));
    if let Err(e) = std::fs::write(&config_path, config) {
        report.skipped = Some(format!("cannot write config: {e}"));
        return report;
    }
    if let Err(e) = steady_check(&settings.steady_bin, &config_path) {
        report.skipped = Some(format!("`steady check` rejected the config: {e}"));
        return report;
    }
    let log_path = settings.workdir.join(format!("steady-{name}.log"));
    let mut steady = match SteadyProcess::start(settings, &config_path, &log_path, admin) {
        Ok(s) => s,
        Err(e) => {
            report.skipped = Some(e);
            return report;
        }
    };
    if let Err(e) = steady.wait_ready(client).await {
        steady.stop();
        report.skipped = Some(format!("{e}; log tail: {}", log_tail(&log_path)));
        return report;
    }

    let target: http::Uri = format!("http://127.0.0.1:{port}/")
        .parse()
        .expect("valid uri");
    if kind != RunKind::Baseline && !settings.warmup.is_zero() {
        let warm_rate = settings.capacity_rate() * settings.baseline_pct / 100.0;
        let _ = generate(
            client,
            target.clone(),
            warm_rate,
            settings.warmup,
            settings.client_timeout,
            false,
            0,
        )
        .await;
    }
    let before = backend_stats(client, backend.addr).await;
    let metrics_uri: http::Uri = format!("http://127.0.0.1:{admin}/metrics")
        .parse()
        .expect("valid uri");

    // Sample steady's admission metrics once a second while the load runs.
    let sampler = {
        let client = client.clone();
        let deadline = duration + Duration::from_millis(500);
        tokio::spawn(async move {
            let mut series = Vec::new();
            let start = Instant::now();
            let mut second = 0u64;
            while start.elapsed() < deadline {
                if let Some(m) = admission_metrics(&client, &metrics_uri).await {
                    series.push((second, m));
                }
                second += 1;
                tokio::time::sleep_until((start + Duration::from_secs(second)).into()).await;
            }
            series
        })
    };

    let cpu_before = read_cpu();
    let procs = [std::process::id(), steady.pid(), backend.pid()];
    let ticks_before = procs.map(process_ticks);
    let load = generate(
        client,
        target,
        rate,
        duration,
        settings.client_timeout,
        kind.mixed(),
        settings.critical_pct,
    )
    .await;
    let ticks_after = procs.map(process_ticks);
    report.cpu = cpu_before
        .zip(read_cpu())
        .map(|(before, after)| cpu_busy(&before, &after));
    report.process_cpu = std::array::from_fn(|i| {
        ticks_after[i].saturating_sub(ticks_before[i]) as f64 / clock_ticks()
    });
    report.samples = load.0;
    report.abandoned = load.1;
    report.metrics = sampler.await.unwrap_or_default();

    let after = backend_stats(client, backend.addr).await;
    if let (Some(b), Some(a)) = (&before, &after) {
        let get = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        report.backend_served = get(a, "served").saturating_sub(get(b, "served"));
        report.backend_max_concurrent = get(a, "max_concurrent_seen");
        report.backend_max_waiting = get(a, "max_waiting_seen");
    }
    steady.stop();
    backend.stop();
    report
}

/// The steady config of one run.
fn steady_config(
    settings: &Settings,
    kind: RunKind,
    port: u16,
    admin: u16,
    backend: SocketAddr,
) -> String {
    let timeout = format!("{}ms", settings.route_timeout.as_millis());
    let (route_extra, upstream_extra) = if kind.limited() {
        (
            format!("    priority: normal\n    priority_header: {PRIORITY_HEADER}\n"),
            format!("    concurrency: {}\n", settings.concurrency),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "runtime: {{workers: 1}}
admin: {{bind: 127.0.0.1:{admin}}}
listeners: [{{name: web, bind: 127.0.0.1:{port}, protocol: http}}]
routes:
  - name: api
    listener: web
    match: {{path_prefix: /}}
    upstream: app
    timeout: {timeout}
{route_extra}upstreams:
  - name: app
    balance: round-robin
    pool_max_idle_per_endpoint: 256
    endpoints: [{{address: {backend}}}]
{upstream_extra}"
    )
}

fn steady_check(bin: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(bin)
        .arg("check")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let first = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" / ");
    Err(first)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// Prefixes `cmd` with `taskset -c CPUS` when pinning is asked for.
fn pinned(cpus: &str, program: &Path) -> Command {
    if cpus.is_empty() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpus).arg(program);
        cmd
    }
}

/// A `steady serve` child.
struct SteadyProcess {
    child: Option<Child>,
    admin: u16,
}

impl SteadyProcess {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn start(
        settings: &Settings,
        config: &Path,
        log: &Path,
        admin: u16,
    ) -> Result<SteadyProcess, String> {
        let log_file = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        let child = pinned(&settings.server_cpu, &settings.steady_bin)
            .arg("serve")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", settings.steady_bin.display()))?;
        Ok(SteadyProcess {
            child: Some(child),
            admin,
        })
    }

    /// Waits (at most 10 s) for `GET /readyz` on the admin port to answer 200.
    async fn wait_ready(&mut self, client: &HttpClient) -> Result<(), String> {
        let uri: http::Uri = format!("http://127.0.0.1:{}/readyz", self.admin)
            .parse()
            .expect("valid uri");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("steady exited at start-up ({status})"));
                }
            }
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_millis(500), client.get(uri.clone())).await
            {
                if resp.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("steady was not ready within 10s".into())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for SteadyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The capacity backend, run as `overload backend` in a child process.
struct BackendProcess {
    child: Option<Child>,
    addr: SocketAddr,
}

impl BackendProcess {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn start(settings: &Settings) -> Result<BackendProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = pinned(&settings.server_cpu, &exe)
            .arg("backend")
            .arg(settings.capacity.to_string())
            .arg(format!("{}", settings.service.as_secs_f64() * 1000.0))
            .env("GEN_WORKERS", "1")
            // The child exits when this pipe closes, so it cannot outlive us.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut process = BackendProcess {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "backend did not report its address within 10s".to_string())?;
        process.addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("backend said `{}`", line.trim()))?;
        Ok(process)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn backend_main(args: &[String]) -> i32 {
    let capacity = args.first().and_then(|a| a.parse::<usize>().ok());
    let service_ms = args.get(1).and_then(|a| a.parse::<f64>().ok());
    let (Some(capacity), Some(service_ms)) = (capacity, service_ms) else {
        eprintln!("usage: overload backend CAPACITY SERVICE_MS");
        return 2;
    };
    if capacity == 0 || !(service_ms > 0.0 && service_ms < 60_000.0) {
        eprintln!("overload backend: CAPACITY must be >= 1 and SERVICE_MS in (0, 60000)");
        return 2;
    }
    let backend =
        CapacityBackend::start(capacity, Duration::from_secs_f64(service_ms / 1000.0)).await;
    println!("listening {}", backend.addr());
    let _ = std::io::stdout().flush();

    // Run until stdin closes (the parent went away) or SIGTERM/SIGINT.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = stdin_closed => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "[backend] served {} of {} received, max concurrent {}, max waiting {}",
        backend.served(),
        backend.received(),
        backend.max_concurrent_seen(),
        backend.max_waiting_seen()
    );
    0
}

async fn backend_stats(client: &HttpClient, addr: SocketAddr) -> Option<serde_json::Value> {
    let uri: http::Uri = format!("http://{addr}/_stats").parse().ok()?;
    let body = tokio::time::timeout(Duration::from_secs(2), async {
        let resp = client.get(uri).await.ok()?;
        resp.into_body().collect().await.ok().map(|b| b.to_bytes())
    })
    .await
    .ok()??;
    serde_json::from_slice(&body).ok()
}

/// steady's metric lines about admission (limits, queues, sheds), as name{labels} -> value.
async fn admission_metrics(client: &HttpClient, uri: &http::Uri) -> Option<BTreeMap<String, f64>> {
    let body = tokio::time::timeout(Duration::from_millis(500), async {
        let resp = client.get(uri.clone()).await.ok()?;
        resp.into_body().collect().await.ok().map(|b| b.to_bytes())
    })
    .await
    .ok()??;
    let text = String::from_utf8_lossy(&body);
    let keys = [
        "concurrency",
        "limit",
        "shed",
        "queue",
        "min_rtt",
        "overload",
    ];
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || !keys.iter().any(|k| line.contains(k)) {
            continue;
        }
        if let Some((name, value)) = line.rsplit_once(' ') {
            if let Ok(v) = value.parse::<f64>() {
                out.insert(name.to_string(), v);
            }
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// CPU accounting (Linux /proc)

/// How busy one CPU was over an interval, in percent of that interval.
#[derive(Debug, Clone)]
struct CpuBusy {
    name: String,
    /// Everything but idle and iowait, steal included.
    busy: f64,
    /// Time the hypervisor gave to someone else.
    steal: f64,
}

/// The `cpuN` lines of `/proc/stat`: name and the counters in order.
fn read_cpu() -> Option<Vec<(String, Vec<u64>)>> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .map(|l| {
                let mut fields = l.split_whitespace();
                let name = fields.next().unwrap_or("cpu").to_string();
                (name, fields.filter_map(|f| f.parse().ok()).collect())
            })
            .collect(),
    )
}

fn cpu_busy(before: &[(String, Vec<u64>)], after: &[(String, Vec<u64>)]) -> Vec<CpuBusy> {
    before
        .iter()
        .zip(after)
        .map(|((name, b), (_, a))| {
            let delta: Vec<u64> = a.iter().zip(b).map(|(x, y)| x.saturating_sub(*y)).collect();
            // user nice system idle iowait irq softirq steal ...
            let total: u64 = delta.iter().take(8).sum();
            let idle = delta.get(3).copied().unwrap_or(0) + delta.get(4).copied().unwrap_or(0);
            let steal = delta.get(7).copied().unwrap_or(0);
            let pct = |x: u64| {
                if total == 0 {
                    0.0
                } else {
                    x as f64 * 100.0 / total as f64
                }
            };
            CpuBusy {
                name: name.clone(),
                busy: pct(total - idle),
                steal: pct(steal),
            }
        })
        .collect()
}

/// Samples every CPU's busy share over `window`.
async fn machine_busy(window: Duration) -> Option<Vec<CpuBusy>> {
    let before = read_cpu()?;
    tokio::time::sleep(window).await;
    Some(cpu_busy(&before, &read_cpu()?))
}

fn fmt_busy(busy: &[CpuBusy]) -> String {
    busy.iter()
        .map(|c| format!("{} {:.0} % (steal {:.0} %)", c.name, c.busy, c.steal))
        .collect::<Vec<_>>()
        .join(", ")
}

/// utime + stime of a process, in clock ticks (0 if it is gone).
fn process_ticks(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// USER_HZ; 100 on every Linux this runs on.
fn clock_ticks() -> f64 {
    100.0
}

// ---------------------------------------------------------------------------------------
// the load generator

/// Sends `rate * duration` requests to `target` on a fixed schedule, each on its own
/// task, and returns their records and how many were still unanswered at the deadline.
async fn generate(
    client: &HttpClient,
    target: http::Uri,
    rate: f64,
    duration: Duration,
    timeout: Duration,
    mixed: bool,
    critical_pct: u32,
) -> (Vec<Sample>, usize) {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-9));
    let start = Instant::now() + Duration::from_millis(20);

    let mut i = 0u64;
    while i < total {
        let now = Instant::now();
        // Everything due by now goes out now; the timer only wakes us about once per ms.
        let due_count = if now < start {
            0
        } else {
            (((now - start).as_secs_f64() * rate) as u64 + 1).min(total)
        };
        while i < due_count {
            let due = interval.mul_f64(i as f64);
            let class = Class::of(i, mixed, critical_pct);
            let client = client.clone();
            let target = target.clone();
            let samples = samples.clone();
            let outstanding = outstanding.clone();
            outstanding.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let lag = Instant::now().saturating_duration_since(start + due);
                let outcome = send(&client, target, class, timeout).await;
                let latency = Instant::now().saturating_duration_since(start + due);
                samples.lock().expect("samples lock").push(Sample {
                    due,
                    lag,
                    latency,
                    class,
                    outcome,
                });
                outstanding.fetch_sub(1, Ordering::Relaxed);
            });
            i += 1;
        }
        if i < total {
            tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        }
    }

    // Every request has its own timeout, so this ends soon after the last is due.
    let deadline = Instant::now() + timeout + Duration::from_secs(2);
    while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let abandoned = outstanding.load(Ordering::Relaxed);
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
    (samples, abandoned)
}

async fn send(client: &HttpClient, target: http::Uri, class: Class, timeout: Duration) -> Outcome {
    let mut builder = Request::get(target);
    if class != Class::Plain {
        builder = builder.header(PRIORITY_HEADER, class.label());
    }
    let req = builder.body(Empty::new()).expect("valid request");
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| error_text(&e))?;
        let status = resp.status().as_u16();
        let reason = resp
            .headers()
            .get("x-steady-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok::<_, String>(Outcome::Status(status, reason))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Outcome::Error(e),
        Err(_) => Outcome::Timeout,
    }
}

/// The innermost cause of a client error, which says more than hyper-util's wrapper.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

// ---------------------------------------------------------------------------------------
// the report

fn fmt_ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1}", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

/// A gauge value: integers as they are, small fractions (seconds) with 4 decimals.
fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.2}")
    }
}

fn fmt_int(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_report(
    settings: &Settings,
    reports: &[RunReport],
    elapsed: Duration,
    idle_before: Option<&[CpuBusy]>,
) {
    let capacity = settings.capacity_rate();
    let baseline_p99 = reports
        .iter()
        .find(|r| r.kind == Some(RunKind::Baseline) && r.skipped.is_none())
        .and_then(|r| Tally::of(r.samples.iter()).ok_quantile(0.99));

    println!("## Overload: steady in front of a fixed-capacity backend\n");
    println!(
        "Backend: {} workers x {} ms = **{:.0} req/s capacity**, FIFO queue in front of the workers. \
         Offered: {:.0} req/s ({}x capacity) for {} s, open loop; \
         baseline {:.0} req/s for {} s. Route timeout {} ms (504), client timeout {} ms. \
         Priority runs: {}% `critical`, the rest `sheddable` (header `{PRIORITY_HEADER}`). \
         `concurrency: {}`. steady `runtime.workers: 1`; servers pinned to CPU `{}`. Total {:.0} s.\n",
        settings.capacity,
        settings.service.as_millis(),
        capacity,
        settings.offered_rate(),
        settings.multiplier,
        settings.duration.as_secs_f64(),
        capacity * settings.baseline_pct / 100.0,
        settings.baseline_duration.as_secs_f64(),
        settings.route_timeout.as_millis(),
        settings.client_timeout.as_millis(),
        settings.critical_pct,
        settings.concurrency,
        if settings.server_cpu.is_empty() { "-" } else { &settings.server_cpu },
        elapsed.as_secs_f64(),
    );

    println!(
        "| run | offered req/s | goodput req/s | goodput / capacity | 200 | 503 shed | 504 | timeout / error / other | p50 ms (200s) | p99 ms (200s) | p99 / unloaded p99 | backend served/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let kind = r.kind.expect("kind set");
        if let Some(why) = &r.skipped {
            println!(
                "| {} | skipped: {} |||||||||||",
                kind.label(),
                why.replace('|', "/")
            );
            continue;
        }
        let t = Tally::of(r.samples.iter());
        let secs = r.duration.as_secs_f64();
        let goodput = t.ok as f64 / secs;
        let p99 = t.ok_quantile(0.99);
        let ratio = match (p99, baseline_p99) {
            (Some(p), Some(b)) if !b.is_zero() => {
                format!("{:.2}x", p.as_secs_f64() / b.as_secs_f64())
            }
            _ => "-".into(),
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.0} % | {} | {} | {} | {} / {} / {} | {} | {} | {} | {:.0} |",
            kind.label(),
            r.rate,
            goodput,
            goodput / capacity * 100.0,
            fmt_int(t.ok),
            fmt_int(t.shed),
            fmt_int(t.gateway_timeout),
            fmt_int(t.timeouts + r.abandoned),
            fmt_int(t.errors),
            fmt_int(t.other_status),
            fmt_ms(t.ok_quantile(0.5)),
            fmt_ms(p99),
            ratio,
            r.backend_served as f64 / secs,
        );
    }
    println!();

    // Per priority class, for the runs that sent a mix.
    println!(
        "| run | class | sent | 200 | 503 shed | shed % | 504 / timeout / error | p99 ms (200s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in reports.iter().filter(|r| r.skipped.is_none()) {
        let kind = r.kind.expect("kind set");
        if !kind.mixed() && kind != RunKind::Adaptive {
            continue;
        }
        for class in [Class::Critical, Class::Sheddable, Class::Plain] {
            let t = Tally::of(r.samples.iter().filter(|s| s.class == class));
            if t.sent == 0 {
                continue;
            }
            println!(
                "| {} | {} | {} | {} | {} | {:.1} % | {} / {} / {} | {} |",
                kind.label(),
                class.label(),
                fmt_int(t.sent),
                fmt_int(t.ok),
                fmt_int(t.shed),
                t.shed as f64 / t.sent as f64 * 100.0,
                fmt_int(t.gateway_timeout),
                fmt_int(t.timeouts),
                fmt_int(t.errors + t.other_status),
                fmt_ms(t.ok_quantile(0.99)),
            );
        }
    }
    println!();

    print_targets(settings, reports, baseline_p99);
    if let Some(busy) = idle_before {
        let note = if busy.iter().any(|c| c.busy > 10.0) {
            " — **machine not idle**, numbers are less reliable"
        } else {
            ""
        };
        println!("Machine before the runs: {}{note}.\n", fmt_busy(busy));
    }
    print_details(settings, reports);
}

fn print_targets(settings: &Settings, reports: &[RunReport], baseline_p99: Option<Duration>) {
    let capacity = settings.capacity_rate();
    println!("Targets (issue 5):\n");
    println!("- unloaded p99 (baseline): {} ms", fmt_ms(baseline_p99));
    for r in reports.iter().filter(|r| r.skipped.is_none()) {
        let kind = r.kind.expect("kind set");
        let t = Tally::of(r.samples.iter());
        let share = t.ok as f64 / r.duration.as_secs_f64() / capacity;
        let p99 = t.ok_quantile(0.99);
        let ratio = match (p99, baseline_p99) {
            (Some(p), Some(b)) if !b.is_zero() => Some(p.as_secs_f64() / b.as_secs_f64()),
            _ => None,
        };
        let ratio_text = ratio.map_or("-".into(), |x| format!("{x:.2}x"));
        match kind {
            RunKind::Baseline => {}
            RunKind::NoProtection => println!(
                "- no protection: goodput {:.0} % of capacity, p99 of 200s {} ms ({ratio_text} unloaded) — the collapse",
                share * 100.0,
                fmt_ms(p99)
            ),
            RunKind::Adaptive | RunKind::Priority => {
                let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
                // The same after the first second, when the limit has had time to settle.
                let warm = Duration::from_secs(1);
                let later = Tally::of(r.samples.iter().filter(|s| s.due >= warm));
                let later_secs = (r.duration.as_secs_f64() - 1.0).max(1e-9);
                let later_p99 = later.ok_quantile(0.99);
                let later_ratio = match (later_p99, baseline_p99) {
                    (Some(p), Some(b)) if !b.is_zero() => {
                        format!("{:.2}x", p.as_secs_f64() / b.as_secs_f64())
                    }
                    _ => "-".into(),
                };
                println!(
                    "- {}: goodput {:.0} % of capacity (target >= 90 %: {}), p99 of admitted {} ms = {ratio_text} unloaded (target <= 2x: {}); after the first second: {:.0} %, p99 {} ms = {later_ratio}",
                    kind.label(),
                    share * 100.0,
                    verdict(share >= 0.9),
                    fmt_ms(p99),
                    verdict(ratio.is_some_and(|x| x <= 2.0)),
                    later.ok as f64 / later_secs / capacity * 100.0,
                    fmt_ms(later_p99),
                );
            }
        }
        if kind == RunKind::Priority {
            let crit = Tally::of(r.samples.iter().filter(|s| s.class == Class::Critical));
            let low = Tally::of(r.samples.iter().filter(|s| s.class == Class::Sheddable));
            let critical_rate = r.rate * f64::from(settings.critical_pct) / 100.0;
            let note = if critical_rate >= capacity {
                format!(
                    " (critical requests alone offer {critical_rate:.0} req/s, at or over capacity, so some critical sheds are expected)"
                )
            } else {
                format!(
                    " (target 0, critical requests offer {critical_rate:.0} req/s, under capacity: {})",
                    if crit.shed == 0 { "PASS" } else { "MISS" }
                )
            };
            let crit_later = Tally::of(
                r.samples
                    .iter()
                    .filter(|s| s.class == Class::Critical && s.due >= Duration::from_secs(1)),
            );
            println!(
                "- priorities: critical shed {} of {} while sheddable shed {} of {}{note}; after the first second: critical shed {} of {}",
                fmt_int(crit.shed),
                fmt_int(crit.sent),
                fmt_int(low.shed),
                fmt_int(low.sent),
                fmt_int(crit_later.shed),
                fmt_int(crit_later.sent),
            );
        }
    }
    println!();
}

fn print_details(settings: &Settings, reports: &[RunReport]) {
    println!("<details><summary>Per-second detail</summary>\n");
    for r in reports.iter().filter(|r| r.skipped.is_none()) {
        let kind = r.kind.expect("kind set");
        let lags: Vec<Duration> = {
            let mut l: Vec<Duration> = r.samples.iter().map(|s| s.lag).collect();
            l.sort_unstable();
            l
        };
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for s in &r.samples {
            let key = match &s.outcome {
                Outcome::Status(200, _) => continue,
                Outcome::Status(code, reason) => {
                    format!(
                        "{code} {}",
                        reason.as_deref().unwrap_or("(no x-steady-error)")
                    )
                }
                Outcome::Timeout => "client timeout".into(),
                Outcome::Error(e) => format!("error: {e}"),
            };
            *reasons.entry(key).or_default() += 1;
        }
        println!(
            "{} ({:.0} req/s offered): generator start lag p99 {} ms, max {} ms; backend max concurrent {}, max queue {}; unanswered at deadline {}.",
            kind.label(),
            r.rate,
            fmt_ms(quantile(&lags, 0.99)),
            fmt_ms(lags.last().copied()),
            r.backend_max_concurrent,
            r.backend_max_waiting,
            r.abandoned,
        );
        if let Some(cpu) = &r.cpu {
            println!(
                "CPU while loaded: {}; CPU seconds: generator {:.1}, steady {:.1}, backend {:.1}.",
                fmt_busy(cpu),
                r.process_cpu[0],
                r.process_cpu[1],
                r.process_cpu[2]
            );
        }
        if !reasons.is_empty() {
            let text: Vec<String> = reasons
                .iter()
                .map(|(k, v)| format!("{k}: {}", fmt_int(*v)))
                .collect();
            println!("Failures: {}.", text.join("; "));
        }
        // Gauges steady exposes about admission (counters are left out).
        let gauges: Vec<&String> = r
            .metrics
            .last()
            .map(|(_, m)| {
                m.keys()
                    .filter(|k| {
                        let name = k.split('{').next().unwrap_or(k);
                        !(name.ends_with("_total")
                            || name.ends_with("_count")
                            || name.ends_with("_sum")
                            || name.ends_with("_bucket")
                            || name.ends_with("_created"))
                    })
                    .take(4)
                    .collect()
            })
            .unwrap_or_default();
        if let Some((_, last)) = r.metrics.last() {
            let counters: Vec<String> = last
                .iter()
                .filter(|(k, v)| !gauges.contains(k) && **v != 0.0)
                .map(|(k, v)| format!("`{k}` {v}"))
                .collect();
            if !counters.is_empty() {
                println!("steady counters at the end: {}.", counters.join(", "));
            }
        }
        println!();
        print!(
            "| from s | sent | 200 | 503 | 504 | timeout/error | p99 ms (200s) | send lag p99 ms |"
        );
        if kind.mixed() {
            print!(" critical 503 | critical p99 ms |");
        }
        for g in &gauges {
            let short = g
                .trim_start_matches("steady_")
                .trim_start_matches("concurrency_")
                .replace("{upstream=\"app\"}", "");
            print!(" {} |", short.replace('|', "/"));
        }
        println!();
        print!("|---|---|---|---|---|---|---|---|");
        if kind.mixed() {
            print!("---|---|");
        }
        for _ in &gauges {
            print!("---|");
        }
        println!();
        let bin = settings.detail_bin;
        let bins = (r.duration.as_secs_f64() / bin.as_secs_f64()).ceil() as u32;
        for n in 0..bins {
            let lo = bin * n;
            let hi = bin * (n + 1);
            let in_bin = || r.samples.iter().filter(|s| s.due >= lo && s.due < hi);
            let t = Tally::of(in_bin());
            let mut lags: Vec<Duration> = in_bin().map(|s| s.lag).collect();
            lags.sort_unstable();
            print!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt_secs(lo),
                t.sent,
                t.ok,
                t.shed,
                t.gateway_timeout,
                t.timeouts + t.errors + t.other_status,
                fmt_ms(t.ok_quantile(0.99)),
                fmt_ms(quantile(&lags, 0.99)),
            );
            if kind.mixed() {
                let crit = Tally::of(in_bin().filter(|s| s.class == Class::Critical));
                print!(" {} | {} |", crit.shed, fmt_ms(crit.ok_quantile(0.99)));
            }
            // The metrics sample taken at the end of this bin's second.
            let second = hi.as_secs_f64().ceil() as u64;
            let snapshot = r.metrics.iter().find(|(s, _)| *s == second).map(|(_, m)| m);
            for g in &gauges {
                let v = snapshot.and_then(|m| m.get(*g));
                print!(" {} |", v.map_or("-".into(), |v| fmt_value(*v)));
            }
            println!();
        }
        println!();
    }
    println!("</details>");
}
