//! Fault tests: latent sector errors, rotten superblock copies, failed writes and sector-torn
//! crashes, injected into the in-memory disk one at a time.
//!
//! Each test formats a [`SimDisk`], writes through [`FileStorage`], injects one fault (an
//! unreadable or corrupt sector on the platter, an ENOSPC or EIO on one call, a crash that tears
//! a write at a sector boundary) and reopens. A fault that destroys acknowledged data must show
//! in [`Damage`] and [`DurableState::damaged`]; a fault that destroys nothing the storage needs
//! (a redundant copy, an unacknowledged write) must not; and nothing may fail the open.

use std::io;

use bytes::Bytes;
use vsr::{Checkpoint, DurableState, Entry, EntryChecksum, Op, Operation, View, ViewState, Write};

use crate::crash_tests::{Step, formatted, open, workload};
use crate::disk::Disk;
use crate::record::encode_entry_record;
use crate::sim_disk::{Fate, SECTOR_SIZE, SimDisk};
use crate::superblock::{COPIES, COPY_SIZE, COPY_STRIDE, Copy, SUPERBLOCK_FILE, Superblock};
use crate::{Damage, FileStorage, StorageError};

/// The entry after the last one of `state`, with a body of `body_bytes` bytes.
fn entry_after(state: &DurableState, body_bytes: usize) -> Entry {
    let (op, parent) = state
        .entries
        .back()
        .map_or((state.checkpoint_op() + 1, EntryChecksum(0)), |last| {
            (last.op + 1, last.checksum)
        });
    let body: Vec<u8> = (0..body_bytes)
        .map(|index| (op.get() as usize + index) as u8)
        .collect();
    Entry {
        op,
        view: state.view_state.view,
        parent,
        client: 7,
        session: 1,
        request: op.get(),
        operation: Operation::StateMachine,
        body: Bytes::from(body),
        checksum: EntryChecksum(0),
    }
    .sealed()
}

/// A formatted disk holding `count` synced appends, each with a body of `body_bytes` bytes.
fn disk_with_entries(count: usize, body_bytes: usize) -> (SimDisk, DurableState) {
    let disk = formatted();
    let mut storage = open(&disk).storage;
    let mut state = DurableState::default();
    for _ in 0..count {
        let write = Write::Append(entry_after(&state, body_bytes));
        storage.write(&write).unwrap();
        state.apply(&write);
    }
    storage.sync().unwrap();
    (disk, state)
}

/// Where the record of `op` starts in the WAL file and the sectors that lie wholly inside it,
/// assuming the log holds only the appends of `state` (records back to back from offset 0).
fn record_sectors(state: &DurableState, op: u64) -> (u64, std::ops::Range<u64>) {
    let mut offset = 0;
    for entry in &state.entries {
        let mut record = Vec::new();
        encode_entry_record(entry, &mut record);
        let end = offset + record.len() as u64;
        if entry.op == Op(op) {
            let sectors = offset.div_ceil(SECTOR_SIZE)..end / SECTOR_SIZE;
            assert!(!sectors.is_empty(), "the record of op {op} spans a sector");
            return (offset, sectors);
        }
        offset = end;
    }
    unreachable!("op {op} is in the log")
}

/// A body size that makes an entry record exactly three sectors long: every record then starts
/// at a sector boundary, and the sector holding its header can fail alone.
fn sector_aligned_body_bytes() -> usize {
    let mut record = Vec::new();
    encode_entry_record(&entry_after(&DurableState::default(), 0), &mut record);
    3 * SECTOR_SIZE as usize - record.len()
}

/// The one file whose name ends with `suffix`.
fn file_ending(disk: &SimDisk, suffix: &str) -> String {
    let names: Vec<String> = disk
        .current()
        .into_keys()
        .filter(|name| name.ends_with(suffix))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names.into_iter().next().expect("one name")
}

