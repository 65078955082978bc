//! [`FileStorage`]: formatting, opening and writing a data directory.
//!
//! `write` turns each [`Write`] into file operations: appends and truncates become WAL records
//! (buffered, written with one `pwrite` per flush, durable at `sync`); a view state becomes a
//! superblock update; a checkpoint becomes a checkpoint file, a superblock update, and a WAL
//! rotation, in that order. `open` reads the superblock, loads the checkpoint, replays the WAL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vsr::config::REPLICAS_MAX;
use vsr::{Checkpoint, DurableState, EntryChecksum, Op, ViewState, Write};

use crate::disk::{Disk, RealDisk};
use crate::headers::Headers;
use crate::observed::{DiskObserver, ObservedDisk};
use crate::superblock::{
    COPIES, COPY_SIZE, COPY_STRIDE, CheckpointReference, Copy, SUPERBLOCK_FILE, Superblock,
    UPDATE_COPIES, checkpoint_file_name, is_data_file, wal_files,
};
use crate::wal::{SlotRepairs, Wal, WalFiles, replay};
use crate::{Damage, Identity, Opened, StorageError, checkpoint, superblock};

/// Sizes of growth steps, chunks and buffers. The defaults suit a real disk; tests and the
/// simulator shrink them so that growth, chunking and early flushes happen on small logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// The WAL file grows in steps of this many bytes.
    pub wal_grow_bytes: u64,
    /// The headers file grows in steps of this many bytes (a multiple of 128, the slot size).
    pub headers_grow_bytes: u64,
    /// Checkpoint files are written and read in chunks of this many bytes.
    pub checkpoint_chunk_bytes: usize,
    /// Buffered WAL records are written out once they exceed this many bytes.
    pub flush_bytes: usize,
    /// After a checkpoint goes live, the entries after it move to a new WAL file at most this
    /// many bytes at a time, one step after each sync ([`FileStorage::sync`]), so that no step
    /// copies what accumulated while a long checkpoint was written. 0: all at once.
    /// Default 1 MiB.
    pub rotation_copy_bytes_max: u64,
    /// The share of the disk's time, in percent, a checkpoint written in the background
    /// ([`CheckpointJob::run_in_background`]) may take: after each of its syncs it rests so that
    /// its writes fill at most this share, leaving the rest to the WAL. 100: no rest.
    /// Default 25.
    pub checkpoint_disk_share_percent: u32,
}

/// A WAL taking over from the live one after a checkpoint: the entries after the checkpoint
/// are copied into it a step at a time, between batches, while appends go on to the live one;
/// once it has caught up, the superblock names it.
#[derive(Debug)]
struct Rotation {
    next: Wal,
    /// The first op `next` holds: the checkpoint's op + 1.
    start: u64,
    generation: u64,
    /// The last op copied into `next`.
    copied: Op,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            wal_grow_bytes: 64 << 20,
            headers_grow_bytes: 4 << 20,
            checkpoint_chunk_bytes: 1 << 20,
            flush_bytes: 1 << 20,
            rotation_copy_bytes_max: 1 << 20,
            checkpoint_disk_share_percent: 25,
        }
    }
}

/// A replica's durable storage in one data directory. See the crate docs for the layout.
pub struct FileStorage {
    disk: Box<dyn Disk>,
    tuning: Tuning,
    /// The superblock as last written.
    superblock: Superblock,
    wal: Wal,
    /// Work deferred from open to the first write: mark a damaged replica recovering, start a
    /// new log after a corrupt checkpoint, cut a damaged tail, finish an interrupted rotation,
    /// remove leftover files.
    maintenance_due: bool,
    dirty_tail: bool,
    /// Open found damage: before anything is discarded, the superblock must say "recovering",
    /// so that a crash cannot leave a shortened log that looks whole.
    damaged: bool,
    /// Header copies to zero (naming records at or after the WAL's logical end, or damaged)
    /// or to write (missing or damaged copies of the log's records): repaired after the cut of
    /// the tail, before anything is written there.
    slot_repairs: SlotRepairs,
    /// Open found the checkpoint corrupt: `wal` names a new, empty WAL file (not yet created)
    /// and `superblock` has no checkpoint; the first write makes that durable.
    reset_log: bool,
    /// Set by the first failed operation: the in-memory view may no longer match the disk.
    failed: bool,
    /// The live checkpoint files, whole state first, then its increments; the last is the one
    /// the superblock names. Empty without a checkpoint.
    chain: Vec<CheckpointReference>,
    /// The generation the next checkpoint file takes: above every file written so far.
    generation_next: u64,
    /// The WAL being filled to take over from the live one, if a rotation is under way.
    rotation: Option<Rotation>,
    /// The highest WAL generation named so far (live, taking over, or prepared for a
    /// checkpoint): a new WAL file takes one above, so no name is used twice.
    wal_generation_named: u64,
}

/// A checkpoint file to write away from the storage thread: made by
/// [`FileStorage::begin_checkpoint`], written by [`CheckpointJob::run`] (on any thread),
/// made live by [`FileStorage::finish_checkpoint`].
pub struct CheckpointJob {
    disk: Box<dyn Disk>,
    name: String,
    generation: u64,
    checkpoint: Checkpoint,
    previous: Option<CheckpointReference>,
    chunk_size: usize,
    /// The WAL that takes over when the checkpoint goes live, prepared here, away from the
    /// storage's thread: its files, their growth steps, and the superblock's WAL generation it
    /// follows.
    wal_next: WalFiles,
    wal_grow_bytes: (u64, u64),
    wal_generation: u64,
    /// How it shares the disk when written in the background.
    background_pace: checkpoint::Pace,
}

