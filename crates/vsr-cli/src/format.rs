//! `vsr format`: creates a replica's data directory with `vsr_storage::format`.
//!
//! A fresh directory starts with an empty log and votes at once. With `--recover` it is marked
//! "must recover before voting": the replica rejoins through the recovery protocol and takes
//! part in no quorum until it has fetched the cluster's state — the only safe way to replace a
//! replica whose disk was lost.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use vsr_storage::Identity;

use crate::args::parse_cluster;

/// The long help of `vsr format`.
pub(crate) const LONG_ABOUT: &str = "\
Create a replica's data directory.

Run it once per replica when a cluster is created: `vsr format --cluster C --replica i \
--replica-count n <path>` for every i in 0..n, then `vsr start` each replica.

To replace a replica whose data was lost (a dead disk, a new machine, a wiped directory), \
format the new directory with --recover. Never use plain `vsr format` for that: a freshly \
formatted replica claims an empty log and votes at once, so together with a replica that \
missed recent operations it can form a quorum that elects a log lacking committed operations, \
and writes the cluster already acknowledged are lost. With --recover the replica takes part in \
no quorum until it has recovered the cluster's state from its peers.

Refuses to overwrite a directory that already holds vsr data, and touches nothing in a \
directory a running replica holds (it names that replica's process id).";

/// Options of `vsr format`.
#[derive(Debug, Args)]
pub(crate) struct FormatArgs {
    /// The cluster id (decimal, or hex with 0x); every replica and client of a cluster uses the
    /// same one.
    #[arg(long, env = "VSR_CLUSTER", default_value = "0", value_parser = parse_cluster)]
    cluster: u128,
    /// This replica's index, 0 to replica-count - 1.
    #[arg(long, env = "VSR_REPLICA")]
    replica: u8,
    /// Number of replicas in the cluster: 1, 3, 5 or 7.
    #[arg(long, env = "VSR_REPLICA_COUNT")]
    replica_count: u8,
    /// Mark the data "must recover before voting": the replica rejoins through the recovery
    /// protocol. Use it, and only it, to replace a replica whose data was lost.
    #[arg(long)]
    recover: bool,
    /// The data directory to create (created if missing; must not hold vsr data).
    #[arg(value_name = "PATH")]
    path: PathBuf,
}

/// Runs `vsr format`.
pub(crate) fn run(args: &FormatArgs) -> anyhow::Result<ExitCode> {
    if !matches!(args.replica_count, 1 | 3 | 5 | 7) {
        bail!(
            "--replica-count must be 1, 3, 5 or 7 (2f+1 replicas survive f failures), not {}",
            args.replica_count
        );
    }
    if args.replica >= args.replica_count {
        bail!(
            "--replica must be below --replica-count {} (replicas are numbered from 0), not {}",
            args.replica_count,
            args.replica
        );
    }
    let identity = Identity {
        cluster: args.cluster,
        replica: args.replica,
        replica_count: args.replica_count,
    };
    vsr_storage::format(&args.path, identity, args.recover)
        .with_context(|| format!("cannot format {}", args.path.display()))?;
    let recovering = if args.recover {
        " (recovering: it rejoins through the recovery protocol before it votes)"
    } else {
        ""
    };
    let _ = writeln!(
        std::io::stdout(),
        "formatted replica {} of {} for cluster {} at {}{recovering}",
        args.replica,
        args.replica_count,
        args.cluster,
        args.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