/// `state` with only its first `count` entries, marked damaged.
fn damaged_prefix(state: &DurableState, count: usize) -> DurableState {
    let mut expected = state.clone();
    expected.entries.truncate(count);
    expected.damaged = true;
    expected
}

/// Six synced appends; each sector wholly inside the record of `op` fails reads in turn, with
/// records that straddle sectors and records aligned to them. Open must report `op` corrupt,
/// not a torn tail, and keep the entries before it.
fn check_unreadable_record(op: u64) {
    let mut header_sectors = 0;
    for body_bytes in [1500, sector_aligned_body_bytes()] {
        let (probe, state) = disk_with_entries(6, body_bytes);
        let wal = file_ending(&probe, ".log");
        let (offset, sectors) = record_sectors(&state, op);
        for sector in sectors {
            header_sectors += usize::from(sector * SECTOR_SIZE == offset);
            let (disk, _) = disk_with_entries(6, body_bytes);
            disk.make_unreadable(&wal, sector);
            let opened = open(&disk);
            let case = format!("bodies of {body_bytes} bytes, sector {sector}");
            assert_eq!(
                opened.damage,
                Damage {
                    corrupt_ops: vec![op],
                    torn_tail_records: 0,
                    checkpoint_corrupt: false,
                },
                "{case}"
            );
            let kept = usize::try_from(op - 1).expect("small");
            assert_eq!(opened.durable, damaged_prefix(&state, kept), "{case}");
        }
    }
    assert!(
        header_sectors > 0,
        "no sector holding a record header failed"
    );
}

#[test]
fn a_latent_sector_error_in_the_middle_of_the_log_is_damage() {
    check_unreadable_record(3);
}

#[test]
fn a_latent_sector_error_in_the_last_synced_record_is_damage_not_a_torn_tail() {
    check_unreadable_record(6);
}

#[test]
fn a_rotten_last_record_after_an_open_that_found_the_headers_file_lost_is_damage() {
    // The headers file is lost; an open that writes nothing after it must still leave header
    // copies behind, or a record that rots before the first write is cut as a torn tail.
    let (disk, state) = disk_with_entries(6, 1500);
    let headers = file_ending(&disk, ".headers");
    let mut platter = disk.clone();
    platter.remove(&headers).unwrap();
    platter.sync_dir().unwrap();
    let opened = open(&disk);
    assert!(opened.damage.is_clean(), "{:?}", opened.damage);
    assert_eq!(opened.durable, state);
    drop(opened);
    let wal = file_ending(&disk, ".log");
    let (_, sectors) = record_sectors(&state, 6);
    disk.make_unreadable(&wal, sectors.start);
    let opened = open(&disk);
    assert_eq!(
        opened.damage,
        Damage {
            corrupt_ops: vec![6],
            torn_tail_records: 0,
            checkpoint_corrupt: false,
        }
    );
    assert_eq!(opened.durable, damaged_prefix(&state, 5));
}

#[test]
fn an_unreadable_header_copy_beside_intact_records_is_not_damage() {
    // 128-byte slots: ops 1..=4 in sector 0, ops 5..=8 in sector 1.
    for sectors in [&[0][..], &[1], &[0, 1]] {
        let (disk, state) = disk_with_entries(8, 100);
        let headers = file_ending(&disk, ".headers");
        for sector in sectors {
            disk.make_unreadable(&headers, *sector);
        }
        let opened = open(&disk);
        assert!(opened.damage.is_clean(), "{sectors:?}: {:?}", opened.damage);
        assert_eq!(opened.damage.torn_tail_records, 0, "{sectors:?}");
        assert_eq!(opened.durable, state, "{sectors:?}");
    }
}

fn view_state(view: u64) -> ViewState {
    ViewState {
        view: View(view),
        last_normal_view: View(view),
        commit: Op(0),
        recovering: false,
    }
}

