//! Where things lie in a data directory's files, for tools that inspect or deliberately damage
//! the data of a stopped replica: the chaos tool and tests.
//!
//! Everything here is built from the constants, file names and decoders the storage itself
//! uses (`record.rs`, `headers.rs`, `superblock.rs`, `checkpoint.rs`), so a change of layout
//! moves these answers with it: a tool that flips "a byte inside the payload of op 7" keeps
//! hitting that payload. Nothing here writes, and nothing here is needed to run a replica.
//!
//! * [`wal_files`] lists the WAL files (live or left over from an interrupted checkpoint);
//!   [`WalFile::records`] walks one from offset 0 and gives each record's header and payload
//!   ranges, and [`WalFile::slot`] the range of an op's header copy in the headers file.
//! * [`checkpoint_files`] lists the checkpoint files with the ranges of their snapshot and
//!   trailer.
//! * [`superblock_copies`] gives the range of each superblock copy, the ranges of the fields a
//!   tool may want to change, and what a valid copy holds.
//!
//! Ranges are byte offsets in the file named. A walk stops at the first record whose header is
//! not valid (the zeros after the last record of a preallocated file, or damage), so damage a
//! tool made earlier can hide the records after it.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vsr::ViewState;

use crate::checkpoint::TRAILER_SIZE;
use crate::disk::read_up_to;
use crate::headers::SLOT_SIZE;
use crate::record::{RECORD_HEADER_SIZE, RecordKind, decode_header};
use crate::superblock::{
    self, CHECKSUM_RANGE, COPIES, COPY_SIZE, COPY_STRIDE, Copy, FORMAT_VERSION_RANGE, SEALED_RANGE,
    Superblock, VIEW_STATE_RANGE, parse_checkpoint_file_name, parse_wal_file_name,
};

/// Name of the superblock file in a data directory.
pub const SUPERBLOCK_FILE: &str = superblock::SUPERBLOCK_FILE;

/// One WAL file of a data directory and its headers file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFile {
    /// The WAL file.
    pub path: PathBuf,
    /// Its headers file (which may be missing).
    pub headers_path: PathBuf,
    /// The first op the WAL may hold: the op of slot 0 in the headers file.
    pub start: u64,
    /// The generation in its name.
    pub generation: u64,
}

/// What a WAL record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalRecordKind {
    /// An entry appended to the log.
    Entry,
    /// A truncate: every entry after `op` removed.
    Truncate,
}

/// Where one record of a WAL file lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// Entry or truncate.
    pub kind: WalRecordKind,
    /// The entry's op, or the truncate's last kept op.
    pub op: u64,
    /// The record's header (with its own checksum and that of the payload).
    pub header: Range<u64>,
    /// The record's payload (empty for a truncate); an entry's payload is the entry as a
    /// prepare carries it.
    pub payload: Range<u64>,
}

impl WalRecord {
    /// The whole record, header and payload.
    #[must_use]
    pub fn range(&self) -> Range<u64> {
        self.header.start..self.payload.end
    }
}

impl WalFile {
    /// The records of the file from offset 0 up to the first that is not valid or not wholly
    /// inside the file. Headers are verified (checksum and fields); payloads are not, so a
    /// record whose payload was damaged is still listed.
    ///
    /// # Errors
    /// If the file cannot be opened or read.
    pub fn records(&self) -> io::Result<Vec<WalRecord>> {
        let file = File::open(&self.path)?;
        let size = file.metadata()?.len();
        let header_size = RECORD_HEADER_SIZE as u64;
        let mut records = Vec::new();
        let mut offset = 0;
        let mut bytes = [0u8; RECORD_HEADER_SIZE];
        while offset + header_size <= size {
            file.read_exact_at(&mut bytes, offset)?;
            let Some(header) = decode_header(&bytes) else {
                break;
            };
            let end = offset + header.record_size() as u64;
            if end > size {
                break;
            }
            records.push(WalRecord {
                kind: match header.kind {
                    RecordKind::Entry => WalRecordKind::Entry,
                    RecordKind::Truncate => WalRecordKind::Truncate,
                },
                op: header.op,
                header: offset..offset + header_size,
                payload: offset + header_size..end,
            });
            offset = end;
        }
        Ok(records)
    }

    /// Where the headers file holds the copy of the header of op `op`'s entry record.
    ///
    /// # Panics
    /// If `op` is before the WAL's start.
    #[must_use]
    pub fn slot(&self, op: u64) -> Range<u64> {
        assert!(op >= self.start, "op {op} is before the WAL's start");
        let offset = (op - self.start) * SLOT_SIZE as u64;
        offset..offset + SLOT_SIZE as u64
    }
}