impl std::fmt::Debug for CheckpointJob {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CheckpointJob")
            .field("name", &self.name)
            .field("op", &self.checkpoint.op)
            .field("since", &self.checkpoint.since)
            .finish_non_exhaustive()
    }
}

/// A checkpoint file [`CheckpointJob::run`] wrote and made durable, not yet live.
#[derive(Debug)]
pub struct WrittenCheckpoint {
    reference: CheckpointReference,
    since: Op,
    /// The next WAL, created empty and durable, its name too.
    wal_next: Wal,
    wal_generation: u64,
}

/// Files no longer live once a checkpoint went live: removing them is left to the caller
/// ([`Leftovers::remove`], on any thread), as unlinking a large file can take the disk a while.
/// A crash before they are gone leaves them to the next open, which removes them.
#[must_use = "leftover files stay on disk until removed"]
pub struct Leftovers {
    disk: Option<Box<dyn Disk>>,
    names: Vec<String>,
}

impl std::fmt::Debug for Leftovers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Leftovers")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Leftovers {
    /// Whether there is nothing to remove.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Removes the files, then makes their removal durable.
    ///
    /// # Errors
    /// [`StorageError::Io`]: the replica must stop.
    pub fn remove(self) -> Result<(), StorageError> {
        let Some(mut disk) = self.disk else {
            return Ok(());
        };
        for name in &self.names {
            match disk.remove(name) {
                // Gone already (say, removed by hand): what removing it was for.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                removed => removed?,
            }
        }
        disk.sync_dir()?;
        Ok(())
    }
}

impl WrittenCheckpoint {
    /// The checkpoint's op.
    #[must_use]
    pub fn op(&self) -> Op {
        Op(self.reference.op)
    }
}

impl CheckpointJob {
    /// The checkpoint's op.
    #[must_use]
    pub fn op(&self) -> Op {
        self.checkpoint.op
    }

    /// Encodes the snapshot into its file, chunk by chunk, and makes the file durable.
    ///
    /// # Errors
    /// [`StorageError::Io`]: the replica must stop.
    pub fn run(self) -> Result<WrittenCheckpoint, StorageError> {
        self.write(checkpoint::Pace::FLAT_OUT)
    }

    /// As [`Self::run`], for a checkpoint written while the WAL goes on being written: the file
    /// takes at most [`Tuning::checkpoint_disk_share_percent`] of the disk's time.
    ///
    /// # Errors
    /// [`StorageError::Io`]: the replica must stop.
    pub fn run_in_background(self) -> Result<WrittenCheckpoint, StorageError> {
        let pace = self.background_pace;
        self.write(pace)
    }