/// A formatted disk after two view state updates, and the state after each.
fn disk_with_two_view_states() -> (SimDisk, DurableState, DurableState) {
    let disk = formatted();
    let mut storage = open(&disk).storage;
    let mut state = DurableState::default();
    let mut states = Vec::new();
    for view in [5, 6] {
        let write = Write::ViewState(view_state(view));
        storage.write(&write).unwrap();
        state.apply(&write);
        states.push(state.clone());
    }
    let newest = states.pop().expect("two states");
    let previous = states.pop().expect("two states");
    (disk, previous, newest)
}

/// The indices of the superblock copies that hold the newest sequence.
fn newest_copies(disk: &SimDisk) -> Vec<u64> {
    let mut disk = disk.clone();
    let copies: Vec<(u64, Superblock)> = (0..COPIES as u64)
        .filter_map(|index| {
            let mut bytes = [0u8; COPY_SIZE];
            let read = disk
                .read_at(SUPERBLOCK_FILE, index * COPY_STRIDE, &mut bytes)
                .unwrap();
            match Superblock::decode(&bytes[..read]) {
                Copy::Valid(superblock) => Some((index, superblock)),
                _ => None,
            }
        })
        .collect();
    let newest = copies.iter().map(|(_, copy)| copy.sequence).max();
    copies
        .iter()
        .filter(|(_, copy)| Some(copy.sequence) == newest)
        .map(|(index, _)| *index)
        .collect()
}

/// The first sector of superblock copy `index`.
fn copy_sector(index: u64) -> u64 {
    index * COPY_STRIDE / SECTOR_SIZE
}

#[test]
fn one_rotten_copy_of_the_newest_superblock_update_loses_nothing() {
    let (probe, _, newest) = disk_with_two_view_states();
    let pair = newest_copies(&probe);
    assert_eq!(pair.len(), 2, "each update writes two copies: {pair:?}");
    for (index, unreadable) in [(0, true), (1, true), (0, false), (1, false)] {
        let (disk, _, _) = disk_with_two_view_states();
        let sector = copy_sector(pair[index]);
        if unreadable {
            disk.make_unreadable(SUPERBLOCK_FILE, sector);
        } else {
            assert!(disk.corrupt_sector(SUPERBLOCK_FILE, sector, 0x5a));
        }
        let opened = open(&disk);
        assert!(opened.damage.is_clean(), "{:?}", opened.damage);
        assert_eq!(
            opened.durable, newest,
            "copy {} unreadable: {unreadable}",
            pair[index]
        );
    }
}

#[test]
fn both_rotten_copies_of_the_newest_superblock_update_fall_back_to_the_previous() {
    let (probe, previous, _) = disk_with_two_view_states();
    let pair = newest_copies(&probe);
    assert_eq!(pair.len(), 2, "each update writes two copies: {pair:?}");
    for corrupt_first in [false, true] {
        let (disk, _, _) = disk_with_two_view_states();
        if corrupt_first {
            assert!(disk.corrupt_sector(SUPERBLOCK_FILE, copy_sector(pair[0]), 0x5a));
        } else {
            disk.make_unreadable(SUPERBLOCK_FILE, copy_sector(pair[0]));
        }
        disk.make_unreadable(SUPERBLOCK_FILE, copy_sector(pair[1]));
        let opened = open(&disk);
        assert!(opened.damage.is_clean(), "{:?}", opened.damage);
        assert_eq!(
            opened.durable, previous,
            "first copy corrupt: {corrupt_first}"
        );
    }
}

/// A formatted disk with four entries, a checkpoint at op 3 and a later view state.
fn disk_with_checkpoint() -> (SimDisk, DurableState) {
    let (disk, mut state) = disk_with_entries(4, 300);
    let mut storage = open(&disk).storage;
    let checkpoint = Checkpoint {
        op: Op(3),
        op_checksum: state.entries[2].checksum,
        since: vsr::Op(0),
        snapshot: Bytes::from(vec![0xc4; 1500]).into(),
    };
    for write in [
        Write::Checkpoint(checkpoint),
        Write::ViewState(view_state(2)),
    ] {
        storage.write(&write).unwrap();
        state.apply(&write);
    }
    (disk, state)
}

