//! A replicated append-only log of strings: three replicas and one client in one process.
//!
//! The replicas and the client never do I/O; this file is their driver. It carries messages
//! through a queue, stands in for the disks and ticks the clock, then crashes the primary to
//! show a view change. Run with `cargo run -p vsr --example replicated_log`.

use std::collections::VecDeque;

use bytes::Bytes;
use vsr::{Client, ClientEvent, Codec, CodecError, Command, Config, DurableState, Envelope};
use vsr::{Replica, ReplicaIndex, StateMachine};

enum LogOperation {
    Append(String),
    Read(u64),
}

/// The index of an appended line, or the line read (`None` past the end).
#[derive(Debug)]
enum LogResult {
    Appended(u64),
    Read(Option<String>),
}

/// Each line remembers the op that appended it, so a delta can be "the lines after op N".
#[derive(Default)]
struct Log {
    lines: Vec<(u64, String)>,
}

/// A lagging replica catches up from just the lines it misses, not from the whole log.
struct LogDelta(Vec<(u64, String)>);

impl StateMachine for Log {
    type Operation = LogOperation;
    type Result = LogResult;
    type Delta = LogDelta;

    fn apply(&mut self, op: u64, operation: LogOperation) -> LogResult {
        match operation {
            LogOperation::Append(line) => {
                self.lines.push((op, line));
                LogResult::Appended(self.lines.len() as u64 - 1)
            }
            // A read goes through the log too, so it sees every append committed before it.
            LogOperation::Read(index) => {
                let line = usize::try_from(index)
                    .ok()
                    .and_then(|index| self.lines.get(index));
                LogResult::Read(line.map(|(_, line)| line.clone()))
            }
        }
    }

    fn delta(&self, since: u64) -> LogDelta {
        let first = self.lines.partition_point(|(op, _)| *op <= since);
        LogDelta(self.lines[first..].to_vec())
    }

    fn apply_delta(&mut self, delta: LogDelta) {
        self.lines.extend(delta.0);
    }

    // Only checkers compare digests, to see replicas converge; a cheap fingerprint will do.
    fn digest(&self) -> u128 {
        let mix = |hash: u128, (op, _): &(u64, String)| hash.wrapping_mul(31) ^ u128::from(*op);
        self.lines.iter().fold(0, mix)
    }
}

// One byte layout for every value keeps the hand-written codecs short: records of a tag byte,
// a u64, and a length-prefixed UTF-8 line.
fn put_record(out: &mut Vec<u8>, tag: u8, number: u64, line: &str) {
    out.push(tag);
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&(line.len() as u64).to_le_bytes());
    out.extend_from_slice(line.as_bytes());
}

/// Operations arrive from the network: bad bytes must be an error, never a panic.
fn take_record(bytes: &mut &[u8]) -> Result<(u8, u64, String), CodecError> {
    let truncated = || CodecError::new("log record", "truncated");
    let (&tag, rest) = bytes.split_first().ok_or_else(truncated)?;
    let (number, rest) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    let (len, rest) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| truncated())?;
    let (line, rest) = rest.split_at_checked(len).ok_or_else(truncated)?;
    let line =
        String::from_utf8(line.to_vec()).map_err(|_| CodecError::new("line", "not UTF-8"))?;
    *bytes = rest;
    Ok((tag, u64::from_le_bytes(*number), line))
}

fn single_record(mut bytes: &[u8], what: &'static str) -> Result<(u8, u64, String), CodecError> {
    let record = take_record(&mut bytes)?;
    bytes
        .is_empty()
        .then_some(record)
        .ok_or(CodecError::new(what, "trailing bytes"))
}

impl Codec for LogOperation {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Append(line) => put_record(out, 0, 0, line),
            Self::Read(index) => put_record(out, 1, *index, ""),
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match single_record(bytes, "log operation")? {
            (0, _, line) => Ok(Self::Append(line)),
            (1, index, _) => Ok(Self::Read(index)),
            _ => Err(CodecError::new("log operation", "unknown tag")),
        }
    }
}

impl Codec for LogResult {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Appended(index) => put_record(out, 0, *index, ""),
            Self::Read(None) => put_record(out, 1, 0, ""),
            Self::Read(Some(line)) => put_record(out, 2, 0, line),
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match single_record(bytes, "log result")? {
            (0, index, _) => Ok(Self::Appended(index)),
            (1, _, _) => Ok(Self::Read(None)),
            (2, _, line) => Ok(Self::Read(Some(line))),
            _ => Err(CodecError::new("log result", "unknown tag")),
        }
    }
}

impl Codec for LogDelta {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0
            .iter()
            .for_each(|(op, line)| put_record(out, 0, *op, line));
    }
    fn decode(mut bytes: &[u8]) -> Result<Self, CodecError> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let (_, op, line) = take_record(&mut bytes)?;
            lines.push((op, line));
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
                    Command::Reply { envelope, .. } => self.client.on_message(envelope),
                    // An ideal disk: durable the moment it is applied. The replica holds back
                    // what must wait for durability (its prepare_ok, say) until we say so.
                    Command::Persist { seq, write } => {
                        self.disks[index].apply(&write);
                        replica.on_persisted(seq);
                    }
                }
            }
        }
    }

    /// Delivers messages until the network is quiet; returns a result the client completed.
    fn deliver(&mut self) -> Option<(u64, Bytes)> {
        let mut completed = None;
        loop {
            (0..self.replicas.len()).for_each(|index| self.collect(index));
            while let Some(event) = self.client.poll() {
                match event {
                    ClientEvent::Send { to, envelope } => self.network.push_back((to, envelope)),
                    ClientEvent::Completed { op, result } => completed = Some((op, result)),
                    ClientEvent::Evicted => unreachable!("one client never fills the client table"),
                }
            }
            let Some((to, envelope)) = self.network.pop_front() else {
                return completed;
            };
            // A crashed replica's messages are simply lost.
            if let Some(replica) = self.replicas[usize::from(to)].as_mut() {
                replica.on_message(envelope);
            }
        }
    }

    /// Time passes only when the driver says so: heartbeats, retries and timeouts count ticks.
    fn tick(&mut self) -> Option<(u64, Bytes)> {
        self.replicas
            .iter_mut()
            .flatten()
            .for_each(Replica::on_tick);
        self.client.on_tick();
        self.deliver()
    }

    fn execute(&mut self, operation: LogOperation) -> String {
        self.client.submit(Bytes::from(operation.to_bytes()));
        let (op, result) = (0..10_000)
            .find_map(|_| self.tick())
            .expect("the cluster answers");
        let result = LogResult::decode(&result).expect("replicas encode valid results");
        format!("{result:?}, committed at op {op}")
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
    println!("read line 1: {}", cluster.execute(LogOperation::Read(1)));

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
    let view = cluster.replicas[primary].as_ref().map_or(0, Replica::view);
    println!("{ticks} ticks later: view {view}, replica {primary} is the primary");

    // Committed lines survive: every quorum overlaps the one that committed them.
    println!(
        "append \"again\": {}",
        cluster.execute(LogOperation::Append("again".into()))
    );
    println!("read line 2: {}", cluster.execute(LogOperation::Read(2)));
}
