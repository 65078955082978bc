//! Backup files: the replicated state of a live cluster at one committed op, in one file, and
//! the restore that turns such a file into a new cluster's data directories.
//!
//! `vsr backup` asks a replica for its state at its commit number (frozen while it goes on
//! serving, see `vsr::Replica::snapshot_at_commit`) and streams it into a file with
//! [`BackupWriter`]; `vsr restore` checks the whole file with [`verify`] before it writes
//! anything, then [`restore`] formats each data directory and installs the state there as the
//! directory's checkpoint, so every replica of the new cluster starts at the captured op.
//!
//! # Layout (little-endian)
//!
//! | part     | field                | size | meaning                                       |
//! |----------|----------------------|------|-----------------------------------------------|
//! | header   | magic                | 8    | `VSRBKUP1`                                    |
//! |          | format               | 4    | [`BACKUP_FORMAT`]                             |
//! |          | reserved             | 4    | zero                                          |
//! |          | cluster              | 16   | the cluster it was taken from                 |
//! |          | view                 | 8    | the view the op was committed in (or later)   |
//! |          | op                   | 8    | the captured op: the state holds every op up to it |
//! |          | op checksum          | 16   | the checksum of the log entry at op (the hash chain goes on from it) |
//! |          | created              | 8    | seconds since the Unix epoch                  |
//! |          | checksum             | 16   | of the header's bytes before it               |
//! | snapshot | bytes                | n    | client table and state, as a checkpoint holds them |
//! | trailer  | magic                | 8    | `VSRBKEND`                                    |
//! |          | size                 | 8    | n                                             |
//! |          | snapshot checksum    | 16   | of the n snapshot bytes                       |
//! |          | checksum             | 16   | of the trailer's bytes before it and the header's checksum |
//!
//! The trailer comes last because the snapshot is streamed: its size and checksum are known only
//! once it has been written. A file cut anywhere, or with any bit flipped, fails a checksum or
//! the size check.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use vsr::checksum::{Checksum, checksum};
use vsr::{Checkpoint, DeltaSource, EntryChecksum, Op, Snapshot, View, ViewState, Write};

use crate::layout::{self, SUPERBLOCK_FILE};
use crate::{FileStorage, Identity, StorageError};

/// The version of the backup file layout this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

const HEADER_MAGIC: [u8; 8] = *b"VSRBKUP1";
const TRAILER_MAGIC: [u8; 8] = *b"VSRBKEND";
/// Bytes of the header.
pub const HEADER_SIZE: usize = 8 + 4 + 4 + 16 + 8 + 8 + 16 + 8 + 16;
const _: () = assert!(HEADER_SIZE == 88);
/// Bytes of the trailer.
pub const TRAILER_SIZE: usize = 8 + 8 + 16 + 16;
const _: () = assert!(TRAILER_SIZE == 48);
/// Bytes read at a time when a backup file is checked or restored.
const READ_CHUNK_SIZE: usize = 1 << 20;

/// What a backup holds besides the state: where it comes from and which op it captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// The cluster it was taken from.
    pub cluster: u128,
    /// The view the captured op was committed in, or a later one.
    pub view: u64,
    /// The captured op: the state holds the effects of every op up to it, and no other.
    pub op: u64,
    /// The checksum of the log entry at `op`: the next op's parent.
    pub op_checksum: u128,
    /// When it was taken, in seconds since the Unix epoch.
    pub created_unix_seconds: u64,
}

