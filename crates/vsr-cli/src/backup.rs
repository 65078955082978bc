//! `vsr backup` and `vsr restore`: a consistent copy of a live cluster's state, and a new
//! cluster made from one.
//!
//! `vsr backup` finds the primary (a status request to every replica), asks it for its state at
//! its commit number (`vsr_server::backup`: frozen at once, streamed off its event loop while it
//! goes on serving), and writes the stream to `FILE.partial`, which becomes FILE only once the
//! whole state arrived, matched the checksum the replica sent, and was synced. The primary
//! answers it as a read (once a quorum confirmed its view), so the backup holds every write
//! acknowledged before it was asked for.
//!
//! `vsr restore` checks the whole file first (every checksum, `vsr_storage::backup::verify`),
//! and writes nothing if anything is wrong; then it formats each data directory, under its lock,
//! with the backup's state as its checkpoint.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vsr_server::Network;
use vsr_server::backup::{BackupFetchError, BackupSource, fetch_backup};
use vsr_server::status::{StatusError, fetch_status};
use vsr_storage::Identity;
use vsr_storage::backup::{BackupSummary, restore_all, verify};
use vsr_storage::layout::SUPERBLOCK_FILE;

use crate::args::{
    ClientIdentity, ClusterAddresses, Security, operator_network, parse_cluster, parse_duration,
};

/// How long `vsr backup` waits before asking again after a refusal.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Options of `vsr backup`.
#[derive(Debug, Args)]
#[command(after_help = "\
The backup is the cluster's state at one committed op, the one it prints: every write \
acknowledged before the backup was asked for is in it, and of the writes acknowledged while \
it ran, those up to that op. The primary (found with a status request) serves it as it serves \
a read: once a quorum of replicas confirmed it still leads its view, so a primary cut off \
from the others cannot hand out an old state. Replicas go on serving meanwhile.

Over TLS a backup needs an operator's certificate (`vsr certs --operator NAME`); without \
--tls-identity the directory's only operator certificate is used.

Restore it with `vsr restore FILE --cluster C --replica-count N DIR...`.")]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    cluster: ClusterAddresses,
    #[command(flatten)]
    security: Security,
    #[command(flatten)]
    identity: ClientIdentity,
    /// Give up when the replica sends nothing for this long (for example 30s, 2m); also how
    /// long to look for a primary.
    #[arg(long, env = "VSR_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// The backup file to write.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Runs `vsr backup`.
