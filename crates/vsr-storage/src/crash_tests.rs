//! Crash tests: a workload of appends, truncates, view states and checkpoints, crashed at every
//! point, on the in-memory disk.
//!
//! For each crash point (every mutating or syncing disk call: after each write, before each
//! sync, mid-write) and each image a crash could leave there (lose every unsynced write, keep a
//! prefix of them, tear the next), the test reopens the storage and checks that the state is
//! the state after some prefix of the writes, that the prefix covers every write acknowledged
//! by `sync` (or by `write` for view states and checkpoints), and that the log shows no damage.
//! It then writes more, syncs, reopens, and checks again.
//!
//! The tests at the end pin down the header copies: a slot is written only after its record is
//! synced; a slot torn by a crash is not damage, now or after later crashes; a synced last
//! record lost together with its slot is.

use std::path::Path;

use bytes::Bytes;
use vsr::{Checkpoint, DurableState, Entry, EntryChecksum, Op, Operation, View, ViewState, Write};

use crate::disk::Disk;
use crate::sim_disk::{Image, Operation as DiskOperation, SimDisk};
use crate::storage::{FileStorage, Tuning, format_disk};
use crate::{Identity, Opened};

const IDENTITY: Identity = Identity {
    cluster: 0xc1,
    replica: 1,
    replica_count: 3,
};

fn tuning() -> Tuning {
    Tuning {
        wal_grow_bytes: 1024,
        headers_grow_bytes: 256,
        checkpoint_chunk_bytes: 64,
        rotation_copy_bytes_max: 300,
        flush_bytes: 700,
        checkpoint_disk_share_percent: 100,
    }
}

/// A tiny deterministic generator (xorshift64*), enough to vary the workload.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }

    fn bytes(&mut self, size_max: u64) -> Bytes {
        let size = self.below(size_max + 1);
        Bytes::from(
            (0..size)
                .map(|_| self.below(256) as u8)
                .collect::<Vec<u8>>(),
        )
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
    Write(Write),
    Sync,
}

fn next_entry(state: &DurableState, random: &mut Random) -> Entry {
    let (op, parent) = match state.entries.back() {
        Some(last) => (last.op + 1, last.checksum),
        None => state
            .newest_checkpoint()
            .map_or((Op(1), EntryChecksum(0)), |c| (c.op + 1, c.op_checksum)),
    };
    let body = random.bytes(200);
    Entry {
        op,
        view: state.view_state.view,
        parent,
        client: 7,
        session: 1,
        request: op.get(),
        operation: Operation::StateMachine,
        body,
        checksum: EntryChecksum(0),
    }
    .sealed()
}

fn next_write(state: &DurableState, random: &mut Random) -> Write {
    let choice = random.below(10);
    if choice < 6 || state.entries.is_empty() {
        return Write::Append(next_entry(state, random));
    }
    let last = state.entries.back().expect("not empty").op;
    let first = state.entries.front().expect("not empty").op;
    match choice {
        6 => Write::Truncate {
            op: last - random.below(3.min(last - first + 1)),
        },
        7 | 8 => {
            let mut view_state = state.view_state;
            if random.below(2) == 1 {
                view_state.view = view_state.view.next();
            }
            view_state.last_normal_view = view_state.view;
            view_state.commit = first + random.below(last - first + 1);
            Write::ViewState(view_state)
        }
        _ => {
            let entry = &state.entries[usize::try_from(random.below(3))
                .expect("small")
                .min(state.entries.len() - 1)];
            let snapshot = random.bytes(300);
            // Half the checkpoints after the first are increments on the newest one (a chain
            // of at most eight), so crashes land inside increments too.
            let increment =
                state.checkpoint.is_some() && state.increments.len() < 8 && random.below(2) == 1;
            Write::Checkpoint(Checkpoint {
                op: entry.op,
                op_checksum: entry.checksum,
                since: if increment {
                    state.checkpoint_op()
                } else {
                    Op(0)
                },
                snapshot: snapshot.into(),
            })
        }
    }
}

/// The workload, and the model state after each prefix of its writes.
pub(crate) fn workload(seed: u64, writes: usize) -> (Vec<Step>, Vec<DurableState>) {
    workload_from(DurableState::default(), seed, writes)
}

/// A workload continuing `first`, and the model state after each prefix of its writes.
fn workload_from(first: DurableState, seed: u64, writes: usize) -> (Vec<Step>, Vec<DurableState>) {
    let mut random = Random(seed);
    let mut states = vec![first];
    let mut steps = Vec::new();
    while states.len() <= writes {
        let state = states.last().expect("not empty");
        let write = next_write(state, &mut random);
        let mut next = state.clone();
        next.apply(&write);
        states.push(next);
        steps.push(Step::Write(write));
        if random.below(3) == 0 {
            steps.push(Step::Sync);
        }
    }
    steps.push(Step::Sync);
    (steps, states)
}