#[test]
fn an_unreadable_sector_in_the_live_checkpoint_is_a_corrupt_checkpoint() {
    let (probe, state) = disk_with_checkpoint();
    assert_eq!(open(&probe).durable, state);
    let name = file_ending(&probe, ".bin");
    let size = probe.current()[&name].len();
    let expected = DurableState {
        view_state: state.view_state,
        checkpoint: None,
        increments: Vec::new(),
        entries: std::collections::VecDeque::new(),
        damaged: true,
    };
    for sector in 0..size.div_ceil(SECTOR_SIZE) {
        let (disk, _) = disk_with_checkpoint();
        disk.make_unreadable(&name, sector);
        let opened = open(&disk);
        assert_eq!(
            opened.damage,
            Damage {
                corrupt_ops: vec![],
                torn_tail_records: 0,
                checkpoint_corrupt: true,
            },
            "sector {sector}"
        );
        assert_eq!(opened.durable, expected, "sector {sector}");
    }
}

/// Runs `steps` until a call fails; returns (writes acknowledged, writes issued, the error).
fn run_until_error(
    storage: &mut FileStorage,
    steps: &[Step],
) -> (usize, usize, Option<StorageError>) {
    let (mut acknowledged, mut issued) = (0, 0);
    for step in steps {
        let result = match step {
            Step::Write(write) => {
                issued += 1;
                storage.write(write)
            }
            Step::Sync => storage.sync(),
        };
        if let Err(error) = result {
            return (acknowledged, issued, Some(error));
        }
        // View states and checkpoints are durable when `write` returns.
        if matches!(
            step,
            Step::Sync | Step::Write(Write::ViewState(_) | Write::Checkpoint(_))
        ) {
            acknowledged = issued;
        }
    }
    (acknowledged, issued, None)
}

/// Fails call `call` of the workload with `kind`; checks the error, the refusals after it and
/// the state a crash that loses every unsynced write leaves.
fn fail_one_call(seed: u64, call: u64, kind: io::ErrorKind) {
    let (steps, states) = workload(seed, 40);
    let disk = formatted();
    let mut storage = open(&disk).storage;
    disk.fail_with(call, kind);
    let (acknowledged, issued, error) = run_until_error(&mut storage, &steps);
    match error {
        Some(StorageError::Io(error)) => assert_eq!(error.kind(), kind),
        other => panic!("the injected error must surface as StorageError::Io: {other:?}"),
    }
    assert!(disk.failed_on().is_some(), "the injected error fired");
    let calls = disk.calls();
    assert!(matches!(storage.sync(), Err(StorageError::Io(_))));
    let write = Write::ViewState(view_state(99));
    assert!(matches!(storage.write(&write), Err(StorageError::Io(_))));
    assert_eq!(
        disk.calls(),
        calls,
        "a failed storage touches the disk no more"
    );
    drop(storage);

    disk.crash(|_, _| Fate::Lost);
    let opened = open(&disk);
    assert!(opened.damage.is_clean(), "{:?}", opened.damage);
    assert!(
        (acknowledged..=issued).any(|count| states[count] == opened.durable),
        "not a prefix of {acknowledged}..={issued} writes: {:?}",
        opened.durable
    );
}

#[test]
fn a_failed_write_or_sync_fails_the_storage_and_keeps_what_was_synced() {
    let mut checked = 0;
    for seed in [3, 4] {
        let (steps, _) = workload(seed, 40);
        let disk = formatted();
        let mut storage = open(&disk).storage;
        disk.fail_at(None);
        assert!(run_until_error(&mut storage, &steps).2.is_none());
        for call in 0..disk.calls() {
            for kind in [io::ErrorKind::StorageFull, io::ErrorKind::Other] {
                let result = std::panic::catch_unwind(|| fail_one_call(seed, call, kind));
                assert!(
                    result.is_ok(),
                    "seed {seed}, call {call} fails with {kind:?}"
                );
                checked += 1;
            }
        }
    }
    println!("{checked} failed calls checked");
    assert!(checked > 100, "only {checked} failures checked");
}