    fn write(mut self, pace: checkpoint::Pace) -> Result<WrittenCheckpoint, StorageError> {
        let disk = self.disk.as_mut();
        let (grow_bytes, headers_grow_bytes) = self.wal_grow_bytes;
        let mut wal_next = Wal::create(disk, self.wal_next, grow_bytes, headers_grow_bytes)?;
        wal_next.sync(disk)?;
        // The checkpoint's file is written last: its directory sync covers the WAL's names.
        let reference = checkpoint::write(
            self.disk.as_mut(),
            &self.name,
            self.generation,
            &self.checkpoint,
            self.previous,
            self.chunk_size,
            pace,
        )?;
        Ok(WrittenCheckpoint {
            reference,
            since: self.checkpoint.since,
            wal_next,
            wal_generation: self.wal_generation,
        })
    }
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FileStorage")
            .field("superblock", &self.superblock)
            .field("wal", &self.wal.file.name)
            .field("wal_end", &self.wal.end)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Formats `directory` (created if missing) as a new replica's data directory.
///
/// With `recovering`, the replica starts in recovery: it lost its state and must not vote until
/// it has recovered from the cluster.
///
/// Takes the directory's lock (the file `LOCK` in it) before reading or writing anything, and
/// releases it on return: a directory a running replica holds is left untouched.
///
/// # Errors
/// [`StorageError::Locked`] if another process (a running replica) holds the directory,
/// [`StorageError::AlreadyExists`] if vsr data is there already,
/// [`StorageError::InvalidIdentity`], or [`StorageError::Io`].
pub fn format(directory: &Path, identity: Identity, recovering: bool) -> Result<(), StorageError> {
    check_identity(identity)?;
    std::fs::create_dir_all(directory)?;
    // Locked before anything is read or written: a running replica's data stays untouched.
    let mut disk = RealDisk::lock(directory)?;
    format_disk(
        &mut disk,
        directory,
        identity,
        recovering,
        Tuning::default(),
    )
}

fn check_identity(identity: Identity) -> Result<(), StorageError> {
    let count_ok = (1..=REPLICAS_MAX).contains(&usize::from(identity.replica_count));
    if count_ok && identity.replica < identity.replica_count {
        Ok(())
    } else {
        Err(StorageError::InvalidIdentity {
            replica: identity.replica,
            replica_count: identity.replica_count,
            max: REPLICAS_MAX,
        })
    }
}

/// Formats `disk` as [`format()`] formats a directory; `directory` only names it in errors. Takes
/// no lock: whoever made `disk` answers for it being used by one storage at a time.
///
/// # Errors
/// As [`format()`], except [`StorageError::Locked`].
pub fn format_disk(
    disk: &mut dyn Disk,
    directory: &Path,
    identity: Identity,
    recovering: bool,
    tuning: Tuning,
) -> Result<(), StorageError> {
    check_identity(identity)?;
    let names = disk.list()?;
    if names
        .iter()
        .any(|name| name == SUPERBLOCK_FILE || is_data_file(name))
    {
        return Err(StorageError::AlreadyExists(directory.to_path_buf()));
    }
    let mut superblock = Superblock {
        cluster: identity.cluster,
        replica: identity.replica,
        replica_count: identity.replica_count,
        sequence: 0,
        view_state: ViewState {
            recovering,
            ..ViewState::default()
        },
        checkpoint: superblock::CheckpointReference::default(),
        wal_start: 1,
        wal_generation: 0,
    };
    let mut wal = Wal::create(
        disk,
        superblock.wal_files(),
        tuning.wal_grow_bytes,
        tuning.headers_grow_bytes,
    )?;
    wal.sync(disk)?;
    // The superblock comes last: its presence marks the directory as formatted.
    disk.create(SUPERBLOCK_FILE)?;
    disk.set_len(SUPERBLOCK_FILE, superblock::SUPERBLOCK_FILE_SIZE)?;
    for _ in 0..COPIES / UPDATE_COPIES {
        superblock.sequence += 1;
        for offset in superblock.copy_offsets() {
            disk.write_at(SUPERBLOCK_FILE, offset, &superblock.encode())?;
        }
    }
    disk.sync(SUPERBLOCK_FILE)?;
    disk.sync_dir()?;
    Ok(())
}

impl FileStorage {
    /// Opens the data directory `directory` and rebuilds the durable state.
    ///
    /// With `expected_cluster`, refuses data of another cluster. Damage in the log or a damaged
    /// or missing checkpoint file does not fail the open: it is reported in [`Opened::damage`]
    /// and sets [`DurableState::damaged`], so the replica repairs itself from its peers. Open
    /// writes no data (only its pid into the lock file); the first write afterwards marks a damaged replica recovering durably,
    /// then discards whatever follows the last valid record (after a corrupt checkpoint: the
    /// whole log).
    ///
    /// The directory's lock (the file `LOCK` in it) is taken before anything is read and held
    /// until the returned storage is dropped, so no other process can open or format the
    /// directory meanwhile. A failed open releases it.
    ///
    /// # Errors
    /// [`StorageError::Locked`] if another process (or another storage of this process) holds
    /// the directory, [`StorageError::NotFound`], [`StorageError::NotVsrData`],
    /// [`StorageError::WrongCluster`], [`StorageError::NewerFormat`], [`StorageError::Corrupt`]
    /// (no superblock copy is readable, or the live WAL file is missing), [`StorageError::Io`].
    pub fn open(directory: &Path, expected_cluster: Option<u128>) -> Result<Opened, StorageError> {
        Self::open_tuned(directory, expected_cluster, Tuning::default())
    }

    /// As [`Self::open`], with sizes and pacing other than the defaults.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_tuned(
        directory: &Path,
        expected_cluster: Option<u128>,
        tuning: Tuning,
    ) -> Result<Opened, StorageError> {
        let disk = Box::new(Self::lock(directory)?);
        Self::open_disk(disk, directory, expected_cluster, tuning)
    }

