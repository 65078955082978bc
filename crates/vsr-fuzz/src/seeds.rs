//! Seed inputs for every target, built from real encodings: frames of every message, a
//! replica's snapshot, the files of a data directory after real writes, the key-value codecs'
//! outputs. `tests/corpus.rs` writes them (`write_seeds`, ignored) as the starting corpus.

use std::path::Path;

use bytes::{BufMut, Bytes};
use vsr::checksum::checksum;
use vsr::wire::{self, DeltaChunk, DeltaCursor, DeltaEnd, DeltaTarget, StatePayload};
use vsr::{
    Checkpoint, Codec, Commit, Confirm, DoViewChange, Entry, EntryChecksum, Envelope, GetState,
    Message, NewState, Op, Operation, Prepare, PrepareOk, Query, Recovery, RecoveryResponse, Reply,
    ReplyResult, Request, Sender, StartView, StartViewChange, StateMachine, View, ViewState, Write,
};
use vsr_kv::{KvOperation, KvQuery, KvResult, KvStore};
use vsr_storage::sim_disk::SimDisk;
use vsr_storage::{Disk, FileStorage, Identity, Tuning, format_disk};

use crate::CLUSTER;
use crate::seal::{SUPERBLOCK_COPY_SIZE, u64_at};

/// The seeds of the target named `name` (none for an unknown name).
#[must_use]
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "frame" => frames(),
        "state_transfer" => state_transfers(),
        "wal" => wals(),
        "checkpoint" => checkpoints(),
        "kv" => kvs(),
        "client_table" => vec![client_table(), snapshot()],
        _ => Vec::new(),
    }
}

/// `count` consecutive sealed entries from op `first` (a register, operations, a no-op).
fn entries(first: u64, count: u64) -> Vec<Entry> {
    let mut parent = EntryChecksum(0);
    (first..first + count)
        .map(|op| {
            let (operation, body) = match op % 3 {
                0 => (Operation::Register, Bytes::new()),
                1 => (Operation::StateMachine, Bytes::from(put(op).to_bytes())),
                _ => (Operation::Noop, Bytes::new()),
            };
            let entry = Entry {
                op: Op(op),
                view: View(1),
                parent,
                client: 0xc11e,
                session: 2,
                request: op,
                operation,
                body,
                checksum: EntryChecksum(0),
            }
            .sealed();
            parent = entry.checksum;
            entry
        })
        .collect()
}

fn put(op: u64) -> KvOperation {
    KvOperation::Put {
        key: Bytes::from(format!("key-{op}")),
        value: Bytes::from(format!("value-{op}")),
    }
}

/// A store after a few writes, a delete and a compare-and-swap.
fn store() -> KvStore {
    let mut store = KvStore::new();
    for op in 1..=5 {
        store.apply(Op(op), put(op));
    }
    store.apply(
        Op(6),
        KvOperation::Delete {
            key: Bytes::from_static(b"key-2"),
        },
    );
    store.apply(
        Op(7),
        KvOperation::CompareAndSwap {
            key: Bytes::from_static(b"key-3"),
            expected: Some(Bytes::from_static(b"value-3")),
            new: Bytes::from_static(b"swapped"),
        },
    );
    store
}

/// A client table of three sessions (registered, evicted, executed with a result), encoded as
/// a snapshot holds it.
fn client_table() -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32_le(3);
    for (client, tag) in [(7u128, 0u8), (9, 1), (11, 2)] {
        out.put_u128_le(client);
        out.put_u64_le(3);
        out.put_u64_le(4);
        out.put_u64_le(5);
        out.put_u8(tag);
        if tag == 2 {
            let result = KvResult::Swapped(true).to_bytes();
            out.put_u32_le(result.len() as u32);
            out.put_slice(&result);
        }
    }
    out
}

/// A replica's snapshot: the client table's size, the table, the store's whole state.
fn snapshot() -> Vec<u8> {
    let table = client_table();
    let mut out = (table.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&table);
    store().delta(Op(0)).encode(&mut out);
    out
}