/// A workload of appends with bodies of varied size, synced every third append.
fn appends() -> (Vec<Step>, Vec<DurableState>) {
    let mut states = vec![DurableState::default()];
    let mut steps = Vec::new();
    for index in 0..24_usize {
        let state = states.last().expect("not empty");
        let write = Write::Append(entry_after(state, index * 397 % 1300));
        let mut next = state.clone();
        next.apply(&write);
        states.push(next);
        steps.push(Step::Write(write));
        if index % 3 == 2 {
            steps.push(Step::Sync);
        }
    }
    (steps, states)
}

/// Runs the appends with a crash at call `fail_at`, then crashes keeping the first `keep`
/// pending operations and the first `torn` sectors of the next one; returns the disk and the
/// writes (acknowledged, issued).
fn crash_torn(steps: &[Step], fail_at: u64, keep: usize, torn: usize) -> (SimDisk, usize, usize) {
    let disk = formatted();
    let mut storage = open(&disk).storage;
    disk.fail_at(Some(fail_at));
    let (acknowledged, issued, _) = run_until_error(&mut storage, steps);
    drop(storage);
    let report = disk.crash(|index, operation| match index.cmp(&keep) {
        std::cmp::Ordering::Less => Fate::Kept,
        std::cmp::Ordering::Equal => Fate::Torn(
            (0..operation.sectors())
                .map(|sector| sector < torn)
                .collect(),
        ),
        std::cmp::Ordering::Greater => Fate::Lost,
    });
    assert_eq!(report.torn, 1);
    (disk, acknowledged, issued)
}

#[test]
fn a_write_torn_at_a_sector_boundary_after_an_ordered_prefix_is_not_damage() {
    let (steps, states) = appends();
    let disk = formatted();
    let mut storage = open(&disk).storage;
    disk.fail_at(None);
    assert!(run_until_error(&mut storage, &steps).2.is_none());
    let calls = disk.calls();
    let mut checked = 0;
    for fail_at in 0..calls {
        let disk = formatted();
        let mut storage = open(&disk).storage;
        disk.fail_at(Some(fail_at));
        run_until_error(&mut storage, &steps);
        let sectors: Vec<usize> = disk.pending().iter().map(|op| op.sectors()).collect();
        for (keep, sectors) in sectors.into_iter().enumerate() {
            for torn in 1..sectors {
                let (disk, acknowledged, issued) = crash_torn(&steps, fail_at, keep, torn);
                let opened = open(&disk);
                let case = format!("crash at call {fail_at}, keep {keep}, {torn} sectors torn");
                assert!(opened.damage.is_clean(), "{case}: {:?}", opened.damage);
                assert!(
                    (acknowledged..=issued).any(|count| states[count] == opened.durable),
                    "{case}: not a prefix of {acknowledged}..={issued} appends"
                );
                checked += 1;
            }
        }
    }
    println!("{checked} torn crashes checked");
    assert!(checked > 50, "only {checked} torn crashes checked");
}

