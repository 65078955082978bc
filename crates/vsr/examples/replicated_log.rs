//! A replicated append-only log of strings: three replicas and one client in one process.
//!
//! The replicas and the client never do I/O; this file is their driver. It carries messages
//! through a queue, stands in for the disks and ticks the clock, then crashes the primary to
//! show a view change. Run with `cargo run -p vsr --example replicated_log`.

use std::collections::VecDeque;

use bytes::Bytes;
use vsr::{Client, ClientEvent, Codec, CodecError, Command, Config, DurableState, Envelope};
use vsr::{Op, Replica, ReplicaIndex, StateMachine, View, Write, wire};

enum LogOperation {
    Append(String),
}

/// A read of one line: answered by the primary from its state, never logged.
struct ReadLine(u64);

/// Each line remembers the op that appended it, so a delta can be "the lines after op N".
#[derive(Default)]
struct Log {
    lines: Vec<(Op, String)>,
}

/// A lagging replica catches up from just the lines it misses, not from the whole log.
struct LogDelta(Vec<(Op, String)>);

/// Results are plain text: "appended as line N", or the line read.
struct Text(String);

impl StateMachine for Log {
    type Operation = LogOperation;
    type Result = Text;
    type Delta = LogDelta;
    type Query = ReadLine;

    fn apply(&mut self, op: Op, operation: LogOperation) -> Text {
        match operation {
            LogOperation::Append(line) => {
                self.lines.push((op, line));
                Text(format!("appended as line {}", self.lines.len() - 1))
            }
        }
    }

    // A read needs no log entry: the primary answers once a quorum confirms it still leads
    // its view, so it sees every append committed before the read was sent.
    fn query(&self, ReadLine(index): ReadLine) -> Text {
        let line = usize::try_from(index)
            .ok()
            .and_then(|index| self.lines.get(index));
        Text(line.map_or("(no such line)".to_owned(), |(_, line)| format!("{line:?}")))
    }

    fn delta(&self, since: Op) -> LogDelta {
        let first = self.lines.partition_point(|(op, _)| *op <= since);
        LogDelta(self.lines[first..].to_vec())
    }

    fn apply_delta(&mut self, delta: LogDelta) {
        self.lines.extend(delta.0);
    }

    // Only checkers compare digests, to see replicas converge; a cheap fingerprint will do.
    fn digest(&self) -> u128 {
        self.lines.iter().fold(0, |hash, (op, _)| {
            hash.wrapping_mul(31) ^ u128::from(op.get())
        })
    }
}

// Codecs: operations arrive from the network, so bad bytes are an error, never a panic.
fn bad(reason: &'static str) -> CodecError {
    CodecError::new("replicated log", reason)
}

fn utf8(bytes: &[u8]) -> Result<String, CodecError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad("not UTF-8"))
}

impl Codec for LogOperation {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Append(line) => out.extend([b"A", line.as_bytes()].concat()),
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match bytes.split_first() {
            Some((b'A', line)) => Ok(Self::Append(utf8(line)?)),
            _ => Err(bad("unknown operation")),
        }
    }
}

impl Codec for ReadLine {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let index = bytes.try_into().map_err(|_| bad("index size"))?;
        Ok(Self(u64::from_le_bytes(index)))
    }
}

impl Codec for Text {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        utf8(bytes).map(Text)
    }
}

/// A delta is a run of records: op (8 bytes), length (4 bytes), line.
impl Codec for LogDelta {
    fn encode(&self, out: &mut Vec<u8>) {
        for (op, line) in &self.0 {
            out.extend_from_slice(&op.get().to_le_bytes());
            out.extend_from_slice(&(line.len() as u32).to_le_bytes());
            out.extend_from_slice(line.as_bytes());
        }
    }
    fn decode(mut bytes: &[u8]) -> Result<Self, CodecError> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let (op, rest) = bytes.split_first_chunk::<8>().ok_or(bad("truncated"))?;
            let (size, rest) = rest.split_first_chunk::<4>().ok_or(bad("truncated"))?;
            let size = u32::from_le_bytes(*size) as usize;
            let (line, rest) = rest.split_at_checked(size).ok_or(bad("truncated"))?;
            lines.push((Op(u64::from_le_bytes(*op)), utf8(line)?));
            bytes = rest;
        }
        Ok(Self(lines))
    }
}

/// The driver: replicas (`None` once crashed), their disks, one client and the "network".
struct Cluster {
    replicas: Vec<Option<Replica<Log>>>,
    disks: Vec<DurableState>,
    client: Client,
    network: VecDeque<(ReplicaIndex, Envelope)>,
}