    /// As [`Self::open_tuned`], reporting to `observer` how long each sync of this storage's
    /// own handle takes (those of open and of the storage thread) and which reads fail, from
    /// open on (see [`DiskObserver`]).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_observed(
        directory: &Path,
        expected_cluster: Option<u128>,
        tuning: Tuning,
        observer: Arc<dyn DiskObserver>,
    ) -> Result<Opened, StorageError> {
        let disk = Box::new(ObservedDisk::new(
            Box::new(Self::lock(directory)?),
            observer,
        ));
        Self::open_disk(disk, directory, expected_cluster, tuning)
    }

    /// The disk of `directory`, locked, once it looks like a data directory.
    fn lock(directory: &Path) -> Result<RealDisk, StorageError> {
        if !directory.exists() {
            return Err(StorageError::NotFound(directory.to_path_buf()));
        }
        // A directory without a superblock gets no lock file: nothing there is opened.
        if !directory.is_dir() || !directory.join(SUPERBLOCK_FILE).is_file() {
            return Err(StorageError::NotVsrData(directory.to_path_buf()));
        }
        RealDisk::lock(directory)
    }

    /// Opens the data on `disk` as [`Self::open`] opens a directory; `directory` only names it
    /// in errors. Takes no lock, as [`format_disk`].
    ///
    /// # Errors
    /// As [`Self::open`], except [`StorageError::Locked`].
    pub fn open_disk(
        mut disk: Box<dyn Disk>,
        directory: &Path,
        expected_cluster: Option<u128>,
        tuning: Tuning,
    ) -> Result<Opened, StorageError> {
        let superblock = read_superblock(disk.as_mut(), directory)?;
        if let Some(expected) = expected_cluster.filter(|cluster| *cluster != superblock.cluster) {
            return Err(StorageError::WrongCluster {
                expected,
                found: superblock.cluster,
            });
        }
        make_durable(disk.as_mut())?;
        let (checkpoints, chain) = match load_chain(disk.as_mut(), &superblock, tuning) {
            Ok(loaded) => loaded,
            Err(StorageError::Corrupt(_)) => {
                return Self::open_without_checkpoint(disk, superblock, tuning);
            }
            Err(error) => return Err(error),
        };
        let (mut durable, wal, replay_damage) =
            replay_wal(disk.as_mut(), &superblock, checkpoints, tuning)?;
        let ReplayDamage {
            damage,
            dirty_tail,
            slot_repairs,
            headers_missing,
        } = replay_damage;
        durable.damaged = !damage.is_clean();
        let live_names = live_names(&superblock, &chain);
        let leftovers = disk
            .list()?
            .into_iter()
            .any(|name| is_data_file(&name) && !live_names.contains(&name));
        if leftovers {
            vsr::mark!(OpenRemovesLeftoverFiles);
        }
        let deferred = Deferred {
            dirty_tail,
            slot_repairs,
            leftovers,
            headers_missing,
            reset_log: false,
        };
        Self::assemble(
            disk,
            tuning,
            (superblock, chain),
            wal,
            durable,
            damage,
            deferred,
        )
    }

    /// Builds the storage open found, and what open returns: the one place a [`FileStorage`]
    /// is made. Writes the header copies the records read back lack unless the data is
    /// damaged (then repairs wait for the first write).
    fn assemble(
        disk: Box<dyn Disk>,
        tuning: Tuning,
        (superblock, chain): (Superblock, Vec<CheckpointReference>),
        wal: Wal,
        durable: DurableState,
        damage: Damage,
        deferred: Deferred,
    ) -> Result<Opened, StorageError> {
        let rotation_due = superblock.wal_start != superblock.checkpoint.op + 1;
        let identity = identity_of(&superblock);
        let Deferred {
            dirty_tail,
            slot_repairs,
            leftovers,
            headers_missing,
            reset_log,
        } = deferred;
        let mut storage = FileStorage {
            disk,
            tuning,
            superblock,
            wal,
            maintenance_due: dirty_tail
                || leftovers
                || rotation_due
                || durable.damaged
                || headers_missing
                || reset_log
                || !slot_repairs.is_empty(),
            dirty_tail,
            slot_repairs,
            damaged: durable.damaged,
            reset_log,
            failed: false,
            generation_next: chain
                .last()
                .map_or(superblock.checkpoint.generation, |head| head.generation)
                + 1,
            chain,
            rotation: None,
            wal_generation_named: 0,
        };
        if !storage.damaged {
            storage.cover_records_read_back()?;
        }
        Ok(Opened {
            storage,
            identity,
            durable,
            damage,
        })
    }

    /// Writes the header copies that records open returns lack: a crash of the process alone
    /// leaves records it never synced in the page cache, open made them durable, and the
    /// replica may acknowledge them as soon as it runs; uncovered, a record that later rotted
    /// would be cut as a torn tail. Writing copies discards nothing, so it need not wait for the
    /// first write like the other repairs (copies at an index that is also to be zeroed do).
    /// A missing headers file (lost, or from before headers files) is recreated here for the
    /// same reason: until it is, every record of the log is uncovered, and a replica that
    /// writes nothing (one waiting to recover) would keep them so across restarts.
    fn cover_records_read_back(&mut self) -> Result<(), StorageError> {
        let headers = &mut self.wal.headers;
        if self.slot_repairs.rewrite.is_empty() {
            return Ok(());
        }
        headers.create_if_missing(self.disk.as_mut())?;
        let start = headers.start();
        let zero = &self.slot_repairs.zero;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.slot_repairs.rewrite)
            .into_iter()
            .partition(|slot| !zero.contains(&slot.index(start)));
        self.slot_repairs.rewrite = later;
        for slot in &now {
            vsr::mark!(HeadersSlotRewritten);
            headers.put(slot);
        }
        headers.sync(self.disk.as_mut())
    }

    /// Opens a directory whose live checkpoint file is damaged or missing: the entries after it
    /// are useless without it, so the replica gets its view state only and repairs the rest
    /// from its peers. The first write starts a new, empty WAL.
    fn open_without_checkpoint(
        disk: Box<dyn Disk>,
        mut superblock: Superblock,
        tuning: Tuning,
    ) -> Result<Opened, StorageError> {
        vsr::mark!(CheckpointDamagedLogReset);
        let durable = DurableState {
            view_state: superblock.view_state,
            checkpoint: None,
            increments: Vec::new(),
            entries: std::collections::VecDeque::new(),
            damaged: true,
        };
        superblock.checkpoint = superblock::CheckpointReference::default();
        superblock.wal_start = 1;
        superblock.wal_generation += 1;
        let files = superblock.wal_files();
        let headers =
            Headers::new_missing(files.headers_name, files.start, tuning.headers_grow_bytes);
        let wal = Wal::new(
            files.name,
            0,
            0,
            std::collections::VecDeque::new(),
            headers,
            tuning.wal_grow_bytes,
        );
        let damage = Damage {
            checkpoint_corrupt: true,
            ..Damage::default()
        };
        let deferred = Deferred {
            dirty_tail: false,
            slot_repairs: SlotRepairs::default(),
            leftovers: false,
            headers_missing: false,
            reset_log: true,
        };
        Self::assemble(
            disk,
            tuning,
            (superblock, Vec::new()),
            wal,
            durable,
            damage,
            deferred,
        )
    }

    /// Carries out one write. Appends and truncates may stay buffered until [`Self::sync`];
    /// view states and checkpoints are durable when this returns.
    ///
    /// After an error the storage refuses every further call: the replica must stop.
    ///
    /// # Errors
    /// [`StorageError::Io`] (disk full, I/O error), or [`StorageError::Corrupt`] if a live
    /// record cannot be read back while reusing log space.
    ///
    /// # Panics
    /// If an append does not continue the log: a bug in the caller, as in [`DurableState::apply`].
    pub fn write(&mut self, write: &Write) -> Result<(), StorageError> {
        self.guarded(|storage| storage.write_unchecked(write))
    }

    /// Makes every write so far durable (one fdatasync of the WAL and one of its headers file,
    /// each if it has unsynced writes), then takes [`Self::step_rotation`].
    ///
    /// # Errors
    /// [`StorageError::Io`]; after an error the storage refuses every further call.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.sync_wal()?;
        self.step_rotation()
    }

    /// Makes every write so far durable, as [`Self::sync`], without a step of rotation: for an
    /// owner that reports the writes durable before it takes that step.
    ///
    /// # Errors
    /// [`StorageError::Io`]; after an error the storage refuses every further call.
    pub fn sync_wal(&mut self) -> Result<(), StorageError> {
        self.guarded(|storage| storage.wal.sync(storage.disk.as_mut()))
    }

    /// If a checkpoint went live since the WAL last moved to a new file: copies the next step
    /// of entries after it there ([`Tuning::rotation_copy_bytes_max`]), durably; once that WAL
    /// has caught up, the superblock names it and the old one is removed.
    ///
    /// # Errors
    /// [`StorageError::Io`]; after an error the storage refuses every further call.
    pub fn step_rotation(&mut self) -> Result<(), StorageError> {
        if self.rotation.is_none() {
            return Ok(());
        }
        self.guarded(Self::rotation_step)
    }

    /// Bytes the live files take (allocated size; the WAL is preallocated in large steps).
    #[must_use]
    pub fn disk_usage_bytes(&self) -> u64 {
        let checkpoint: u64 = self
            .chain
            .iter()
            .map(|reference| reference.size + checkpoint::TRAILER_SIZE as u64)
            .sum();
        let rotation = self.rotation.as_ref().map_or(0, |rotation| {
            rotation.next.file.allocated.max(rotation.next.end)
                + rotation.next.headers.file.allocated
        });
        superblock::SUPERBLOCK_FILE_SIZE
            + self.wal.file.allocated.max(self.wal.end)
            + self.wal.headers.file.allocated
            + checkpoint
            + rotation
    }

    /// Runs `operation` unless an earlier one failed; a failure makes the storage refuse every
    /// later call.
    fn guarded<T>(
        &mut self,
        operation: impl FnOnce(&mut Self) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.usable()?;
        let result = operation(self);
        self.failed = result.is_err();
        result
    }

    fn usable(&self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Io(std::io::Error::other(
                "an earlier storage operation failed",
            )));
        }
        Ok(())
    }

    fn write_unchecked(&mut self, write: &Write) -> Result<(), StorageError> {
        if self.maintenance_due {
            self.maintain()?;
        }
        match write {
            Write::Append(entry) => {
                let expected = self
                    .wal
                    .live
                    .back()
                    .map_or(Op(self.superblock.checkpoint.op), |last| last.op)
                    .next();
                assert_eq!(entry.op, expected, "appends must be consecutive");
                self.wal.append(entry);
                if self.wal.buffered() >= self.tuning.flush_bytes {
                    self.wal.flush(self.disk.as_mut())?;
                }
            }
            Write::Truncate { op } => {
                self.wal.truncate(*op);
                if self
                    .rotation
                    .as_ref()
                    .is_some_and(|rotation| rotation.copied > *op)
                {
                    // Entries it holds are cut: the next checkpoint rotates instead.
                    vsr::mark!(WalRotationCut);
                    self.rotation = None;
                }
            }
            Write::ViewState(view_state) => {
                self.wal.sync(self.disk.as_mut())?;
                self.superblock.view_state = *view_state;
                self.write_superblock()?;
            }
            Write::Checkpoint(checkpoint) => self.checkpoint(checkpoint)?,
        }
        Ok(())
    }

    fn write_superblock(&mut self) -> Result<(), StorageError> {
        self.superblock.sequence += 1;
        let encoded = self.superblock.encode();
        for offset in self.superblock.copy_offsets() {
            self.disk.write_at(SUPERBLOCK_FILE, offset, &encoded)?;
        }
        if !vsr::bug!(SuperblockUnsynced) {
            self.disk.sync(SUPERBLOCK_FILE)?;
        }
        Ok(())
    }

    /// Checkpoint file, then superblock, then reuse of log space: never the other way round.
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StorageError> {
        let written = self.begin_checkpoint(checkpoint)?.run()?;
        self.finish_checkpoint(written)?.remove()
    }

    /// Starts a checkpoint to be written away from the caller's thread: makes every write so
    /// far durable (no crash may keep the checkpoint but lose what preceded it) and names its
    /// file. Nothing is live until [`Self::finish_checkpoint`], which must come before the next
    /// checkpoint begins; writes may go on in between.
    ///
    /// # Errors
    /// [`StorageError::Io`]; after an error the storage refuses every further call.
    ///
    /// # Panics
    /// If an increment is not on the newest checkpoint: a bug in the caller.
    pub fn begin_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<CheckpointJob, StorageError> {
        self.guarded(|storage| storage.begin_checkpoint_unchecked(checkpoint))
    }

    fn begin_checkpoint_unchecked(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<CheckpointJob, StorageError> {
        if self.maintenance_due {
            self.maintain()?;
        }
        self.wal.sync(self.disk.as_mut())?;
        let previous = if checkpoint.since == Op(0) {
            None
        } else {
            let head = *self
                .chain
                .last()
                .expect("an increment follows a checkpoint");
            assert_eq!(
                Op(head.op),
                checkpoint.since,
                "an increment is on the newest checkpoint"
            );
            Some(head)
        };
        let generation = self.generation_next;
        self.generation_next += 1;
        let wal_generation = self.name_wal_generation();
        Ok(CheckpointJob {
            wal_next: wal_files(checkpoint.op.get() + 1, wal_generation),
            wal_grow_bytes: self.wal.grow_bytes(),
            wal_generation,
            background_pace: checkpoint::Pace {
                share_percent: self.tuning.checkpoint_disk_share_percent,
            },
            disk: self.disk.duplicate()?,
            name: checkpoint_file_name(checkpoint.op.get(), generation),
            generation,
            checkpoint: checkpoint.clone(),
            previous,
            chunk_size: self.tuning.checkpoint_chunk_bytes,
        })
    }

    /// Makes a written checkpoint live: the superblock names it, then the log space before it
    /// is reused and the files it replaces are removed.
    ///
    /// # Errors
    /// [`StorageError::Io`]; after an error the storage refuses every further call.
    ///
    /// # Panics
    /// If an increment no longer continues the newest checkpoint (another checkpoint was made
    /// live since this one began): a bug in the caller.
    pub fn finish_checkpoint(
        &mut self,
        written: WrittenCheckpoint,
    ) -> Result<Leftovers, StorageError> {
        self.guarded(|storage| storage.finish_checkpoint_unchecked(written))
    }

    fn finish_checkpoint_unchecked(
        &mut self,
        written: WrittenCheckpoint,
    ) -> Result<Leftovers, StorageError> {
        // Earlier writes first, so no crash keeps the checkpoint but loses what preceded it.
        self.wal.sync(self.disk.as_mut())?;
        if written.since == Op(0) {
            self.chain.clear();
        } else {
            assert_eq!(
                self.chain.last().map(|head| Op(head.op)),
                Some(written.since),
                "an increment is on the newest checkpoint"
            );
        }
        self.chain.push(written.reference);
        self.superblock.checkpoint = written.reference;
        let op = Op(written.reference.op);
        // After a state transfer the checkpoint can lie beyond the WAL's last entry: the WAL
        // must not take entries after it with a gap in between. It moves at once, with
        // nothing to copy.
        let beyond_wal = self.wal.last_op().is_none_or(|last| last < op);
        self.wal.checkpoint(op);
        // Until the entries after the checkpoint are in a WAL of their own, the WAL starts
        // before the checkpoint, as after a crash inside a rotation, which open handles (it
        // replays from the WAL's start and applies the checkpoint at the end).
        self.write_superblock()?;
        if self.rotation.take().is_some() {
            // It was to start after an older checkpoint; its files are leftovers now.
            vsr::mark!(WalRotationSuperseded);
        }
        if written.wal_generation > self.superblock.wal_generation {
            self.rotation = Some(Rotation {
                next: written.wal_next,
                start: written.reference.op + 1,
                generation: written.wal_generation,
                copied: op,
            });
        }
        if beyond_wal {
            if self.rotation.is_some() {
                self.rotation_step()?;
            } else {
                self.rotate()?;
            }
        }
        self.leftovers()
    }

    /// A WAL generation never named before.
    fn name_wal_generation(&mut self) -> u64 {
        self.wal_generation_named = self
            .wal_generation_named
            .max(self.superblock.wal_generation)
            + 1;
        self.wal_generation_named
    }

    /// Copies the next step of entries into the WAL taking over, if any; once it has caught up,
    /// makes it the live WAL and removes the old one.
    fn rotation_step(&mut self) -> Result<(), StorageError> {
        let Some(rotation) = self.rotation.as_mut() else {
            return Ok(());
        };
        self.wal.sync(self.disk.as_mut())?;
        let budget = match self.tuning.rotation_copy_bytes_max {
            0 => u64::MAX,
            bytes => bytes,
        };
        let disk = self.disk.as_mut();
        rotation.copied = self
            .wal
            .copy_after(disk, &mut rotation.next, rotation.copied, budget)?;
        rotation.next.sync(disk)?;
        if self.wal.last_op() > Some(rotation.copied) {
            vsr::mark!(WalRotationInSteps);
            return Ok(());
        }
        let rotation = self.rotation.take().expect("checked");
        self.superblock.wal_start = rotation.start;
        self.superblock.wal_generation = rotation.generation;
        self.write_superblock()?;
        let old = std::mem::replace(&mut self.wal, rotation.next);
        for name in [&old.file.name, &old.headers.file.name] {
            self.disk.close(name);
        }
        Leftovers {
            disk: Some(self.disk.duplicate()?),
            names: vec![old.file.name, old.headers.file.name],
        }
        .remove()
    }

    /// Moves the live entries to a new WAL file starting after the checkpoint, points the
    /// superblock to it, then removes the old files.
    fn rotate(&mut self) -> Result<(), StorageError> {
        let start = self.superblock.checkpoint.op + 1;
        let generation = self.name_wal_generation();
        let next = self
            .wal
            .rotate(self.disk.as_mut(), wal_files(start, generation))?;
        self.superblock.wal_start = start;
        self.superblock.wal_generation = generation;
        self.write_superblock()?;
        self.wal = next;
        self.leftovers()?.remove()
    }

    /// The data files no longer live, their handles closed here so that removing them frees
    /// their space at once, wherever that happens.
    fn leftovers(&mut self) -> Result<Leftovers, StorageError> {
        let mut live = live_names(&self.superblock, &self.chain);
        if let Some(rotation) = &self.rotation {
            live.push(rotation.next.file.name.clone());
            live.push(rotation.next.headers.file.name.clone());
        }
        let mut names = Vec::new();
        for name in self.disk.list()? {
            if is_data_file(&name) && !live.contains(&name) {
                self.disk.close(&name);
                names.push(name);
            }
        }
        let disk = if names.is_empty() {
            None
        } else {
            Some(self.disk.duplicate()?)
        };
        Ok(Leftovers { disk, names })
    }

    /// The work open defers to the first write.
    fn maintain(&mut self) -> Result<(), StorageError> {
        if self.damaged {
            self.mark_recovering()?;
        }
        self.wal.headers.create_if_missing(self.disk.as_mut())?;
        if self.dirty_tail {
            // Zero everything after the valid records, durably, before writing there: no stale
            // record may survive behind new ones.
            vsr::mark!(WalDirtyTailZeroed);
            self.wal.file.cut(self.disk.as_mut(), self.wal.end)?;
            self.dirty_tail = false;
        }
        if !self.slot_repairs.is_empty() {
            // Nor any header copy naming a record behind the cut: it would be taken for a lost
            // record of the new log. Nor any damaged slot, which a later truncate and torn
            // tail could make look like a lost record. And every record kept gets its copy.
            // After damage this comes after the superblock says recovering: a crash here may
            // lose the evidence.
            let repairs = std::mem::take(&mut self.slot_repairs);
            self.wal.repair_slots(self.disk.as_mut(), &repairs)?;
        }
        if self.superblock.wal_start != self.superblock.checkpoint.op + 1 {
            vsr::mark!(OpenFinishesInterruptedRotation);
            self.rotate()?;
        }
        self.leftovers()?.remove()?;
        self.maintenance_due = false;
        Ok(())
    }
}