/// A client's payload can hold a well-formed record (checksums are not secret). When the real
/// header before it rots, replay finds the forged record; an absurd op there must not panic the
/// open, nor make it list ops without bound: the damage is reported from what is plausible.
#[test]
fn a_forged_record_inside_a_payload_never_panics_the_open() {
    for forged_op in [u64::MAX, u64::MAX - 1, 1 << 40] {
        let disk = formatted();
        let mut storage = open(&disk).storage;
        let mut state = DurableState::default();
        for index in 0..4 {
            let body = if index == 1 {
                let forged = Entry {
                    op: Op(forged_op),
                    view: View(0),
                    parent: EntryChecksum(0),
                    client: 7,
                    session: 1,
                    request: 1,
                    operation: Operation::StateMachine,
                    body: Bytes::new(),
                    checksum: EntryChecksum(0),
                }
                .sealed();
                let mut bytes = Vec::new();
                encode_entry_record(&forged, &mut bytes);
                bytes
            } else {
                vec![index; 40]
            };
            let mut entry = entry_after(&state, 0);
            entry = Entry {
                op: entry.op,
                view: entry.view,
                parent: entry.parent,
                client: 7,
                session: 1,
                request: entry.op.get(),
                operation: Operation::StateMachine,
                body: Bytes::from(body),
                checksum: EntryChecksum(0),
            }
            .sealed();
            let write = Write::Append(entry);
            storage.write(&write).unwrap();
            state.apply(&write);
        }
        storage.sync().unwrap();
        drop(storage);
        // Rot the header of op 2's record (the one carrying the forged record).
        let mut offset = 0;
        for entry in state.entries.iter().take(1) {
            let mut record = Vec::new();
            encode_entry_record(entry, &mut record);
            offset += record.len() as u64;
        }
        let wal = disk
            .durable_files()
            .into_iter()
            .find(|(name, _)| name.ends_with(".log"))
            .expect("a WAL")
            .0;
        let mut header = [0u8; 16];
        let mut handle = disk.clone();
        handle.read_at(&wal, offset, &mut header).unwrap();
        header[0] ^= 0xff;
        handle.write_at(&wal, offset, &header).unwrap();
        handle.sync(&wal).unwrap();
        let opened = open(&disk);
        assert!(
            opened.durable.damaged,
            "forged op {forged_op}: {:?}",
            opened.damage
        );
        assert!(
            opened.damage.corrupt_ops.iter().all(|op| *op <= 1 << 20),
            "forged op {forged_op}: {:?}",
            opened.damage
        );
    }
}

/// A process that dies with the machine up leaves its unsynced writes in the page cache, where
/// open reads them. Open makes them durable before returning: a power loss right after must
/// not take back what the replica, reopened, may now acknowledge.
#[test]
fn what_open_reads_after_a_process_crash_is_durable() {
    let disk = formatted();
    let mut storage = open(&disk).storage;
    let mut state = DurableState::default();
    for _ in 0..3 {
        let write = Write::Append(entry_after(&state, 300));
        storage.write(&write).unwrap();
        state.apply(&write);
    }
    storage
        .write(&Write::ViewState(ViewState {
            view: View(2),
            ..ViewState::default()
        }))
        .unwrap();
    state.view_state.view = View(2);
    // Enough to pass the flush threshold: written to the file, not synced.
    for _ in 0..2 {
        let write = Write::Append(entry_after(&state, 300));
        storage.write(&write).unwrap();
        state.apply(&write);
    }
    drop(storage);
    assert!(disk.pending_len() > 0, "the last appends are not synced");
    disk.crash_process();
    let opened = open(&disk);
    assert_eq!(opened.durable, state, "the page cache is read back");
    assert_eq!(disk.pending_len(), 0, "and made durable by open");
    drop(opened);
    disk.crash(|_, _| Fate::Lost);
    assert_eq!(open(&disk).durable, state);
}

