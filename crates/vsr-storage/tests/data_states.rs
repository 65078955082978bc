//! What `open` makes of every state a data directory can be in, on real files.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bytes::Bytes;
use vsr::checksum::checksum;
use vsr::{Checkpoint, DurableState, Entry, EntryChecksum, Op, Operation, View, ViewState, Write};
use vsr_storage::layout::{self, WalFile, WalRecord};
use vsr_storage::{
    Damage, FileStorage, Identity, StorageError, StorageEvent, StorageThread, format,
};

const IDENTITY: Identity = Identity {
    cluster: 0xabc,
    replica: 2,
    replica_count: 3,
};

fn entry(op: u64, parent: EntryChecksum) -> Entry {
    let body = Bytes::from(vec![op as u8; 10]);
    Entry {
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
    .sealed()
}

fn entries(first: u64, count: u64, parent: EntryChecksum) -> Vec<Entry> {
    let mut parent = parent;
    (first..first + count)
        .map(|op| {
            let entry = entry(op, parent);
            parent = entry.checksum;
            entry
        })
        .collect()
}

/// A formatted directory holding `writes`, synced; returns the state they build.
fn directory_with(writes: &[Write]) -> (tempfile::TempDir, DurableState) {
    let directory = tempfile::tempdir().unwrap();
    format(directory.path(), IDENTITY, false).unwrap();
    let mut storage = FileStorage::open(directory.path(), Some(IDENTITY.cluster))
        .unwrap()
        .storage;
    let mut state = DurableState::default();
    for write in writes {
        storage.write(write).unwrap();
        state.apply(write);
    }
    storage.sync().unwrap();
    (directory, state)
}

fn appends(entries: &[Entry]) -> Vec<Write> {
    entries.iter().cloned().map(Write::Append).collect()
}

fn file_named(directory: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = fs::read_dir(directory)
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// The one WAL file of `directory`.
fn wal_file(directory: &Path) -> WalFile {
    let mut wals = layout::wal_files(directory).unwrap();
    assert_eq!(wals.len(), 1, "{wals:?}");
    wals.pop().unwrap()
}

/// The records of the one WAL file of `directory`, as they lie in the file.
fn records(directory: &Path) -> Vec<WalRecord> {
    wal_file(directory).records().unwrap()
}

/// Zeroes the header copy of `op`: it was never written.
fn zero_slot(directory: &Path, op: u64) {
    let wal = wal_file(directory);
    let slot = wal.slot(op);
    let file = OpenOptions::new()
        .write(true)
        .open(wal.headers_path)
        .unwrap();
    let zeros = vec![0u8; usize::try_from(slot.end - slot.start).unwrap()];
    file.write_all_at(&zeros, slot.start).unwrap();
}

/// The middle of a record.
fn middle(record: &WalRecord) -> u64 {
    let range = record.range();
    range.start + (range.end - range.start) / 2
}

fn flip_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
}

#[test]
fn a_missing_path_is_not_found() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("nothing");
    let error = FileStorage::open(&missing, None).unwrap_err();
    assert!(
        matches!(&error, StorageError::NotFound(path) if *path == missing),
        "{error}"
    );
    assert!(
        error.to_string().contains("format"),
        "the message says what to do: {error}"
    );
}

#[test]
fn a_directory_of_other_files_is_not_vsr_data() {
    let directory = tempfile::tempdir().unwrap();
    fs::write(directory.path().join("notes.txt"), b"hello").unwrap();
    fs::write(directory.path().join("data.bin"), vec![7u8; 20_000]).unwrap();
    let error = FileStorage::open(directory.path(), None).unwrap_err();
    assert!(matches!(error, StorageError::NotVsrData(_)), "{error}");

    // A file called superblock that is not one.
    fs::write(directory.path().join("superblock"), vec![0x5au8; 20_000]).unwrap();
    let error = FileStorage::open(directory.path(), None).unwrap_err();
    assert!(matches!(error, StorageError::NotVsrData(_)), "{error}");

    let file = directory.path().join("notes.txt");
    assert!(matches!(
        FileStorage::open(&file, None),
        Err(StorageError::NotVsrData(_))
    ));
}