impl FileStorage {
    /// After damage, and before anything is discarded: durably marks the replica recovering
    /// (the core's first write after a damaged open says the same), starting the new, empty
    /// WAL first if the checkpoint was lost.
    fn mark_recovering(&mut self) -> Result<(), StorageError> {
        if self.reset_log {
            let disk = self.disk.as_mut();
            let mut wal = Wal::create(
                disk,
                self.superblock.wal_files(),
                self.tuning.wal_grow_bytes,
                self.tuning.headers_grow_bytes,
            )?;
            wal.sync(disk)?;
            disk.sync_dir()?;
            self.wal = wal;
            self.reset_log = false;
        }
        self.superblock.view_state.recovering = true;
        self.write_superblock()?;
        self.damaged = false;
        Ok(())
    }
}

/// Syncs every data file and the directory. A process that died (the machine still up) left
/// its unsynced writes in the page cache, where open reads them: they must be durable before
/// the replica acts on what open returns, or a later power loss could take back what it
/// acknowledged.
fn make_durable(disk: &mut dyn Disk) -> Result<(), StorageError> {
    for name in disk.list()? {
        if name == SUPERBLOCK_FILE || is_data_file(&name) {
            disk.sync(&name)?;
        }
    }
    disk.sync_dir()?;
    Ok(())
}