/// A synced record misdirected far into its WAL file leaves zeros where it belonged and valid
/// records after them: open reports the lost op. The first write after that open must cut off
/// everything after the valid records, the valid ones included, before it writes there: a
/// stale record left behind would come back after the new records (when they end where it
/// starts), or make a crash that tears the new record look like damage in the middle of the log
/// (`vsr sim --seed 5559`, `vsr sim --seed 4480 --replicas 5`).
#[test]
fn valid_records_after_a_misdirected_one_are_cut_before_new_writes() {
    let recovering = ViewState {
        recovering: true,
        ..ViewState::default()
    };
    let ops =
        |state: &DurableState| -> Vec<Op> { state.entries.iter().map(|entry| entry.op).collect() };
    for torn in [true, false] {
        let (disk, mut state) = disk_with_entries(2, 1500);
        let mut storage = open(&disk).storage;
        disk.misdirect_next_in(".log", 16);
        let mut written = state.clone();
        let op_3 = entry_after(&state, 1500);
        // Op 3 in one batch (its record misdirected), ops 4 and 5 in the next.
        for count in [1, 2] {
            for _ in 0..count {
                let write = Write::Append(entry_after(&written, 1500));
                written.apply(&write);
                storage.write(&write).unwrap();
            }
            storage.sync().unwrap();
        }
        assert!(!disk.misdirect_armed());
        drop(storage);
        disk.crash(|_, _| Fate::Kept);
        let opened = open(&disk);
        assert_eq!(opened.damage.corrupt_ops, vec![3], "op 3 is lost");
        assert_eq!(opened.durable, damaged_prefix(&written, 2));
        // The repair, as the core does it: recovering first, then the log again from op 3.
        let mut storage = opened.storage;
        storage.write(&Write::ViewState(recovering)).unwrap();
        state.view_state = recovering;
        storage.write(&Write::Append(op_3.clone())).unwrap();
        if torn {
            // The new record of op 3 is torn by a crash before its sync: nothing acknowledged
            // is lost, and what follows the valid records is not damage.
            drop(storage);
            let report = disk.crash(|_, operation| match operation.sectors() {
                0 | 1 => Fate::Lost,
                sectors => Fate::Torn((0..sectors).map(|sector| sector == 0).collect()),
            });
            assert_eq!(report.torn, 1);
            let reopened = open(&disk);
            assert!(reopened.damage.is_clean(), "{:?}", reopened.damage);
            assert_eq!(ops(&reopened.durable), ops(&state));
            assert_eq!(reopened.durable, state);
        } else {
            storage.sync().unwrap();
            drop(storage);
            disk.crash(|_, _| Fate::Lost);
            state.apply(&Write::Append(op_3));
            let reopened = open(&disk);
            assert!(reopened.damage.is_clean(), "{:?}", reopened.damage);
            assert_eq!(
                ops(&reopened.durable),
                ops(&state),
                "no stale record comes back"
            );
            assert_eq!(reopened.durable, state);
        }
    }
}

#[test]
fn a_misdirected_last_record_landing_on_an_unreadable_sector_with_its_slot_unreadable_is_damage() {
    let (disk, state) = disk_with_entries(4, 1500);
    let mut storage = open(&disk).storage;
    // Op 5's record lands 32 sectors beyond its place (more than its offset: not before it),
    // which stays zeros.
    disk.misdirect_next_in(".log", 32);
    let mut written = state.clone();
    let write = Write::Append(entry_after(&written, 1500));
    written.apply(&write);
    storage.write(&write).unwrap();
    storage.sync().unwrap();
    assert!(!disk.misdirect_armed());
    drop(storage);
    disk.crash(|_, _| Fate::Kept);
    let (offset, sectors) = record_sectors(&written, 5);
    let wal = file_ending(&disk, ".log");
    let headers = file_ending(&disk, ".headers");
    // Where it landed, and the sector of the slot that names it (slots 4 and 5, the whole
    // file), both fail to read: neither the record nor its copy tells that op 5 was
    // acknowledged.
    for sector in offset / SECTOR_SIZE..=sectors.end {
        disk.make_unreadable(&wal, sector + 32);
    }
    disk.make_unreadable(&headers, 1);
    let opened = open(&disk);
    assert_eq!(opened.damage.corrupt_ops, vec![5, 6], "{:?}", opened.damage);
    assert_eq!(opened.durable, damaged_prefix(&written, 4));
}