#[test]
fn format_creates_the_directory_and_refuses_to_overwrite() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("a").join("b");
    format(&path, IDENTITY, true).unwrap();
    let opened = FileStorage::open(&path, None).unwrap();
    assert_eq!(opened.identity, IDENTITY);
    assert_eq!(opened.durable, DurableState::recovering());
    assert_eq!(opened.damage, Damage::default());
    drop(opened);
    let error = format(&path, IDENTITY, false).unwrap_err();
    assert!(matches!(error, StorageError::AlreadyExists(_)), "{error}");

    let bad = Identity {
        replica: 3,
        ..IDENTITY
    };
    let error = format(&directory.path().join("c"), bad, false).unwrap_err();
    assert!(
        matches!(error, StorageError::InvalidIdentity { .. }),
        "{error}"
    );
}

/// Asserts that `result` is the lock error naming `directory` and this process.
fn assert_locked<T: std::fmt::Debug>(result: Result<T, StorageError>, directory: &Path) {
    let error = result.unwrap_err();
    let pid = std::process::id();
    match &error {
        StorageError::Locked {
            directory: locked,
            holder_pid,
        } => {
            assert_eq!(locked, directory);
            assert_eq!(*holder_pid, Some(pid));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&format!("in use by process {pid}")),
        "{message}"
    );
    assert!(
        message.contains(&directory.display().to_string()),
        "{message}"
    );
}

#[test]
fn a_directory_held_by_a_storage_is_refused_until_it_is_dropped() {
    let (directory, state) = directory_with(&[Write::Append(entry(1, EntryChecksum(0)))]);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_locked(FileStorage::open(directory.path(), None), directory.path());
    // Formatting a held directory fails before it looks at, or writes, anything.
    let before = fs::read(directory.path().join("superblock")).unwrap();
    assert_locked(format(directory.path(), IDENTITY, false), directory.path());
    assert_eq!(
        fs::read(directory.path().join("superblock")).unwrap(),
        before
    );

    // The lock moves into the storage thread with the storage and lives until it stops.
    let thread = StorageThread::spawn(opened.storage, Box::new(|_| {}));
    assert_locked(FileStorage::open(directory.path(), None), directory.path());
    thread.join().unwrap();
    assert_eq!(
        FileStorage::open(directory.path(), None).unwrap().durable,
        state
    );
}

#[test]
fn a_failed_open_releases_the_lock_and_a_plain_directory_gets_no_lock_file() {
    let (directory, _) = directory_with(&[]);
    assert!(FileStorage::open(directory.path(), Some(0xdef)).is_err());
    assert!(FileStorage::open(directory.path(), None).is_ok());
    let plain = tempfile::tempdir().unwrap();
    assert!(matches!(
        FileStorage::open(plain.path(), None),
        Err(StorageError::NotVsrData(_))
    ));
    assert_eq!(fs::read_dir(plain.path()).unwrap().count(), 0);
}

#[test]
fn another_cluster_is_refused() {
    let (directory, _) = directory_with(&[]);
    let error = FileStorage::open(directory.path(), Some(0xdef)).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::WrongCluster {
                expected: 0xdef,
                found: 0xabc
            }
        ),
        "{error}"
    );
    assert!(FileStorage::open(directory.path(), None).is_ok());
}

#[test]
fn a_newer_format_is_refused() {
    let (directory, _) = directory_with(&[]);
    let path = directory.path().join("superblock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    for copy in layout::superblock_copies(directory.path()).unwrap() {
        let within = |range: std::ops::Range<u64>| {
            let start = usize::try_from(range.start - copy.range.start).unwrap();
            start..start + usize::try_from(range.end - range.start).unwrap()
        };
        let mut bytes = vec![0u8; within(copy.range.clone()).len()];
        file.read_exact_at(&mut bytes, copy.range.start).unwrap();
        bytes[within(copy.format_version.clone())].copy_from_slice(&2u16.to_le_bytes());
        let sealed = checksum(&bytes[within(copy.sealed.clone())]);
        bytes[within(copy.checksum.clone())].copy_from_slice(&sealed.to_le_bytes());
        file.write_all_at(&bytes, copy.range.start).unwrap();
    }
    let error = FileStorage::open(directory.path(), None).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::NewerFormat {
                found: 2,
                supported: 1
            }
        ),
        "{error}"
    );
}

