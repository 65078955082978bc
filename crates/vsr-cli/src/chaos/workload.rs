//! The workload: concurrent client sessions doing put, get and compare-and-swap on a small,
//! rotating key set, and the history they record.
//!
//! Each session is one [`vsr_server::Client`] (one request in flight) that reaches the replicas
//! through its own proxy links. Keys come in epochs of [`EPOCH`]: [`KEYS_PER_EPOCH`] keys per
//! epoch, shared by every session, so operations conflict; a new epoch starts new keys, which
//! keeps each key's history short enough for the linearizability search (keys are checked
//! independently). Every value written is unique in the run (`<session>.<sequence>`), so a
//! lost or duplicated write cannot hide behind an equal value.
//!
//! Every operation is recorded in the simulator's history schema ([`HistoryOp`]), times in
//! nanoseconds since the run started: a completed operation with its result; one whose outcome
//! is unknown ([`RequestError::Unknown`]: sent, then the deadline passed) with
//! `complete: null`, since it may or may not have executed; one that certainly did not execute
//! ([`RequestError::NotExecuted`]: never sent) is counted but left out of the history, since it
//! did nothing. After an unknown outcome the session continues as a new process, because its
//! old request may still be executing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use vsr::Codec;
use vsr_kv::{KvOperation, KvQuery, KvResult};
use vsr_server::{Client, Network, RequestError};
use vsr_sim::history::{History, HistoryOp, OpKind, OpResult};

use crate::chaos::schedule::Prng;

/// How long one request may take before its outcome is unknown.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_millis(1500);
/// How long the keys of one epoch are used.
const EPOCH: Duration = Duration::from_secs(10);
/// Keys per epoch.
const KEYS_PER_EPOCH: u64 = 4;
/// Longest pause of a session between two operations.
const THINK_MS_MAX: u64 = 10;
/// Pause after a request that could not be sent.
const NOT_EXECUTED_PAUSE: Duration = Duration::from_millis(50);
/// The first process number of the checker's own operations (progress probe, final reads).
pub(crate) const FINAL_PROCESS: u64 = 1_000_000;

/// How the workload's operations ended.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) invoked: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) not_executed: AtomicU64,
    pub(crate) unknown: AtomicU64,
    /// Puts acknowledged and compare-and-swaps that swapped.
    pub(crate) writes_acknowledged: AtomicU64,
}

/// The history being recorded, shared by every session.
pub(crate) struct Recorder {
    started: Instant,
    ops: Mutex<Vec<HistoryOp>>,
    keys: Mutex<BTreeSet<String>>,
    pub(crate) counts: Counts,
    /// When the latest operation completed, in nanoseconds since the run started (0: none
    /// yet): the nemesis waits for one after a heal.
    last_completion_ns: AtomicU64,
    /// Replies that are no answer to their request: a failure of the run.
    bad_replies: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            ops: Mutex::new(Vec::new()),
            keys: Mutex::new(BTreeSet::new()),
            counts: Counts::default(),
            last_completion_ns: AtomicU64::new(0),
            bad_replies: Mutex::new(Vec::new()),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A key of the current epoch.
    fn key(&self, prng: &mut Prng) -> String {
        let epoch = self.started.elapsed().as_secs() / EPOCH.as_secs();
        let key = format!("k{epoch}-{}", prng.below(KEYS_PER_EPOCH));
        lock(&self.keys).insert(key.clone());
        key
    }

    /// Every key the workload used.
    pub(crate) fn keys(&self) -> Vec<String> {
        lock(&self.keys).iter().cloned().collect()
    }

    /// Whether an operation completed at or after `at_ns` (nanoseconds since the run started).
    pub(crate) fn completed_since(&self, at_ns: u64) -> bool {
        let last = self.last_completion_ns.load(Ordering::Relaxed);
        last != 0 && last >= at_ns
    }

    pub(crate) fn bad_replies(&self) -> Vec<String> {
        lock(&self.bad_replies).clone()
    }

    /// The history, in invocation order.
    pub(crate) fn history(&self) -> History {
        let mut ops = lock(&self.ops).clone();
        ops.sort_by_key(|op| (op.invoke, op.process));
        History { ops }
    }
}

/// One request of the workload, as the history records it.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) kind: OpKind,
    pub(crate) key: String,
    pub(crate) value: Option<String>,
    pub(crate) expected: Option<String>,
}

impl Request {
    pub(crate) fn get(key: String) -> Self {
        Self {
            kind: OpKind::Get,
            key,
            value: None,
            expected: None,
        }
    }

    pub(crate) fn put(key: String, value: String) -> Self {
        Self {
            kind: OpKind::Put,
            key,
            value: Some(value),
            expected: None,
        }
    }

    fn operation(&self) -> KvOperation {
        let key = Bytes::from(self.key.clone());
        let value = || Bytes::from(self.value.clone().unwrap_or_default());
        match self.kind {
            OpKind::Put => KvOperation::Put {
                key,
                value: value(),
            },
            OpKind::Get => KvOperation::Get { key }, // Sent as a query; see `execute`.
            OpKind::Delete => KvOperation::Delete { key },
            OpKind::Cas => KvOperation::CompareAndSwap {
                key,
                expected: self.expected.clone().map(Bytes::from),
                new: value(),
            },
        }
    }
}

