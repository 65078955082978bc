//! The clients: a random workload of put, get and compare-and-swap on a small key set, and the
//! history of what each client asked and got. Most gets are queries, answered by the primary
//! without the log; one in four goes through the log as an operation, so both paths meet in one
//! history. Queries come on top of a client's operations through the log.
//!
//! Each client is the real sans-IO [`vsr::Client`]. It issues a bounded number of requests, one
//! at a time, with a random think time between them. Keys are few so that operations conflict;
//! every value written is unique (`c{client}-{n}`) so the linearizability checker can tell
//! writes apart. A request is recorded in the history when submitted and completed when its
//! reply arrives; a request whose session was evicted stays incomplete (its outcome is unknown).
//!
//! One query in four is a scan of every key instead of a get: its page is one state's answer, so
//! it is recorded as one get of each key of the key set, all sent and answered together (a
//! key the page leaves out read as absent), and the linearizability check holds each to it.

use bytes::Bytes;
use vsr::client::ClientTimeouts;
use vsr::{Client, ClientEvent, Codec, Op};
use vsr_kv::{KvOperation, KvQuery, KvResult};

use crate::history::{OpKind, OpResult};
use crate::sim::{EventKind, Node, Simulator};

/// The request a client is waiting on.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    history_index: usize,
    body: Bytes,
    kind: OpKind,
    key: String,
    value: Option<String>,
    /// Whether it is a query (answered without the log), not an operation.
    query: bool,
    /// A scan: the history index of the get recorded for each key of the key set.
    scan: Option<Vec<(usize, String)>>,
    pub(crate) invoke_ns: u64,
}

/// One simulated client.
pub(crate) struct SimClient {
    pub(crate) client: Client,
    pub(crate) id: u128,
    /// Operations through the log left to issue.
    requests_left: u32,
    /// Queries left to issue: they come on top of the operations, so the log (and the storage
    /// under it) sees as many writes as a workload without reads; bounded, so a client ends.
    queries_left: u32,
    values_written: u32,
    pub(crate) pending: Option<Pending>,
    pub(crate) done: bool,
}

impl Simulator {
    pub(crate) fn create_clients(&mut self) {
        for index in 0..self.plan.clients {
            let id =
                (u128::from(self.prng.next_u64()) << 64 | u128::from(self.prng.next_u64())) | 1;
            let mut client = Client::new(
                self.config.cluster,
                self.plan.replicas,
                id,
                self.prng.next_u64(),
            );
            client.set_timeouts(ClientTimeouts {
                retry_ticks_min: 10,
                retry_ticks_max: 100,
            });
            self.client_index.insert(id, index);
            self.clients.push(SimClient {
                client,
                id,
                requests_left: self.plan.requests_per_client,
                queries_left: self.plan.requests_per_client,
                values_written: 0,
                pending: None,
                done: false,
            });
        }
    }