#[test]
fn damaged_superblock_copies_fall_back_to_the_others() {
    let view_state = ViewState {
        view: View(4),
        last_normal_view: View(4),
        commit: Op(2),
        recovering: false,
    };
    let mut writes = appends(&entries(1, 3, EntryChecksum(0)));
    writes.push(Write::ViewState(view_state));
    let (directory, state) = directory_with(&writes);
    let path = directory.path().join(layout::SUPERBLOCK_FILE);
    // Bytes of each copy's sealed part (past its magic, so the copy reads as damaged).
    let copies = layout::superblock_copies(directory.path()).unwrap();
    let sealed = |copy: usize, at: u64| copies[copy].sealed.start + at;
    // Format wrote sequence 1 to copies 2 and 3, sequence 2 to copies 0 and 1; the view state
    // is sequence 3, in copies 2 and 3. One copy of the newest update is enough.
    for copy in [2, 0] {
        flip_byte(&path, sealed(copy, 44));
        assert_eq!(
            FileStorage::open(directory.path(), None).unwrap().durable,
            state
        );
    }
    // Both copies of the newest update damaged: the state falls back to sequence 2.
    flip_byte(&path, sealed(3, 84));
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.durable.view_state, ViewState::default());
    assert_eq!(opened.durable.entries, state.entries);
    drop(opened);

    flip_byte(&path, sealed(1, 184));
    let error = FileStorage::open(directory.path(), None).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt(_)), "{error}");
}

#[test]
fn one_whole_copy_of_the_newest_update_loses_nothing() {
    let view_state = ViewState {
        view: View(4),
        last_normal_view: View(4),
        commit: Op(0),
        recovering: false,
    };
    let (directory, state) = directory_with(&[Write::ViewState(view_state)]);
    let path = directory.path().join(layout::SUPERBLOCK_FILE);
    let copies = layout::superblock_copies(directory.path()).unwrap();
    // The view state is sequence 3, in copies 2 and 3; all others damaged but copy 3.
    for copy in [0, 1, 2] {
        flip_byte(&path, copies[copy].sealed.start + 24);
    }
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.durable, state);
}

#[test]
fn a_torn_tail_is_cut_and_later_writes_go_after_the_valid_records() {
    let log = entries(1, 5, EntryChecksum(0));
    let (directory, state) = directory_with(&appends(&log));
    let wal = file_named(directory.path(), "wal-", ".log");
    let records = records(directory.path());
    // The last record is half written, the rest of the file never was, and the copy of its
    // header never reached the disk: the crash came before the sync.
    fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(middle(&records[4]))
        .unwrap();
    zero_slot(directory.path(), 5);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(
        opened.damage,
        Damage {
            corrupt_ops: vec![],
            torn_tail_records: 1,
            checkpoint_corrupt: false,
        }
    );
    let mut expected = state.clone();
    expected.entries.pop_back();
    assert_eq!(opened.durable, expected);

    let mut storage = opened.storage;
    let replacement = entries(5, 2, log[3].checksum);
    for write in appends(&replacement) {
        storage.write(&write).unwrap();
        expected.apply(&write);
    }
    storage.sync().unwrap();
    drop(storage);
    let reopened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(reopened.damage, Damage::default());
    assert_eq!(reopened.durable, expected);
}

#[test]
fn a_corrupt_last_synced_record_is_damage_not_a_torn_tail() {
    let log = entries(1, 5, EntryChecksum(0));
    let (directory, state) = directory_with(&appends(&log));
    let wal = file_named(directory.path(), "wal-", ".log");
    let records = records(directory.path());
    let mut expected = state.clone();
    expected.entries.pop_back();
    expected.damaged = true;
    let damaged = Damage {
        corrupt_ops: vec![5],
        torn_tail_records: 0,
        checkpoint_corrupt: false,
    };
    // A byte in the body of the last record, which was synced (and so maybe acknowledged).
    flip_byte(&wal, records[4].payload.start + 40);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage, damaged);
    assert_eq!(opened.durable, expected);
    drop(opened);
    // The record cut off entirely, as a lost write would leave it.
    OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(records[4].header.start)
        .unwrap();
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage, damaged);
    assert_eq!(opened.durable, expected);

    // The first write marks the replica recovering; the repaired log reopens clean.
    let mut storage = opened.storage;
    let recovering = ViewState {
        recovering: true,
        ..ViewState::default()
    };
    let mut writes = vec![Write::ViewState(recovering)];
    writes.extend(appends(&entries(5, 3, log[3].checksum)));
    expected.damaged = false;
    for write in &writes {
        storage.write(write).unwrap();
        expected.apply(write);
    }
    storage.sync().unwrap();
    drop(storage);
    let reopened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(reopened.damage, Damage::default());
    assert_eq!(reopened.durable, expected);
}