pub(crate) fn formatted() -> SimDisk {
    let disk = SimDisk::default();
    format_disk(
        &mut disk.clone(),
        Path::new("sim"),
        IDENTITY,
        false,
        tuning(),
    )
    .unwrap();
    disk
}

pub(crate) fn open(disk: &SimDisk) -> Opened {
    FileStorage::open_disk(
        Box::new(disk.clone()),
        Path::new("sim"),
        Some(IDENTITY.cluster),
        tuning(),
    )
    .unwrap()
}

/// Runs the workload until the disk fails; returns (writes acknowledged, writes issued).
/// Opens `disk`, then arms a crash at call `fail_at` (counted from after the open) and runs
/// `steps` until the crash.
fn run(disk: &SimDisk, steps: &[Step], fail_at: Option<u64>) -> (usize, usize) {
    let mut storage = open(disk).storage;
    disk.fail_at(fail_at);
    let (mut acknowledged, mut issued) = (0, 0);
    for step in steps {
        match step {
            Step::Write(write) => {
                issued += 1;
                if storage.write(write).is_err() {
                    break;
                }
                if matches!(write, Write::ViewState(_) | Write::Checkpoint(_)) {
                    acknowledged = issued;
                }
            }
            Step::Sync => {
                if storage.sync().is_err() {
                    break;
                }
                acknowledged = issued;
            }
        }
    }
    (acknowledged, issued)
}

/// Every image a crash could leave, given the operations not yet durable: a prefix of them
/// kept, the next one torn after its first byte, its middle and its last but one.
fn crash_images(disk: &SimDisk) -> Vec<(String, Image)> {
    images_torn_at(disk, |size| vec![1, size / 2, size - 1])
}

/// Every image with a prefix of `disk`'s pending operations kept, and the next, if a write,
/// torn after each of the byte counts `tears(its size)` gives.
fn images_torn_at(disk: &SimDisk, tears: impl Fn(usize) -> Vec<usize>) -> Vec<(String, Image)> {
    let pending = disk.pending();
    let mut images = Vec::new();
    for keep in 0..=pending.len() {
        images.push((format!("keep {keep}"), disk.crash_image(keep, None)));
        if let Some(DiskOperation::Write { data, .. }) = pending.get(keep) {
            for torn in tears(data.len()) {
                images.push((
                    format!("keep {keep}, tear at {torn}"),
                    disk.crash_image(keep, Some(torn)),
                ));
            }
        }
    }
    images
}

/// Reopens an image, checks the state, writes more, and checks again after another reopen.
fn check_image(
    image: &Image,
    states: &[DurableState],
    acknowledged: usize,
    issued: usize,
) -> String {
    let disk = SimDisk::from_image(image);
    let opened = open(&disk);
    assert!(
        opened.damage.is_clean(),
        "a crash is not damage: {:?}",
        opened.damage
    );
    let durable = opened.durable;
    let prefix = (acknowledged..=issued.min(states.len() - 1))
        .find(|k| states[*k] == durable)
        .unwrap_or_else(|| {
            panic!("state after reopen is not a prefix of {acknowledged}..={issued} writes: {durable:?}")
        });
    let mut storage = opened.storage;
    let mut expected = durable.clone();
    let mut random = Random(prefix as u64 + 1);
    for _ in 0..3 {
        let write = next_write(&expected, &mut random);
        storage.write(&write).unwrap();
        expected.apply(&write);
    }
    storage.sync().unwrap();
    drop(storage);
    let again = open(&SimDisk::from_image(&disk.current()));
    assert_eq!(again.durable, expected, "writes after recovery");
    assert_eq!(again.damage, crate::Damage::default());
    format!("prefix {prefix}")
}

fn crash_everywhere(seed: u64, writes: usize) -> usize {
    let (steps, states) = workload(seed, writes);
    crash_everywhere_from(
        &formatted().current(),
        &steps,
        &states,
        &format!("seed {seed}"),
    )
}

