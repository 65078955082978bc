use super::*;

fn header() -> BackupHeader {
    BackupHeader {
        cluster: 0xabc,
        view: 7,
        op: 1234,
        op_checksum: 0x5555_6666,
        created_unix_seconds: 1_800_000_000,
    }
}

/// A backup whose state is `size` bytes of a pattern, written in uneven pieces.
fn backup_bytes(size: usize) -> (Vec<u8>, BackupSummary) {
    let state: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = BackupWriter::new(Vec::new(), header()).expect("in memory");
    for piece in state.chunks(333) {
        writer.write_snapshot(piece).expect("in memory");
    }
    assert_eq!(writer.snapshot_size(), size as u64);
    let (bytes, summary) = writer.finish().expect("in memory");
    assert_eq!(summary.snapshot_checksum, checksum(&state));
    assert_eq!(summary.file_size(), bytes.len() as u64);
    (bytes, summary)
}

fn write_file(directory: &Path, bytes: &[u8]) -> PathBuf {
    let path = directory.join("backup.vsr");
    std::fs::write(&path, bytes).expect("write");
    path
}

#[test]
fn a_backup_round_trips_through_verify() {
    let scratch = tempfile::tempdir().expect("tempdir");
    for size in [0, 1, 5000, 3 * READ_CHUNK_SIZE + 17] {
        let (bytes, summary) = backup_bytes(size);
        let path = write_file(scratch.path(), &bytes);
        assert_eq!(verify(&path).expect("a whole backup"), summary);
    }
}

/// Every cut of the file and a flip of any bit is refused, each with an error, never a panic
/// and never a summary.
#[test]
fn every_cut_and_every_flipped_bit_is_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (bytes, _) = backup_bytes(300);
    for cut in 0..bytes.len() {
        let path = write_file(scratch.path(), &bytes[..cut]);
        let error = verify(&path).expect_err("a cut backup");
        assert!(
            matches!(
                error,
                BackupError::Truncated { .. } | BackupError::NotABackup
            ),
            "cut at {cut}: {error}"
        );
    }
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let path = write_file(scratch.path(), &flipped);
        assert!(verify(&path).is_err(), "bit {bit} flipped went unnoticed");
    }
    let path = write_file(scratch.path(), b"some other file, long enough to hold a header and a trailer of a backup file, and then some more bytes");
    assert!(matches!(verify(&path), Err(BackupError::NotABackup)));
    let missing = scratch.path().join("missing");
    assert!(matches!(verify(&missing), Err(BackupError::Read { .. })));
}

/// A trailer taken from another backup (of the same size) does not pass for this one's.
#[test]
fn a_spliced_trailer_is_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (bytes, _) = backup_bytes(100);
    let mut other_header = header();
    other_header.op += 1;
    let mut writer = BackupWriter::new(Vec::new(), other_header).expect("in memory");
    writer
        .write_snapshot(&bytes[HEADER_SIZE..HEADER_SIZE + 100])
        .expect("in memory");
    let (other, _) = writer.finish().expect("in memory");
    let mut spliced = bytes[..bytes.len() - TRAILER_SIZE].to_vec();
    spliced.extend_from_slice(&other[other.len() - TRAILER_SIZE..]);
    let path = write_file(scratch.path(), &spliced);
    assert!(verify(&path).is_err());
}

fn identity(replica: u8) -> Identity {
    Identity {
        cluster: 77,
        replica,
        replica_count: 3,
    }
}

#[test]
fn a_restored_directory_opens_at_the_captured_op_with_the_backup_state() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (bytes, summary) = backup_bytes(2 * READ_CHUNK_SIZE + 5);
    let path = write_file(scratch.path(), &bytes);
    let checked = verify(&path).expect("whole");
    for replica in 0..3 {
        let directory = scratch.path().join(format!("r{replica}"));
        restore(&path, &checked, identity(replica), &directory).expect("restore");
        let opened = FileStorage::open(&directory, Some(77)).expect("open");
        assert_eq!(opened.identity, identity(replica));
        assert!(opened.damage.is_clean());
        let durable = opened.durable;
        let checkpoint = durable.checkpoint.as_ref().expect("a checkpoint");
        assert_eq!(checkpoint.op, Op(1234));
        assert_eq!(checkpoint.op_checksum, EntryChecksum(0x5555_6666));
        assert_eq!(
            checkpoint.snapshot.to_bytes(),
            &bytes[HEADER_SIZE..HEADER_SIZE + summary.snapshot_size as usize]
        );
        assert!(durable.entries.is_empty());
        assert_eq!(durable.view_state.view, View(7));
        assert_eq!(durable.view_state.last_normal_view, View(7));
        assert_eq!(durable.view_state.commit, Op(1234));
        assert!(!durable.view_state.recovering);
    }
}

#[test]
fn restore_refuses_a_directory_with_vsr_data_and_a_file_changed_since_it_was_checked() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (bytes, _) = backup_bytes(4096);
    let path = write_file(scratch.path(), &bytes);
    let checked = verify(&path).expect("whole");
    let directory = scratch.path().join("r0");
    restore(&path, &checked, identity(0), &directory).expect("restore");
    let again = restore(&path, &checked, identity(0), &directory).expect_err("already there");
    assert!(
        matches!(
            again,
            BackupError::Storage {
                source: StorageError::AlreadyExists(_),
                ..
            }
        ),
        "{again}"
    );
    // Changed after the check: a byte of the state, then the file cut short.
    let mut changed = bytes.clone();
    changed[HEADER_SIZE + 10] ^= 1;
    std::fs::write(&path, &changed).expect("write");
    let error =
        restore(&path, &checked, identity(1), &scratch.path().join("r1")).expect_err("changed");
    assert!(matches!(error, BackupError::Changed), "{error}");
    // What the failed restore wrote is gone: the directory takes a restore again.
    let r1 = scratch.path().join("r1");
    assert!(!r1.join(SUPERBLOCK_FILE).exists());
    assert!(layout::checkpoint_files(&r1).expect("list").is_empty());
    assert!(layout::wal_files(&r1).expect("list").is_empty());
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let error = restore(&path, &checked, identity(2), &scratch.path().join("r2")).expect_err("cut");
    assert!(
        matches!(error, BackupError::Read { .. } | BackupError::Changed),
        "{error}"
    );
    std::fs::write(&path, &bytes).expect("write");
    restore(&path, &checked, identity(1), &r1).expect("a retry into the same directory");
}
