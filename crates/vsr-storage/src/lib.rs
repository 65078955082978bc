//! Durable file storage for one vsr replica: a superblock, a write-ahead log and checkpoints.
//!
//! The core asks for [`vsr::Write`]s; [`FileStorage::write`] carries them out and
//! [`FileStorage::sync`] makes them durable. On restart [`FileStorage::open`] rebuilds the
//! [`vsr::DurableState`] the writes produced. Everything here is synchronous; a tokio server runs
//! it on a dedicated thread through [`StorageThread`], which batches writes into one fdatasync
//! (group commit). Design and ordering rules: `docs/storage.md`. A runtime that wants metrics
//! opens with [`FileStorage::open_observed`]: a [`DiskObserver`] then learns how long each sync
//! takes and which reads fail, with no dependency of this crate on a metrics library.
//!
//! # On-disk layout
//!
//! | file                          | holds                                                       |
//! |-------------------------------|-------------------------------------------------------------|
//! | `superblock`                  | 4 copies of the superblock, 4 KiB apart: identity, view state, live checkpoint and WAL |
//! | `wal-<start>-<generation>.log`| the write-ahead log: entry and truncate records, from op `start` |
//! | `wal-<start>-<generation>.headers` | a copy of each record's header, slot `op - start`: tells a torn tail from a lost record |
//! | `checkpoint-<op>-<generation>.bin` | the snapshot at `op`, then a checksummed trailer       |
//! | `LOCK`                        | the pid of the process holding the directory (see `lock.rs`) |
//!
//! Only the files the superblock names are live; others are leftovers of an interrupted
//! checkpoint and are removed before the first write after open. Byte layouts: the superblock in
//! `superblock.rs`, records in `record.rs`, header copies in `headers.rs`, checkpoint files in
//! `checkpoint.rs`. Tools that inspect or damage a stopped replica's files find every byte
//! range through [`layout`], which is built from those same definitions.
//!
//! # Durability
//!
//! * Appends and truncates are durable after [`FileStorage::sync`].
//! * A view state write is durable when [`FileStorage::write`] returns: every earlier record is
//!   synced first, then a superblock copy is written and synced. A crash therefore never keeps
//!   a later write while losing an earlier one.
//! * A checkpoint is durable when [`FileStorage::write`] returns: checkpoint file, then
//!   superblock, then the log space is reused (a new WAL file), never the other way round.

#![warn(missing_docs, unreachable_pub)]

pub mod backup;
mod checkpoint;
mod disk;
mod error;
mod file;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
pub mod layout;
mod lock;
mod observed;
mod record;
#[cfg(any(test, feature = "simulation"))]
pub mod sim_disk;
mod storage;
mod superblock;
mod thread;
mod wal;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod fault_tests;

pub use disk::Disk;
pub use error::StorageError;
pub use observed::DiskObserver;
pub use storage::{
    CheckpointJob, FileStorage, Leftovers, Tuning, WrittenCheckpoint, format, format_disk,
};
pub use superblock::FORMAT_VERSION;
pub use thread::{BATCH_WRITES_MAX, StorageEvent, StorageThread};

/// Who a data directory belongs to, fixed when it is formatted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster id; every message and the data directory carry it.
    pub cluster: u128,
    /// This replica's index, `0..replica_count`.
    pub replica: u8,
    /// How many replicas the cluster has.
    pub replica_count: u8,
}

/// Damage found on open. Anything but a torn tail also sets [`vsr::DurableState::damaged`]:
/// the replica then repairs itself from its peers through the recovery protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Damage {
    /// Ops whose entries are unreadable while valid records follow them (corruption in the
    /// middle of the log, not a crash), or whose records the headers file says were written
    /// where no valid record is (a synced last record that rotted or was lost; for a lost
    /// truncate, the first op it removed). The returned state keeps only the entries before
    /// the damage; the first write after open discards everything after that point.
    pub corrupt_ops: Vec<u64>,
    /// Records at the end of the log that were partly written when the replica crashed, with no
    /// header copy naming them. They were never acknowledged (the core acknowledges only after
    /// sync, and header copies are written only after their records are synced), so they are
    /// cut off.
    pub torn_tail_records: usize,
    /// The live checkpoint file is damaged or missing. The returned state has no checkpoint and
    /// no entries (they cannot be used without it), only the view state; the first write after
    /// open starts a new, empty log.
    pub checkpoint_corrupt: bool,
}

impl Damage {
    /// Whether the data is whole: no unreadable entry in the log's middle, no corrupt
    /// checkpoint. A torn tail is not damage.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.corrupt_ops.is_empty() && !self.checkpoint_corrupt
    }
}

/// What [`FileStorage::open`] returns.
#[derive(Debug)]
pub struct Opened {
    /// The storage, ready for writes (which go after the last valid record).
    pub storage: FileStorage,
    /// Who the data belongs to.
    pub identity: Identity,
    /// The state the durable writes built up: hand it to the replica.
    pub durable: vsr::DurableState,
    /// Damage found in the log.
    pub damage: Damage,
}
