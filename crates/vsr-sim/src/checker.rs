//! The safety checker: agreement on committed ops, commit monotonicity, execution equal to the
//! committed log, at-most-once execution and replies equal to what the log says.
//!
//! The simulator calls [`SafetyChecker::observe`] for a replica after every event that replica
//! handled, so a violation is caught at the step that made it. When a replica's commit number
//! advances, the checker reads the newly executed entries from the replica's log window and
//! records them in a global map op → entry: the first replica to execute an op fixes it, and
//! any replica executing a different entry at that op is a divergence. The contiguous prefix of
//! that map is replayed through a reference model (a fresh key-value store plus a reference
//! client table with the protocol's at-most-once rules), which gives, for every op, the state
//! digest each replica must have after executing it and the result a client must get for it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use vsr::{Codec, Entry, EntryChecksum, Op, Operation, StateMachine};
use vsr_kv::{KvOperation, KvStore};

/// A session in the reference client table.
#[derive(Clone, Debug)]
struct Session {
    session: u64,
    request: u64,
    reply_op: Op,
}

/// What the reference model executed at one op.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Executed {
    client: u128,
    body: Bytes,
    result: Bytes,
}

/// The committed log replayed through a reference store and client table.
#[derive(Debug)]
struct Reference {
    clients_max: usize,
    store: KvStore,
    sessions: BTreeMap<u128, Session>,
    /// `digests[op]`: the store's digest after executing every op up to `op`.
    digests: Vec<u128>,
    /// State machine entries that executed, by op.
    executed: BTreeMap<Op, Executed>,
    /// (client, request) pairs executed, to prove at-most-once execution.
    requests: BTreeSet<(u128, u64)>,
}

impl Reference {
    fn new(clients_max: usize) -> Self {
        Self {
            clients_max,
            store: KvStore::new(),
            sessions: BTreeMap::new(),
            digests: vec![KvStore::new().digest()],
            executed: BTreeMap::new(),
            requests: BTreeSet::new(),
        }
    }

    /// The last op replayed.
    fn op(&self) -> Op {
        Op(self.digests.len() as u64 - 1)
    }

    fn apply(&mut self, entry: &Entry) -> Result<(), String> {
        assert_eq!(entry.op, self.op() + 1);
        match entry.operation {
            Operation::Noop => {}
            Operation::Register => self.register(entry),
            Operation::StateMachine => self.execute(entry)?,
        }
        self.digests.push(self.store.digest());
        Ok(())
    }

    fn register(&mut self, entry: &Entry) {
        // A duplicate register of a live session (its request number already reached) leaves
        // the session as it is.
        if self
            .sessions
            .get(&entry.client)
            .is_some_and(|session| entry.request <= session.request)
        {
            return;
        }
        if !self.sessions.contains_key(&entry.client) && self.sessions.len() >= self.clients_max {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.reply_op)
                .map(|(client, _)| *client)
                .expect("a full table is not empty");
            self.sessions.remove(&oldest);
        }
        let session = Session {
            session: entry.op.get(),
            request: entry.request,
            reply_op: entry.op,
        };
        self.sessions.insert(entry.client, session);
    }

    fn execute(&mut self, entry: &Entry) -> Result<(), String> {
        let Some(session) = self.sessions.get_mut(&entry.client) else {
            return Ok(());
        };
        if session.session != entry.session || entry.request <= session.request {
            return Ok(()); // Evicted session or a duplicate: not executed.
        }
        if !self.requests.insert((entry.client, entry.request)) {
            return Err(format!(
                "request {} of client {:x} executed twice (again at op {})",
                entry.request, entry.client, entry.op
            ));
        }
        session.request = entry.request;
        session.reply_op = entry.op;
        let result = match KvOperation::decode(&entry.body) {
            Ok(operation) => self.store.apply(entry.op, operation).to_bytes(),
            Err(_) => Vec::new(),
        };
        let executed = Executed {
            client: entry.client,
            body: entry.body.clone(),
            result: Bytes::from(result),
        };
        self.executed.insert(entry.op, executed);
        Ok(())
    }
}

/// What the checker knows of one replica incarnation.
#[derive(Clone, Copy, Debug, Default)]
struct Watch {
    commit: Op,
}

/// A reply a client received, waiting for the reference model to reach its op.
#[derive(Clone, Debug)]
struct Reply {
    client: u128,
    op: Op,
    body: Bytes,
    result: Bytes,
}

/// The cluster-wide safety checker of one run; see the module docs.
#[derive(Debug)]
pub struct SafetyChecker {
    /// op → (first replica that executed it, the entry).
    committed: BTreeMap<Op, (u8, Entry)>,
    reference: Reference,
    watches: Vec<Watch>,
    replies: Vec<Reply>,
}

