//! Damaged data directories on real `vsr start` processes.
//!
//! Each test writes keys to a 3-replica cluster, SIGKILLs one backup, damages its data
//! directory (flipped bytes in the WAL, the superblock or the checkpoint, a truncated WAL, a
//! deleted directory), restarts it and checks that it notices the damage, repairs itself from
//! its peers, and that no acknowledged write is lost. Then one of the other two replicas is
//! killed, so the repaired replica is needed for every quorum, and every key is read again.
//!
//! The writes go through in-process [`vsr_server::Client`]s (many at once, far faster than one
//! `vsr client` process per key). The files, and the byte ranges damaged in them, come from
//! [`vsr_storage::layout`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{CLUSTER, Cluster, stderr, vsr};
use bytes::Bytes;
use tokio::task::JoinSet;
use vsr::{Codec, Op};
use vsr_kv::{KvOperation, KvResult};
use vsr_server::{Client, Network};
use vsr_storage::layout::{self, SuperblockCopy, WalFile, WalRecord, WalRecordKind};

/// Clients writing or reading at once.
const CLIENTS: usize = 16;
/// One attempt of one request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A request still failing after this long fails the test.
const OPERATION_GIVE_UP: Duration = Duration::from_secs(30);
/// The longest a restarted replica may take to repair itself and catch up.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(20);

// ---- The workload ---------------------------------------------------------------------------

/// The pairs `<tag>-<i>` → `value-<i>` for `i` in `range`.
fn pairs(tag: &str, range: std::ops::Range<usize>) -> Vec<(Bytes, Bytes)> {
    range
        .map(|i| {
            (
                Bytes::from(format!("{tag}-{i}")),
                Bytes::from(format!("value-{i}-of-{tag}")),
            )
        })
        .collect()
}

/// Writes and reads keys through in-process clients on a tokio runtime of the test's own.
struct Kv {
    runtime: tokio::runtime::Runtime,
    addresses: Vec<String>,
    network: Network,
}

impl Kv {
    fn new(cluster: &Cluster) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self {
            runtime,
            addresses: cluster.addresses.clone(),
            network: cluster.network(),
        }
    }

    /// Runs `operation(pair)` for every pair through [`CLIENTS`] clients at once; a line for
    /// every pair whose result differs from the one expected, or that failed.
    fn for_each<F>(&self, pairs: &[(Bytes, Bytes)], operation: F) -> Vec<String>
    where
        F: Fn(&(Bytes, Bytes)) -> (KvOperation, KvResult) + Send + Sync + 'static,
    {
        let pairs: Arc<[(Bytes, Bytes)]> = pairs.into();
        let operation = Arc::new(operation);
        self.runtime.block_on(async {
            let mut tasks = JoinSet::new();
            for worker in 0..CLIENTS {
                let client =
                    Client::connect_with(self.network.clone(), CLUSTER, self.addresses.clone())
                        .expect("a client");
                let (pairs, operation) = (Arc::clone(&pairs), Arc::clone(&operation));
                tasks.spawn(async move {
                    let mut failures = Vec::new();
                    for pair in pairs.iter().skip(worker).step_by(CLIENTS) {
                        let (request, expected) = operation(pair);
                        match execute(&client, &request).await {
                            Ok(result) if result == expected => {}
                            Ok(result) => failures
                                .push(format!("{request:?}: {result:?}, expected {expected:?}")),
                            Err(error) => {
                                // The cluster stopped answering: the rest would time out too.
                                failures.push(error);
                                break;
                            }
                        }
                    }
                    failures
                });
            }
            let mut failures = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                failures.extend(joined.expect("a client task does not panic"));
            }
            failures
        })
    }

    /// Puts every pair; panics unless every put is acknowledged.
    fn put_all(&self, pairs: &[(Bytes, Bytes)]) {
        let failures = self.for_each(pairs, |(key, value)| {
            let put = KvOperation::Put {
                key: key.clone(),
                value: value.clone(),
            };
            (put, KvResult::Ok)
        });
        assert!(failures.is_empty(), "writes failed: {failures:?}");
    }

    /// Reads every key back; a line for each one missing, with another value, or unreadable.
    fn check_all(&self, pairs: &[(Bytes, Bytes)]) -> Vec<String> {
        self.for_each(pairs, |(key, value)| {
            let get = KvOperation::Get { key: key.clone() };
            (get, KvResult::Value(Some(value.clone())))
        })
    }
}

