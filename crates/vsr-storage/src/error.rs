//! Errors an operator or caller can act on.

use std::path::PathBuf;

/// Why storage could not be formatted, opened or written.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum StorageError {
    /// The data directory does not exist.
    #[error("data directory {0} does not exist: check the path, or format a replica there first")]
    NotFound(PathBuf),
    /// The path holds no vsr data.
    #[error(
        "{0} holds no vsr data (no superblock): check the path, or format a replica there first"
    )]
    NotVsrData(PathBuf),
    /// The data belongs to another cluster.
    #[error(
        "the data belongs to cluster {found:#x}, not {expected:#x}: \
         point this replica at its own data directory"
    )]
    WrongCluster {
        /// The cluster the caller expected.
        expected: u128,
        /// The cluster in the superblock.
        found: u128,
    },
    /// The data was written by a newer build.
    #[error(
        "the data has format version {found} but this build reads up to {supported}: \
         run a newer build"
    )]
    NewerFormat {
        /// The version found.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// Formatting would overwrite existing data.
    #[error(
        "{0} already holds vsr data: refusing to overwrite it; \
         remove its superblock, wal-* and checkpoint-* files by hand to start over"
    )]
    AlreadyExists(PathBuf),
    /// Another process (or another storage in this process) holds the data directory's lock: a
    /// replica runs there, or a format is under way.
    #[error(
        "{} is in use by process {}: stop that replica first, or point this one at \
         its own data directory",
        .directory.display(),
        pid_text(*.holder_pid)
    )]
    Locked {
        /// The data directory.
        directory: PathBuf,
        /// The holder's process id as it wrote it into the lock file; `None` if that could not
        /// be read.
        holder_pid: Option<u32>,
    },
    /// The identity to format with is impossible.
    #[error(
        "replica index {replica} is not below the replica count {replica_count} \
         (at most {max}): fix the configuration"
    )]
    InvalidIdentity {
        /// The replica index asked for.
        replica: u8,
        /// The replica count asked for.
        replica_count: u8,
        /// The largest replica count supported.
        max: usize,
    },
    /// Data this replica needs cannot be read in any copy (every superblock copy, or the live
    /// WAL file). A damaged checkpoint or log is not an error: see [`crate::Damage`].
    #[error(
        "storage is corrupt: {0}; rebuild this replica: move the directory aside, format it \
         as recovering and let it recover from the cluster"
    )]
    Corrupt(String),
    /// The operating system reported an error (disk full, I/O error, permissions).
    #[error("storage I/O failed: {0}; the replica must stop: fix the disk, then restart it")]
    Io(#[from] std::io::Error),
}

/// A process id for a message: the number, or "unknown".
fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".to_owned(), |pid| pid.to_string())
}