impl SafetyChecker {
    /// A checker for `replica_count` replicas whose client tables hold `clients_max` sessions.
    #[must_use]
    pub fn new(replica_count: u8, clients_max: usize) -> Self {
        Self {
            committed: BTreeMap::new(),
            reference: Reference::new(clients_max),
            watches: vec![Watch::default(); usize::from(replica_count)],
            replies: Vec::new(),
        }
    }

    /// A replica (re)started: a new incarnation whose commit number starts afresh.
    pub fn on_start(&mut self, replica: u8) {
        self.watches[usize::from(replica)] = Watch::default();
    }

    /// The highest op known committed.
    #[must_use]
    pub fn commit_max(&self) -> Op {
        self.committed.last_key_value().map_or(Op(0), |(op, _)| *op)
    }

    /// The checksum of the entry committed at `op`, if a replica was seen executing it.
    #[must_use]
    pub fn committed_checksum(&self, op: Op) -> Option<EntryChecksum> {
        self.committed.get(&op).map(|(_, entry)| entry.checksum)
    }

    /// The op up to which the reference model replayed the committed log.
    #[must_use]
    pub fn reference_op(&self) -> Op {
        self.reference.op()
    }

    /// The digest every replica must have once it executed every op up to `op`, if the
    /// reference got that far.
    #[must_use]
    pub fn digest_at(&self, op: Op) -> Option<u128> {
        self.reference
            .digests
            .get(usize::try_from(op.get()).ok()?)
            .copied()
    }