#[test]
fn truncated_ops_are_not_damage_and_a_corrupt_reappended_op_is() {
    let log = entries(1, 6, EntryChecksum(0));
    let mut writes = appends(&log);
    writes.push(Write::Truncate { op: Op(3) });
    let (directory, state) = directory_with(&writes);
    // The copies of ops 4 to 6 are stale: their records come before the truncate.
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage, Damage::default());
    assert_eq!(opened.durable, state);
    let mut storage = opened.storage;
    let replacement = entries(4, 2, log[2].checksum);
    for write in appends(&replacement) {
        storage.write(&write).unwrap();
    }
    storage.sync().unwrap();
    drop(storage);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage, Damage::default());
    assert_eq!(opened.durable.entries.back(), replacement.last());
    drop(opened);

    // The last record, the new op 5, rots: op 5 is reported, not the stale op 6.
    let wal = file_named(directory.path(), "wal-", ".log");
    // Six entries, the truncate, the new ops 4 and 5.
    let records = records(directory.path());
    assert_eq!(records.len(), 9, "{records:?}");
    flip_byte(&wal, records[8].payload.start + 40);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage.corrupt_ops, vec![5]);
    assert_eq!(opened.damage.torn_tail_records, 0);
    assert!(opened.durable.damaged);
    let kept: Vec<Op> = opened
        .durable
        .entries
        .iter()
        .map(|entry| entry.op)
        .collect();
    assert_eq!(kept, vec![Op(1), Op(2), Op(3), Op(4)]);
    assert_eq!(opened.durable.entries[3], replacement[0]);
}

#[test]
fn a_corrupt_last_truncate_does_not_bring_removed_entries_back() {
    let log = entries(1, 6, EntryChecksum(0));
    let mut writes = appends(&log);
    writes.push(Write::Truncate { op: Op(3) });
    let (directory, _) = directory_with(&writes);
    let wal = file_named(directory.path(), "wal-", ".log");
    // A byte in the header of the truncate, after the six entries.
    flip_byte(&wal, records(directory.path())[6].header.start + 50);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage.corrupt_ops, vec![4]);
    assert!(opened.durable.damaged);
}

#[test]
fn a_wal_without_its_headers_file_opens_and_gets_a_new_one() {
    let log = entries(1, 3, EntryChecksum(0));
    let (directory, state) = directory_with(&appends(&log));
    fs::remove_file(file_named(directory.path(), "wal-", ".headers")).unwrap();
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage, Damage::default());
    assert_eq!(opened.durable, state);
    let mut storage = opened.storage;
    storage.sync().unwrap();
    let more = entries(4, 2, log[2].checksum);
    let mut expected = state;
    for write in appends(&more) {
        storage.write(&write).unwrap();
        expected.apply(&write);
    }
    storage.sync().unwrap();
    drop(storage);
    file_named(directory.path(), "wal-", ".headers");
    // The new records have copies: the last one rotting is damage.
    flip_byte(
        &file_named(directory.path(), "wal-", ".log"),
        records(directory.path())[4].payload.start + 40,
    );
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage.corrupt_ops, vec![5]);
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_wal_is_reported_as_damage() {
    let log = entries(1, 6, EntryChecksum(0));
    let (directory, state) = directory_with(&appends(&log));
    let wal = file_named(directory.path(), "wal-", ".log");
    let records = records(directory.path());
    // A byte in the body of op 3's record: its header survives and names the op.
    flip_byte(&wal, records[2].payload.start + 40);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage.corrupt_ops, vec![3]);
    assert_eq!(opened.damage.torn_tail_records, 0);
    assert!(
        opened.durable.damaged,
        "middle damage must be repaired from peers"
    );
    assert_eq!(
        opened.durable.entries,
        state.entries.range(..2).cloned().collect::<Vec<_>>()
    );
    drop(opened);
    // A byte in the header of op 2's record: the op is inferred from the records after it.
    flip_byte(&wal, records[1].header.start + 50);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.damage.corrupt_ops, vec![2, 3]);
    assert_eq!(opened.durable.entries.len(), 1);
}