/// Executes `operation`, retrying while the cluster does not answer (a put of the same value
/// and a get are safe to repeat), for at most [`OPERATION_GIVE_UP`].
async fn execute(client: &Client<Network>, operation: &KvOperation) -> Result<KvResult, String> {
    let body = Bytes::from(operation.to_bytes());
    let started = Instant::now();
    loop {
        match client.request(body.clone(), REQUEST_DEADLINE).await {
            Ok(result) => {
                return KvResult::decode(&result).map_err(|error| format!("{error:?}"));
            }
            Err(error) if started.elapsed() > OPERATION_GIVE_UP => {
                return Err(format!(
                    "{operation:?} failed for {OPERATION_GIVE_UP:?}: {error}"
                ));
            }
            Err(_) => {}
        }
    }
}

// ---- Files and damage -----------------------------------------------------------------------

/// The one WAL file of a replica stopped while idle.
fn live_wal(dir: &Path) -> WalFile {
    let wals = layout::wal_files(dir).expect("the data directory is readable");
    assert_eq!(wals.len(), 1, "one WAL file: {wals:?}");
    wals.into_iter().next().expect("one")
}

/// The offset in the middle of a record's payload.
fn payload_middle(record: &WalRecord) -> u64 {
    record.payload.start + (record.payload.end - record.payload.start) / 2
}

/// Inverts `count` bytes of the file at `path` from `offset`.
fn flip(path: &Path, offset: u64, count: usize) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("the file opens for writing");
    let mut bytes = vec![0u8; count];
    file.read_exact_at(&mut bytes, offset).expect("read");
    for byte in &mut bytes {
        *byte = !*byte;
    }
    file.write_all_at(&bytes, offset).expect("write");
    file.sync_all().expect("sync");
}

/// Every superblock copy of the data directory `dir`.
fn superblock_copies(dir: &Path) -> Vec<SuperblockCopy> {
    layout::superblock_copies(dir).expect("the superblock is readable")
}

/// The index of the newest valid superblock copy of `copies`.
fn newest_copy(copies: &[SuperblockCopy]) -> usize {
    let sequence = |copy: &SuperblockCopy| copy.contents.map(|contents| contents.sequence);
    (0..copies.len())
        .max_by_key(|index| sequence(&copies[*index]))
        .expect("four copies")
}

/// The commit number of the newest valid superblock copy.
fn superblock_commit(dir: &Path) -> Op {
    let copies = superblock_copies(dir);
    let contents = copies[newest_copy(&copies)].contents;
    contents.expect("a valid copy").view_state.commit
}

/// Cuts the file at `path` to `length` bytes.
fn truncate(path: &Path, length: u64) {
    let file = File::options()
        .write(true)
        .open(path)
        .expect("the file opens");
    file.set_len(length).expect("truncate");
    file.sync_all().expect("sync");
}

// ---- One damaged replica --------------------------------------------------------------------

/// A cluster with keys written and one backup, `victim`, stopped by SIGKILL.
struct Case {
    cluster: Cluster,
    kv: Kv,
    written: Vec<(Bytes, Bytes)>,
    victim: usize,
    /// Where the victim's log stood when it was last started by [`Case::start_victim`].
    log_from: usize,
}

impl Case {
    /// Starts a cluster, writes `keys` keys, waits until every replica holds and has executed
    /// all of them, and SIGKILLs the victim: the backup that is primary of the next view.
    fn new(tag: &str, keys: usize) -> Self {
        let mut case = Self::running(tag, keys);
        case.cluster.kill(case.victim);
        case
    }