impl BackupHeader {
    /// The header's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&HEADER_MAGIC);
        put(&BACKUP_FORMAT.to_le_bytes());
        put(&0u32.to_le_bytes());
        put(&self.cluster.to_le_bytes());
        put(&self.view.to_le_bytes());
        put(&self.op.to_le_bytes());
        put(&self.op_checksum.to_le_bytes());
        put(&self.created_unix_seconds.to_le_bytes());
        let sealed = checksum(&out[..HEADER_SIZE - 16]);
        out[HEADER_SIZE - 16..].copy_from_slice(&sealed.to_le_bytes());
        out
    }

    /// Reads a header [`Self::encode`] wrote.
    ///
    /// # Errors
    /// [`BackupError::NotABackup`], [`BackupError::NewerFormat`] or [`BackupError::Damaged`].
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Result<Self, BackupError> {
        if bytes[..8] != HEADER_MAGIC {
            return Err(BackupError::NotABackup);
        }
        let sealed = u128::from_le_bytes(bytes[HEADER_SIZE - 16..].try_into().expect("16"));
        if checksum(&bytes[..HEADER_SIZE - 16]) != sealed {
            return Err(BackupError::Damaged("the header fails its checksum"));
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
        if format != BACKUP_FORMAT {
            return Err(BackupError::NewerFormat { found: format });
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u128_at = |at: usize| u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16"));
        let header = Self {
            cluster: u128_at(16),
            view: u64_at(32),
            op: u64_at(40),
            op_checksum: u128_at(48),
            created_unix_seconds: u64_at(64),
        };
        if header.op >= vsr::limits::NUMBER_MAX || header.view >= vsr::limits::NUMBER_MAX {
            return Err(BackupError::Damaged(
                "the header names an impossible op or view",
            ));
        }
        Ok(header)
    }

    fn checksum(&self) -> u128 {
        let bytes = self.encode();
        u128::from_le_bytes(bytes[HEADER_SIZE - 16..].try_into().expect("16"))
    }
}

/// A checked backup: its header, and the size and checksum of its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// The header.
    pub header: BackupHeader,
    /// Bytes of the state (client table and state machine).
    pub snapshot_size: u64,
    /// Checksum of those bytes.
    pub snapshot_checksum: u128,
}

impl BackupSummary {
    /// Bytes of the whole file.
    #[must_use]
    pub fn file_size(&self) -> u64 {
        (HEADER_SIZE + TRAILER_SIZE) as u64 + self.snapshot_size
    }
}

fn encode_trailer(summary: &BackupSummary) -> [u8; TRAILER_SIZE] {
    let mut out = [0u8; TRAILER_SIZE];
    out[..8].copy_from_slice(&TRAILER_MAGIC);
    out[8..16].copy_from_slice(&summary.snapshot_size.to_le_bytes());
    out[16..32].copy_from_slice(&summary.snapshot_checksum.to_le_bytes());
    let sealed = trailer_seal(&out[..32], summary.header.checksum());
    out[32..].copy_from_slice(&sealed.to_le_bytes());
    out
}

/// The trailer's checksum covers the header's too: a trailer spliced from another backup fails.
fn trailer_seal(fields: &[u8], header_checksum: u128) -> u128 {
    let mut hasher = Checksum::default();
    hasher.update(fields);
    hasher.update(&header_checksum.to_le_bytes());
    hasher.finalize()
}

/// Writes a backup file as its state streams in: the header first, the state in pieces, the
/// trailer at [`Self::finish`].
pub struct BackupWriter<W: io::Write> {
    out: W,
    header: BackupHeader,
    hasher: Checksum,
    size: u64,
}

impl<W: io::Write> BackupWriter<W> {
    /// Starts a backup file with `header`.
    ///
    /// # Errors
    /// If `out` fails.
    pub fn new(mut out: W, header: BackupHeader) -> io::Result<Self> {
        out.write_all(&header.encode())?;
        Ok(Self {
            out,
            header,
            hasher: Checksum::default(),
            size: 0,
        })
    }

