//! A process harness for chaos tests and benchmarks: runs the real `steady serve` binary
//! on loopback, reads its admin API and logs, and drives it with a bounded closed-loop load.
//!
//! [`SteadyProcess`] owns the child and kills it when dropped; [`Load`] runs a fixed
//! number of workers, each sending one request at a time, until a request count or a
//! deadline is reached, and keeps a record of every request so callers can compute
//! figures (who answered what, and when) after the fact.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// The HTTP client the harness uses: plain HTTP/1.1 with keep-alive.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Builds the harness's HTTP client.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http()
}

/// A response as the harness records it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The `backend` field of a testkit [`Backend`](crate::Backend)'s JSON answer, if any.
    pub backend: Option<String>,
    /// The `x-steady-error` header, if any.
    pub error: Option<String>,
    /// The body, as text.
    pub body: String,
}

/// GETs `http://{addr}{path}` with `client`, giving up after `timeout`.
pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .expect("valid request");
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let error = resp
            .headers()
            .get("x-steady-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        let backend = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("backend")
                    .and_then(|b| b.as_str())
                    .map(str::to_string)
            });
        Ok(Reply {
            status,
            backend,
            error,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A running `steady serve` child process, killed when dropped.
pub struct SteadyProcess {
    child: Option<Child>,
    /// Config, log and pid files, removed on drop unless the thread is panicking (a
    /// failed test keeps them to look at).
    files: Vec<PathBuf>,
    dir: PathBuf,
    /// The `web` listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    log: PathBuf,
    client: HttpClient,
}

impl SteadyProcess {
    /// Writes `yaml` (where `{listen}` and `{admin}` stand for two free loopback
    /// addresses) to `dir`, starts `bin serve -c` on it with its log and pid file in
    /// `dir`, and waits (at most 20 s) for `/readyz` to answer 200.
    pub async fn start(bin: &Path, dir: &Path, name: &str, yaml: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let yaml = yaml
            .replace("{listen}", &addr.to_string())
            .replace("{admin}", &admin.to_string());
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).map_err(|e| format!("{}: {e}", config.display()))?;
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| format!("{e}"))?;
        let child = Command::new(bin)
            .args(["serve", "-c"])
            .arg(&config)
            .env("STEADY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        // For a supervising script's cleanup, should this process be killed outright.
        let _ = std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string());
        let pid_file = dir.join(format!("{name}.pid"));
        let mut steady = SteadyProcess {
            child: Some(child),
            files: vec![config, log.clone(), pid_file],
            dir: dir.to_path_buf(),
            addr,
            admin,
            log,
            client: http_client(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = steady.try_exit() {
                return Err(format!("steady exited ({status}): {}", steady.logs()));
            }
            if steady
                .admin_get("/readyz")
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(steady);
            }
            if Instant::now() > deadline {
                return Err(format!("steady never became ready: {}", steady.logs()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GETs a path on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Result<Reply, String> {
        get(&self.client, self.admin, path, Duration::from_secs(5)).await
    }

    /// The Prometheus text of `/metrics` (empty if it cannot be read).
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .await
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// `/api/upstreams` as JSON (`null` if it cannot be read).
    pub async fn upstreams(&self) -> serde_json::Value {
        self.admin_get("/api/upstreams")
            .await
            .ok()
            .and_then(|r| serde_json::from_str(&r.body).ok())
            .unwrap_or_default()
    }

    /// Everything steady has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for SteadyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            for file in &self.files {
                let _ = std::fs::remove_file(file);
            }
            // Only if nothing else is left in it.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Sums the values of every sample of `name` whose labels contain all of `labels`
/// (each written `key="value"`) in Prometheus text.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// One request of a [`Load`].
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// When its answer (or failure) came, from the start of the load.
    pub done: Duration,
    /// The answer, or why there was none.
    pub result: Result<Reply, String>,
}

impl Sample {
    /// Whether the client got a 200.
    pub fn ok(&self) -> bool {
        matches!(&self.result, Ok(r) if r.status == 200)
    }

    /// The backend that answered, if a testkit backend did.
    pub fn backend(&self) -> Option<&str> {
        self.result.as_ref().ok().and_then(|r| r.backend.as_deref())
    }
}

/// A closed-loop load: `workers` tasks, each sending `GET path` one after another,
/// until `max_requests` were sent, `max_time` passed, or [`Load::stop`].
pub struct Load {
    start: Instant,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the workers.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        workers: usize,
        max_requests: u64,
        max_time: Duration,
    ) -> Load {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let client = http_client();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, paused, sent, samples, client) = (
                    stop.clone(),
                    paused.clone(),
                    sent.clone(),
                    samples.clone(),
                    client.clone(),
                );
                let path = path.to_string();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < max_time {
                        if paused.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                        if sent.fetch_add(1, Ordering::Relaxed) >= max_requests {
                            break;
                        }
                        let at = start.elapsed();
                        let result = get(&client, addr, &path, Duration::from_secs(10)).await;
                        let sample = Sample {
                            sent: at,
                            done: start.elapsed(),
                            result,
                        };
                        samples.lock().expect("samples").push(sample);
                    }
                })
            })
            .collect();
        Load {
            start,
            stop,
            paused,
            sent,
            samples,
            tasks,
        }
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Requests sent so far (some may still be in flight).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests answered (or failed) so far.
    pub fn completed(&self) -> usize {
        self.samples.lock().expect("samples").len()
    }

    /// A copy of the samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().expect("samples").clone()
    }

    /// Stops sending new requests (requests in flight continue) until [`Load::resume`],
    /// as a load balancer does for a backend that stopped being ready.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    /// Sends again after [`Load::pause`].
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Waits until at least `n` requests completed or the load ended; returns whether
    /// `n` were reached.
    pub async fn wait_completed(&self, n: usize) -> bool {
        loop {
            if self.completed() >= n {
                return true;
            }
            if self.tasks.iter().all(|t| t.is_finished()) {
                return self.completed() >= n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the workers, waits for requests in flight, and returns every sample in
    /// the order they completed.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let samples = self.samples.lock().expect("samples").clone();
        samples
    }
}