/// One checkpoint file of a data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointFile {
    /// The file.
    pub path: PathBuf,
    /// The op in its name: the checkpoint's op.
    pub op: u64,
    /// The generation in its name.
    pub generation: u64,
    /// The snapshot; empty if the file is shorter than a trailer.
    pub snapshot: Range<u64>,
    /// The checksummed trailer after the snapshot (or the whole of a file too short for one).
    pub trailer: Range<u64>,
}

impl CheckpointFile {
    /// The whole file.
    #[must_use]
    pub fn range(&self) -> Range<u64> {
        self.snapshot.start..self.trailer.end
    }
}

/// One copy of the superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperblockCopy {
    /// The copy in the superblock file.
    pub range: Range<u64>,
    /// Its checksum, of [`Self::sealed`].
    pub checksum: Range<u64>,
    /// The bytes the checksum covers: everything after it.
    pub sealed: Range<u64>,
    /// Its format version.
    pub format_version: Range<u64>,
    /// Its sequence number and view state (sequence, view, last normal view, commit). Damage
    /// here makes the copy fail its checksum while its magic survives: it reads as damaged,
    /// not as foreign data.
    pub view_state: Range<u64>,
    /// What the copy holds, if it is a valid copy of this build's format.
    pub contents: Option<SuperblockContents>,
}

/// What a valid superblock copy holds, as far as a tool needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuperblockContents {
    /// Incremented by every update: the valid copy with the highest wins.
    pub sequence: u64,
    /// The view state.
    pub view_state: ViewState,
    /// The live checkpoint's op (0: none).
    pub checkpoint_op: u64,
    /// The live WAL's start.
    pub wal_start: u64,
    /// The live WAL's generation.
    pub wal_generation: u64,
}

/// The WAL files in `directory`, sorted by name.
///
/// # Errors
/// If the directory cannot be read.
pub fn wal_files(directory: &Path) -> io::Result<Vec<WalFile>> {
    let mut found = Vec::new();
    for name in file_names(directory)? {
        if let Some((start, generation)) = parse_wal_file_name(&name) {
            let files = superblock::wal_files(start, generation);
            found.push(WalFile {
                path: directory.join(files.name),
                headers_path: directory.join(files.headers_name),
                start,
                generation,
            });
        }
    }
    Ok(found)
}

/// The checkpoint files in `directory`, sorted by name.
///
/// # Errors
/// If the directory or a file's size cannot be read.
pub fn checkpoint_files(directory: &Path) -> io::Result<Vec<CheckpointFile>> {
    let mut found = Vec::new();
    for name in file_names(directory)? {
        if let Some((op, generation)) = parse_checkpoint_file_name(&name) {
            let path = directory.join(name);
            let size = std::fs::metadata(&path)?.len();
            let snapshot_size = size.saturating_sub(TRAILER_SIZE as u64);
            found.push(CheckpointFile {
                path,
                op,
                generation,
                snapshot: 0..snapshot_size,
                trailer: snapshot_size..size,
            });
        }
    }
    Ok(found)
}

/// Every copy of the superblock in `directory`, in file order.
///
/// # Errors
/// If the superblock file cannot be opened or read (a copy cut short reads as not valid).
pub fn superblock_copies(directory: &Path) -> io::Result<Vec<SuperblockCopy>> {
    let file = File::open(directory.join(SUPERBLOCK_FILE))?;
    let within =
        |start: u64, range: Range<usize>| start + range.start as u64..start + range.end as u64;
    let mut copies = Vec::with_capacity(COPIES);
    for index in 0..COPIES as u64 {
        let start = index * COPY_STRIDE;
        let mut bytes = [0u8; COPY_SIZE];
        let read = read_up_to(&file, start, &mut bytes)?;
        let contents = match Superblock::decode(&bytes[..read]) {
            Copy::Valid(superblock) => Some(SuperblockContents {
                sequence: superblock.sequence,
                view_state: superblock.view_state,
                checkpoint_op: superblock.checkpoint.op,
                wal_start: superblock.wal_start,
                wal_generation: superblock.wal_generation,
            }),
            Copy::Newer(_) | Copy::Damaged | Copy::Foreign => None,
        };
        copies.push(SuperblockCopy {
            range: within(start, 0..COPY_SIZE),
            checksum: within(start, CHECKSUM_RANGE),
            sealed: within(start, SEALED_RANGE),
            format_version: within(start, FORMAT_VERSION_RANGE),
            view_state: within(start, VIEW_STATE_RANGE),
            contents,
        });
    }
    Ok(copies)
}

