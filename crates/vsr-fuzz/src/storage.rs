//! The `wal` and `checkpoint` targets: a data directory built from the input, opened the way a
//! replica opens its own after a restart.
//!
//! Both lay the files on an in-memory disk (`vsr_storage::sim_disk`) and call
//! `FileStorage::open_disk`, which reads the superblock copies, the live checkpoint, the WAL
//! records and the headers file, and repairs nothing until the first write.
//!
//! `wal` input: a control byte, a 256-byte superblock copy, a u32 WAL size, the WAL file, then
//! the headers file. Control bits: 0 seal the superblock copy, 1 seal the WAL's records, 2 make
//! each entry record's header repeat its entry, 3 seal the header copies, 4–5 which copies of the
//! superblock file hold the copy (all, the first pair, the second pair, copy 0 alone), 6 clear
//! the copy's checkpoint reference (the target writes no checkpoint file). The WAL's file names
//! come from the copy. Properties: every decoder re-encodes what it accepts to the
//! same bytes; a directory that opens takes a write and then opens again.
//!
//! `checkpoint` input: a control byte, a 256-byte superblock copy, then the snapshot. The
//! checkpoint file is the snapshot and the trailer the copy calls for. Control bits: 0 leave the
//! copy's snapshot size and checksum as they are instead of matching the snapshot, 1 leave the
//! copy unsealed, 2 damage the trailer. Property: a checkpoint that opens holds the snapshot
//! written, and a snapshot that decodes (client table and key-value delta) decodes again from
//! its re-encoding to the same value, and applies to a store.

use std::path::Path;

use vsr::checksum::checksum;
use vsr::{Codec, StateMachine, ViewState, Write};
use vsr_kv::{KvDelta, KvStore};
use vsr_storage::sim_disk::SimDisk;
use vsr_storage::{Disk, FileStorage, Opened, Tuning};

use crate::seal::{self, RECORD_HEADER_SIZE, SLOT_SIZE, SUPERBLOCK_COPY_SIZE, u32_at, u64_at};

/// The superblock file's name, size, and the distance between its copies.
const SUPERBLOCK_FILE: &str = "superblock";
const SUPERBLOCK_FILE_SIZE: u64 = 4 * COPY_STRIDE;
const COPY_STRIDE: u64 = 4096;

/// Small steps and chunks, so that reads run in several chunks on small files.
const TUNING: Tuning = Tuning {
    wal_grow_bytes: 4096,
    headers_grow_bytes: 4096,
    checkpoint_chunk_bytes: 1000,
    rotation_copy_bytes_max: 1000,
    flush_bytes: 4096,
    checkpoint_disk_share_percent: 100,
};