impl Cluster {
    /// Carries out replica `index`'s commands; replies go straight to the one client.
    fn collect(&mut self, index: usize) {
        let Some(replica) = self.replicas[index].as_mut() else {
            return;
        };
        // Reporting a write durable can release held-back commands: loop until none are left.
        loop {
            let commands: Vec<Command> = replica.drain_commands().collect();
            if commands.is_empty() {
                return;
            }
            for command in commands {
                match command {
                    Command::Send { to, envelope } => self.network.push_back((to, envelope)),
                    Command::Reply { envelope, .. } => {
                        let verified =
                            wire::decode(&wire::encode(&envelope), &self.client.receiver())
                                .expect("replicas send valid replies");
                        self.client.on_message(verified);
                    }
                    // An ideal disk: durable the moment it is applied. The replica holds back
                    // what must wait for durability (its prepare_ok, say) until we say so.
                    Command::Persist { seq, write } => {
                        self.disks[index].apply(&write);
                        replica.on_persisted(seq);
                    }
                    // A checkpoint may be written in the background; here, at once.
                    Command::Checkpoint { checkpoint } => {
                        let op = checkpoint.op;
                        self.disks[index].apply(&Write::Checkpoint(checkpoint));
                        replica.on_checkpoint_durable(op);
                    }
                    // Only for whoever asked with `request_snapshot` (a backup); nobody here.
                    Command::Snapshot { .. } => {}
                }
            }
        }
    }

    /// Delivers messages until the network is quiet; returns a result the client completed.
    fn deliver(&mut self) -> Option<(Op, Bytes)> {
        let mut completed = None;
        loop {
            (0..self.replicas.len()).for_each(|index| self.collect(index));
            while let Some(event) = self.client.poll() {
                match event {
                    ClientEvent::Send { to, envelope } => self.network.push_back((to, envelope)),
                    ClientEvent::Completed { op, result }
                    | ClientEvent::Answered { commit: op, result } => {
                        completed = Some((op, result));
                    }
                    ClientEvent::Evicted => unreachable!("one client never fills the client table"),
                }
            }
            let Some((to, envelope)) = self.network.pop_front() else {
                return completed;
            };
            // A crashed replica's messages are simply lost. What travels is bytes: the
            // receiver decodes them, and acts only on what decoding verified.
            if let Some(replica) = self.replicas[usize::from(to)].as_mut() {
                let frame = wire::encode(&envelope);
                let verified = wire::decode(&frame, &replica.receiver()).expect("a valid frame");
                replica.on_message(verified);
            }
        }
    }

    /// Time passes only when the driver says so: heartbeats, retries and timeouts count ticks.
    fn tick(&mut self) -> Option<(Op, Bytes)> {
        self.replicas
            .iter_mut()
            .flatten()
            .for_each(Replica::on_tick);
        self.client.on_tick();
        self.deliver()
    }

    fn execute(&mut self, operation: LogOperation) -> String {
        self.client.submit(Bytes::from(operation.to_bytes()));
        let (op, result) = self.wait();
        format!("{result}, committed at op {op}")
    }

    fn read(&mut self, line: u64) -> String {
        self.client.query(Bytes::from(ReadLine(line).to_bytes()));
        let (op, result) = self.wait();
        format!("{result}, as of op {op} (no log entry)")
    }

    fn wait(&mut self) -> (Op, String) {
        let (op, result) = (0..10_000)
            .find_map(|_| self.tick())
            .expect("the cluster answers");
        let Text(result) = Text::decode(&result).expect("replicas encode valid results");
        (op, result)
    }

    /// The live replica that is primary of its view, in normal status.
    fn primary(&self) -> Option<usize> {
        let is_primary = |r: &Replica<Log>| r.is_primary() && r.status_name() == "normal";
        self.replicas
            .iter()
            .position(|replica| replica.as_ref().is_some_and(is_primary))
    }
}

fn main() {
    let (cluster_id, replica_count) = (1, 3);
    let config = Config::new(cluster_id, replica_count);
    // Fixed seeds (they only drive timeout jitter) make every run print the same thing.
    let replica = |index| Some(Replica::new(config.clone(), index, Log::default(), 42));
    let mut cluster = Cluster {
        replicas: (0..replica_count).map(replica).collect(),
        disks: vec![DurableState::default(); usize::from(replica_count)],
        client: Client::new(cluster_id, replica_count, 0xc1, 7),
        network: VecDeque::new(),
    };
    let primary = cluster.primary().expect("view 0 starts with a primary");
    println!("{replica_count} replicas in view 0: replica {primary} is the primary");

    // The client's first request registers its session at op 1; the first line lands at op 2.
    for line in ["hello", "replicated", "world"] {
        println!(
            "append {line:?}: {}",
            cluster.execute(LogOperation::Append(line.into()))
        );
    }
    println!("read line 1: {}", cluster.read(1));

    // A crash loses everything in memory: dropping the replica is exactly that.
    cluster.replicas[primary] = None;
    println!("replica {primary} (the primary) crashes");

    // The backups stop hearing heartbeats, time out, and elect the next replica in turn.
    let mut ticks = 0;
    while cluster.primary().is_none() {
        cluster.tick();
        ticks += 1;
    }
    let primary = cluster.primary().expect("the loop above waited for one");
    let view = cluster.replicas[primary]
        .as_ref()
        .map_or(View(0), Replica::view);
    println!("{ticks} ticks later: view {view}, replica {primary} is the primary");

    // Committed lines survive: every quorum overlaps the one that committed them.
    println!(
        "append \"again\": {}",
        cluster.execute(LogOperation::Append("again".into()))
    );
    println!("read line 2: {}", cluster.read(2));
}