/// The names of the regular files in `directory`, sorted.
fn file_names(directory: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(directory)? {
        let item = item?;
        if item.file_type()?.is_file()
            && let Some(name) = item.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vsr::{Entry, EntryChecksum, Op, Operation, View, Write};

    use super::*;
    use crate::{FileStorage, Identity, format};

    const IDENTITY: Identity = Identity {
        cluster: 7,
        replica: 0,
        replica_count: 1,
    };

    #[test]
    fn the_layout_names_what_the_storage_wrote() {
        let directory = tempfile::tempdir().unwrap();
        format(directory.path(), IDENTITY, false).unwrap();
        let mut storage = FileStorage::open(directory.path(), None).unwrap().storage;
        let mut parent = EntryChecksum(0);
        for (op, body_size) in [(1u64, 10usize), (2, 0), (3, 30)] {
            let body = Bytes::from(vec![0xaa; body_size]);
            let entry = Entry {
                op: Op(op),
                view: View(1),
                parent,
                client: 5,
                session: 1,
                request: op,
                operation: Operation::StateMachine,
                body,
                checksum: EntryChecksum(0),
            }
            .sealed();
            parent = entry.checksum;
            storage.write(&Write::Append(entry)).unwrap();
        }
        storage.write(&Write::Truncate { op: Op(2) }).unwrap();
        let view_state = ViewState {
            view: View(3),
            last_normal_view: View(3),
            commit: Op(2),
            recovering: false,
        };
        storage.write(&Write::ViewState(view_state)).unwrap();
        storage.sync().unwrap();
        drop(storage);

        let wals = wal_files(directory.path()).unwrap();
        assert_eq!(wals.len(), 1, "{wals:?}");
        let wal = &wals[0];
        assert_eq!((wal.start, wal.generation), (1, 0));
        assert!(wal.headers_path.exists());
        let records = wal.records().unwrap();
        let kinds: Vec<_> = records
            .iter()
            .map(|record| (record.kind, record.op))
            .collect();
        assert_eq!(
            kinds,
            [
                (WalRecordKind::Entry, 1),
                (WalRecordKind::Entry, 2),
                (WalRecordKind::Entry, 3),
                (WalRecordKind::Truncate, 2),
            ]
        );
        let bytes = std::fs::read(&wal.path).unwrap();
        let mut end = 0;
        for record in &records {
            assert_eq!(record.header.start, end, "records are back to back");
            end = record.range().end;
        }
        let body = |record: &WalRecord| {
            let payload = &bytes[record.payload.start as usize..record.payload.end as usize];
            vsr::wire::decode_entry(payload).unwrap().body
        };
        assert_eq!(body(&records[0]), Bytes::from(vec![0xaa; 10]));
        assert_eq!(body(&records[2]), Bytes::from(vec![0xaa; 30]));
        assert!(records[3].payload.is_empty());
        let headers = std::fs::read(&wal.headers_path).unwrap();
        let slot = wal.slot(3);
        assert!(
            headers[slot.start as usize..slot.end as usize]
                .iter()
                .any(|b| *b != 0)
        );
        assert!(checkpoint_files(directory.path()).unwrap().is_empty());

        let copies = superblock_copies(directory.path()).unwrap();
        assert_eq!(copies.len(), COPIES);
        let newest = copies
            .iter()
            .filter_map(|copy| copy.contents)
            .max_by_key(|contents| contents.sequence)
            .unwrap();
        assert_eq!(newest.view_state, view_state);
        assert_eq!((newest.wal_start, newest.wal_generation), (1, 0));
    }

    #[test]
    fn checkpoint_files_split_into_snapshot_and_trailer() {
        let directory = tempfile::tempdir().unwrap();
        format(directory.path(), IDENTITY, false).unwrap();
        let mut storage = FileStorage::open(directory.path(), None).unwrap().storage;
        let entry = Entry {
            op: Op(1),
            view: View(1),
            parent: EntryChecksum(0),
            client: 5,
            session: 1,
            request: 1,
            operation: Operation::StateMachine,
            body: Bytes::new(),
            checksum: EntryChecksum(0),
        }
        .sealed();
        storage.write(&Write::Append(entry.clone())).unwrap();
        let checkpoint = vsr::Checkpoint {
            op: Op(1),
            op_checksum: entry.checksum,
            since: vsr::Op(0),
            snapshot: Bytes::from(vec![9u8; 100]).into(),
        };
        storage.write(&Write::Checkpoint(checkpoint)).unwrap();
        // The sync after the checkpoint moves the WAL.
        storage.sync().unwrap();
        drop(storage);
        let checkpoints = checkpoint_files(directory.path()).unwrap();
        assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
        let file = &checkpoints[0];
        assert_eq!(file.op, 1);
        assert_eq!(file.snapshot, 0..100);
        assert_eq!(file.trailer, 100..100 + TRAILER_SIZE as u64);
        let wals = wal_files(directory.path()).unwrap();
        assert_eq!(wals.len(), 1, "the old WAL is removed: {wals:?}");
        assert_eq!(wals[0].start, 2);
        let copies = superblock_copies(directory.path()).unwrap();
        let newest = copies
            .iter()
            .filter_map(|copy| copy.contents)
            .max_by_key(|c| c.sequence);
        assert_eq!(newest.unwrap().checkpoint_op, 1);
    }
}
