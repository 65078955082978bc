//! `vsr start`: runs one replica of the key-value service with `vsr_server::run_replica`.
//!
//! The replica's index comes from its data directory; it listens on the address of that index
//! in `--addresses` and reaches peer j at the j-th. SIGTERM and SIGINT stop it cleanly (queued
//! writes are made durable first), though correctness never depends on a clean stop: a replica
//! killed at any instant restarts from what it acknowledged. Logs go to stderr through
//! `tracing-subscriber` (`RUST_LOG`, default `info`; `--log-format json` for a collector).
//! Options may also come from a TOML file (`--config`, see [`crate::config`]);
//! `--check-config` shows what they add up to and exits.
//!
//! It speaks mutual TLS with `--tls DIR` (certificates from `vsr certs`; SIGHUP re-reads them,
//! so they rotate without a restart) or plain TCP with `--insecure`; it refuses to start with
//! neither.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use tokio::sync::Notify;
use vsr_kv::KvStore;
use vsr_server::{ReplicaOptions, ServerError, run_replica};
use vsr_storage::StorageError;

use crate::args::{
    ClusterAddresses, Security, parse_address, resolve_address, same_socket_address,
};
use crate::logging::Logging;

/// Options of `vsr start`.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    cluster: ClusterAddresses,
    #[command(flatten)]
    security: Security,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (a host name or an IP address).
    #[arg(long, env = "VSR_METRICS", value_name = "HOST:PORT", value_parser = parse_address)]
    metrics: Option<String>,
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
    #[command(flatten)]
    logging: Logging,
    /// Read options from this TOML file, one key per long option (`addresses = [...]`,
    /// `data = "/var/lib/vsr"`): the command line and the environment override it.
    #[arg(long, env = "VSR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the options (command line, environment, --config file), print each one with
    /// where it came from, and exit without starting: 0 if they are valid.
    #[arg(long)]
    pub(crate) check_config: bool,
    /// The replica's data directory, created by `vsr format`.
    #[arg(value_name = "PATH", env = "VSR_DATA")]
    data: PathBuf,
}

/// `vsr start --check-config`: the checks that need neither the data directory nor the
/// network, then `settings` (each option, its value and its origin).
pub(crate) fn check(args: &StartArgs, settings: &str) -> anyhow::Result<ExitCode> {
    args.security.choice("start")?;
    print!("{settings}");
    println!("configuration OK");
    Ok(ExitCode::SUCCESS)
}

/// Runs `vsr start` until SIGTERM or SIGINT.
pub(crate) fn run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let tls = args
        .security
        .choice("start")?
        .map(std::path::Path::to_owned);
    if !args.data.is_dir() {
        bail!(
            "data directory {} does not exist: check the path; create it with `vsr format` when \
             the cluster is created; if this replica's data was lost (a new disk, a wiped \
             directory), {}",
            args.data.display(),
            RECOVER_STEPS
        );
    }
    distinct_endpoints(&args.cluster.addresses)?;
    let metrics = match &args.metrics {
        Some(text) => Some(resolve_address("--metrics", text)?[0]),
        None => None,
    };
    args.logging.init("info");
    // One thread runs the event loop and every connection (the storage thread is separate):
    // handing messages between threads would cost more than the work they carry.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let mut options = ReplicaOptions::new(args.cluster.cluster, args.cluster.addresses, args.data);
    options.metrics = metrics;
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

/// How to replace a replica whose data was lost, for the messages of a missing or unreadable
/// superblock.
const RECOVER_STEPS: &str = "run `vsr format --recover` at this path with the replica's \
    --cluster, --replica and --replica-count: it rejoins through the recovery protocol and votes \
    only once it holds the cluster's state. Never use plain `vsr format` to replace a replica \
    that was part of the cluster: it would vote at once with an empty log, which risks losing \
    writes the cluster acknowledged";

/// Refuses two entries of `--addresses` that resolve to one socket address (`localhost:3000`
/// and `127.0.0.1:3000`): the replica would send one peer's messages to the other, or to
/// itself. Entries written the same were refused when the flags were parsed; an entry that does
/// not resolve here (a peer's name only its own network knows) is skipped.
fn distinct_endpoints(addresses: &[String]) -> anyhow::Result<()> {
    let resolved: Vec<Vec<SocketAddr>> = addresses
        .iter()
        .map(|address| resolve_address("--addresses", address).unwrap_or_default())
        .collect();
    match same_socket_address(&resolved) {
        Some((first, second, shared)) => bail!(
            "--addresses gives {} for replica {first} and {} for replica {second}, which both \
             resolve to {shared}: every replica needs its own host:port, the i-th for replica i",
            addresses[first],
            addresses[second]
        ),
        None => Ok(()),
    }
}

/// The server's error, worded for the command line.
fn explain(error: ServerError) -> anyhow::Error {
    match error {
        ServerError::Storage {
            dir,
            source: StorageError::NotVsrData(_),
        } => anyhow!(
            "{} holds no vsr data (no superblock): check the path; if this replica's data was \
             lost (a new disk, a wiped directory), {}",
            dir.display(),
            RECOVER_STEPS
        ),
        ServerError::Storage {
            dir,
            source: StorageError::Corrupt(reason),
        } => anyhow!("{}", corrupt_message(&dir, &reason)),
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

/// The message for data that cannot be read in any copy (every superblock copy, or the live
/// WAL file): the replica's data is lost, and it is rebuilt from its peers.
fn corrupt_message(dir: &Path, reason: &str) -> String {
    format!(
        "cannot open the data directory {}: its storage is corrupt ({reason}): this replica's \
         data is lost; move the directory aside, then {}",
        dir.display(),
        RECOVER_STEPS
    )
}