    /// The client finished thinking: submits its next request, or is done.
    pub(crate) fn client_next(&mut self, index: usize) -> Result<(), String> {
        let sim_client = &mut self.clients[index];
        assert!(sim_client.pending.is_none());
        if sim_client.requests_left == 0 {
            sim_client.done = true;
            if self.clients.iter().all(|client| client.done) {
                self.clients_done_at = Some(self.now);
            }
            return Ok(());
        }
        let (operation, kind, key, value, expected) = self.draw_operation(index);
        let query = match &operation {
            KvOperation::Get { key }
                if self.prng.below(4) != 0 && self.clients[index].queries_left > 0 =>
            {
                // Every fourth query scans (decided without a draw: seeds keep their schedules).
                if self.clients[index].queries_left % 4 == 1 {
                    Some(KvQuery::Scan {
                        prefix: Bytes::from_static(b"k"),
                        start: None,
                        limit: vsr_kv::SCAN_LIMIT_MAX,
                        keys_only: false,
                    })
                } else {
                    Some(KvQuery::Get { key: key.clone() })
                }
            }
            _ => None,
        };
        let sim_client = &mut self.clients[index];
        if query.is_some() {
            sim_client.queries_left -= 1;
        } else {
            sim_client.requests_left -= 1;
        }
        let body = Bytes::from(match &query {
            Some(query) => query.to_bytes(),
            None => operation.to_bytes(),
        });
        let scan = matches!(query, Some(KvQuery::Scan { .. })).then(|| {
            (0..self.plan.keys)
                .map(|key| {
                    let key = format!("k{key}");
                    let index = self.history.invoke(
                        index as u64,
                        OpKind::Get,
                        key.clone(),
                        None,
                        None,
                        self.now,
                    );
                    (index, key)
                })
                .collect::<Vec<_>>()
        });
        let history_index = match &scan {
            Some(gets) => gets.first().map_or(usize::MAX, |(index, _)| *index),
            None => self.history.invoke(
                index as u64,
                kind,
                key.clone(),
                value.clone(),
                expected,
                self.now,
            ),
        };
        let sim_client = &mut self.clients[index];
        sim_client.pending = Some(Pending {
            history_index,
            body: body.clone(),
            kind,
            key,
            value,
            query: query.is_some(),
            scan,
            invoke_ns: self.now,
        });
        if query.is_some() {
            sim_client.client.query(body);
        } else {
            sim_client.client.submit(body);
        }
        self.poll_client(index)
    }

    #[allow(clippy::type_complexity)]
    fn draw_operation(
        &mut self,
        index: usize,
    ) -> (KvOperation, OpKind, String, Option<String>, Option<String>) {
        let key = format!("k{}", self.prng.below(self.plan.keys as u64));
        let key_bytes = Bytes::from(key.clone());
        let choice = self.prng.below(10);
        if (4..7).contains(&choice) {
            return (
                KvOperation::Get { key: key_bytes },
                OpKind::Get,
                key,
                None,
                None,
            );
        }
        let client = &mut self.clients[index];
        let value = format!("c{index}-{}", client.values_written);
        client.values_written += 1;
        if choice == 0 && self.prng.below(2) == 0 {
            // One operation in twenty deletes the key, which leaves a tombstone for deltas and
            // checkpoints to carry.
            let operation = KvOperation::Delete { key: key_bytes };
            return (operation, OpKind::Delete, key, None, None);
        }
        if choice < 4 {
            let operation = KvOperation::Put {
                key: key_bytes,
                value: Bytes::from(value.clone()),
            };
            return (operation, OpKind::Put, key, Some(value), None);
        }
        let expected = match self.prng.below(10) {
            0..7 => self.last_values.get(&key).cloned().flatten(),
            7 => None,
            _ => Some(format!(
                "c{}-{}",
                self.prng.below(self.plan.clients as u64),
                self.prng.below(8)
            )),
        };
        let operation = KvOperation::CompareAndSwap {
            key: key_bytes,
            expected: expected.clone().map(Bytes::from),
            new: Bytes::from(value.clone()),
        };
        (operation, OpKind::Cas, key, Some(value), expected)
    }

    /// Carries out what a client asks: sends, completions, evictions.
    pub(crate) fn poll_client(&mut self, index: usize) -> Result<(), String> {
        while let Some(event) = self.clients[index].client.poll() {
            match event {
                ClientEvent::Send { to, envelope } => {
                    self.send(Node::Client(index), Node::Replica(to), envelope);
                }
                ClientEvent::Completed { op, result } => {
                    self.on_completed(index, op, result, false)?;
                }
                ClientEvent::Answered { commit, result } => {
                    self.on_completed(index, commit, result, true)?;
                }
                ClientEvent::Evicted => {
                    let pending = self.clients[index].pending.take();
                    if pending.is_none() {
                        return Err(format!("client {index} evicted with no request pending"));
                    }
                    self.trace.event(41, self.now, index as u64);
                    self.stats.ops_indeterminate += 1;
                    self.think(index);
                }
            }
        }
        Ok(())
    }