/// What became of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It executed and answered this.
    Done(OpResult),
    /// It was never sent.
    NotExecuted,
    /// It may or may not have executed.
    Unknown,
}

/// The history's form of a reply to a request of `kind`.
fn op_result(kind: OpKind, reply: &[u8]) -> Result<OpResult, String> {
    let text = |value: Bytes| String::from_utf8(value.to_vec()).map_err(|_| "a value not UTF-8");
    match (kind, KvResult::decode(reply)) {
        (OpKind::Put | OpKind::Delete, Ok(KvResult::Ok)) => Ok(OpResult::Ok),
        (OpKind::Get, Ok(KvResult::Value(value))) => {
            Ok(OpResult::Value(value.map(text).transpose()?))
        }
        (OpKind::Cas, Ok(KvResult::Swapped(swapped))) => Ok(OpResult::Swapped(swapped)),
        (_, reply) => Err(format!("{reply:?}")),
    }
}

/// Sends `request` as `process`, records it, and says what became of it.
pub(crate) async fn execute(
    client: &Client<Network>,
    recorder: &Recorder,
    process: u64,
    request: &Request,
) -> Outcome {
    let invoke = recorder.now_ns();
    // Gets take the read path: no log entry, answered once a quorum confirms the primary.
    let reply = if request.kind == OpKind::Get {
        let query = KvQuery::Get {
            key: Bytes::from(request.key.clone()),
        };
        client
            .query(Bytes::from(query.to_bytes()), REQUEST_DEADLINE)
            .await
    } else {
        let body = Bytes::from(request.operation().to_bytes());
        client.request(body, REQUEST_DEADLINE).await
    };
    let complete = recorder.now_ns();
    let mut op = HistoryOp {
        process,
        kind: request.kind,
        key: request.key.clone(),
        value: request.value.clone(),
        expected: request.expected.clone(),
        result: None,
        invoke,
        complete: None,
    };
    let outcome = match reply {
        Ok(reply) => match op_result(request.kind, &reply) {
            Ok(result) => {
                op.result = Some(result.clone());
                op.complete = Some(complete);
                recorder
                    .last_completion_ns
                    .fetch_max(complete, Ordering::Relaxed);
                Outcome::Done(result)
            }
            Err(reply) => {
                lock(&recorder.bad_replies).push(format!("{request:?} answered {reply}"));
                Outcome::Unknown
            }
        },
        Err(RequestError::NotExecuted { .. }) => return Outcome::NotExecuted,
        Err(_) => Outcome::Unknown,
    };
    lock(&recorder.ops).push(op);
    outcome
}

/// One session's loop until `stop` turns true; draws its choices from `seed`.
pub(crate) async fn session(
    index: usize,
    sessions: usize,
    client: Client<Network>,
    recorder: Arc<Recorder>,
    seed: u64,
    stop: watch::Receiver<bool>,
) {
    let mut prng = Prng::new(seed ^ ((index as u64 + 1) << 48));
    let mut process = index as u64;
    let mut sequence: u64 = 0;
    // The value this session last saw each key hold: what its compare-and-swaps expect.
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    let counts = &recorder.counts;
    while !*stop.borrow() {
        let key = recorder.key(&mut prng);
        sequence += 1;
        let value = format!("{index}.{sequence}");
        let request = match prng.below(100) {
            0..40 => Request::get(key.clone()),
            40..75 => Request::put(key.clone(), value),
            _ => Request {
                kind: OpKind::Cas,
                expected: known.get(&key).cloned().flatten(),
                ..Request::put(key.clone(), value)
            },
        };
        counts.invoked.fetch_add(1, Ordering::Relaxed);
        match execute(&client, &recorder, process, &request).await {
            Outcome::Done(result) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
                match result {
                    OpResult::Value(read) => drop(known.insert(key, read)),
                    OpResult::Ok | OpResult::Swapped(true) => {
                        counts.writes_acknowledged.fetch_add(1, Ordering::Relaxed);
                        known.insert(key, request.value);
                    }
                    OpResult::Swapped(false) => drop(known.remove(&key)),
                }
            }
            Outcome::NotExecuted => {
                counts.not_executed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(NOT_EXECUTED_PAUSE).await;
            }
            Outcome::Unknown => {
                counts.unknown.fetch_add(1, Ordering::Relaxed);
                known.remove(&key);
                process += sessions as u64;
            }
        }
        tokio::time::sleep(Duration::from_millis(prng.below(THINK_MS_MAX + 1))).await;
    }
}

/// Retries a request on `client` until it completes or `give_up` passes; attempt `n` sends
/// `request(n)` (so a retried write can write a new unique value). Each attempt is recorded,
/// as a new process after an unknown outcome.
pub(crate) async fn until_done(
    client: &Client<Network>,
    recorder: &Recorder,
    process: &mut u64,
    mut request: impl FnMut(u64) -> Request,
    give_up: Instant,
) -> Option<OpResult> {
    let mut attempt = 0;
    while Instant::now() < give_up {
        attempt += 1;
        match execute(client, recorder, *process, &request(attempt)).await {
            Outcome::Done(result) => return Some(result),
            Outcome::NotExecuted => tokio::time::sleep(NOT_EXECUTED_PAUSE).await,
            Outcome::Unknown => *process += 1,
        }
    }
    None
}
