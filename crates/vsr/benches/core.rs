//! Micro-benchmarks of the protocol core: the wire codec and checksums, and whole replica steps
//! (a batch of client requests through a three-replica cluster in memory, every write durable
//! at once), so a regression shows up where it starts. `cargo bench -p vsr --bench core`.

use std::collections::VecDeque;

use bytes::Bytes;
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use vsr::wire::{decode, encode};
use vsr::{
    ClientId, Codec, CodecError, Command, Config, Entry, EntryChecksum, Envelope, Message, Op,
    Operation, Prepare, Receiver, Replica, Request, Sender, StateMachine, View,
};

fn main() {
    divan::main();
}

const CLUSTER: u128 = 0xbe7c;
/// A body of the size of a 16-byte key and a 100-byte value put.
const BODY_SIZE: usize = 124;

/// A state machine that keeps the last body per slot: cheap, so the core's own cost shows.
#[derive(Debug, Default)]
struct Slots {
    slots: Vec<u64>,
}

#[derive(Debug)]
struct Put(Bytes);

impl Codec for Put {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(Put(Bytes::copy_from_slice(bytes)))
    }
}

/// The op an operation executed at.
#[derive(Debug)]
struct At(u64);

impl Codec for At {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let bytes = bytes
            .try_into()
            .map_err(|_| CodecError::new("at", "size"))?;
        Ok(At(u64::from_le_bytes(bytes)))
    }
}

/// Every slot, as the delta.
#[derive(Debug)]
struct Snapshot(Vec<u64>);

impl Codec for Snapshot {
    fn encode(&self, out: &mut Vec<u8>) {
        for slot in &self.0 {
            out.extend_from_slice(&slot.to_le_bytes());
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(Snapshot(
            bytes
                .chunks_exact(8)
                .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
                .collect(),
        ))
    }
}

impl StateMachine for Slots {
    type Operation = Put;
    type Result = At;
    type Delta = Snapshot;
    /// The slot to read (its first byte, as for a put); answers the op that last wrote it.
    type Query = Put;
    fn query(&self, query: Put) -> At {
        let slot = query.0.first().copied().unwrap_or(0) as usize;
        At(self.slots.get(slot).copied().unwrap_or(0))
    }
    fn apply(&mut self, op: Op, operation: Put) -> At {
        let slot = operation.0.first().copied().unwrap_or(0) as usize;
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, 0);
        }
        self.slots[slot] = op.get();
        At(op.get())
    }
    fn delta(&self, _since: Op) -> Snapshot {
        Snapshot(self.slots.clone())
    }
    fn apply_delta(&mut self, delta: Snapshot) {
        self.slots = delta.0;
    }
    fn digest(&self) -> u128 {
        self.slots.iter().map(|&slot| u128::from(slot)).sum()
    }
}

/// Three replicas and `clients` registered sessions; messages are delivered at once, in order,
/// optionally through the wire codec, and every write is durable as soon as it is issued.
struct Cluster {
    replicas: Vec<Replica<Slots>>,
    sessions: Vec<(ClientId, u64, u64)>,
    receivers: Vec<Receiver>,
    inbox: VecDeque<(u8, Envelope)>,
    replies: usize,
}

impl Cluster {
    fn new(clients: usize) -> Self {
        let config = Config::new(CLUSTER, 3);
        let replicas = (0..3)
            .map(|index| Replica::new(config.clone(), index, Slots::default(), 1))
            .collect();
        let mut cluster = Self {
            replicas,
            sessions: Vec::new(),
            receivers: (0..3)
                .map(|index| Receiver::replica(&config, index))
                .collect(),
            inbox: VecDeque::new(),
            replies: 0,
        };
        for client in 1..=clients as ClientId {
            let register = request(client, 0, 1, Operation::Register, Bytes::new());
            cluster.inbox.push_back((0, register));
            cluster.sessions.push((client, 0, 1));
        }
        cluster.run();
        // The session number is the op of the register: ops 1..=clients, in order.
        for (index, session) in cluster.sessions.iter_mut().enumerate() {
            session.1 = index as u64 + 1;
        }
        cluster
    }

    /// Every session sends one request; runs until all are answered.
    fn step(&mut self, body: &Bytes) {
        for (client, session, request) in &mut self.sessions {
            *request += 1;
            let envelope = request_envelope(*client, *session, *request, body);
            self.inbox.push_back((0, envelope));
        }
        let expected = self.replies + self.sessions.len();
        self.run();
        assert_eq!(self.replies, expected, "every request is answered");
    }

