//! `vsr start`: runs one replica of the key-value service with `vsr_server::run_replica`.
//!
//! The replica's index comes from its data directory; it listens on the address of that index
//! in `--addresses` and reaches peer j at the j-th. SIGTERM and SIGINT stop it cleanly (queued
//! writes are made durable first), though correctness never depends on a clean stop: a replica
//! killed at any instant restarts from what it acknowledged. Logs go to stderr through
//! `tracing-subscriber` (`RUST_LOG`, default `info`).
//!
//! It speaks mutual TLS with `--tls DIR` (certificates from `vsr certs`; SIGHUP re-reads them,
//! so they rotate without a restart) or plain TCP with `--insecure`; it refuses to start with
//! neither.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Args;
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;
use vsr_kv::KvStore;
use vsr_server::{ReplicaOptions, ServerError, run_replica};

use crate::args::{ClusterAddresses, Security};

/// Options of `vsr start`.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    cluster: ClusterAddresses,
    #[command(flatten)]
    security: Security,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, env = "VSR_METRICS", value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
    /// Ops between checkpoints (one is also taken after a bound of log bytes). Checkpoints are
    /// written in the background: the keys written since the previous one, and every ninth the
    /// whole key-value state. Fewer checkpoints cost less; more keep restarts short.
    #[arg(long, value_name = "OPS", default_value_t = vsr::Config::new(0, 1).checkpoint_interval,
          value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    checkpoint_interval: u64,
    /// Bytes of executed log entries after which a checkpoint is taken even before
    /// --checkpoint-interval ops: it bounds the log a restart replays.
    #[arg(long, value_name = "BYTES", default_value_t = vsr::Config::new(0, 1).checkpoint_log_size_max as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 50))]
    checkpoint_log_bytes: u64,
    /// The share of the disk's time, in percent, a checkpoint may take while it is written in
    /// the background: after each 8 MiB it rests, leaving the rest to the log's syncs. Lower
    /// keeps request latency steadier under checkpoints; higher finishes them sooner.
    #[arg(long, value_name = "PERCENT", default_value_t = vsr_storage::Tuning::default().checkpoint_disk_share_percent,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    checkpoint_disk_share: u32,
    /// Stop as on SIGTERM once process PID is no longer this one's parent (it exited), so that
    /// a killed supervisor (`vsr demo`, `bench`, `chaos` pass their own pid) leaves no replica
    /// behind.
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    exit_with_parent: Option<u32>,
    /// The replica's data directory, created by `vsr format`.
    #[arg(value_name = "PATH", env = "VSR_DATA")]
    path: PathBuf,
}

/// Runs `vsr start` until SIGTERM or SIGINT.
pub(crate) fn run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let tls = args
        .security
        .choice("start")?
        .map(std::path::Path::to_owned);
    if !args.path.is_dir() {
        return Err(anyhow!(
            "data directory {} does not exist: create it with `vsr format` first (or, for a replica \
             that lost its data, `vsr format --recover`)",
            args.path.display()
        ));
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread runs the event loop and every connection (the storage thread is separate):
    // handing messages between threads would cost more than the work they carry.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let mut options = ReplicaOptions::new(args.cluster.cluster, args.cluster.addresses, args.path);
    options.metrics = args.metrics;
    options.checkpoint_interval = Some(args.checkpoint_interval);
    options.checkpoint_log_bytes = Some(usize::try_from(args.checkpoint_log_bytes)?);
    options.checkpoint_disk_share = Some(args.checkpoint_disk_share);
    raise_file_limit();
    let result = runtime.block_on(async {
        if tls.is_some() {
            options.tls_reload = Some(reload_on_hangup()?);
        }
        options.tls = tls;
        let shutdown = shutdown_signal(args.exit_with_parent)?;
        run_replica::<KvStore>(options, shutdown)
            .await
            .map_err(explain)
    });
    result?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Notified on every SIGHUP: the replica re-reads its certificates.
fn reload_on_hangup() -> anyhow::Result<Arc<Notify>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let notify = Arc::new(Notify::new());
    let reload = Arc::clone(&notify);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the TLS certificates");
            reload.notify_one();
        }
    });
    Ok(notify)
}

/// Raises the soft limit on open files to the hard limit: every connection takes one, and a
/// flood of connections must not leave none for peers (the replica also closes idle client
/// connections when it runs out).
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%error, soft, hard, "cannot raise the open file limit");
    }
}

/// Completes on the first SIGTERM or SIGINT, or, with `exit_with_parent`, once that process is
/// no longer the parent.
fn shutdown_signal(exit_with_parent: Option<u32>) -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            () = parent_exit(exit_with_parent.unwrap_or(0)), if exit_with_parent.is_some() => {
                "the --exit-with-parent process is not (or no longer) this one's parent"
            }
        };
        tracing::info!("{name}: shutting down");
    })
}

/// Completes once `parent` is not this process's parent: it exited, and the orphan was adopted
/// by init or a subreaper (or it never was the parent: then at once).
async fn parent_exit(parent: u32) {
    const POLL: std::time::Duration = std::time::Duration::from_millis(100);
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(POLL).await;
    }
}

/// The server's error, worded for the command line.
fn explain(error: ServerError) -> anyhow::Error {
    match error {
        ServerError::Storage { dir, source } => anyhow!(
            "cannot open the data directory {}: {source} (check the path and --cluster)",
            dir.display()
        ),
        ServerError::AddressCount {
            replica_count,
            addresses,
        } => anyhow!(
            "the data directory was formatted for {replica_count} replicas but --addresses \
             lists {addresses}: give exactly one host:port per replica, the i-th for replica i"
        ),
        other => anyhow!(other),
    }
}
