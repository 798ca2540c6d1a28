//! `steady`: a reliability gateway in one binary.
//!
//! This crate is wiring only: it parses the command line, loads the config, builds the
//! runtime and starts the pieces that live in the library crates.
//!
//! # Layout
//!
//! - `main.rs`: the CLI (`serve`, `check`, `slo`, `demo`) and signal handling.
//! - `watch.rs`: reload triggers of `serve`: SIGHUP and changes of the config file.
//! - `demo.rs`: `steady demo`, three built-in backends behind a gateway on loopback.
//! - `slo_rules.rs`: `steady slo rules`, the config's SLOs as Prometheus rules.

mod demo;
mod slo_rules;
mod watch;

// glibc malloc showed up at ~10% of the proxy's CPU (allocation, free and
// consolidation of small per-request buffers); mimalloc's thread-local free lists
// make those near free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use steady_config::Config;
use steady_proxy::Gateway;
use tokio_util::sync::CancellationToken;

/// A reliability gateway: load balancing, health, metrics in one binary.
#[derive(Parser)]
#[command(name = "steady", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "STEADY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a config file.
    ///
    /// SIGHUP reloads the config file, and so does a change of it unless `--no-watch`:
    /// a valid file applies without dropping connections, an invalid one is reported
    /// and the running config stays.
    Serve {
        /// Path to steady.yaml.
        #[arg(short, long, default_value = "steady.yaml", env = "STEADY_CONFIG")]
        config: PathBuf,
        /// Do not watch the config file for changes (SIGHUP still reloads it).
        #[arg(long, env = "STEADY_NO_WATCH")]
        no_watch: bool,
    },
    /// Validate a config file and report every problem; exit code 1 on error.
    Check {
        /// Path to steady.yaml.
        #[arg(short, long, default_value = "steady.yaml", env = "STEADY_CONFIG")]
        config: PathBuf,
    },
    /// SLO tools.
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Run three demo backends and a gateway in front of them, on loopback.
    Demo {
        /// Gateway port (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin port (0 picks a free one).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// Print the generated config and exit.
        #[arg(long)]
        print_config: bool,
    },
}

#[derive(Subcommand)]
enum SloCommand {
    /// Print Prometheus recording and alerting rules (Sloth's shape) for every SLO.
    ///
    /// They judge the whole fleet from the `steady_slo_events_total` and
    /// `steady_slo_bad_events_total` counters; load the output with `rule_files:`.
    Rules {
        /// Path to steady.yaml.
        #[arg(short, long, default_value = "steady.yaml", env = "STEADY_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match steady_config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listeners, {} routes, {} upstreams)",
                    config.display(),
                    c.listeners.len(),
                    c.routes.len(),
                    c.upstreams.len()
                );
                ExitCode::SUCCESS
            }
            Err(diagnostics) => {
                eprint!("{diagnostics}");
                eprintln!(
                    "{}: {} problem(s) found",
                    config.display(),
                    diagnostics.0.len()
                );
                ExitCode::FAILURE
            }
        },
        Command::Serve {
            config: path,
            no_watch,
        } => {
            let config = match steady_config::load(&path) {
                Ok(c) => c,
                Err(diagnostics) => {
                    eprint!("{diagnostics}");
                    return ExitCode::FAILURE;
                }
            };
            let source = watch::Source {
                path,
                watch: !no_watch,
            };
            run_blocking(config, None, Some(source))
        }
        Command::Slo {
            command: SloCommand::Rules { config },
        } => slo_rules::run(&config),
        Command::Demo {
            port,
            admin_port,
            print_config,
        } => demo::run(port, admin_port, print_config),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEADY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Called once the gateway and admin listener are up, with the admin's bound address.
pub(crate) type OnStart = Box<dyn FnOnce(&Gateway, Option<std::net::SocketAddr>) + Send>;

/// Starts one single-threaded runtime per worker thread plus a control runtime on this
/// thread (admin listener, signals, DNS, reloads), and runs the gateway until a signal
/// stops it. With a `source`, SIGHUP and file changes reload the config from it.
pub(crate) fn run_blocking(
    config: Config,
    on_start: Option<OnStart>,
    source: Option<watch::Source>,
) -> ExitCode {
    match run_workers(config, on_start, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_workers(
    config: Config,
    on_start: Option<OnStart>,
    source: Option<watch::Source>,
) -> anyhow::Result<()> {
    let n = config
        .runtime
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let stop = CancellationToken::new();
    let mut handles = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("steady-worker-{i}"))
            .spawn(move || {
                steady_proxy::worker::set_current(i);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(runtime.handle().clone()));
                // Spawned tasks run while this thread blocks here.
                runtime.block_on(stop.cancelled());
            })
            .context("spawning a worker thread")?;
        handles.push(
            rx.recv()
                .context("worker thread died")?
                .context("starting a worker runtime")?,
        );
        threads.push(thread);
    }
    let result = control.block_on(serve(config, &handles, on_start, source));
    stop.cancel();
    for t in threads {
        let _ = t.join();
    }
    result
}

async fn serve(
    config: Config,
    workers: &[tokio::runtime::Handle],
    on_start: Option<OnStart>,
    source: Option<watch::Source>,
) -> anyhow::Result<()> {
    let gateway = Gateway::start_on(&config, workers).await?;
    let admin_shutdown = CancellationToken::new();
    let mut admin_addr = None;
    if let Some(admin) = &config.admin {
        let addr: std::net::SocketAddr = admin
            .bind
            .parse()
            .with_context(|| format!("admin.bind `{}`", admin.bind))?;
        let listener = steady_proxy::gateway::bind(addr)
            .with_context(|| format!("admin: cannot bind {addr}"))?;
        admin_addr = Some(listener.local_addr()?);
        tracing::info!(addr = %listener.local_addr()?, "admin listening");
        tokio::spawn(steady_admin::serve(
            listener,
            Arc::clone(&gateway),
            source.as_ref().map(|s| s.path.clone()),
            admin_shutdown.clone(),
        ));
    }
    if let Some(f) = on_start {
        f(&gateway, admin_addr);
    }
    // Reloads run here, one at a time, until SIGTERM or SIGINT.
    watch::run_until_stopped(&gateway, source).await?;
    // Drain with the settings of the config running now (they reload).
    let config = gateway.running_config().await;
    if !config.runtime.drain_delay.is_zero() {
        // Load balancers see /readyz fail and stop sending; what still arrives is served.
        gateway.stop_ready();
        tracing::info!(delay = ?config.runtime.drain_delay, "shutting down: not ready, still serving");
        tokio::time::sleep(config.runtime.drain_delay).await;
    }
    tracing::info!(deadline = ?config.runtime.drain_timeout, "shutting down: draining in-flight requests");
    gateway.shutdown(config.runtime.drain_timeout).await;
    admin_shutdown.cancel();
    Ok(())
}