/// A directory with a checkpoint at op 2 and entries 3 to 5; returns it, its state and the
/// last entry.
fn directory_with_checkpoint() -> (tempfile::TempDir, DurableState, Entry) {
    let log = entries(1, 4, EntryChecksum(0));
    let mut writes = appends(&log);
    writes.push(Write::Checkpoint(Checkpoint {
        op: Op(2),
        op_checksum: log[1].checksum,
        since: vsr::Op(0),
        snapshot: Bytes::from(vec![9u8; 5000]).into(),
    }));
    let last = entries(5, 1, log[3].checksum).remove(0);
    writes.push(Write::Append(last.clone()));
    writes.push(Write::ViewState(ViewState {
        view: View(3),
        last_normal_view: View(3),
        commit: Op(4),
        recovering: false,
    }));
    let (directory, state) = directory_with(&writes);
    (directory, state, last)
}

/// What a replica whose checkpoint is unreadable opens with: its view state only.
fn damaged_without_checkpoint(state: &DurableState) -> DurableState {
    DurableState {
        view_state: state.view_state,
        checkpoint: None,
        increments: Vec::new(),
        entries: std::collections::VecDeque::new(),
        damaged: true,
    }
}

#[test]
fn a_damaged_or_missing_checkpoint_file_opens_damaged_with_the_view_state() {
    let (directory, state, _) = directory_with_checkpoint();
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.durable, state);
    assert_eq!(
        opened.durable.entries.front().map(|entry| entry.op),
        Some(Op(3))
    );
    drop(opened);

    let path = file_named(directory.path(), "checkpoint-", ".bin");
    flip_byte(&path, 1234);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert!(opened.damage.checkpoint_corrupt && !opened.damage.is_clean());
    assert_eq!(opened.durable, damaged_without_checkpoint(&state));
    drop(opened);
    // Open writes nothing: the same damage is found again, and with the file gone as well.
    fs::remove_file(&path).unwrap();
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert!(opened.damage.checkpoint_corrupt);
    assert_eq!(opened.durable, damaged_without_checkpoint(&state));
}

#[test]
fn a_replica_repaired_after_a_corrupt_checkpoint_writes_and_reopens_clean() {
    let (directory, state, _) = directory_with_checkpoint();
    flip_byte(&file_named(directory.path(), "checkpoint-", ".bin"), 1234);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert!(opened.durable.damaged);
    let mut storage = opened.storage;

    // The first write marks the replica recovering durably and starts a new, empty log: a
    // crash right after it reopens recovering, never as a whole but shorter log.
    let recovering = ViewState {
        recovering: true,
        ..state.view_state
    };
    storage.write(&Write::ViewState(recovering)).unwrap();
    drop(storage);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert!(opened.damage.is_clean(), "{:?}", opened.damage);
    assert!(!opened.durable.damaged);
    assert!(opened.durable.view_state.recovering);
    assert!(opened.durable.checkpoint.is_none() && opened.durable.entries.is_empty());
    let mut storage = opened.storage;

    // Recovery installs the primary's state: a new checkpoint, then the log after it.
    let log = entries(1, 12, EntryChecksum(0));
    let checkpoint = Checkpoint {
        op: Op(8),
        op_checksum: log[7].checksum,
        since: vsr::Op(0),
        snapshot: Bytes::from(vec![7u8; 3000]).into(),
    };
    let mut expected = DurableState {
        view_state: recovering,
        ..DurableState::default()
    };
    let mut writes = vec![Write::Checkpoint(checkpoint)];
    writes.extend(appends(&log[8..]));
    writes.push(Write::ViewState(ViewState {
        view: View(4),
        last_normal_view: View(4),
        commit: Op(12),
        recovering: false,
    }));
    for write in &writes {
        storage.write(write).unwrap();
        expected.apply(write);
    }
    storage.sync().unwrap();
    drop(storage);

    let reopened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(reopened.damage, Damage::default());
    assert_eq!(reopened.durable, expected);
    let names: Vec<_> = fs::read_dir(directory.path())
        .unwrap()
        .map(|item| item.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        5,
        "superblock, lock file, one WAL and its headers file, one checkpoint: {names:?}"
    );
}