    /// Appends bytes of the state.
    ///
    /// # Errors
    /// If `out` fails.
    pub fn write_snapshot(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes of the state written so far.
    #[must_use]
    pub fn snapshot_size(&self) -> u64 {
        self.size
    }

    /// Writes the trailer; returns the output and what the file holds.
    ///
    /// # Errors
    /// If `out` fails.
    pub fn finish(mut self) -> io::Result<(W, BackupSummary)> {
        let summary = BackupSummary {
            header: self.header,
            snapshot_size: self.size,
            snapshot_checksum: self.hasher.finalize(),
        };
        self.out.write_all(&encode_trailer(&summary))?;
        self.out.flush()?;
        Ok((self.out, summary))
    }
}

/// Why a backup file cannot be used, or a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file could not be read.
    #[error("cannot read backup {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file does not start as a backup does.
    #[error("not a vsr backup file (it does not start with the backup header)")]
    NotABackup,
    /// Written by a newer build.
    #[error("backup format {found} is not one this build reads ({BACKUP_FORMAT}): use a newer vsr")]
    NewerFormat {
        /// The format the file says.
        found: u32,
    },
    /// Shorter than its header and trailer, or cut before its trailer.
    #[error(
        "the backup is truncated ({size} bytes; {detail}): it was cut short, take it again or \
         find a whole copy"
    )]
    Truncated {
        /// The file's size.
        size: u64,
        /// What is missing.
        detail: &'static str,
    },
    /// A checksum does not match: bytes changed after the backup was written.
    #[error("the backup is damaged: {0}; take it again or find a whole copy")]
    Damaged(&'static str),
    /// The file changed while it was being restored.
    #[error(
        "the backup file changed while it was being restored: restore from a copy nobody writes"
    )]
    Changed,
    /// Writing a data directory failed.
    #[error("cannot restore into {path}: {source}")]
    Storage {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: StorageError,
    },
    /// A restored data directory does not read back as the backup.
    #[error("the restored data in {path} does not read back as the backup ({detail})")]
    ReadBack {
        /// The data directory.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
}

/// Reads the whole of the backup at `path` and checks every checksum, without writing
/// anything; returns what it holds.
///
/// # Errors
/// [`BackupError`]: unreadable, not a backup, a newer format, truncated or damaged.
pub fn verify(path: &Path) -> Result<BackupSummary, BackupError> {
    let read_error = |source| BackupError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size < (HEADER_SIZE + TRAILER_SIZE) as u64 {
        let mut start = [0u8; 8];
        let mut reader = &file;
        let read = reader.read(&mut start).map_err(read_error)?;
        if read < 8 || start != HEADER_MAGIC {
            return Err(BackupError::NotABackup);
        }
        return Err(BackupError::Truncated {
            size,
            detail: "shorter than a header and a trailer",
        });
    }
    let mut reader = BufReader::with_capacity(READ_CHUNK_SIZE, file);
    let mut header = [0u8; HEADER_SIZE];
    reader.read_exact(&mut header).map_err(read_error)?;
    let header = BackupHeader::decode(&header)?;
    let snapshot_size = size - (HEADER_SIZE + TRAILER_SIZE) as u64;
    let snapshot_checksum = checksum_of(&mut reader, snapshot_size).map_err(read_error)?;
    let mut trailer = [0u8; TRAILER_SIZE];
    reader.read_exact(&mut trailer).map_err(read_error)?;
    let summary = BackupSummary {
        header,
        snapshot_size,
        snapshot_checksum,
    };
    check_trailer(&trailer, &summary, size)?;
    Ok(summary)
}

/// Checks `trailer` against what the file showed: its seal, then the size and checksum it
/// records.
fn check_trailer(
    trailer: &[u8; TRAILER_SIZE],
    found: &BackupSummary,
    file_size: u64,
) -> Result<(), BackupError> {
    let sealed = u128::from_le_bytes(trailer[32..].try_into().expect("16"));
    if trailer[..8] != TRAILER_MAGIC
        || trailer_seal(&trailer[..32], found.header.checksum()) != sealed
    {
        // Most likely the file was cut and the trailer's place holds state bytes; a trailer
        // that is present but damaged reads the same.
        return Err(BackupError::Truncated {
            size: file_size,
            detail: "no valid trailer at its end",
        });
    }
    let recorded_size = u64::from_le_bytes(trailer[8..16].try_into().expect("8"));
    if recorded_size != found.snapshot_size {
        return Err(BackupError::Truncated {
            size: file_size,
            detail: "its trailer records another size",
        });
    }
    let recorded = u128::from_le_bytes(trailer[16..32].try_into().expect("16"));
    if recorded != found.snapshot_checksum {
        return Err(BackupError::Damaged("the state fails its checksum"));
    }
    Ok(())
}