/// Messages between replicas other than new_state and recovery, by sender.
fn replica_messages() -> Vec<(u8, Message)> {
    vec![
        (
            0,
            Prepare {
                view: View(0),
                commit: Op(2),
                entries: entries(3, 2),
                round: 5,
            }
            .into(),
        ),
        (
            1,
            PrepareOk {
                view: View(1),
                op: Op(4),
                checksum: EntryChecksum(0xabc),
            }
            .into(),
        ),
        (
            0,
            Commit {
                view: View(0),
                commit: Op(4),
                round: 6,
            }
            .into(),
        ),
        (
            1,
            Confirm {
                view: View(0),
                round: 6,
            }
            .into(),
        ),
        (2, StartViewChange { view: View(2) }.into()),
        (
            2,
            DoViewChange {
                view: View(2),
                last_normal_view: View(1),
                op: Op(5),
                commit: Op(3),
                entries: entries(4, 2),
            }
            .into(),
        ),
        (
            0,
            StartView {
                view: View(3),
                op: Op(6),
                commit: Op(4),
                entries: entries(5, 2),
            }
            .into(),
        ),
        (
            2,
            GetState {
                view: View(1),
                op: Op(2),
                commit: Op(2),
                cursor: None,
            }
            .into(),
        ),
        (
            2,
            GetState {
                view: View(1),
                op: Op(2),
                commit: Op(2),
                cursor: Some(DeltaCursor {
                    target: delta_target(),
                    offset: 1024,
                }),
            }
            .into(),
        ),
    ]
}

/// The delta the seeds' chunks and cursors name.
fn delta_target() -> DeltaTarget {
    DeltaTarget {
        transfer: 0x5eed,
        op: Op(7),
        op_checksum: EntryChecksum(0xc4ec),
        since: Op(0),
    }
}

/// new_state with entries and with delta chunks (one and the last), recovery and its response, by sender.
fn state_messages() -> Vec<(u8, Message)> {
    let snapshot = Bytes::from(snapshot());
    let half = snapshot.len() / 2;
    let delta = DeltaChunk {
        target: delta_target(),
        offset: 0,
        end: None,
        chunk: snapshot.slice(..half),
    };
    let last = DeltaChunk {
        target: delta_target(),
        offset: half as u64,
        end: Some(DeltaEnd {
            size: snapshot.len() as u64,
            checksum: checksum(&snapshot),
        }),
        chunk: snapshot.slice(half..),
    };
    let new_state = |payload| NewState {
        view: View(1),
        op: Op(7),
        commit: Op(7),
        normal: true,
        payload,
    };
    vec![
        (0, new_state(StatePayload::Entries(entries(3, 3))).into()),
        (0, new_state(StatePayload::Delta(Box::new(delta))).into()),
        (0, new_state(StatePayload::Delta(Box::new(last))).into()),
        (2, Recovery { nonce: 77 }.into()),
        (
            1,
            RecoveryResponse {
                view: View(1),
                nonce: 77,
                op: Op(6),
                commit: Op(5),
                primary: true,
            }
            .into(),
        ),
    ]
}

/// One frame of each message, sealed, with the control byte of a receiver that accepts it.
fn frames() -> Vec<Vec<u8>> {
    let from_replica = replica_messages().into_iter().chain(state_messages());
    let mut frames: Vec<Vec<u8>> = from_replica
        .map(|(from, message)| {
            // Replica 0 sends to replica 1; the others to replica 0.
            let to = u8::from(from == 0);
            framed(to | crate::frame::SEAL, Sender::Replica(from), message)
        })
        .collect();
    let request = Request {
        session: 3,
        request: 4,
        operation: Operation::StateMachine,
        body: Bytes::from(put(4).to_bytes()),
    };
    frames.push(framed(
        crate::frame::SEAL,
        Sender::Client(0xc11e),
        request.into(),
    ));
    let query = Query {
        request: 5,
        body: Bytes::from(
            KvQuery::Get {
                key: Bytes::from_static(b"k"),
            }
            .to_bytes(),
        ),
    };
    frames.push(framed(
        crate::frame::SEAL,
        Sender::Client(0xc11e),
        query.into(),
    ));
    for result in [
        ReplyResult::Answered(Bytes::from(KvResult::Value(None).to_bytes())),
        ReplyResult::NotPrimary,
    ] {
        let reply = Reply {
            client: 0xc11e,
            view: View(2),
            op: Op(0),
            request: 5,
            result,
        };
        frames.push(framed(
            3 | crate::frame::SEAL,
            Sender::Replica(2),
            reply.into(),
        ));
    }
    let reply = Reply {
        client: 0xc11e,
        view: View(1),
        op: Op(8),
        request: 4,
        result: ReplyResult::Executed(Bytes::from(KvResult::Ok.to_bytes())),
    };
    frames.push(framed(
        3 | crate::frame::SEAL,
        Sender::Replica(1),
        reply.into(),
    ));
    frames
}