    /// [`Case::new`] without killing the victim.
    fn running(tag: &str, keys: usize) -> Self {
        let mut cluster = Cluster::start(3);
        let kv = Kv::new(&cluster);
        let written = pairs(tag, 0..keys);
        kv.put_all(&written);
        wait_in_step(&mut cluster, &[0, 1, 2]);
        let (_, view) = cluster.wait_primary(None, Duration::from_secs(10));
        let victim = usize::try_from((view + 1) % 3).expect("small");
        Self {
            cluster,
            kv,
            written,
            victim,
            log_from: 0,
        }
    }

    fn dir(&self) -> PathBuf {
        self.cluster.data_dir(self.victim)
    }

    /// What the victim logged since it was last started.
    fn log(&self) -> String {
        self.cluster.log(self.victim)[self.log_from..].to_owned()
    }

    /// Restarts the victim and waits for its metrics endpoint.
    fn start_victim(&mut self) {
        self.log_from = self.cluster.log(self.victim).len();
        self.cluster.restart(self.victim);
    }

    /// Starts the victim, which must refuse its data directory: exit non-zero with one line,
    /// `error: ...`, on stderr. That line.
    fn start_victim_refused(&mut self) -> String {
        self.log_from = self.cluster.log(self.victim).len();
        self.cluster.spawn(self.victim);
        let status = self
            .cluster
            .wait_exit(self.victim, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the replica did not exit:\n{}", self.log()));
        let log = self.log();
        assert!(!status.success(), "{status:?}:\n{log}");
        assert_eq!(log.lines().count(), 1, "one line:\n{log}");
        assert!(log.starts_with("error: "), "{log}");
        log.trim_end().to_owned()
    }

    /// Moves the victim's data directory aside (if any) and formats a fresh one with
    /// `--recover`: the documented way to replace a replica whose data is lost.
    fn format_recovering(&self) {
        let path = self.dir();
        if path.exists() {
            std::fs::rename(&path, path.with_extension("damaged")).expect("move it aside");
        }
        let output = vsr(&[
            "format",
            &format!("--cluster={CLUSTER}"),
            &format!("--replica={}", self.victim),
            "--replica-count=3",
            "--recover",
            path.to_str().expect("utf-8 path"),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
    }

    /// Waits until the victim is normal with the others' op and commit; whether it was seen
    /// recovering (`vsr_status` 2) on the way.
    fn wait_repaired(&mut self) -> bool {
        let deadline = Instant::now() + REPAIR_TIMEOUT;
        let mut seen_recovering = false;
        loop {
            let status = self.cluster.metric(self.victim, "vsr_status");
            seen_recovering |= status == Some(2);
            if status == Some(0) && in_step(&mut self.cluster, &[0, 1, 2]) {
                return seen_recovering;
            }
            assert!(
                Instant::now() < deadline && self.cluster.running(self.victim),
                "replica {} repaired: status {status:?}, {:?}\n{}",
                self.victim,
                progress(&self.cluster),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the victim logged that it entered recovering status, then normal status.
    fn recovered_through_recovery(&self) -> bool {
        let log = self.log();
        log.find("status=\"recovering\"")
            .is_some_and(|at| log[at..].contains("status=\"normal\""))
    }

    /// Every acknowledged write reads back with its value.
    fn check_all(&self, tag: &str) {
        let lost = self.kv.check_all(&self.written);
        assert!(
            lost.is_empty(),
            "{tag}: {} of {} acknowledged writes lost: {:?}",
            lost.len(),
            self.written.len(),
            &lost[..lost.len().min(5)]
        );
    }

    /// Kills one of the two other replicas, so that every quorum needs the victim: the primary
    /// when the victim is next in line (then the victim must become primary and serve every
    /// read from its own state), else the other backup. Then reads every key and writes one.
    fn prove_victim_needed(&mut self) {
        let (primary, view) = self.cluster.wait_primary(None, Duration::from_secs(10));
        let next = usize::try_from((view + 1) % 3).expect("small");
        let killed = if primary != self.victim && next == self.victim {
            primary
        } else {
            (0..3)
                .find(|index| *index != primary && *index != self.victim)
                .expect("a third replica")
        };
        self.cluster.kill(killed);
        if killed == primary {
            let (new_primary, _) = self
                .cluster
                .wait_primary(Some(view), Duration::from_secs(15));
            assert_eq!(new_primary, self.victim, "the repaired replica leads");
        }
        self.check_all("with the repaired replica in every quorum");
        let extra = pairs("after-repair", 0..1);
        self.kv.put_all(&extra);
        let lost = self.kv.check_all(&extra);
        assert!(lost.is_empty(), "a write after the repair: {lost:?}");
    }
}

/// Whether the running replicas among `replicas` report the same op and commit.
fn in_step(cluster: &mut Cluster, replicas: &[usize]) -> bool {
    let running: Vec<usize> = replicas
        .iter()
        .copied()
        .filter(|index| cluster.running(*index))
        .collect();
    let states: Vec<_> = running
        .iter()
        .map(|index| {
            (
                cluster.metric(*index, "vsr_op"),
                cluster.metric(*index, "vsr_commit"),
            )
        })
        .collect();
    states
        .iter()
        .all(|state| state.1.is_some_and(|commit| commit > 0))
        && states.windows(2).all(|pair| pair[0] == pair[1])
}

/// Waits until `replicas` report the same op and commit.
fn wait_in_step(cluster: &mut Cluster, replicas: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_step(cluster, replicas) {
        assert!(
            Instant::now() < deadline,
            "the replicas agree: {:?}",
            progress(cluster)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The running replica that is primary of a view after `after` in normal status, if one
/// emerges within `timeout`.
fn try_primary(cluster: &mut Cluster, after: u64, timeout: Duration) -> Option<(usize, u64)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for index in 0..cluster.replica_count {
            if !cluster.running(index) {
                continue;
            }
            let view = cluster.metric(index, "vsr_view");
            let status = cluster.metric(index, "vsr_status");
            if let (Some(view), Some(0)) = (view, status)
                && view % 3 == index as u64
                && view > after
            {
                return Some((index, view));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// (status, op, commit) of every replica, for failure messages.
fn progress(cluster: &Cluster) -> Vec<(Option<u64>, Option<u64>, Option<u64>)> {
    (0..cluster.replica_count)
        .map(|index| {
            (
                cluster.metric(index, "vsr_status"),
                cluster.metric(index, "vsr_op"),
                cluster.metric(index, "vsr_commit"),
            )
        })
        .collect()
}

// ---- The cases ------------------------------------------------------------------------------

/// The log line of a replica that opened damaged data (vsr-server's `open_storage`).
const DAMAGED: &str = "data damaged at ops";
/// The log line of a replica that starts recovering (vsr-server's `start_replica`).
const LOST_STATE: &str = "this replica lost its state: recovering from its peers";
/// The log line of a replica whose WAL ended in a torn write.
const TORN: &str = "discarded a torn write at the log's tail";

/// The entry records of the victim's WAL.
fn entry_records(wal: &WalFile) -> Vec<WalRecord> {
    let entries: Vec<WalRecord> = wal
        .records()
        .expect("the WAL is readable")
        .into_iter()
        .filter(|record| record.kind == WalRecordKind::Entry && !record.payload.is_empty())
        .collect();
    assert!(entries.len() > 100, "the WAL holds the writes: {entries:?}");
    entries
}

#[test]
fn flipped_bytes_in_the_middle_of_the_wal_are_repaired_from_peers() {
    let mut case = Case::new("wal-flip", 400);
    let wal = live_wal(&case.dir());
    let entries = entry_records(&wal);
    let record = &entries[entries.len() / 2];
    flip(&wal.path, payload_middle(record), 4);
    case.start_victim();
    let seen_recovering = case.wait_repaired();
    let log = case.log();
    eprintln!(
        "wal-flip: op {} flipped; seen recovering: {seen_recovering}\n{log}",
        record.op
    );
    assert!(
        log.contains(&format!("{DAMAGED} [{}]", record.op)),
        "the damaged op is reported:\n{log}"
    );
    assert!(case.recovered_through_recovery(), "{log}");
    case.check_all("after the repair");
    case.prove_victim_needed();
}

#[test]
fn one_flipped_superblock_copy_is_survived_without_repair() {
    let mut case = Case::new("superblock-one", 200);
    let superblock = case.dir().join(layout::SUPERBLOCK_FILE);
    let copies = superblock_copies(&case.dir());
    let newest = newest_copy(&copies);
    let sequences: Vec<_> = copies
        .iter()
        .map(|copy| copy.contents.map(|contents| contents.sequence))
        .collect();
    assert!(sequences[newest].is_some(), "{sequences:?}");
    // The view state of the newest copy (its sequence and view numbers).
    flip(&superblock, copies[newest].view_state.start, 16);
    case.start_victim();
    let seen_recovering = case.wait_repaired();
    let log = case.log();
    eprintln!(
        "superblock-one: copy {newest} of {sequences:?} flipped; seen recovering: {seen_recovering}\n{log}"
    );
    assert!(!seen_recovering, "no repair is needed:\n{log}");
    assert!(!case.recovered_through_recovery(), "{log}");
    assert!(!log.contains(DAMAGED) && !log.contains(LOST_STATE), "{log}");
    case.check_all("after the restart");
    case.prove_victim_needed();
}

#[test]
fn a_replica_with_every_superblock_copy_flipped_refuses_to_start_and_is_rebuilt() {
    let mut case = Case::new("superblock-all", 200);
    let superblock = case.dir().join(layout::SUPERBLOCK_FILE);
    for copy in superblock_copies(&case.dir()) {
        flip(&superblock, copy.view_state.start, 16);
    }
    let error = case.start_victim_refused();
    eprintln!("superblock-all: {error}");
    assert!(error.contains("superblock"), "{error}");
    assert!(error.contains("vsr format --recover"), "{error}");
    assert!(error.contains("acknowledged"), "{error}");
    case.format_recovering();
    case.start_victim();
    let seen_recovering = case.wait_repaired();
    let log = case.log();
    eprintln!("superblock-all: seen recovering: {seen_recovering}\n{log}");
    assert!(log.contains(LOST_STATE), "{log}");
    assert!(case.recovered_through_recovery(), "{log}");
    case.check_all("after the rebuild");
    case.prove_victim_needed();
}

#[test]
fn a_flipped_checkpoint_is_repaired_from_peers() {
    // The tests start replicas with `--checkpoint-interval` 4096 (`common::CHECKPOINT_INTERVAL`):
    // write past it.
    let mut case = Case::new("checkpoint", 4200);
    let checkpoints =
        layout::checkpoint_files(&case.dir()).expect("the data directory is readable");
    assert_eq!(
        checkpoints.len(),
        1,
        "a checkpoint after 4,096 ops: {checkpoints:?}"
    );
    let checkpoint = &checkpoints[0].path;
    let size = checkpoints[0].range().end;
    flip(checkpoint, size / 2, 4);
    case.start_victim();
    let seen_recovering = case.wait_repaired();
    let log = case.log();
    eprintln!(
        "checkpoint: {checkpoint:?} of {size} bytes flipped; seen recovering: {seen_recovering}\n{log}"
    );
    assert!(
        log.contains(DAMAGED) && log.contains("and the checkpoint"),
        "{log}"
    );
    assert!(case.recovered_through_recovery(), "{log}");
    case.check_all("after the repair");
    case.prove_victim_needed();
}

#[test]
fn a_wal_truncated_in_the_middle_loses_no_acknowledged_write() {
    let mut case = Case::new("wal-truncate", 400);
    let wal = live_wal(&case.dir());
    let entries = entry_records(&wal);
    let record = &entries[entries.len() / 2];
    let last = entries.last().expect("entries");
    // Cut inside the payload of the record: it and every later one are gone.
    let length = payload_middle(record);
    let commit = superblock_commit(&case.dir());
    truncate(&wal.path, length);
    case.start_victim();
    let seen_recovering = case.wait_repaired();
    let log = case.log();
    eprintln!(
        "wal-truncate: cut inside op {} of ops up to {}, superblock commit {commit}; \
         seen recovering: {seen_recovering}\n{log}",
        record.op, last.op
    );
    assert!(
        log.contains(DAMAGED) || log.contains(TORN),
        "the cut is noticed:\n{log}"
    );
    case.check_all("after the restart");
    case.prove_victim_needed();
}

#[test]
fn a_deleted_data_directory_is_refused_then_rebuilt_with_recover() {
    let mut case = Case::new("deleted", 200);
    std::fs::remove_dir_all(case.dir()).expect("delete the data directory");
    let error = case.start_victim_refused();
    eprintln!("deleted: {error}");
    assert!(error.contains("does not exist"), "{error}");
    case.format_recovering();
    case.start_victim();
    let seen_recovering = case.wait_repaired();
    let log = case.log();
    eprintln!("deleted: seen recovering: {seen_recovering}\n{log}");
    assert!(log.contains(LOST_STATE), "{log}");
    assert!(case.recovered_through_recovery(), "{log}");
    case.check_all("after the rebuild");
    case.prove_victim_needed();
}

#[test]
fn a_wal_truncated_on_a_replica_every_quorum_needs_loses_no_acknowledged_write() {
    // The victim and the primary acknowledge writes while the other backup is down; the
    // victim's WAL is then cut inside those writes, the primary dies, and the victim and the
    // other backup are all that is left: only the victim ever held those writes.
    let mut case = Case::running("two-replicas-before", 100);
    let victim = case.victim;
    let (primary, view) = case.cluster.wait_primary(None, Duration::from_secs(10));
    let other = (0..3)
        .find(|index| *index != primary && *index != victim)
        .expect("a third replica");
    case.cluster.kill(other);
    let other_op = case.cluster.metric(primary, "vsr_op").expect("metrics");
    let two = pairs("two-replicas", 0..300);
    case.kv.put_all(&two);
    case.written.extend(two);
    wait_in_step(&mut case.cluster, &[primary, victim]);
    case.cluster.kill(victim);
    let wal = live_wal(&case.dir());
    let entries: Vec<WalRecord> = entry_records(&wal)
        .into_iter()
        .filter(|record| record.op > other_op)
        .collect();
    let record = &entries[entries.len() / 2];
    let last = entries.last().expect("entries");
    let commit = superblock_commit(&case.dir());
    truncate(&wal.path, payload_middle(record));
    case.cluster.kill(primary);
    case.cluster.restart(other);
    case.start_victim();
    let described = format!(
        "the other backup stopped at op {other_op}; the victim's WAL was cut inside op {} of \
         ops up to {}, its superblock's commit was {commit}",
        record.op, last.op
    );
    let Some((new_primary, new_view)) =
        try_primary(&mut case.cluster, view, Duration::from_secs(5))
    else {
        // The victim knows it lost entries and stays out of every quorum: the cluster waits
        // for the old primary, then the victim repairs from it.
        let log = case.log();
        eprintln!("two-replicas: {described}; no view change without the old primary\n{log}");
        assert!(
            log.contains(DAMAGED),
            "the cut is reported as damage:\n{log}"
        );
        case.cluster.restart(primary);
        case.wait_repaired();
        case.check_all("after the old primary returned");
        return;
    };
    let log = case.log();
    eprintln!("two-replicas: {described}; primary {new_primary} of view {new_view}\n{log}");
    let lost = case.kv.check_all(&case.written);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {described}; then the victim and the other backup \
         formed view {new_view}:\n{:?}\nthe victim's log:\n{log}",
        lost.len(),
        case.written.len(),
        &lost[..lost.len().min(3)]
    );
}

#[test]
fn a_replica_rebuilt_with_recover_catches_up_more_than_one_new_state_of_entries() {
    // A recovering replica fetches the primary's log in new_state messages of at most 256
    // entries: 600 writes need several.
    let mut case = Case::new("rebuilt-long", 600);
    std::fs::remove_dir_all(case.dir()).expect("delete the data directory");
    case.format_recovering();
    case.start_victim();
    let seen_recovering = case.wait_repaired();
    let log = case.log();
    eprintln!("rebuilt-long: seen recovering: {seen_recovering}\n{log}");
    assert!(log.contains(LOST_STATE), "{log}");
    assert!(case.recovered_through_recovery(), "{log}");
    case.check_all("after the rebuild");
    case.prove_victim_needed();
}