fn checksum_of(reader: &mut impl Read, mut size: u64) -> io::Result<u128> {
    let mut hasher = Checksum::default();
    let mut buffer = vec![0u8; READ_CHUNK_SIZE];
    while size > 0 {
        let take = usize::try_from(size.min(READ_CHUNK_SIZE as u64)).expect("bounded");
        reader.read_exact(&mut buffer[..take])?;
        hasher.update(&buffer[..take]);
        size -= take as u64;
    }
    Ok(hasher.finalize())
}

/// Formats `directory` for `identity` and installs the backup at `path`, which [`verify`]
/// checked into `summary`, as its checkpoint: the replica starts at the captured op, in the
/// backup's view, with an empty log after it. The state streams from the file into the
/// checkpoint file; nothing holds all of it. Then the directory is read back: the checkpoint's
/// bytes and the superblock must say what the backup says.
///
/// # Errors
/// [`BackupError::Storage`] (the directory is locked, holds vsr data, or a write failed),
/// [`BackupError::Changed`] if the file no longer matches `summary`, [`BackupError::ReadBack`].
pub fn restore(
    path: &Path,
    summary: &BackupSummary,
    identity: Identity,
    directory: &Path,
) -> Result<(), BackupError> {
    let storage_error = |source| BackupError::Storage {
        path: directory.to_path_buf(),
        source,
    };
    crate::format(directory, identity, false).map_err(storage_error)?;
    let installed = install(path, summary, identity.cluster, directory)
        .and_then(|()| read_back(summary, directory));
    if installed.is_err() {
        // Formatted here (format refuses a directory holding vsr data), so every vsr file in
        // it is this restore's: the directory is left as it was found, ready for another try.
        discard(directory);
    }
    installed
}

fn install(
    path: &Path,
    summary: &BackupSummary,
    cluster: u128,
    directory: &Path,
) -> Result<(), BackupError> {
    let storage_error = |source| BackupError::Storage {
        path: directory.to_path_buf(),
        source,
    };
    let source = Arc::new(FileSource {
        path: path.to_path_buf(),
        size: summary.snapshot_size,
        failure: Mutex::new(None),
    });
    let opened = FileStorage::open(directory, Some(cluster)).map_err(storage_error)?;
    let mut storage = opened.storage;
    let header = summary.header;
    let view = View(header.view);
    let checkpoint = Checkpoint {
        op: Op(header.op),
        op_checksum: EntryChecksum(header.op_checksum),
        since: Op(0),
        snapshot: Snapshot::from_source(Arc::clone(&source) as Arc<dyn DeltaSource>),
    };
    storage
        .write(&Write::Checkpoint(checkpoint))
        .map_err(storage_error)?;
    if let Some(failure) = source.failure() {
        return Err(failure);
    }
    storage
        .write(&Write::ViewState(ViewState {
            view,
            last_normal_view: view,
            commit: Op(header.op),
            recovering: false,
        }))
        .map_err(storage_error)?;
    storage.sync().map_err(storage_error)
}