    /// A reply to the pending request (`op`: where it executed) or query (`op`: the commit
    /// number of the state that answered).
    fn on_completed(
        &mut self,
        index: usize,
        op: Op,
        result: Bytes,
        answered: bool,
    ) -> Result<(), String> {
        let Some(pending) = self.clients[index].pending.take() else {
            return Err(format!(
                "client {index} completed op {op} with no request pending"
            ));
        };
        if pending.query != answered {
            return Err(format!(
                "client {index}: a {} got the reply of a {}",
                if pending.query { "query" } else { "request" },
                if answered { "query" } else { "request" },
            ));
        }
        self.trace.event(40, self.now, index as u64);
        self.trace.number(u128::from(op.get()));
        self.trace.bytes(&result);
        let decoded = KvResult::decode(&result).map_err(|error| {
            format!("client {index}: reply for op {op} does not decode: {error}")
        })?;
        if let Some(gets) = &pending.scan {
            return self.on_scanned(index, gets, decoded);
        }
        let result_history = match decoded {
            KvResult::Ok => OpResult::Ok,
            KvResult::Value(value) => {
                OpResult::Value(value.map(|value| String::from_utf8_lossy(&value).into_owned()))
            }
            KvResult::Swapped(swapped) => OpResult::Swapped(swapped),
            KvResult::Page { .. } => {
                return Err(format!(
                    "client {index}: a {:?} got a scan's page at op {op}",
                    pending.kind
                ));
            }
        };
        if !result_history.fits(pending.kind) {
            return Err(format!(
                "client {index}: a {:?} got result {result_history:?} at op {op}",
                pending.kind
            ));
        }
        match &result_history {
            OpResult::Ok | OpResult::Swapped(true) => {
                self.last_values
                    .insert(pending.key.clone(), pending.value.clone());
            }
            OpResult::Value(value) => {
                self.last_values.insert(pending.key.clone(), value.clone());
            }
            OpResult::Swapped(false) => {}
        }
        self.history
            .complete(pending.history_index, result_history, self.now);
        self.stats.ops_completed += 1;
        if !pending.query {
            // A query has no log entry to compare with: the linearizability check covers it.
            let id = self.clients[index].id;
            self.checker.on_reply(id, op, pending.body, result)?;
        }
        self.think(index);
        Ok(())
    }

    /// A scan's page: each key of the key set read at the page's state, as a get.
    fn on_scanned(
        &mut self,
        index: usize,
        gets: &[(usize, String)],
        result: KvResult,
    ) -> Result<(), String> {
        let KvResult::Page { entries, next } = result else {
            return Err(format!("client {index}: a scan got {result:?}"));
        };
        if next.is_some() {
            return Err(format!(
                "client {index}: a scan of {} keys got a page cut at {next:?}",
                gets.len()
            ));
        }
        if !entries.is_sorted_by(|(a, _), (b, _)| a < b) {
            return Err(format!("client {index}: a scan's keys are out of order"));
        }
        let mut listed = std::collections::BTreeMap::new();
        for (key, value) in entries {
            let key = String::from_utf8_lossy(&key).into_owned();
            if !gets.iter().any(|(_, name)| *name == key) {
                return Err(format!(
                    "client {index}: a scan listed {key:?}, never written"
                ));
            }
            let Some(value) = value else {
                return Err(format!(
                    "client {index}: a scan listed {key:?} without its value"
                ));
            };
            listed.insert(key, String::from_utf8_lossy(&value).into_owned());
        }
        for (history_index, key) in gets {
            let value = listed.get(key).cloned();
            self.last_values.insert(key.clone(), value.clone());
            self.history
                .complete(*history_index, OpResult::Value(value), self.now);
        }
        self.stats.ops_completed += 1;
        self.think(index);
        Ok(())
    }

    fn think(&mut self, index: usize) {
        let think = self.prng.range(0, self.plan.think_ns_max);
        self.schedule(self.now + think, EventKind::ClientWake { client: index });
    }
}