#[test]
fn middle_damage_is_marked_recovering_before_the_log_is_cut() {
    let log = entries(1, 6, EntryChecksum(0));
    let (directory, _) = directory_with(&appends(&log));
    flip_byte(
        &file_named(directory.path(), "wal-", ".log"),
        records(directory.path())[2].payload.start + 40,
    );
    let mut storage = FileStorage::open(directory.path(), None).unwrap().storage;
    // Any first write: the cut of the damaged records must not outlive "recovering".
    storage.write(&Write::Truncate { op: Op(2) }).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert!(opened.durable.view_state.recovering);
    assert_eq!(opened.durable.entries.len(), 2);
}

#[test]
fn checkpoints_keep_disk_use_bounded() {
    let (directory, _) = directory_with(&[]);
    let mut storage = FileStorage::open(directory.path(), None).unwrap().storage;
    let mut state = DurableState::default();
    let mut parent = EntryChecksum(0);
    for op in 1..=3000 {
        let entry = entry(op, parent);
        parent = entry.checksum;
        let write = Write::Append(entry);
        storage.write(&write).unwrap();
        state.apply(&write);
        if op % 500 == 0 {
            let snapshot = Bytes::from(vec![op as u8; 100_000]);
            let write = Write::Checkpoint(Checkpoint {
                op: Op(op - 3),
                op_checksum: EntryChecksum(0),
                since: Op(0),
                snapshot: snapshot.into(),
            });
            storage.write(&write).unwrap();
            state.apply(&write);
        }
    }
    storage.sync().unwrap();
    assert!(storage.disk_usage_bytes() < (64 << 20) + (4 << 20) + 200_000);
    let names: Vec<_> = fs::read_dir(directory.path()).unwrap().collect();
    assert_eq!(
        names.len(),
        5,
        "superblock, lock file, one WAL and its headers file, one checkpoint"
    );
    drop(storage);
    assert_eq!(
        FileStorage::open(directory.path(), None).unwrap().durable,
        state
    );
}

#[test]
fn the_storage_thread_commits_in_groups_and_reports_in_order() {
    let (directory, _) = directory_with(&[]);
    let storage = FileStorage::open(directory.path(), None).unwrap().storage;
    let (sender, receiver) = mpsc::channel();
    let thread = StorageThread::spawn(
        storage,
        Box::new(move |event| {
            if let StorageEvent::Durable(seq) = event {
                sender.send(seq).unwrap();
            }
        }),
    );
    let log = entries(1, 200, EntryChecksum(0));
    let mut state = DurableState::default();
    for (seq, write) in (1..).zip(appends(&log)) {
        state.apply(&write);
        thread.submit(seq, write);
    }
    let view_state = ViewState {
        view: View(1),
        last_normal_view: View(1),
        commit: Op(100),
        recovering: false,
    };
    thread.submit(1000, Write::ViewState(view_state));
    state.apply(&Write::ViewState(view_state));
    let mut reported = Vec::new();
    while reported.last() != Some(&1000) {
        reported.push(receiver.recv().unwrap());
    }
    assert!(
        reported.windows(2).all(|pair| pair[0] < pair[1]),
        "{reported:?}"
    );
    assert!(thread.is_running());
    thread.join().unwrap();
    assert_eq!(
        FileStorage::open(directory.path(), None).unwrap().durable,
        state
    );
}