/// The control byte, then the frame of `message` from `sender`.
fn framed(control: u8, sender: Sender, message: Message) -> Vec<u8> {
    let envelope = Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender,
        message,
    };
    let mut out = vec![control];
    out.extend_from_slice(&wire::encode(&envelope));
    out
}

/// A snapshot delivered whole, in order in small chunks, and out of order with a duplicate.
fn state_transfers() -> Vec<Vec<u8>> {
    let snapshot = snapshot();
    let half = u16::try_from(snapshot.len() / 2).expect("a small snapshot");
    let rest = u16::try_from(snapshot.len()).expect("a small snapshot") - half;
    let mut out_of_order = vec![0x30, 3];
    for (start, size) in [(half, rest), (0, half), (0, half)] {
        out_of_order.extend_from_slice(&start.to_le_bytes());
        out_of_order.extend_from_slice(&size.to_le_bytes());
        out_of_order.extend_from_slice(&[0, 0]);
    }
    out_of_order.extend_from_slice(&snapshot);
    vec![
        [&[0x71, 0][..], &snapshot].concat(),
        [&[0x79, 0][..], &snapshot].concat(),
        out_of_order,
    ]
}

/// A data directory on an in-memory disk after real writes: appends, a truncate, a view
/// state, and optionally a checkpoint of `snapshot` at op 3 with appends after it.
fn data_directory(checkpoint: bool) -> SimDisk {
    let disk = SimDisk::new();
    let identity = Identity {
        cluster: CLUSTER,
        replica: 1,
        replica_count: 3,
    };
    let tuning = Tuning {
        wal_grow_bytes: 4096,
        headers_grow_bytes: 1024,
        checkpoint_chunk_bytes: 1000,
        rotation_copy_bytes_max: 1000,
        flush_bytes: 4096,
        checkpoint_disk_share_percent: 100,
    };
    let directory = Path::new("seed");
    let mut writer: Box<dyn Disk> = Box::new(disk.clone());
    format_disk(writer.as_mut(), directory, identity, false, tuning).expect("format");
    let mut storage = FileStorage::open_disk(Box::new(disk.clone()), directory, None, tuning)
        .expect("open")
        .storage;
    let log = entries(1, 6);
    let mut writes: Vec<Write> = log[..4].iter().cloned().map(Write::Append).collect();
    writes.push(Write::Truncate { op: Op(3) });
    writes.push(Write::ViewState(ViewState {
        view: View(1),
        last_normal_view: View(1),
        commit: Op(3),
        recovering: false,
    }));
    if checkpoint {
        writes.push(Write::Checkpoint(Checkpoint {
            op: Op(3),
            op_checksum: log[2].checksum,
            since: Op(0),
            snapshot: Bytes::from(snapshot()).into(),
        }));
    }
    let again = entries(1, 6);
    writes.extend(again[3..].iter().cloned().map(Write::Append));
    for write in &writes {
        storage.write(write).expect("write");
    }
    storage.sync().expect("sync");
    disk
}

/// The whole file `name`.
fn read(disk: &SimDisk, name: &str) -> Vec<u8> {
    let mut disk = disk.clone();
    let size = usize::try_from(disk.len(name).expect("len")).expect("small");
    let mut bytes = vec![0u8; size];
    let read = disk.read_at(name, 0, &mut bytes).expect("read");
    bytes.truncate(read);
    bytes
}