fn identity_of(superblock: &Superblock) -> Identity {
    Identity {
        cluster: superblock.cluster,
        replica: superblock.replica,
        replica_count: superblock.replica_count,
    }
}

fn live_names(superblock: &Superblock, chain: &[CheckpointReference]) -> Vec<String> {
    let files = superblock.wal_files();
    let mut names = vec![files.name, files.headers_name];
    names.extend(superblock.checkpoint_file());
    names.extend(
        chain
            .iter()
            .map(|reference| checkpoint_file_name(reference.op, reference.generation)),
    );
    names
}

/// Loads the live checkpoint chain: the file the superblock names, then, through each
/// trailer, the one it is an increment on, down to a whole state. Returns the checkpoints and
/// their references, whole state first.
fn load_chain(
    disk: &mut dyn Disk,
    superblock: &Superblock,
    tuning: Tuning,
) -> Result<(Vec<Checkpoint>, Vec<CheckpointReference>), StorageError> {
    let mut checkpoints = Vec::new();
    let mut references = Vec::new();
    if superblock.checkpoint.generation == 0 {
        return Ok((checkpoints, references));
    }
    let mut next = Some((superblock.checkpoint, true));
    while let Some((reference, op_checksum_known)) = next {
        if checkpoints.len() == checkpoint::CHAIN_FILES_MAX {
            return Err(StorageError::Corrupt(format!(
                "the checkpoint chain is longer than {} files",
                checkpoint::CHAIN_FILES_MAX
            )));
        }
        let name = checkpoint_file_name(reference.op, reference.generation);
        let (loaded, trailer) = checkpoint::load(
            disk,
            &name,
            &reference,
            op_checksum_known,
            tuning.checkpoint_chunk_bytes,
        )?;
        references.push(trailer.reference);
        checkpoints.push(loaded);
        next = trailer.previous.map(|previous| (previous, false));
    }
    checkpoints.reverse();
    references.reverse();
    Ok((checkpoints, references))
}