/// Runs one `wal` input; see the module docs.
pub fn wal(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Some((copy, rest)) = rest.split_first_chunk::<SUPERBLOCK_COPY_SIZE>() else {
        return;
    };
    let Some((wal_size, rest)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let wal_size = (u32::from_le_bytes(*wal_size) as usize).min(rest.len());
    let (wal, headers) = rest.split_at(wal_size);
    let (mut copy, mut wal, mut headers) = (*copy, wal.to_vec(), headers.to_vec());
    if control & 64 != 0 {
        copy[128..136].fill(0);
    }
    if control & 1 != 0 {
        seal::superblock_copy(&mut copy);
    }
    if control & 2 != 0 {
        seal::wal(&mut wal, control & 4 != 0);
    }
    if control & 8 != 0 {
        seal::headers(&mut headers);
    }
    check_decoders(&copy, &wal, &headers);
    let copies: &[u64] = match (control >> 4) & 0b11 {
        0 => &[0, 1, 2, 3],
        1 => &[0, 1],
        2 => &[2, 3],
        _ => &[0],
    };
    let disk = SimDisk::new();
    let mut writer = disk.clone();
    write_superblock(&mut writer, &copy, copies);
    let (wal_name, headers_name) = wal_names(&copy);
    write_file(&mut writer, &wal_name, &wal);
    write_file(&mut writer, &headers_name, &headers);
    let Some(opened) = open(&disk) else {
        return;
    };
    write_and_reopen(&disk, opened);
}

/// Runs one `checkpoint` input; see the module docs.
pub fn checkpoint(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Some((copy, snapshot)) = rest.split_first_chunk::<SUPERBLOCK_COPY_SIZE>() else {
        return;
    };
    let mut copy = *copy;
    if control & 1 == 0 {
        copy[104..112].copy_from_slice(&(snapshot.len() as u64).to_le_bytes());
        copy[112..128].copy_from_slice(&checksum(snapshot).to_le_bytes());
    }
    if control & 2 == 0 {
        seal::superblock_copy(&mut copy);
    }
    let mut trailer = seal::checkpoint_trailer(&copy);
    if control & 4 != 0 {
        trailer[20] ^= 1;
    }
    let disk = SimDisk::new();
    let mut writer = disk.clone();
    write_superblock(&mut writer, &copy, &[0, 1, 2, 3]);
    let name = format!(
        "checkpoint-{}-{}.bin",
        u64_at(&copy, 80),
        u64_at(&copy, 128)
    );
    write_file(&mut writer, &name, &[snapshot, &trailer[..]].concat());
    let (wal_name, headers_name) = wal_names(&copy);
    write_file(&mut writer, &wal_name, &[]);
    write_file(&mut writer, &headers_name, &[]);
    let Some(opened) = open(&disk) else {
        return;
    };
    if let Some(checkpoint) = &opened.durable.checkpoint {
        assert_eq!(
            checkpoint.snapshot.to_bytes(),
            snapshot,
            "the checkpoint holds the snapshot"
        );
        check_snapshot(&checkpoint.snapshot.to_bytes());
    }
}

/// Decodes a snapshot as a replica installs it; checks what decodes round-trips and applies.
fn check_snapshot(snapshot: &[u8]) {
    let Ok((table, delta)) = vsr::fuzzing::snapshot::<KvStore>(snapshot) else {
        return;
    };
    let mut encoded = u32::try_from(table.len())
        .expect("a decoded table is smaller than its snapshot")
        .to_le_bytes()
        .to_vec();
    encoded.extend_from_slice(&table);
    delta.encode(&mut encoded);
    let (table_again, delta_again): (Vec<u8>, KvDelta) =
        vsr::fuzzing::snapshot::<KvStore>(&encoded).expect("a re-encoded snapshot decodes");
    assert_eq!((&table_again, &delta_again), (&table, &delta));
    let mut store = KvStore::new();
    store.apply_delta(delta);
}

/// Checks that each decoder of the files re-encodes what it accepts to the same bytes.
fn check_decoders(copy: &[u8; SUPERBLOCK_COPY_SIZE], wal: &[u8], headers: &[u8]) {
    if let Some(encoded) = vsr_storage::fuzzing::superblock_copy(copy) {
        assert_eq!(&encoded, copy, "a superblock copy re-encodes to itself");
    }
    let mut offset = 0;
    while let Some(header) = wal.get(offset..offset + RECORD_HEADER_SIZE) {
        let end = offset + RECORD_HEADER_SIZE + u32_at(header, 40) as usize;
        let Some(record) = wal.get(offset..end) else {
            break;
        };
        if let Some(encoded) = vsr_storage::fuzzing::record(record) {
            assert_eq!(encoded, record, "a WAL record re-encodes to itself");
        }
        offset = end;
    }
    for slot in headers.chunks_exact(SLOT_SIZE) {
        if let Some(encoded) = vsr_storage::fuzzing::header_slot(slot) {
            assert_eq!(encoded, slot, "a header slot re-encodes to itself");
        }
    }
}

/// Writes `copy` at the copy positions `copies` of a zeroed superblock file.
fn write_superblock(disk: &mut SimDisk, copy: &[u8; SUPERBLOCK_COPY_SIZE], copies: &[u64]) {
    let written = disk.create(SUPERBLOCK_FILE).is_ok()
        && disk.set_len(SUPERBLOCK_FILE, SUPERBLOCK_FILE_SIZE).is_ok()
        && copies.iter().all(|index| {
            disk.write_at(SUPERBLOCK_FILE, index * COPY_STRIDE, copy)
                .is_ok()
        });
    assert!(written, "the in-memory disk takes every write");
}

/// Creates `name` holding `bytes`.
fn write_file(disk: &mut SimDisk, name: &str, bytes: &[u8]) {
    let written = disk.create(name).is_ok() && disk.write_at(name, 0, bytes).is_ok();
    assert!(written, "the in-memory disk takes every write");
}

/// The names of the WAL file and its headers file that a superblock copy names.
fn wal_names(copy: &[u8; SUPERBLOCK_COPY_SIZE]) -> (String, String) {
    let (start, generation) = (u64_at(copy, 136), u64_at(copy, 144));
    (
        format!("wal-{start}-{generation}.log"),
        format!("wal-{start}-{generation}.headers"),
    )
}

/// Opens the data on `disk` (a clone shares its files).
fn open(disk: &SimDisk) -> Option<Opened> {
    FileStorage::open_disk(Box::new(disk.clone()), Path::new("fuzz"), None, TUNING).ok()
}

/// Makes the first write a replica makes after open (its view state, recovering if the data
/// is damaged), which carries out the repairs open deferred; then the data must open again.
fn write_and_reopen(disk: &SimDisk, opened: Opened) {
    let Opened {
        mut storage,
        durable,
        ..
    } = opened;
    let view_state = ViewState {
        recovering: durable.view_state.recovering || durable.damaged,
        ..durable.view_state
    };
    if storage.write(&Write::ViewState(view_state)).is_err() || storage.sync().is_err() {
        return;
    }
    drop(storage);
    let reopened = open(disk).expect("data that opened and took a write opens again");
    assert_eq!(
        reopened.durable.view_state, view_state,
        "the view state written"
    );
}