pub(crate) fn run_backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.cluster.cluster;
    let network = operator_network(&args.security, &args.identity, cluster, "backup")?;
    let replica_count = crate::status::replica_count(&args.cluster.addresses)?;
    if args.file.exists() && !args.force {
        bail!(
            "{} exists: choose another file, or pass --force to replace it",
            args.file.display()
        );
    }
    let partial = partial_path(&args.file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let taken = runtime.block_on(take(args, &network, replica_count, &partial));
    let (replica, summary) = match taken {
        Ok(taken) => taken,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::rename(&partial, &args.file)
        .with_context(|| format!("cannot rename {} to its final name", partial.display()))?;
    sync_parent(&args.file)?;
    let header = summary.header;
    let _ = writeln!(
        std::io::stdout(),
        "backup of cluster {cluster} at op {} (view {}, from replica {replica}): {} bytes of \
         state in {}",
        header.op,
        header.view,
        summary.snapshot_size,
        args.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `FILE.partial`, beside FILE.
fn partial_path(file: &Path) -> anyhow::Result<PathBuf> {
    let name = file
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", file.display()))?;
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(file.with_file_name(partial))
}

fn sync_parent(file: &Path) -> anyhow::Result<()> {
    let parent = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .with_context(|| format!("cannot sync the directory {}", parent.display()))
}

/// Finds the replica to ask, streams its backup into `partial` and syncs it.
async fn take(
    args: &BackupArgs,
    network: &Network,
    replica_count: u8,
    partial: &Path,
) -> anyhow::Result<(u8, BackupSummary)> {
    // A refusal is the cluster moving under the request (the primary changed, or another
    // backup is under way): find the primary again and ask again, while the time lasts.
    let deadline = Instant::now() + args.timeout;
    loop {
        let replica = find_primary(args, network, replica_count).await?;
        match take_from(args, network, replica_count, replica, partial).await {
            Err(BackupFetchError::Refused(reason)) if Instant::now() < deadline => {
                tracing::info!(replica, %reason, "backup refused: asking again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                let address = &args.cluster.addresses[usize::from(replica)];
                return Err(anyhow!(error))
                    .with_context(|| format!("backup from replica {replica} at {address} failed"));
            }
            Ok(summary) => {
                std::fs::File::open(partial)
                    .and_then(|file| file.sync_all())
                    .with_context(|| format!("cannot sync {}", partial.display()))?;
                return Ok((replica, summary));
            }
        }
    }
}

/// Asks `replica` for a backup and streams it into `partial` (created anew).
async fn take_from(
    args: &BackupArgs,
    network: &Network,
    replica_count: u8,
    replica: u8,
    partial: &Path,
) -> Result<BackupSummary, BackupFetchError> {
    let file = std::fs::File::create(partial)?;
    let source = BackupSource {
        cluster: args.cluster.cluster,
        replica_count,
        replica,
        address: &args.cluster.addresses[usize::from(replica)],
    };
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {bytes} of state received ({bytes_per_sec})")
            .expect("a valid template"),
    );
    let fetched = fetch_backup(
        network,
        source,
        std::io::BufWriter::with_capacity(1 << 20, file),
        args.timeout,
        &mut |bytes| bar.set_position(bytes),
    )
    .await;
    bar.finish_and_clear();
    let (out, summary) = fetched?;
    out.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    Ok(summary)
}

/// The primary of the highest view some replica reports, asked of every replica until one
/// answers as primary or `args.timeout` passes.
async fn find_primary(
    args: &BackupArgs,
    network: &Network,
    replica_count: u8,
) -> anyhow::Result<u8> {
    let deadline = Instant::now() + args.timeout;
    let cluster = args.cluster.cluster;
    let mut last_errors = Vec::new();
    while Instant::now() < deadline {
        let mut asked = tokio::task::JoinSet::new();
        for (index, address) in args.cluster.addresses.iter().enumerate() {
            let (network, address) = (network.clone(), address.clone());
            let index = u8::try_from(index).expect("at most 7 replicas");
            asked.spawn(async move {
                let timeout = Duration::from_secs(2);
                let answer =
                    fetch_status(&network, cluster, replica_count, index, &address, timeout).await;
                (index, answer)
            });
        }
        let mut primary: Option<(u64, u8)> = None;
        let mut answered = false;
        let mut final_errors = 0;
        last_errors.clear();
        while let Some(joined) = asked.join_next().await {
            match joined.expect("a status task does not panic") {
                (index, Ok(status)) => {
                    answered = true;
                    if status.primary && primary.is_none_or(|(view, _)| status.view > view) {
                        primary = Some((status.view, index));
                    }
                }
                (index, Err(error)) => {
                    // Refused (not an operator's certificate) or another cluster: asking
                    // again changes nothing.
                    if matches!(
                        error,
                        StatusError::Refused | StatusError::WrongCluster { .. }
                    ) {
                        final_errors += 1;
                    }
                    last_errors.push(format!("replica {index}: {error}"));
                }
            }
        }
        if let Some((_, index)) = primary {
            return Ok(index);
        }
        if !answered && final_errors == usize::from(replica_count) {
            bail!("no replica would answer: {}", last_errors.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let detail = if last_errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", last_errors.join("; "))
    };
    bail!(
        "no replica answered as primary within {:?}{detail}: a backup needs the cluster to have \
         a primary",
        args.timeout
    )
}

/// Options of `vsr restore`.
#[derive(Debug, Args)]
#[command(after_help = "\
Give one DIR per replica, in replica order (DIR i becomes replica i), or a single DIR with \
--replica I to restore one replica of a cluster whose replicas live on different machines \
(restore the same FILE on each). Each DIR must be new or empty.

The whole file is checked before anything is written: a truncated or damaged backup is \
refused and no directory is touched. Then every replica starts at the backup's op, with its \
state; start them with `vsr start` as after `vsr format`. The new cluster may have another id \
and another number of replicas than the one the backup came from.")]
pub(crate) struct RestoreArgs {
    /// The backup file, as `vsr backup` wrote it.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The new cluster's id (decimal, or hex with 0x).
    #[arg(long, env = "VSR_CLUSTER", default_value = "0", value_parser = parse_cluster)]
    cluster: u128,
    /// The new cluster's number of replicas: 1, 3, 5 or 7.
    #[arg(long, env = "VSR_REPLICA_COUNT")]
    replica_count: u8,
    /// Restore only this replica, into the one DIR given.
    #[arg(long)]
    replica: Option<u8>,
    /// The data directories to create, one per replica (or one with --replica).
    #[arg(value_name = "DIR", required = true)]
    dirs: Vec<PathBuf>,
}

/// Runs `vsr restore`.
pub(crate) fn run_restore(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let targets = targets(args)?;
    for (_, dir) in &targets {
        crate::format::check_target(dir)?;
        if dir.join(SUPERBLOCK_FILE).exists() {
            bail!(
                "{} already holds vsr data: restore into a new or empty directory",
                dir.display()
            );
        }
    }
    let summary = verify(&args.file)
        .with_context(|| format!("refused {}, nothing was written", args.file.display()))?;
    restore_all(&args.file, &summary, &targets).context("restore failed, nothing was kept")?;
    let header = summary.header;
    let mut out = std::io::stdout().lock();
    for (identity, dir) in &targets {
        let _ = writeln!(
            out,
            "restored op {} (view {}) into replica {} of {} for cluster {} at {}",
            header.op,
            header.view,
            identity.replica,
            identity.replica_count,
            identity.cluster,
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Each directory with the identity it is restored as.
fn targets(args: &RestoreArgs) -> anyhow::Result<Vec<(Identity, PathBuf)>> {
    let count = args.replica_count;
    if !matches!(count, 1 | 3 | 5 | 7) {
        bail!(
            "--replica-count must be 1, 3, 5 or 7 (2f+1 replicas survive f failures), not {count}"
        );
    }
    let identity = |replica| Identity {
        cluster: args.cluster,
        replica,
        replica_count: count,
    };
    let targets: Vec<(Identity, PathBuf)> = match args.replica {
        Some(replica) if replica >= count => {
            bail!("--replica must be below --replica-count {count}, not {replica}")
        }
        Some(replica) if args.dirs.len() == 1 => vec![(identity(replica), args.dirs[0].clone())],
        Some(_) => bail!("--replica restores one replica: give exactly one DIR"),
        None if args.dirs.len() == usize::from(count) => (0..count)
            .zip(&args.dirs)
            .map(|(replica, dir)| (identity(replica), dir.clone()))
            .collect(),
        None => bail!(
            "{} directories for {count} replicas: give one DIR per replica, or one DIR with \
             --replica I",
            args.dirs.len()
        ),
    };
    for (index, (_, dir)) in targets.iter().enumerate() {
        if targets[..index].iter().any(|(_, earlier)| earlier == dir) {
            bail!("{} is named twice", dir.display());
        }
    }
    Ok(targets)
}