/// A whole checkpoint and then an increment, each written in the background while appends go
/// on: both are reported, appends after them are not held back, and a reopen gives back the
/// chain and every entry after it.
#[test]
fn checkpoints_in_the_background_form_a_chain_that_reopens() {
    let (directory, _) = directory_with(&[]);
    let storage = FileStorage::open(directory.path(), None).unwrap().storage;
    let (sender, receiver) = mpsc::channel();
    let thread = StorageThread::spawn(storage, Box::new(move |event| sender.send(event).unwrap()));
    let log = entries(1, 300, EntryChecksum(0));
    let mut state = DurableState::default();
    let mut seq = 0;
    let mut submit = |state: &mut DurableState, write: Write| {
        seq += 1;
        state.apply(&write);
        thread.submit(seq, write);
    };
    for write in appends(&log[..100]) {
        submit(&mut state, write);
    }
    let whole = Checkpoint {
        op: Op(90),
        op_checksum: log[89].checksum,
        since: Op(0),
        snapshot: Bytes::from(vec![1u8; 200_000]).into(),
    };
    thread.checkpoint(whole.clone());
    for write in appends(&log[100..200]) {
        submit(&mut state, write);
    }
    let increment = Checkpoint {
        op: Op(180),
        op_checksum: log[179].checksum,
        since: Op(90),
        snapshot: Bytes::from(vec![2u8; 3_000]).into(),
    };
    thread.checkpoint(increment.clone());
    for write in appends(&log[200..]) {
        submit(&mut state, write);
    }
    let mut checkpoints = Vec::new();
    let mut durable = 0;
    while checkpoints.len() < 2 || durable < 300 {
        match receiver.recv().unwrap() {
            StorageEvent::Durable(seq) => durable = seq,
            StorageEvent::Checkpoint(op) => checkpoints.push(op),
        }
    }
    assert_eq!(checkpoints, vec![Op(90), Op(180)]);
    thread.join().unwrap();
    state.apply(&Write::Checkpoint(whole));
    state.apply(&Write::Checkpoint(increment));
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.durable, state);
    assert_eq!(opened.durable.increments.len(), 1);
    assert_eq!(opened.durable.entries.front().map(|e| e.op), Some(Op(181)));
    // Only the chain's two files are live.
    let files: Vec<String> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("checkpoint-"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
}

/// A checkpoint in order (after a state transfer) while one is written in the background: the
/// background one goes live first, then the one in order replaces the chain.
#[test]
fn a_checkpoint_in_order_waits_for_the_one_in_the_background() {
    let (directory, _) = directory_with(&[]);
    let storage = FileStorage::open(directory.path(), None).unwrap().storage;
    let (sender, receiver) = mpsc::channel();
    let thread = StorageThread::spawn(storage, Box::new(move |event| sender.send(event).unwrap()));
    let log = entries(1, 100, EntryChecksum(0));
    let mut state = DurableState::default();
    let mut seq = 0;
    for write in appends(&log[..50]) {
        seq += 1;
        state.apply(&write);
        thread.submit(seq, write);
    }
    let background = Checkpoint {
        op: Op(40),
        op_checksum: log[39].checksum,
        since: Op(0),
        snapshot: Bytes::from(vec![3u8; 500_000]).into(),
    };
    thread.checkpoint(background.clone());
    let in_order = Write::Checkpoint(Checkpoint {
        op: Op(50),
        op_checksum: log[49].checksum,
        since: Op(0),
        snapshot: Bytes::from(vec![4u8; 1_000]).into(),
    });
    seq += 1;
    thread.submit(seq, in_order.clone());
    state.apply(&Write::Checkpoint(background));
    state.apply(&in_order);
    for write in appends(&log[50..]) {
        seq += 1;
        state.apply(&write);
        thread.submit(seq, write);
    }
    let mut events = Vec::new();
    while events.last() != Some(&StorageEvent::Durable(seq)) {
        events.push(receiver.recv().unwrap());
    }
    assert!(
        events.contains(&StorageEvent::Checkpoint(Op(40))),
        "{events:?}"
    );
    thread.join().unwrap();
    let opened = FileStorage::open(directory.path(), None).unwrap();
    assert_eq!(opened.durable, state);
    assert_eq!(opened.durable.checkpoint_op(), Op(50));
    assert!(opened.durable.increments.is_empty());
}