/// The superblock copy with the highest sequence.
fn newest_copy(disk: &SimDisk) -> [u8; SUPERBLOCK_COPY_SIZE] {
    let file = read(disk, "superblock");
    let copies = file.chunks(4096).filter_map(|chunk| {
        let copy: [u8; SUPERBLOCK_COPY_SIZE] =
            chunk.get(..SUPERBLOCK_COPY_SIZE)?.try_into().ok()?;
        vsr_storage::fuzzing::superblock_copy(&copy).map(|_| copy)
    });
    copies
        .max_by_key(|copy| u64_at(copy, 48))
        .expect("a valid superblock copy")
}

/// Files whose names start with `prefix` and end with `suffix`.
fn named(disk: &SimDisk, prefix: &str, suffix: &str) -> Vec<String> {
    let mut disk = disk.clone();
    let names = disk.list().expect("list");
    names
        .into_iter()
        .filter(|name| name.starts_with(prefix) && name.ends_with(suffix))
        .collect()
}

/// The `wal` input for a directory: sealed superblock copy, WAL and headers, all copies.
fn wal_input(disk: &SimDisk, control: u8) -> Vec<u8> {
    let copy = newest_copy(disk);
    let start = u64_at(&copy, 136);
    let generation = u64_at(&copy, 144);
    let wal = read(disk, &format!("wal-{start}-{generation}.log"));
    // The preallocated tail reads as zeros; a little of it is enough.
    let used = wal
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1);
    let wal = &wal[..(used + 256).min(wal.len())];
    let headers = read(disk, &format!("wal-{start}-{generation}.headers"));
    let used = headers
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1);
    let headers = &headers[..used.next_multiple_of(128)];
    let mut input = vec![control];
    input.extend_from_slice(&copy);
    input.extend_from_slice(&(wal.len() as u32).to_le_bytes());
    input.extend_from_slice(wal);
    input.extend_from_slice(headers);
    input
}

fn wals() -> Vec<Vec<u8>> {
    let plain = data_directory(false);
    let checkpointed = data_directory(true);
    vec![
        wal_input(&plain, 0b1111),
        wal_input(&plain, 0b11_1011),
        wal_input(&checkpointed, 0b101_1111),
        wal_input(&plain, 0),
    ]
}

fn checkpoints() -> Vec<Vec<u8>> {
    let disk = data_directory(true);
    let copy = newest_copy(&disk);
    let name = named(&disk, "checkpoint-", ".bin")
        .pop()
        .expect("a checkpoint file");
    let file = read(&disk, &name);
    let snapshot = &file[..file.len() - crate::seal::CHECKPOINT_TRAILER_SIZE];
    vec![
        [&[0][..], &copy, snapshot].concat(),
        [&[1][..], &copy, snapshot].concat(),
    ]
}

fn kvs() -> Vec<Vec<u8>> {
    let operations = [
        put(1),
        KvOperation::Get {
            key: Bytes::from_static(b"key-1"),
        },
        KvOperation::Delete {
            key: Bytes::from_static(b"key-1"),
        },
        KvOperation::CompareAndSwap {
            key: Bytes::from_static(b"key-1"),
            expected: None,
            new: Bytes::from_static(b"new"),
        },
    ];
    let results = [
        KvResult::Ok,
        KvResult::Value(Some(Bytes::from_static(b"value"))),
        KvResult::Value(None),
        KvResult::Swapped(false),
        KvResult::Page {
            entries: vec![(Bytes::from_static(b"key-1"), Some(Bytes::from_static(b"v")))],
            next: Some(Bytes::from_static(b"key-2")),
        },
    ];
    let mut seeds: Vec<Vec<u8>> = operations
        .iter()
        .map(|operation| [&[0][..], &operation.to_bytes()].concat())
        .collect();
    let scan = KvQuery::Scan {
        prefix: Bytes::from_static(b"key-"),
        start: Some(Bytes::from_static(b"key-1")),
        limit: 10,
        keys_only: false,
    };
    seeds.push([&[0][..], &scan.to_bytes()].concat());
    seeds.extend(
        results
            .iter()
            .map(|result| [&[1][..], &result.to_bytes()].concat()),
    );
    let store = store();
    seeds.push([&[2][..], &store.delta(Op(0)).to_bytes()].concat());
    seeds.push([&[2][..], &store.delta(Op(4)).to_bytes()].concat());
    seeds
}
