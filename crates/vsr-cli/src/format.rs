//! `vsr format`: creates a replica's data directory with `vsr_storage::format`.
//!
//! A fresh directory starts with an empty log and votes at once. With `--recover` it is marked
//! "must recover before voting": the replica rejoins through the recovery protocol and takes
//! part in no quorum until it has fetched the cluster's state — the only safe way to replace a
//! replica whose disk was lost.
//!
//! Before anything is written, [`check_target`] refuses a path that is a file and a directory
//! holding entries vsr did not write: formatting a directory that already held other data would
//! mix the two, and the operator most likely mistyped the path. A directory holding vsr data is
//! left to `vsr_storage::format`, which takes the directory's lock first and refuses it (naming
//! a running replica's process id, or saying the data exists); this check only reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use vsr_storage::Identity;
use vsr_storage::layout::SUPERBLOCK_FILE;

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

PATH must be a new or empty directory (it is created if missing). Refuses a file, a directory \
holding anything vsr did not write, and a directory that already holds vsr data, and touches \
nothing in a directory a running replica holds (it names that replica's process id).";

/// The lock file vsr keeps in a data directory (see `vsr_storage`'s lock): left behind by a
/// format or a replica that ended, it does not make a directory "not empty".
const LOCK_FILE: &str = "LOCK";

/// Most directory entries [`check_target`] looks at: a data directory holds a handful, and a
/// directory with more than this many is refused without reading the rest.
const ENTRIES_SCANNED_MAX: usize = 10_000;

/// How many of the entries vsr did not write a refusal names.
const ENTRIES_NAMED_MAX: usize = 3;

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
    check_target(&args.path)?;
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

/// Refuses a path `vsr format` must not write to: a file (or anything else that is not a
/// directory), or a directory holding an entry vsr did not write, unless it also holds vsr
/// data (then `vsr_storage::format` refuses it under the directory's lock, as a running
/// replica's or as already formatted). A missing path is fine: it is created.
pub(crate) fn check_target(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                bail!(
                    "{} is a symbolic link to a missing target: give format a directory path \
                     (it is created if missing)",
                    path.display()
                );
            }
            return Ok(());
        }
        Err(error) => bail!("cannot read {}: {error}", path.display()),
    };
    if !metadata.is_dir() {
        bail!(
            "{} is a file, not a directory: give format a directory path (it is created if \
             missing)",
            path.display()
        );
    }
    let entries = std::fs::read_dir(path)
        .with_context(|| format!("cannot list the directory {}", path.display()))?;
    let mut foreign = Vec::new();
    let mut scanned_all = true;
    for (index, entry) in entries.enumerate() {
        if index == ENTRIES_SCANNED_MAX {
            scanned_all = false;
            break;
        }
        let entry =
            entry.with_context(|| format!("cannot list the directory {}", path.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == SUPERBLOCK_FILE || is_data_file(&name) {
            // vsr data: vsr_storage::format refuses it with the lock held.
            return Ok(());
        }
        if name != LOCK_FILE {
            foreign.push(name);
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    bail!("{}", not_empty_message(path, foreign, scanned_all))
}

/// Whether `name` is the name of a WAL or checkpoint file, as vsr writes them.
fn is_data_file(name: &str) -> bool {
    (name.starts_with("wal-") && (name.ends_with(".log") || name.ends_with(".headers")))
        || (name.starts_with("checkpoint-") && name.ends_with(".bin"))
}

/// The refusal of directory `path` holding the entries `foreign` that vsr did not write (all of
/// them, if `complete`).
fn not_empty_message(path: &Path, mut foreign: Vec<String>, complete: bool) -> String {
    foreign.sort();
    let count = foreign.len();
    let mut named: Vec<String> = foreign
        .iter()
        .take(ENTRIES_NAMED_MAX)
        .map(|name| format!("{name:?}"))
        .collect();
    if count > ENTRIES_NAMED_MAX || !complete {
        let more = count - named.len();
        named.push(if complete {
            format!("and {more} more")
        } else {
            "and more".to_owned()
        });
    }
    format!(
        "{} is not empty: it holds {}, which vsr did not write: give format an empty or new \
         directory (it is created if missing)",
        path.display(),
        named.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|&name| name.to_owned()).collect()
    }

    #[test]
    fn names_a_few_foreign_entries_in_order() {
        let path = Path::new("/data");
        assert_eq!(
            not_empty_message(path, names(&["b", "a"]), true),
            "/data is not empty: it holds \"a\", \"b\", which vsr did not write: give format \
             an empty or new directory (it is created if missing)"
        );
        let message = not_empty_message(path, names(&["e", "d", "c", "b", "a"]), true);
        assert!(
            message.contains("it holds \"a\", \"b\", \"c\", and 2 more,"),
            "{message}"
        );
        let message = not_empty_message(path, names(&["a"]), false);
        assert!(message.contains("it holds \"a\", and more,"), "{message}");
    }

    #[test]
    fn accepts_a_missing_path_an_empty_directory_and_a_stale_lock() {
        let dir = tempfile::tempdir().unwrap();
        check_target(&dir.path().join("new")).unwrap();
        check_target(dir.path()).unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), b"4000000000\n").unwrap();
        check_target(dir.path()).unwrap();
    }

    #[test]
    fn refuses_a_file_and_a_directory_holding_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"notes").unwrap();
        let message = check_target(&file).unwrap_err().to_string();
        assert!(message.contains("is a file, not a directory"), "{message}");
        let message = check_target(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("is not empty: it holds \"notes.txt\""),
            "{message}"
        );
        std::fs::create_dir(dir.path().join("lost+found")).unwrap();
        let message = check_target(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("\"lost+found\", \"notes.txt\""),
            "{message}"
        );
    }

    #[test]
    fn leaves_a_directory_with_vsr_data_to_the_storage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"notes").unwrap();
        for name in [SUPERBLOCK_FILE, "wal-1-0.log", "checkpoint-7-1.bin"] {
            let path = dir.path().join(name);
            std::fs::write(&path, b"").unwrap();
            check_target(dir.path()).unwrap();
            std::fs::remove_file(&path).unwrap();
        }
        // Files merely named like vsr's are someone else's.
        std::fs::write(dir.path().join("wal-notes.txt"), b"").unwrap();
        assert!(check_target(dir.path()).is_err());
    }
}