/// Removes what a failed restore wrote: the superblock first (without it nothing there is vsr
/// data), then the log and checkpoint files. Best effort: the restore's error is what matters.
fn discard(directory: &Path) {
    let _ = std::fs::remove_file(directory.join(SUPERBLOCK_FILE));
    let wal = layout::wal_files(directory).unwrap_or_default();
    let checkpoints = layout::checkpoint_files(directory).unwrap_or_default();
    let paths = wal
        .into_iter()
        .flat_map(|file| [file.path, file.headers_path])
        .chain(checkpoints.into_iter().map(|file| file.path));
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// Restores the backup at `path` ([`verify`] checked it into `summary`) into every one of
/// `targets`, in order, as [`restore`] does. If one fails, the directories restored before it
/// are emptied again too: a new cluster is restored whole or not at all.
///
/// # Errors
/// As [`restore`], for the first target that failed.
pub fn restore_all(
    path: &Path,
    summary: &BackupSummary,
    targets: &[(Identity, PathBuf)],
) -> Result<(), BackupError> {
    for (done, (identity, directory)) in targets.iter().enumerate() {
        if let Err(error) = restore(path, summary, *identity, directory) {
            for (_, restored) in &targets[..done] {
                discard(restored);
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Checks that `directory` holds the backup: a superblock copy naming the captured op as its
/// checkpoint and commit, and a checkpoint file at that op whose state has the backup's size
/// and checksum.
fn read_back(summary: &BackupSummary, directory: &Path) -> Result<(), BackupError> {
    let differs = |detail: String| BackupError::ReadBack {
        path: directory.to_path_buf(),
        detail,
    };
    let io = |error: io::Error| differs(error.to_string());
    let op = summary.header.op;
    let newest = layout::superblock_copies(directory)
        .map_err(io)?
        .into_iter()
        .filter_map(|copy| copy.contents)
        .max_by_key(|contents| contents.sequence)
        .ok_or_else(|| differs(format!("no valid copy in {SUPERBLOCK_FILE}")))?;
    if newest.checkpoint_op != op || newest.view_state.commit != Op(op) {
        return Err(differs(format!(
            "the superblock names checkpoint {} and commit {}, not op {op}",
            newest.checkpoint_op, newest.view_state.commit
        )));
    }
    let file = layout::checkpoint_files(directory)
        .map_err(io)?
        .into_iter()
        .find(|file| file.op == op)
        .ok_or_else(|| differs(format!("no checkpoint file at op {op}")))?;
    let size = file.snapshot.end - file.snapshot.start;
    let mut reader = BufReader::new(File::open(&file.path).map_err(io)?);
    if size != summary.snapshot_size
        || checksum_of(&mut reader, size).map_err(io)? != summary.snapshot_checksum
    {
        return Err(differs(format!(
            "the checkpoint's state ({size} bytes) is not the backup's ({} bytes)",
            summary.snapshot_size
        )));
    }
    Ok(())
}

/// The state of a backup file, read in pieces as a checkpoint is written from it. A read
/// error or a file that changed since it was checked ends the pieces early and is kept for
/// [`restore`] to report; the read-back catches the short checkpoint in any case.
struct FileSource {
    path: PathBuf,
    size: u64,
    failure: Mutex<Option<BackupError>>,
}

impl FileSource {
    fn fail(&self, error: BackupError) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(error);
    }

    fn failure(&self) -> Option<BackupError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn open(&self) -> Option<BufReader<File>> {
        let mut file = match File::open(&self.path) {
            Ok(file) => BufReader::with_capacity(READ_CHUNK_SIZE, file),
            Err(source) => {
                self.fail(BackupError::Read {
                    path: self.path.clone(),
                    source,
                });
                return None;
            }
        };
        let mut header = [0u8; HEADER_SIZE];
        if let Err(source) = file.read_exact(&mut header) {
            self.fail(BackupError::Read {
                path: self.path.clone(),
                source,
            });
            return None;
        }
        Some(file)
    }
}

impl DeltaSource for FileSource {
    fn pieces(self: Arc<Self>) -> Box<dyn Iterator<Item = Bytes> + Send> {
        let Some(mut file) = self.open() else {
            return Box::new(std::iter::empty());
        };
        let mut left = self.size;
        let mut hasher = Some(Checksum::default());
        Box::new(std::iter::from_fn(move || {
            if left == 0 {
                let mut trailer = [0u8; TRAILER_SIZE];
                if let Some(hasher) = hasher.take() {
                    let read = file.read_exact(&mut trailer);
                    let recorded = u128::from_le_bytes(trailer[16..32].try_into().expect("16"));
                    if read.is_err() || recorded != hasher.finalize() {
                        self.fail(BackupError::Changed);
                    }
                }
                return None;
            }
            let take = usize::try_from(left.min(READ_CHUNK_SIZE as u64)).expect("bounded");
            let mut piece = vec![0u8; take];
            if let Err(source) = file.read_exact(&mut piece) {
                self.fail(BackupError::Read {
                    path: self.path.clone(),
                    source,
                });
                left = 0;
                hasher = None;
                return None;
            }
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&piece);
            }
            left -= take as u64;
            Some(Bytes::from(piece))
        }))
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.size)
    }
}

#[cfg(test)]
mod tests;
