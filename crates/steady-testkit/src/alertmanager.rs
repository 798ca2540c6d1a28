//! A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port,
//! for the tests that deliver alerts to it. It is killed and its files removed on
//! drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{get, http_client, HttpClient};

/// Where Debian's package installs the binary.
pub const BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// Polls before a wait gives up, 100 ms apart.
const POLLS: usize = 300;

/// A running Alertmanager with clustering off and a receiver that drops everything.
pub struct Alertmanager {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    client: HttpClient,
}

impl Alertmanager {
    /// Starts it and waits (at most 30 s) until `/-/ready` answers 200.
    ///
    /// # Panics
    ///
    /// When the binary is missing (naming the package to install), or it exits or
    /// never becomes ready (with its log).
    pub async fn start() -> Alertmanager {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: install Debian's `prometheus-alertmanager` package \
             (`apt-get install prometheus-alertmanager`; .ci/run does)"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let dir = std::env::temp_dir().join(format!(
            "steady-alertmanager-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("alertmanager temp dir");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .expect("alertmanager config");
        let log = std::fs::File::create(dir.join("log")).expect("alertmanager log");
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        let mut am = Alertmanager {
            child,
            dir,
            addr,
            client: http_client(),
        };
        for _ in 0..POLLS {
            if let Some(status) = am.child.try_wait().expect("alertmanager status") {
                panic!("alertmanager exited ({status}):\n{}", am.log());
            }
            if am.get("/-/ready").await.is_some_and(|(s, _)| s == 200) {
                return am;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("alertmanager never became ready:\n{}", am.log());
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `GET path`: status and body, or `None` when it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        get(&self.client, self.addr, path, Duration::from_secs(5))
            .await
            .ok()
            .map(|r| (r.status, r.body))
    }

    /// The active alerts whose `slo` label is `slo` (`GET /api/v2/alerts`).
    ///
    /// # Panics
    ///
    /// When Alertmanager does not answer 200 with a JSON array.
    pub async fn active(&self, slo: &str) -> Vec<serde_json::Value> {
        let (status, body) = self
            .get("/api/v2/alerts?active=true")
            .await
            .expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        let alerts: Vec<serde_json::Value> =
            serde_json::from_str(&body).expect("a JSON array of alerts");
        alerts
            .into_iter()
            .filter(|a| a["labels"]["slo"] == slo && a["status"]["state"] == "active")
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