    /// Checks a replica after an event it handled: `commit` is its commit number, `entry` reads
    /// its log window, `digest` is its state machine's digest.
    ///
    /// # Errors
    /// A description of the violation.
    pub fn observe<'a>(
        &mut self,
        replica: u8,
        commit: Op,
        entry: impl Fn(Op) -> Option<&'a Entry>,
        digest: impl FnOnce() -> u128,
    ) -> Result<(), String> {
        let watch = &mut self.watches[usize::from(replica)];
        if commit < watch.commit {
            return Err(format!(
                "replica {replica}: commit number went back from {} to {commit}",
                watch.commit
            ));
        }
        if commit == watch.commit {
            return Ok(());
        }
        let previous = watch.commit;
        watch.commit = commit;
        // The newly executed entries the window still holds (it is contiguous up to the head).
        let mut executed = Vec::new();
        for op in previous.next().through(commit).rev() {
            match entry(op) {
                Some(entry) => executed.push(entry.clone()),
                None => break,
            }
        }
        for entry in executed.iter().rev() {
            if entry.op != Op(0) && entry.op > previous {
                self.record_committed(replica, entry)?;
            }
        }
        let digest = digest();
        match self.digest_at(commit) {
            Some(expected) if expected != digest => Err(format!(
                "replica {replica}: state after executing op {commit} differs from the \
                 committed log's (digest {digest:032x}, expected {expected:032x})"
            )),
            _ => Ok(()),
        }
    }

    /// Records that `replica` executed `entry`; the first replica to execute an op fixes it.
    ///
    /// # Errors
    /// When another entry was executed at that op (divergence), the entry is corrupt, or the
    /// replay of the committed log finds a request executed twice.
    pub fn record_committed(&mut self, replica: u8, entry: &Entry) -> Result<(), String> {
        if !entry.is_valid() {
            return Err(format!(
                "replica {replica}: executed a corrupt entry at op {}",
                entry.op
            ));
        }
        if let Some((first, known)) = self.committed.get(&entry.op) {
            if known.checksum != entry.checksum {
                return Err(format!(
                    "divergence at op {}: replica {first} executed entry {} (view {}), \
                     replica {replica} executed entry {} (view {})",
                    entry.op, known.checksum, known.view, entry.checksum, entry.view
                ));
            }
            return Ok(());
        }
        self.committed.insert(entry.op, (replica, entry.clone()));
        while let Some((_, next)) = self.committed.get(&self.reference.op().next()) {
            let next = next.clone();
            if next.op > Op(1) {
                let (_, parent) = &self.committed[&(next.op - 1)];
                if next.parent != parent.checksum {
                    return Err(format!(
                        "committed log breaks its hash chain at op {}",
                        next.op
                    ));
                }
            }
            self.reference.apply(&next)?;
        }
        self.check_replies(false)
    }

    /// A client with identity `client` sent `body` and got `result`, executed at `op`.
    ///
    /// # Errors
    /// When the committed log says otherwise.
    pub fn on_reply(
        &mut self,
        client: u128,
        op: Op,
        body: Bytes,
        result: Bytes,
    ) -> Result<(), String> {
        self.replies.push(Reply {
            client,
            op,
            body,
            result,
        });
        self.check_replies(false)
    }

    /// Checks the replies the reference model can answer; with `last`, every reply must be
    /// answerable.
    ///
    /// # Errors
    /// A reply that differs from the committed log's, or (with `last`) one the checker never
    /// saw the op of.
    pub fn check_replies(&mut self, last: bool) -> Result<(), String> {
        let reference_op = self.reference.op();
        let mut waiting = Vec::new();
        for reply in std::mem::take(&mut self.replies) {
            if reply.op > reference_op {
                if last {
                    return Err(format!(
                        "a reply for op {} that no replica was seen executing (checked up to {})",
                        reply.op, reference_op
                    ));
                }
                waiting.push(reply);
                continue;
            }
            let expected = self.reference.executed.get(&reply.op);
            let matches = expected.is_some_and(|executed| {
                executed.client == reply.client
                    && executed.body == reply.body
                    && executed.result == reply.result
            });
            if !matches {
                return Err(format!(
                    "client {:x} got result {:?} for op {}, but the committed log executed {:?} \
                     there",
                    reply.client, reply.result, reply.op, expected
                ));
            }
        }
        self.replies = waiting;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsr::View;

    fn entry(op: u64, parent: EntryChecksum, request: u64, body: &[u8]) -> Entry {
        let body = Bytes::copy_from_slice(body);
        Entry {
            op: Op(op),
            view: View(0),
            parent,
            client: 7,
            session: 1,
            request,
            operation: Operation::StateMachine,
            body,
            checksum: EntryChecksum(0),
        }
        .sealed()
    }

    #[test]
    fn divergent_commit_is_caught() {
        let mut checker = SafetyChecker::new(3, 4);
        let register = crate::invariants::register_of_client_7();
        checker.record_committed(0, &register).unwrap();
        let put = KvOperation::Put {
            key: Bytes::from("k"),
            value: Bytes::from("a"),
        }
        .to_bytes();
        let other = KvOperation::Put {
            key: Bytes::from("k"),
            value: Bytes::from("b"),
        }
        .to_bytes();
        checker
            .record_committed(0, &entry(2, register.checksum, 2, &put))
            .unwrap();
        checker
            .record_committed(1, &entry(2, register.checksum, 2, &put))
            .unwrap();
        let error = checker
            .record_committed(2, &entry(2, register.checksum, 2, &other))
            .unwrap_err();
        assert!(error.contains("divergence at op 2"), "{error}");
    }

    #[test]
    fn commit_going_back_is_caught() {
        let mut checker = SafetyChecker::new(1, 4);
        let register = crate::invariants::register_of_client_7();
        let digest = KvStore::new().digest();
        checker
            .observe(0, Op(1), |op| (op == Op(1)).then_some(&register), || digest)
            .unwrap();
        let error = checker.observe(0, Op(0), |_| None, || digest).unwrap_err();
        assert!(error.contains("went back"), "{error}");
    }

    #[test]
    fn wrong_reply_and_wrong_state_are_caught() {
        let mut checker = SafetyChecker::new(3, 4);
        let register = crate::invariants::register_of_client_7();
        let put = KvOperation::Put {
            key: Bytes::from("k"),
            value: Bytes::from("a"),
        }
        .to_bytes();
        let put_entry = entry(2, register.checksum, 2, &put);
        checker.record_committed(0, &register).unwrap();
        checker.record_committed(0, &put_entry).unwrap();
        let ok = vsr_kv::KvResult::Ok.to_bytes();
        let swapped = vsr_kv::KvResult::Swapped(true).to_bytes();
        checker
            .on_reply(7, Op(2), Bytes::from(put.clone()), Bytes::from(ok))
            .unwrap();
        let error = checker
            .on_reply(7, Op(2), Bytes::from(put), Bytes::from(swapped))
            .unwrap_err();
        assert!(error.contains("committed log executed"), "{error}");
        // A replica whose state after op 2 is still empty did not execute the put.
        let empty = KvStore::new().digest();
        let entries = [register.clone(), put_entry.clone()];
        let error = checker
            .observe(1, Op(2), |op| entries.get(op.get() as usize - 1), || empty)
            .unwrap_err();
        assert!(error.contains("differs from the committed log"), "{error}");
    }

    #[test]
    fn duplicate_request_is_not_executed_twice() {
        let mut checker = SafetyChecker::new(3, 4);
        let register = crate::invariants::register_of_client_7();
        let put = KvOperation::Put {
            key: Bytes::from("k"),
            value: Bytes::from("a"),
        }
        .to_bytes();
        let first = entry(2, register.checksum, 2, &put);
        let again = entry(3, first.checksum, 2, &put);
        for entry in [&register, &first, &again] {
            checker.record_committed(0, entry).unwrap();
        }
        // The duplicate at op 3 changed nothing: the digest after op 3 equals that after op 2.
        assert_eq!(checker.digest_at(Op(2)), checker.digest_at(Op(3)));
        assert_ne!(checker.digest_at(Op(1)), checker.digest_at(Op(2)));
    }
}