fn read_superblock(disk: &mut dyn Disk, directory: &Path) -> Result<Superblock, StorageError> {
    let not_vsr = || StorageError::NotVsrData(PathBuf::from(directory));
    if !disk.list()?.iter().any(|name| name == SUPERBLOCK_FILE) {
        return Err(not_vsr());
    }
    let mut copies = Vec::with_capacity(COPIES);
    for index in 0..COPIES as u64 {
        let mut bytes = [0u8; COPY_SIZE];
        // A copy that cannot be read (a latent sector error) is as good as a damaged one.
        copies.push(
            match disk.read_at(SUPERBLOCK_FILE, index * COPY_STRIDE, &mut bytes) {
                Ok(read) => Superblock::decode(&bytes[..read]),
                Err(_) => Copy::Damaged,
            },
        );
    }
    match superblock::best(&copies) {
        Copy::Valid(superblock) => Ok(superblock),
        Copy::Newer(found) => Err(StorageError::NewerFormat {
            found,
            supported: superblock::FORMAT_VERSION,
        }),
        Copy::Damaged => Err(StorageError::Corrupt(format!(
            "every copy of the superblock in {} is damaged",
            directory.display()
        ))),
        Copy::Foreign => Err(not_vsr()),
    }
}

/// The work open found for the first write, besides damage (see [`FileStorage`]'s fields).
struct Deferred {
    /// Anything but zeros follows the valid records.
    dirty_tail: bool,
    /// Slots to zero or rewrite before the first write.
    slot_repairs: SlotRepairs,
    /// Data files that are not live are left over from an interrupted checkpoint.
    leftovers: bool,
    /// The WAL has no headers file (lost, or written by an earlier build).
    headers_missing: bool,
    /// The checkpoint was lost: the first write starts a new, empty WAL.
    reset_log: bool,
}