    fn run(&mut self) {
        while let Some((to, envelope)) = self.inbox.pop_front() {
            let verified =
                decode(&encode(&envelope), &self.receivers[usize::from(to)]).expect("valid frame");
            let replica = &mut self.replicas[usize::from(to)];
            replica.on_message(verified);
            let mut durable = None;
            for command in replica.drain_commands() {
                match command {
                    Command::Send { to, envelope } => self.inbox.push_back((to, envelope)),
                    Command::Reply { .. } => self.replies += 1,
                    Command::Persist { seq, .. } => durable = Some(seq),
                    Command::Checkpoint { .. } | Command::Snapshot { .. } => {}
                }
            }
            if let Some(seq) = durable {
                replica.on_persisted(seq);
                for command in replica.drain_commands() {
                    match command {
                        Command::Send { to, envelope } => self.inbox.push_back((to, envelope)),
                        Command::Reply { .. } => self.replies += 1,
                        Command::Persist { .. }
                        | Command::Checkpoint { .. }
                        | Command::Snapshot { .. } => {
                            unreachable!("durability emits no write and answers no read")
                        }
                    }
                }
            }
        }
    }
}

fn request(
    client: ClientId,
    session: u64,
    request: u64,
    operation: Operation,
    body: Bytes,
) -> Envelope {
    Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Client(client),
        message: Message::Request(Request {
            session,
            request,
            operation,
            body,
        }),
    }
}

fn request_envelope(client: ClientId, session: u64, number: u64, body: &Bytes) -> Envelope {
    request(
        client,
        session,
        number,
        Operation::StateMachine,
        body.clone(),
    )
}

fn body() -> Bytes {
    Bytes::from(vec![7u8; BODY_SIZE])
}

/// One round of `clients` concurrent requests: each is prepared (in batches), replicated,
/// committed, executed on all three replicas and answered, every message encoded, checksummed,
/// decoded and verified on the way (the only way into a replica). Counted per request.
#[divan::bench(args = [1, 16, 64, 256])]
fn replica_step(bencher: Bencher, clients: usize) {
    let mut cluster = Cluster::new(clients);
    let body = body();
    bencher
        .counter(ItemsCount::new(clients))
        .bench_local(|| cluster.step(&body));
}

fn prepare(entries: u64) -> Envelope {
    let mut parent = EntryChecksum(0);
    let entries = (1..=entries)
        .map(|op| {
            let entry = Entry {
                op: Op(op),
                view: View(1),
                parent,
                client: u128::from(op),
                session: 1,
                request: op,
                operation: Operation::StateMachine,
                body: body(),
                checksum: EntryChecksum(0),
            }
            .sealed();
            parent = entry.checksum;
            entry
        })
        .collect();
    Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Replica(1), // view 1's primary
        message: Message::Prepare(Prepare {
            view: View(1),
            commit: Op(0),
            entries,
            round: 0,
        }),
    }
}

/// Encoding a prepare of a batch of entries (header and body checksums included).
#[divan::bench(args = [1, 64, 512])]
fn encode_prepare(bencher: Bencher, entries: u64) {
    let envelope = prepare(entries);
    bencher
        .counter(ItemsCount::new(entries))
        .bench(|| encode(black_box(&envelope)));
}

/// Decoding and verifying a prepare: header, body and every entry's checksum.
#[divan::bench(args = [1, 64, 512])]
fn decode_prepare(bencher: Bencher, entries: u64) {
    let frame = encode(&prepare(entries));
    bencher
        .counter(ItemsCount::new(entries))
        .bench(|| decode(black_box(&frame), &backup()).expect("valid"));
}

/// A client request frame, both ways: what the primary's connection does per request.
#[divan::bench]
fn request_round_trip(bencher: Bencher) {
    let envelope = request_envelope(0xc1, 1, 1, &body());
    let primary = Receiver::replica(&Config::new(CLUSTER, 3), 0);
    bencher.bench(|| decode(&encode(black_box(&envelope)), &primary).expect("valid"));
}

/// Replica 0 of the benchmarks' cluster, a backup in view 1.
fn backup() -> Receiver {
    Receiver::replica(&Config::new(CLUSTER, 3), 0)
}

/// The checksum alone over common sizes.
#[divan::bench(args = [128, 4096, 65536])]
fn checksum(bencher: Bencher, size: usize) {
    let bytes = vec![0x5au8; size];
    bencher
        .counter(BytesCount::new(size))
        .bench(|| vsr::checksum::checksum(black_box(&bytes)));
}
