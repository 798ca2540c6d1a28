//! What makes `steady serve` reload its config: SIGHUP (as NGINX and HAProxy do) and a
//! change of the file. Reloads run one at a time on the control runtime; SIGTERM and
//! SIGINT end the loop.
//!
//! The watcher looks at the file's directory, not the file: editors save by writing a
//! new file and renaming it over the old one, and Kubernetes updates a mounted
//! ConfigMap by swapping a symlink, neither of which a watch on the file itself sees.
//! Only events naming the file (or Kubernetes' `..data` swap) count; they are debounced,
//! then the file's content is hashed, so that saving it unchanged or writing a
//! neighbour (an access log in the same directory) does not reload.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::Watcher as _;
use steady_proxy::Gateway;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Quiet time after the last file event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where the running config came from and whether to watch it.
pub(crate) struct Source {
    /// The config file, as given on the command line.
    pub(crate) path: PathBuf,
    /// Reload when the file changes (SIGHUP reloads either way).
    pub(crate) watch: bool,
}

/// Reloads from `source` on SIGHUP and on file changes until SIGTERM or SIGINT.
pub(crate) async fn run_until_stopped(
    gateway: &Arc<Gateway>,
    source: Option<Source>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    // Kept alive for as long as the loop runs; dropping it stops the watch.
    let _watcher = match &source {
        Some(s) if s.watch => watch(&s.path, changed_tx),
        _ => None,
    };
    // The content the running config was last loaded from (or refused from).
    let mut last = source.as_ref().and_then(|s| content_hash(&s.path));
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received");
                return Ok(());
            }
            _ = hup.recv() => {
                let Some(source) = &source else {
                    tracing::warn!("SIGHUP received, but there is no config file to reload");
                    continue;
                };
                tracing::info!(path = %source.path.display(), "SIGHUP received: reloading config");
                last = content_hash(&source.path);
                let _ = gateway.reload_file(&source.path).await;
            }
            Some(()) = changed.recv() => {
                let Some(source) = &source else { continue };
                let now = content_hash(&source.path);
                if now.is_none() || now == last {
                    // Gone for a moment (a rename in progress), or the same content.
                    continue;
                }
                tracing::info!(path = %source.path.display(), "config file changed: reloading");
                last = now;
                let _ = gateway.reload_file(&source.path).await;
            }
        }
    }
}

/// Watches the directory of `path`; sends on `changed` once events there have been
/// quiet for [`DEBOUNCE`]. `None` (with a warning) if the platform refuses the watch.
fn watch(path: &Path, changed: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(std::ffi::OsStr::to_os_string);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only events about the file itself, or Kubernetes' `..data` symlink swap,
        // count: a neighbour written all the time (an access log in the same
        // directory) would otherwise keep the debounce from ever going quiet.
        // Access events (reads, including steady's own) change nothing.
        let relevant = |e: &notify::Event| {
            !e.kind.is_access()
                && e.paths.iter().any(|p| match p.file_name() {
                    Some(n) => {
                        Some(n) == name.as_deref() || n.as_encoded_bytes().starts_with(b"..")
                    }
                    None => true,
                })
        };
        if event.is_ok_and(|e| relevant(&e)) {
            let _ = events_tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config file's directory; reload with SIGHUP");
        return None;
    }
    tracing::info!(path = %path.display(), "watching the config file for changes");
    tokio::spawn(async move {
        while events.recv().await.is_some() {
            // Wait for a quiet moment: one save is often several events.
            loop {
                match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // Full means a check is already pending, which will read the newest file.
            let _ = changed.try_send(());
        }
    });
    Some(watcher)
}

/// A hash of the file's content, following symlinks; `None` if it cannot be read.
fn content_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}