/// What replay found besides the state.
struct ReplayDamage {
    damage: Damage,
    /// Anything but zeros follows the valid records.
    dirty_tail: bool,
    /// Slots to zero or rewrite before the first write.
    slot_repairs: SlotRepairs,
    /// The WAL has no headers file (lost, or written by an earlier build).
    headers_missing: bool,
}

/// Replays the live WAL on top of the checkpoint.
///
/// The WAL may start before the checkpoint (a crash between the superblock update and the
/// rotation): replay then starts from a stand-in checkpoint at the WAL's start and applies the
/// real checkpoint at the end, which is what applying the writes in order would have done.
fn replay_wal(
    disk: &mut dyn Disk,
    superblock: &Superblock,
    checkpoints: Vec<Checkpoint>,
    tuning: Tuning,
) -> Result<(DurableState, Wal, ReplayDamage), StorageError> {
    let files = superblock.wal_files();
    if !disk.list()?.contains(&files.name) {
        return Err(StorageError::Corrupt(format!(
            "the live WAL file {} is missing",
            files.name
        )));
    }
    let base = (superblock.wal_start > 1).then(|| Checkpoint {
        op: Op(superblock.wal_start - 1),
        op_checksum: EntryChecksum(0),
        since: Op(0),
        snapshot: bytes::Bytes::new().into(),
    });
    let mut durable = DurableState {
        view_state: superblock.view_state,
        checkpoint: base,
        increments: Vec::new(),
        entries: std::collections::VecDeque::new(),
        damaged: false,
    };
    let checkpoint_op = checkpoints
        .last()
        .map_or(0, |checkpoint| checkpoint.op.get());
    let replay = replay(disk, &files, checkpoint_op, &mut durable)?;
    let headers = match replay.headers_size {
        Some(size) => Headers::new(
            files.headers_name,
            files.start,
            size,
            tuning.headers_grow_bytes,
        ),
        None => Headers::new_missing(files.headers_name, files.start, tuning.headers_grow_bytes),
    };
    let mut wal = Wal::new(
        files.name,
        replay.end,
        replay.file_size,
        replay.live,
        headers,
        tuning.wal_grow_bytes,
    );
    // The chain before the newest checkpoint is taken as it is; the newest is applied, which
    // drops the entries it covers (the WAL may start before it).
    let mut chain = checkpoints;
    let head = chain.pop();
    let mut earlier = chain.into_iter();
    durable.checkpoint = earlier.next();
    durable.increments = earlier.collect();
    if let Some(head) = head {
        wal.checkpoint(head.op);
        durable.apply(&Write::Checkpoint(head));
    }
    let damage = Damage {
        corrupt_ops: replay.corrupt_ops,
        torn_tail_records: replay.torn_tail_records,
        checkpoint_corrupt: false,
    };
    let replay_damage = ReplayDamage {
        damage,
        dirty_tail: replay.dirty_tail,
        slot_repairs: replay.slot_repairs,
        headers_missing: replay.headers_size.is_none(),
    };
    Ok((durable, wal, replay_damage))
}