/// Runs `steps` on a disk holding `base` (whose state is `states[0]`), crashed at every call,
/// and checks every image each crash could leave; returns how many.
fn crash_everywhere_from(
    base: &Image,
    steps: &[Step],
    states: &[DurableState],
    case: &str,
) -> usize {
    let disk = SimDisk::from_image(base);
    run(&disk, steps, None);
    let calls = disk.calls();
    let mut checked = 0;
    for fail_at in 0..=calls {
        let disk = SimDisk::from_image(base);
        let (acknowledged, issued) = run(&disk, steps, Some(fail_at));
        for (name, image) in crash_images(&disk) {
            let result =
                std::panic::catch_unwind(|| check_image(&image, states, acknowledged, issued));
            assert!(
                result.is_ok(),
                "{case}, crash at call {fail_at}, image {name}"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_crash_point_keeps_acknowledged_writes_and_a_prefix() {
    let mut checked = 0;
    for seed in 1..=8 {
        checked += crash_everywhere(seed, 60);
    }
    println!("{checked} crash images checked");
    assert!(checked > 500, "only {checked} crash images checked");
}

#[test]
fn the_workload_exercises_every_kind_of_write() {
    let (steps, _) = workload(1, 40);
    let count = |kind: fn(&Write) -> bool| {
        steps
            .iter()
            .filter(|step| matches!(step, Step::Write(write) if kind(write)))
            .count()
    };
    assert!(count(|w| matches!(w, Write::Append(_))) > 10);
    assert!(count(|w| matches!(w, Write::Truncate { .. })) > 0);
    assert!(count(|w| matches!(w, Write::ViewState(_))) > 0);
    assert!(count(|w| matches!(w, Write::Checkpoint(_))) > 0);
    let (steps, _) = workload(1, 400);
    let increments = steps
        .iter()
        .filter(|step| matches!(step, Step::Write(Write::Checkpoint(c)) if c.since > Op(0)))
        .count();
    assert!(increments > 0);
}

#[test]
fn disk_use_stays_bounded_under_an_endless_workload() {
    let disk = formatted();
    let mut storage = open(&disk).storage;
    let mut state = DurableState::default();
    let mut random = Random(9);
    let mut usage_max = 0;
    for round in 0..2000 {
        let write = if round % 50 == 49 && !state.entries.is_empty() {
            let entry = state.entries.back().expect("not empty");
            // A whole checkpoint every fourth, increments between: old chains are removed.
            let since = if round % 200 == 49 {
                vsr::Op(0)
            } else {
                state.checkpoint_op()
            };
            Write::Checkpoint(Checkpoint {
                op: entry.op,
                op_checksum: entry.checksum,
                since,
                snapshot: random.bytes(300).into(),
            })
        } else {
            Write::Append(next_entry(&state, &mut random))
        };
        storage.write(&write).unwrap();
        storage.sync().unwrap();
        state.apply(&write);
        usage_max = usage_max.max(storage.disk_usage_bytes());
    }
    let files: u64 = disk.current().values().map(crate::sim_disk::len).sum();
    // The superblock, the WAL and its headers, and a chain of at most four checkpoint files.
    assert!(
        disk.current().len() <= 7,
        "{:?}",
        disk.current().keys().collect::<Vec<_>>()
    );
    assert!(usage_max < 64 * 1024, "usage grew to {usage_max}");
    assert_eq!(files, storage.disk_usage_bytes());
    assert_eq!(open(&disk).durable, state);
}

#[test]
fn a_crash_mid_format_leaves_no_vsr_data_or_a_complete_format() {
    for fail_at in 0..20 {
        let disk = SimDisk::default();
        disk.fail_at(Some(fail_at));
        let formatted = format_disk(
            &mut disk.clone(),
            Path::new("sim"),
            IDENTITY,
            true,
            tuning(),
        );
        for keep in 0..=disk.pending().len() {
            let image = SimDisk::from_image(&disk.crash_image(keep, None));
            let opened = FileStorage::open_disk(Box::new(image), Path::new("sim"), None, tuning());
            match opened {
                Ok(opened) => assert_eq!(opened.durable, DurableState::recovering()),
                Err(error) => assert!(
                    formatted.is_err(),
                    "format succeeded but open failed: {error}"
                ),
            }
        }
    }
}

#[test]
fn view_states_are_durable_without_sync() {
    let disk = formatted();
    let mut storage = open(&disk).storage;
    let view_state = ViewState {
        view: View(3),
        last_normal_view: View(2),
        commit: Op(0),
        recovering: false,
    };
    storage.write(&Write::ViewState(view_state)).unwrap();
    let image = disk.crash_image(0, None);
    assert_eq!(
        open(&SimDisk::from_image(&image)).durable.view_state,
        view_state
    );
}

/// Whether `operation` writes to a file whose name ends with `suffix`.
fn writes_to(operation: &DiskOperation, suffix: &str) -> bool {
    matches!(operation, DiskOperation::Write { name, .. } if name.ends_with(suffix))
}

/// `count` appends continuing `state`, which they advance.
fn appends(state: &mut DurableState, count: usize, random: &mut Random) -> Vec<Write> {
    (0..count)
        .map(|_| {
            let write = Write::Append(next_entry(state, random));
            state.apply(&write);
            write
        })
        .collect()
}

/// Writes and syncs `synced` on a formatted disk, writes `batch`, and crashes in the sync of
/// the batch at the last call that leaves a write to the file ending with `suffix` pending:
/// the WAL's fdatasync for ".log", the headers file's for ".headers". Returns the disk and the
/// states after `synced` and after `batch`.
fn crashed_in_the_sync_of(
    synced: &[Write],
    batch: &[Write],
    suffix: &str,
) -> (SimDisk, DurableState, DurableState) {
    let mut found = None;
    for fail_at in 0.. {
        let disk = formatted();
        let mut storage = open(&disk).storage;
        let mut before = DurableState::default();
        for write in synced {
            storage.write(write).unwrap();
            before.apply(write);
        }
        storage.sync().unwrap();
        let mut after = before.clone();
        for write in batch {
            storage.write(write).unwrap();
            after.apply(write);
        }
        disk.fail_at(Some(fail_at));
        if storage.sync().is_ok() {
            break;
        }
        if disk
            .pending()
            .iter()
            .any(|operation| writes_to(operation, suffix))
        {
            found = Some((disk, before, after));
        }
    }
    found.expect("the sync writes to the file")
}

/// Every image a crash could leave with `disk`'s pending writes: a prefix of them kept, the
/// next torn after each of its bytes.
fn torn_everywhere(disk: &SimDisk) -> Vec<(String, Image)> {
    images_torn_at(disk, |size| (1..size).collect())
}

/// The damaged slots (neither zeros nor valid) of the headers file of the first WAL.
fn damaged_slots(image: &Image) -> Vec<u64> {
    let name = image
        .keys()
        .find(|name| name.ends_with(".headers"))
        .expect("a headers file")
        .clone();
    let mut disk = SimDisk::from_image(image);
    crate::headers::scan(&mut disk, &name, 1, 0, &|_| None)
        .unwrap()
        .damaged
}

/// Batches whose sync a crash interrupts, after the writes that precede them are synced:
/// appends (one run of slots); a truncate, whose slot sits after the last op it keeps; appends
/// and a truncate of some of them, whose slots are stale when they are written; a truncate and
/// appends after it.
fn batches() -> Vec<(Vec<Write>, Vec<Write>)> {
    let mut random = Random(11);
    let mut cases = Vec::new();
    let mut state = DurableState::default();
    cases.push((Vec::new(), appends(&mut state, 5, &mut random)));

    let mut state = DurableState::default();
    let synced = appends(&mut state, 5, &mut random);
    cases.push((synced.clone(), vec![Write::Truncate { op: Op(2) }]));

    // The truncate's slot, at op 7, lies past the end of the headers file (6 slots).
    let mut more = state.clone();
    let mut batch = appends(&mut more, 3, &mut random);
    batch.push(Write::Truncate { op: Op(6) });
    cases.push((synced.clone(), batch));

    let mut more = state;
    let truncate = Write::Truncate { op: Op(3) };
    more.apply(&truncate);
    let mut batch = vec![truncate];
    batch.extend(appends(&mut more, 2, &mut random));
    cases.push((synced, batch));
    cases
}

#[test]
fn a_crash_before_the_wal_is_synced_is_a_torn_tail_with_no_slot_written() {
    for (synced, batch) in batches() {
        let (disk, synced, _) = crashed_in_the_sync_of(&synced, &batch, ".log");
        // A torn WAL write keeps the batch's first records.
        let mut prefixes = vec![synced];
        for write in &batch {
            let mut next = prefixes.last().expect("not empty").clone();
            next.apply(write);
            prefixes.push(next);
        }
        assert!(
            !disk
                .pending()
                .iter()
                .any(|operation| writes_to(operation, ".headers")),
            "a slot is written only after its record is synced"
        );
        let images = crash_images(&disk);
        assert!(images.len() > 4);
        for (name, image) in images {
            let opened = open(&SimDisk::from_image(&image));
            assert!(opened.damage.is_clean(), "{name}: {:?}", opened.damage);
            assert!(
                prefixes.contains(&opened.durable),
                "{name}: {:?}",
                opened.durable
            );
        }
    }
}

#[test]
fn a_slot_torn_by_a_crash_opens_clean_with_every_synced_record() {
    for (index, (synced, batch)) in batches().into_iter().enumerate() {
        let (disk, _, expected) = crashed_in_the_sync_of(&synced, &batch, ".headers");
        assert!(
            !disk
                .pending()
                .iter()
                .any(|operation| writes_to(operation, ".log")),
            "batch {index}: the records are synced before their slots are written"
        );
        let mut torn_slots = 0;
        for (name, image) in torn_everywhere(&disk) {
            torn_slots += usize::from(!damaged_slots(&image).is_empty());
            let opened = open(&SimDisk::from_image(&image));
            assert_eq!(
                opened.damage,
                crate::Damage::default(),
                "batch {index}, {name}"
            );
            assert_eq!(opened.durable, expected, "batch {index}, {name}");
            let result = std::panic::catch_unwind(|| {
                check_image(&image, std::slice::from_ref(&expected), 0, 0)
            });
            assert!(result.is_ok(), "batch {index}, {name}: writing after it");
        }
        assert!(torn_slots > 0, "batch {index}: no image has a torn slot");
    }
}

#[test]
fn a_slot_torn_by_a_crash_is_not_taken_for_a_lost_record_after_later_crashes() {
    // A slot torn by a crash is repaired by the first write after open. Otherwise a later
    // truncate below it, then a crash tearing the next record, would leave a damaged slot
    // after the log's end and garbage after the valid records: a lost record's pattern.
    let mut random = Random(3);
    let mut state = DurableState::default();
    let batch = appends(&mut state, 5, &mut random);
    let (disk, _, expected) = crashed_in_the_sync_of(&[], &batch, ".headers");
    let pending = disk.pending();
    let Some(DiskOperation::Write { data, .. }) = pending.last() else {
        panic!("the headers write is pending: {pending:?}");
    };
    assert_eq!(
        data.len(),
        5 * crate::headers::SLOT_SIZE,
        "one run of five slots"
    );
    let mut truncated = expected.clone();
    truncated.apply(&Write::Truncate { op: Op(1) });
    let mut steps = vec![Step::Write(Write::Truncate { op: Op(1) })];
    let mut states = vec![expected.clone(), truncated.clone()];
    for (index, write) in appends(&mut truncated, 4, &mut random)
        .into_iter()
        .enumerate()
    {
        states.push(states.last().expect("not empty").clone());
        states.last_mut().expect("not empty").apply(&write);
        steps.push(Step::Write(write));
        if index % 2 == 1 {
            steps.push(Step::Sync);
        }
    }
    let mut checked = 0;
    for slot in 0..5 {
        // Checksum and magic kept, the op and the rest lost.
        let torn = slot * crate::headers::SLOT_SIZE + 20;
        let image = disk.crash_image(pending.len() - 1, Some(torn));
        assert_eq!(damaged_slots(&image), vec![slot as u64]);
        let case = format!("slot of op {} torn", slot + 1);
        checked += crash_everywhere_from(&image, &steps, &states, &case);
        let (more, more_states) = workload_from(expected.clone(), 21, 12);
        checked += crash_everywhere_from(&image, &more, &more_states, &case);
    }
    assert!(checked > 200, "only {checked} crash images checked");
}

/// Bytes the records of `writes` take in a WAL that holds only them.
fn wal_bytes(writes: &[Write]) -> u64 {
    let mut record = Vec::new();
    for write in writes {
        match write {
            Write::Append(entry) => crate::record::encode_entry_record(entry, &mut record),
            Write::Truncate { op } => crate::record::encode_truncate_record(*op, &mut record),
            _ => unreachable!("only records"),
        }
    }
    record.len() as u64
}

#[test]
fn records_a_crash_kept_without_their_slots_get_them_at_the_first_write() {
    // A crash before the WAL's fdatasync may still keep the batch's records: open finds them,
    // and they become durable later, but their slots were never written. The first write after
    // open writes them (after syncing the WAL), so that the last record rotting later is
    // reported, not cut off as a torn tail. For a truncate, the op reported is the first it
    // removed.
    let lost_ops = [5, 3, 7, 5];
    for ((synced, batch), lost_op) in batches().into_iter().zip(lost_ops) {
        let (disk, _, after) = crashed_in_the_sync_of(&synced, &batch, ".log");
        let kept = SimDisk::from_image(&disk.crash_image(disk.pending().len(), None));
        let opened = open(&kept);
        assert_eq!(opened.damage, crate::Damage::default(), "{batch:?}");
        assert_eq!(opened.durable, after, "{batch:?}");
        let mut view_state = after.view_state;
        view_state.commit = Op(1);
        let mut storage = opened.storage;
        storage.write(&Write::ViewState(view_state)).unwrap();
        drop(storage);
        let writes: Vec<Write> = synced.iter().chain(&batch).cloned().collect();
        let rotten = with_flipped_byte(&kept, ".log", wal_bytes(&writes) - 1);
        let opened = open(&rotten);
        assert_eq!(opened.damage.corrupt_ops, vec![lost_op], "{batch:?}");
        assert!(opened.durable.damaged, "{batch:?}");
    }
}

/// Five entries appended and synced: the disk and the state.
fn five_synced_entries() -> (SimDisk, DurableState) {
    let mut random = Random(7);
    let mut state = DurableState::default();
    let disk = formatted();
    let mut storage = open(&disk).storage;
    for write in appends(&mut state, 5, &mut random) {
        storage.write(&write).unwrap();
    }
    storage.sync().unwrap();
    (disk, state)
}

/// Where the record of `op` starts in the WAL file of a log of appends only.
fn record_offset(state: &DurableState, op: u64) -> u64 {
    let mut offset = 0;
    for entry in state.entries.iter().take_while(|entry| entry.op < Op(op)) {
        let mut record = Vec::new();
        crate::record::encode_entry_record(entry, &mut record);
        offset += record.len() as u64;
    }
    offset
}

/// A copy of `disk`, all of it durable, with the byte at `offset` of the file ending with
/// `suffix` flipped.
fn with_flipped_byte(disk: &SimDisk, suffix: &str, offset: u64) -> SimDisk {
    use crate::disk::Disk;
    let mut copy = SimDisk::from_image(&disk.current());
    let name = disk
        .current()
        .into_keys()
        .find(|name| name.ends_with(suffix))
        .expect("the file");
    let mut byte = [0u8];
    assert_eq!(copy.read_at(&name, offset, &mut byte).unwrap(), 1);
    byte[0] ^= 0x5a;
    copy.write_at(&name, offset, &byte).unwrap();
    SimDisk::from_image(&copy.current())
}

/// `state` with only the entries before `op`, marked damaged.
fn damaged_before(state: &DurableState, op: u64) -> DurableState {
    let mut expected = state.clone();
    expected.entries.retain(|entry| entry.op < Op(op));
    expected.damaged = true;
    expected
}

#[test]
fn a_synced_last_record_lost_with_its_slot_is_damage() {
    use crate::headers::SLOT_SIZE;
    use crate::record::RECORD_HEADER_SIZE;
    let (disk, state) = five_synced_entries();
    let slot = |op: u64| (op - 1) * SLOT_SIZE as u64;
    // (what rots, the first op lost): a byte of the last record's body, of its header, of both
    // the last two records; each with a byte of the slots of the lost ops.
    let body = record_offset(&state, 5) + RECORD_HEADER_SIZE as u64 + 3;
    let cases: [(Vec<(&str, u64)>, u64); 4] = [
        (vec![(".log", body), (".headers", slot(5) + 40)], 5),
        (
            vec![
                (".log", record_offset(&state, 5) + 10),
                (".headers", slot(5)),
            ],
            5,
        ),
        (
            vec![
                (".log", record_offset(&state, 4) + 30),
                (".log", body),
                (".headers", slot(4) + 100),
                (".headers", slot(5) + 7),
            ],
            4,
        ),
        // The slot of the record before rots too: it is a live op's, and rewritten.
        (
            vec![
                (".log", body),
                (".headers", slot(4) + 1),
                (".headers", slot(5) + 2),
            ],
            5,
        ),
    ];
    for (flips, first_lost) in cases {
        let mut damaged = disk.clone();
        for (suffix, offset) in &flips {
            damaged = with_flipped_byte(&damaged, suffix, *offset);
        }
        let opened = open(&damaged);
        let lost: Vec<u64> = (first_lost..=5).collect();
        assert_eq!(
            opened.damage,
            crate::Damage {
                corrupt_ops: lost,
                torn_tail_records: 0,
                checkpoint_corrupt: false,
            },
            "{flips:?}"
        );
        assert_eq!(
            opened.durable,
            damaged_before(&state, first_lost),
            "{flips:?}"
        );

        // The repair: marked recovering, then the log cut and the damaged slots repaired. The
        // log then reopens clean, and appends after it too.
        let mut storage = opened.storage;
        let mut expected = opened.durable.clone();
        expected.damaged = false;
        expected.view_state.recovering = true;
        let recovering = Write::ViewState(expected.view_state);
        storage.write(&recovering).unwrap();
        let reopened = open(&SimDisk::from_image(&damaged.current()));
        assert_eq!(reopened.damage, crate::Damage::default(), "{flips:?}");
        assert_eq!(reopened.durable, expected, "{flips:?}");
        assert!(damaged_slots(&damaged.current()).is_empty(), "{flips:?}");
        let write = Write::Append(next_entry(&expected, &mut Random(1)));
        storage.write(&write).unwrap();
        storage.sync().unwrap();
        expected.apply(&write);
        let reopened = open(&SimDisk::from_image(&damaged.current()));
        assert_eq!(reopened.damage, crate::Damage::default(), "{flips:?}");
        assert_eq!(reopened.durable, expected, "{flips:?}");
    }
}

#[test]
fn a_crash_while_repairing_a_lost_record_never_hides_the_damage() {
    let (disk, state) = five_synced_entries();
    let slot = 4 * crate::headers::SLOT_SIZE as u64;
    let damaged = with_flipped_byte(&disk, ".log", record_offset(&state, 5) + 200);
    let damaged = with_flipped_byte(&damaged, ".headers", slot + 60);
    let base = damaged.current();
    let write = |disk: &SimDisk| {
        let opened = open(disk);
        let mut view_state = opened.durable.view_state;
        view_state.recovering = true;
        let mut storage = opened.storage;
        storage.write(&Write::ViewState(view_state))
    };
    let probe = SimDisk::from_image(&base);
    probe.fail_at(None);
    write(&probe).unwrap();
    let mut checked = 0;
    for fail_at in 0..=probe.calls() {
        let disk = SimDisk::from_image(&base);
        disk.fail_at(Some(fail_at));
        let _ = write(&disk);
        for (name, image) in crash_images(&disk) {
            let opened = open(&SimDisk::from_image(&image));
            let case = format!("crash at call {fail_at}, {name}");
            if opened.durable.view_state.recovering {
                // Recovery repairs the log whatever it holds.
                assert_eq!(
                    opened.durable.entries,
                    damaged_before(&state, 5).entries,
                    "{case}"
                );
            } else {
                assert_eq!(opened.damage.corrupt_ops, vec![5], "{case}");
                assert_eq!(opened.durable, damaged_before(&state, 5), "{case}");
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} images checked");
}

/// A copy of `disk`, all of it durable, with `size` bytes at `offset` of the file ending with
/// `suffix` zeroed: a write that never reached the platter (or landed elsewhere).
fn with_zeros(disk: &SimDisk, suffix: &str, offset: u64, size: usize) -> SimDisk {
    use crate::disk::Disk;
    let mut copy = SimDisk::from_image(&disk.current());
    let name = disk
        .current()
        .into_keys()
        .find(|name| name.ends_with(suffix))
        .expect("the file");
    copy.write_at(&name, offset, &vec![0u8; size]).unwrap();
    SimDisk::from_image(&copy.current())
}

#[test]
fn a_synced_record_after_a_lost_write_is_not_cut_off_silently() {
    // Five synced entries and a checkpoint at op 4, crashed before the rotation: the WAL still
    // holds ops 1 to 5. The write of op 4's record is lost (zeros where it was). Op 4 is
    // before the checkpoint, but op 5, whose slot proves it was synced, lies after the gap:
    // the cut would discard it. It is reported.
    let (disk, state) = five_synced_entries();
    let entry = &state.entries[3];
    let checkpoint = Write::Checkpoint(Checkpoint {
        op: entry.op,
        op_checksum: entry.checksum,
        since: vsr::Op(0),
        snapshot: Bytes::from_static(b"snapshot").into(),
    });
    let base = disk.current();
    let mut crashed = None;
    for fail_at in 0.. {
        let disk = SimDisk::from_image(&base);
        let mut storage = open(&disk).storage;
        disk.fail_at(Some(fail_at));
        assert!(
            storage.write(&checkpoint).is_err(),
            "the rotation takes more calls"
        );
        let image = SimDisk::from_image(&disk.crash_image(disk.pending().len(), None));
        if open(&image).durable.checkpoint_op() == Op(4) {
            crashed = Some(image);
            break;
        }
    }
    let crashed = crashed.expect("a crash after the checkpoint's superblock update");
    let mut expected = state.clone();
    expected.apply(&checkpoint);
    assert_eq!(
        open(&crashed).durable,
        expected,
        "the checkpoint, then op 5"
    );
    let lost = record_offset(&state, 4)..record_offset(&state, 5);
    let size = usize::try_from(lost.end - lost.start).expect("small");
    let opened = open(&with_zeros(&crashed, "-0.log", lost.start, size));
    assert_eq!(opened.damage.corrupt_ops, vec![5]);
    assert!(opened.durable.damaged);
}

#[test]
fn a_slot_whose_record_is_not_on_disk_is_damage() {
    // With slots written after their records are synced, no crash leaves a slot without its
    // record: this image is built by hand. A disk that loses a synced write, or a storage that
    // wrote the slots first (the old order, `bug-headers-synced-first`), would leave it. The op
    // may have been acknowledged, so it is repaired.
    let (disk, state) = five_synced_entries();
    let mut random = Random(8);
    let before = disk.current();
    let mut storage = open(&disk).storage;
    let write = Write::Append(next_entry(&state, &mut random));
    storage.write(&write).unwrap();
    storage.sync().unwrap();
    let mut image = disk.current();
    let wal = image
        .keys()
        .find(|name| name.ends_with(".log"))
        .expect("a WAL")
        .clone();
    image.insert(wal.clone(), before[&wal].clone());
    let opened = open(&SimDisk::from_image(&image));
    assert_eq!(opened.damage.corrupt_ops, vec![6]);
    assert_eq!(opened.damage.torn_tail_records, 0);
    let mut expected = state;
    expected.damaged = true;
    assert_eq!(opened.durable, expected);
}

#[test]
fn the_wal_moves_after_a_checkpoint_in_steps_and_a_truncation_cutting_copied_entries_stops_it() {
    let disk = formatted();
    let mut storage = open(&disk).storage;
    let mut random = Random(1);
    let mut state = DurableState::default();
    let apply = |storage: &mut FileStorage, state: &mut DurableState, write: Write| {
        storage.write(&write).unwrap();
        state.apply(&write);
    };
    for _ in 0..10 {
        let write = Write::Append(next_entry(&state, &mut random));
        apply(&mut storage, &mut state, write);
    }
    storage.sync().unwrap();
    let checkpoint = |state: &DurableState, index: usize| {
        Write::Checkpoint(Checkpoint {
            op: state.entries[index].op,
            op_checksum: state.entries[index].checksum,
            since: Op(0),
            snapshot: Bytes::from(vec![0xc5; 100]).into(),
        })
    };
    let wal_files = |disk: &SimDisk| {
        let mut disk = disk.clone();
        let names = disk.list().unwrap();
        names
            .into_iter()
            .filter(|name| name.ends_with(".log"))
            .count()
    };
    let _ = vsr::coverage::take();
    // Each sync after it goes live copies one step (one record: the budget is 300 bytes).
    let write = checkpoint(&state, 2);
    apply(&mut storage, &mut state, write);
    storage.sync().unwrap();
    storage.sync().unwrap();
    assert_eq!(wal_files(&disk), 2, "the old WAL and the one taking over");
    assert_eq!(
        vsr::coverage::take().get(vsr::coverage::Mark::WalRotationInSteps),
        2
    );
    // Ops 4 and 5 are in the new WAL; cutting after op 4 stops the move.
    apply(&mut storage, &mut state, Write::Truncate { op: Op(4) });
    assert_eq!(
        vsr::coverage::take().get(vsr::coverage::Mark::WalRotationCut),
        1
    );
    let write = Write::Append(next_entry(&state, &mut random));
    apply(&mut storage, &mut state, write);
    storage.sync().unwrap();
    assert_eq!(open(&disk.clone()).durable, state, "after the cut");
    // The next checkpoint moves the WAL to the end, step by step.
    let mut storage = open(&disk).storage;
    let write = checkpoint(&state, 1);
    apply(&mut storage, &mut state, write);
    for _ in 0..10 {
        storage.sync().unwrap();
    }
    drop(storage);
    assert_eq!(
        wal_files(&disk),
        1,
        "the move finished and the old WAL is gone"
    );
    assert_eq!(open(&disk).durable, state, "after the move");
}

#[test]
fn a_checkpoint_beyond_the_wal_moves_it_at_once_so_later_entries_leave_no_gap() {
    // As after a state transfer: the checkpoint at op 10 follows a WAL that ends at op 3.
    let disk = formatted();
    let mut storage = open(&disk).storage;
    let mut random = Random(2);
    let mut state = DurableState::default();
    let mut writes = Vec::new();
    for _ in 0..3 {
        let write = Write::Append(next_entry(&state, &mut random));
        state.apply(&write);
        writes.push(write);
    }
    let checkpoint = Write::Checkpoint(Checkpoint {
        op: Op(10),
        op_checksum: EntryChecksum(0xfeed),
        since: Op(0),
        snapshot: Bytes::from(vec![0xc6; 100]).into(),
    });
    state.apply(&checkpoint);
    writes.push(checkpoint);
    let append = Write::Append(next_entry(&state, &mut random));
    state.apply(&append);
    writes.push(append);
    for write in &writes {
        storage.write(write).unwrap();
    }
    // Durable, with no step of rotation after it: a crash now must find no gap.
    storage.sync_wal().unwrap();
    drop(storage);
    let opened = open(&disk);
    assert!(!opened.durable.damaged, "{:?}", opened.damage);
    assert_eq!(opened.durable, state);
}

#[test]
fn the_workload_moves_the_wal_in_steps_and_supersedes_such_moves() {
    let _ = vsr::coverage::take();
    for seed in 1..=8 {
        let (steps, states) = workload(seed, 400);
        let disk = formatted();
        let mut storage = open(&disk).storage;
        for step in &steps {
            match step {
                Step::Write(write) => storage.write(write).unwrap(),
                Step::Sync => storage.sync().unwrap(),
            }
        }
        storage.sync().unwrap();
        drop(storage);
        let opened = open(&disk);
        assert_eq!(
            &opened.durable,
            states.last().expect("not empty"),
            "seed {seed}"
        );
    }
    // So the crash tests, on the same workloads, crash inside such moves.
    let hits = vsr::coverage::take();
    assert!(hits.get(vsr::coverage::Mark::WalRotationInSteps) > 100);
    assert!(hits.get(vsr::coverage::Mark::WalRotationSuperseded) > 10);
}
