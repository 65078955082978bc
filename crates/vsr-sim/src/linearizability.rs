//! Linearizability checker for client histories of the key-value store.
//!
//! A [`History`] goes in, a [`CheckResult`] comes out. The model is one register per key,
//! initially absent: put sets it, get reads it, cas sets it only when it holds the expected
//! value. Keys are independent, so the history is split by key and each key is checked alone
//! (linearizability is compositional): small searches instead of one huge one.
//!
//! Each key's search is Wing & Gong's, as Porcupine runs it: the operations' call and return
//! events sorted by time in a doubly linked list; the search repeatedly linearizes the earliest
//! call it can (lifting the call and its return out of the list), and backtracks when it meets
//! a return whose operation is not linearized yet. Lowe's memoization skips any (set of
//! linearized ops, register value) pair already explored. The search keeps its own stack, so
//! long histories cannot overflow the thread's.
//!
//! An operation that never completed may have taken effect at any time after its invocation,
//! or never. An incomplete get constrains nothing and is dropped. An incomplete put or cas gets
//! a call event and no return event: the search may linearize it anywhere after its call, and
//! once every completed operation is placed the rest are "never happened" (equivalently, placed
//! after everything, where no one observes them). An incomplete cas's result is unknown, so it
//! swaps exactly when the register holds the expected value.
//!
//! Every loop turn of the search is one step; a caller-given budget bounds the steps summed
//! over all keys and, when it runs out, the answer is [`CheckResult::Unknown`].

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::{History, HistoryOp, OpKind, OpResult};

/// A search budget big enough for any history the simulator's clients produce in one seed.
pub const BUDGET_STEPS_DEFAULT: u64 = 50_000_000;

/// The checker's verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Some order of the operations respects real time and the register model, on every key.
    Linearizable,
    /// No such order exists for the operations on `key`.
    NotLinearizable {
        /// The first key (in key order) whose operations cannot be linearized.
        key: String,
        /// What the deepest attempt managed and which operation it could not place.
        reason: String,
    },
    /// The step budget ran out while checking `key`; callers treat this as a failure.
    Unknown {
        /// The key being checked when the budget ran out.
        key: String,
    },
}

/// Checks every operation of `history`; see [`check_ops`].
#[must_use]
pub fn check(history: &History, budget: u64) -> CheckResult {
    check_ops(&history.ops, budget)
}

/// Checks `ops` against the key-value register model, key by key in key order, spending at
/// most `budget` search steps in total.
///
/// A malformed operation (a result that is no answer to its kind, a result without a
/// completion time or the reverse, a completion before the invocation) makes its key
/// [`CheckResult::NotLinearizable`]: a checker must not pass what it cannot read.
#[must_use]
pub fn check_ops(ops: &[HistoryOp], budget: u64) -> CheckResult {
    let mut ops_by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        ops_by_key.entry(op.key.as_str()).or_default().push(index);
    }
    let mut budget_left = budget;
    for (key, indices) in ops_by_key {
        let outcome = match KeyOps::build(ops, &indices) {
            Ok(key_ops) => key_ops.search(&mut budget_left),
            Err(reason) => Outcome::NotLinearizable(reason),
        };
        match outcome {
            Outcome::Linearizable => {}
            Outcome::NotLinearizable(reason) => {
                return CheckResult::NotLinearizable {
                    key: key.to_owned(),
                    reason,
                };
            }
            Outcome::OutOfBudget => {
                return CheckResult::Unknown {
                    key: key.to_owned(),
                };
            }
        }
    }
    CheckResult::Linearizable
}

/// The verdict for one key.
enum Outcome {
    Linearizable,
    NotLinearizable(String),
    OutOfBudget,
}

/// A register value interned to a small integer; [`ABSENT`] is the absent key.
type ValueId = u32;

/// The register value of a key that holds nothing.
const ABSENT: ValueId = 0;

/// One operation as the model sees it, its values interned.
#[derive(Clone, Copy, Debug)]
enum ModelOp {
    /// A put, completed or not: always takes effect.
    Put { value: ValueId },
    /// A completed get that read `read`.
    Get { read: ValueId },
    /// A cas; `swapped` is `None` when it never completed.
    Cas {
        expected: ValueId,
        new: ValueId,
        swapped: Option<bool>,
    },
}

impl ModelOp {
    /// The register value after this op runs on `state`, or `None` if its result cannot be
    /// what it returned from `state`.
    fn step(self, state: ValueId) -> Option<ValueId> {
        match self {
            ModelOp::Put { value } => Some(value),
            ModelOp::Get { read } => (read == state).then_some(state),
            ModelOp::Cas {
                expected,
                new,
                swapped,
            } => {
                let swaps = state == expected;
                match swapped {
                    Some(reported) if reported != swaps => None,
                    _ => Some(if swaps { new } else { state }),
                }
            }
        }
    }
}

/// Interns the values of one key: 0 is absent, 1.. the distinct strings in first-seen order.
#[derive(Default)]
struct Values<'a> {
    ids: BTreeMap<&'a str, ValueId>,
}

impl<'a> Values<'a> {
    fn id(&mut self, value: Option<&'a str>) -> ValueId {
        let Some(value) = value else { return ABSENT };
        let next = ValueId::try_from(self.ids.len() + 1).expect("fewer than 2^32 values");
        *self.ids.entry(value).or_insert(next)
    }

    fn name(&self, id: ValueId) -> String {
        if id == ABSENT {
            return "absent".to_owned();
        }
        let (name, _) = self
            .ids
            .iter()
            .find(|&(_, &v)| v == id)
            .expect("interned value");
        format!("{name:?}")
    }
}

/// The operations on one key, ready for the search.
struct KeyOps<'a> {
    history: &'a [HistoryOp],
    /// For each model op, its index in `history`.
    history_index: Vec<usize>,
    model: Vec<ModelOp>,
    values: Values<'a>,
    /// Call and return events, sorted; a call's op is linearizable from its event on.
    events: Vec<Event>,
}

/// A call or return event of op `op` at `time_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    time_ns: u64,
    /// Calls sort before returns at equal times, so touching intervals count as concurrent:
    /// the checker errs towards accepting.
    is_return: bool,
    op: usize,
}

impl<'a> KeyOps<'a> {
    /// Validates and interns the ops at `indices` of `history`, all on one key.
    fn build(history: &'a [HistoryOp], indices: &[usize]) -> Result<KeyOps<'a>, String> {
        let mut key_ops = KeyOps {
            history,
            history_index: Vec::new(),
            model: Vec::new(),
            values: Values::default(),
            events: Vec::new(),
        };
        for &index in indices {
            let op = &history[index];
            validate(op)
                .map_err(|why| format!("op {index} ({}) is malformed: {why}", describe(op)))?;
            let Some(model_op) = key_ops.model_op(op) else {
                continue;
            };
            let local = key_ops.model.len();
            key_ops.model.push(model_op);
            key_ops.history_index.push(index);
            key_ops.events.push(Event {
                time_ns: op.invoke,
                is_return: false,
                op: local,
            });
            if let Some(complete) = op.complete {
                key_ops.events.push(Event {
                    time_ns: complete,
                    is_return: true,
                    op: local,
                });
            }
        }
        key_ops.events.sort_unstable();
        Ok(key_ops)
    }

    /// The model's view of a valid `op`, or `None` for an incomplete get (it constrains nothing).
    fn model_op(&mut self, op: &'a HistoryOp) -> Option<ModelOp> {
        let value = self.values.id(op.value.as_deref());
        match (op.kind, &op.result) {
            (OpKind::Put, _) => Some(ModelOp::Put { value }),
            (OpKind::Get, None) => None,
            (OpKind::Get, Some(OpResult::Value(read))) => Some(ModelOp::Get {
                read: self.values.id(read.as_deref()),
            }),
            (OpKind::Cas, result) => Some(ModelOp::Cas {
                expected: self.values.id(op.expected.as_deref()),
                new: value,
                swapped: match result {
                    Some(OpResult::Swapped(swapped)) => Some(*swapped),
                    _ => None,
                },
            }),
            (OpKind::Get, Some(_)) => unreachable!("validated"),
        }
    }

    fn search(&self, budget_left: &mut u64) -> Outcome {
        let mut search = Search::new(self);
        match search.run(budget_left) {
            Ok(()) => Outcome::Linearizable,
            Err(SearchError::OutOfBudget) => Outcome::OutOfBudget,
            Err(SearchError::Stuck) => Outcome::NotLinearizable(self.reason(&search)),
        }
    }

    /// Explains a failed search by its deepest partial linearization.
    fn reason(&self, search: &Search<'_>) -> String {
        let deepest = search.deepest.expect("a stuck search met a return");
        let op = &self.history[self.history_index[deepest.op]];
        format!(
            "at most {} of the key's {} ops linearize; then op {} ({}) cannot be placed: \
             the register holds {}",
            deepest.linearized,
            self.model.len(),
            self.history_index[deepest.op],
            describe(op),
            self.values.name(deepest.state),
        )
    }
}

/// Checks that `op` is a well-formed record.
fn validate(op: &HistoryOp) -> Result<(), String> {
    match (&op.result, op.complete) {
        (None, None) => Ok(()),
        (Some(_), None) => Err("a result without a completion time".to_owned()),
        (None, Some(_)) => Err("a completion time without a result".to_owned()),
        (Some(_), Some(complete)) if complete < op.invoke => {
            Err("completes before it was invoked".to_owned())
        }
        (Some(result), Some(_)) if !result.fits(op.kind) => {
            Err("its result is no answer to its kind".to_owned())
        }
        (Some(_), Some(_)) => Ok(()),
    }
}

/// A one-line human description of `op`.
fn describe(op: &HistoryOp) -> String {
    let request = match op.kind {
        OpKind::Put => format!("put {:?}", op.value),
        OpKind::Get => "get".to_owned(),
        OpKind::Cas => format!("cas {:?} -> {:?}", op.expected, op.value),
    };
    let reply = match (&op.result, op.complete) {
        (Some(result), Some(complete)) => {
            format!(
                "returned {} in [{}, {complete}] ns",
                result.to_json(),
                op.invoke
            )
        }
        _ => format!("invoked at {} ns, never completed", op.invoke),
    };
    format!("process {} {request} on {:?}, {reply}", op.process, op.key)
}

/// Why a search stopped without a linearization.
enum SearchError {
    /// Every order was tried (up to memoization).
    Stuck,
    /// The step budget ran out.
    OutOfBudget,
}

/// The deepest point a search reached before meeting an op it could not place.
#[derive(Clone, Copy)]
struct Deepest {
    linearized: usize,
    /// The op (index into the key's model ops) whose return came before it could be placed.
    op: usize,
    state: ValueId,
}

/// A fast hasher for the memoization keys, which are short runs of `u64` words: the default
/// `SipHash` guards against adversarial keys, which a checker's own bitsets are not.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        for &byte in chunks.remainder() {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        // splitmix64's finalizer, so every input bit reaches the low bits buckets are chosen by.
        let mut hash = self.0;
        hash = (hash ^ (hash >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        hash = (hash ^ (hash >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        hash ^ (hash >> 31)
    }
}

/// Marks the end of a list link.
const NONE: usize = usize::MAX;
/// The list's sentinel head node; event `i` is node `i + 1`.
const HEAD: usize = 0;

/// The state of Wing & Gong's search over one key's events.
struct Search<'a> {
    key_ops: &'a KeyOps<'a>,
    /// Per node: the next and previous node still in the list (dancing links).
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per op: its call node and its return node (`NONE` if it never completed).
    call_node: Vec<usize>,
    return_node: Vec<usize>,
    /// The set of linearized ops as bits, with the register value as the last word: the
    /// memoization key, kept ready to look up.
    linearized: Vec<u64>,
    cache: HashSet<Box<[u64]>, BuildHasherDefault<WordHasher>>,
    /// The linearized calls in order, each with the register value before it.
    calls: Vec<(usize, ValueId)>,
    state: ValueId,
    /// Completed ops not linearized yet; the search succeeds when none are left.
    completed_left: usize,
    deepest: Option<Deepest>,
}

impl<'a> Search<'a> {
    fn new(key_ops: &'a KeyOps<'a>) -> Search<'a> {
        let nodes = key_ops.events.len() + 1;
        let ops = key_ops.model.len();
        let mut search = Search {
            key_ops,
            next: (1..=nodes)
                .map(|n| if n == nodes { NONE } else { n })
                .collect(),
            prev: (0..nodes).map(|n| n.wrapping_sub(1)).collect(),
            call_node: vec![NONE; ops],
            return_node: vec![NONE; ops],
            linearized: vec![0; ops.div_ceil(64) + 1],
            cache: HashSet::default(),
            calls: Vec::new(),
            state: ABSENT,
            completed_left: 0,
            deepest: None,
        };
        for (index, event) in key_ops.events.iter().enumerate() {
            if event.is_return {
                search.return_node[event.op] = index + 1;
                search.completed_left += 1;
            } else {
                search.call_node[event.op] = index + 1;
            }
        }
        search
    }

    fn event(&self, node: usize) -> Event {
        self.key_ops.events[node - 1]
    }

    /// Runs until every completed op is linearized, every order failed, or the budget ran out.
    fn run(&mut self, budget_left: &mut u64) -> Result<(), SearchError> {
        let mut node = self.next[HEAD];
        while self.completed_left > 0 {
            if *budget_left == 0 {
                return Err(SearchError::OutOfBudget);
            }
            *budget_left -= 1;
            assert!(
                node != NONE,
                "an unlinearized completed op's return is always ahead"
            );
            let event = self.event(node);
            if !event.is_return {
                node = if self.try_linearize(event.op) {
                    self.next[HEAD]
                } else {
                    self.next[node]
                };
                continue;
            }
            self.note_stuck(event.op);
            let (op, state_before) = self.calls.pop().ok_or(SearchError::Stuck)?;
            self.undo(op, state_before);
            node = self.next[self.call_node[op]];
        }
        Ok(())
    }

    /// Linearizes `op` next if the model allows it and the resulting (set, value) pair is new.
    fn try_linearize(&mut self, op: usize) -> bool {
        let Some(state_after) = self.key_ops.model[op].step(self.state) else {
            return false;
        };
        let last = self.linearized.len() - 1;
        self.linearized[op / 64] |= 1 << (op % 64);
        self.linearized[last] = u64::from(state_after);
        if self.cache.contains(self.linearized.as_slice()) {
            self.linearized[op / 64] &= !(1 << (op % 64));
            self.linearized[last] = u64::from(self.state);
            return false;
        }
        self.cache
            .insert(self.linearized.clone().into_boxed_slice());
        self.calls.push((op, self.state));
        self.state = state_after;
        if self.return_node[op] != NONE {
            self.completed_left -= 1;
        }
        self.unlink(self.call_node[op]);
        self.unlink(self.return_node[op]);
        true
    }

    /// Takes back the last linearized op, `op`, restoring the register to `state_before`.
    fn undo(&mut self, op: usize, state_before: ValueId) {
        self.relink(self.return_node[op]);
        self.relink(self.call_node[op]);
        if self.return_node[op] != NONE {
            self.completed_left += 1;
        }
        self.linearized[op / 64] &= !(1 << (op % 64));
        let last = self.linearized.len() - 1;
        self.linearized[last] = u64::from(state_before);
        self.state = state_before;
    }

    /// Records the search meeting the return of `op` before placing it, if deepest so far.
    fn note_stuck(&mut self, op: usize) {
        let linearized = self.calls.len();
        if self
            .deepest
            .is_none_or(|deepest| linearized > deepest.linearized)
        {
            self.deepest = Some(Deepest {
                linearized,
                op,
                state: self.state,
            });
        }
    }

    fn unlink(&mut self, node: usize) {
        if node == NONE {
            return;
        }
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NONE {
            self.prev[next] = prev;
        }
    }

    /// Puts back `node`, whose own links still point at its old neighbours; nodes must be
    /// relinked in the reverse order they were unlinked.
    fn relink(&mut self, node: usize) {
        if node == NONE {
            return;
        }
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NONE {
            self.prev[next] = node;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = BUDGET_STEPS_DEFAULT;

    fn op(
        kind: OpKind,
        value: Option<&str>,
        expected: Option<&str>,
        result: Option<OpResult>,
        invoke: u64,
        complete: Option<u64>,
    ) -> HistoryOp {
        HistoryOp {
            process: invoke % 7,
            kind,
            key: "x".to_owned(),
            value: value.map(str::to_owned),
            expected: expected.map(str::to_owned),
            result,
            invoke,
            complete,
        }
    }

    fn put(value: &str, invoke: u64, complete: u64) -> HistoryOp {
        op(
            OpKind::Put,
            Some(value),
            None,
            Some(OpResult::Ok),
            invoke,
            Some(complete),
        )
    }

    fn put_pending(value: &str, invoke: u64) -> HistoryOp {
        op(OpKind::Put, Some(value), None, None, invoke, None)
    }

    fn get(read: Option<&str>, invoke: u64, complete: u64) -> HistoryOp {
        let result = Some(OpResult::Value(read.map(str::to_owned)));
        op(OpKind::Get, None, None, result, invoke, Some(complete))
    }

    fn cas(
        expected: Option<&str>,
        new: &str,
        swapped: bool,
        invoke: u64,
        complete: u64,
    ) -> HistoryOp {
        let result = Some(OpResult::Swapped(swapped));
        op(
            OpKind::Cas,
            Some(new),
            expected,
            result,
            invoke,
            Some(complete),
        )
    }

    fn cas_pending(expected: Option<&str>, new: &str, invoke: u64) -> HistoryOp {
        op(OpKind::Cas, Some(new), expected, None, invoke, None)
    }

    fn on_key(mut op: HistoryOp, key: &str) -> HistoryOp {
        op.key = key.to_owned();
        op
    }

    fn assert_linearizable(ops: &[HistoryOp]) {
        assert_eq!(
            check_ops(ops, BUDGET),
            CheckResult::Linearizable,
            "{ops:#?}"
        );
    }

    fn assert_not_linearizable(ops: &[HistoryOp]) {
        let result = check_ops(ops, BUDGET);
        assert!(
            matches!(result, CheckResult::NotLinearizable { .. }),
            "{result:?}\n{ops:#?}"
        );
    }

    #[test]
    fn empty_and_sequential_histories_linearize() {
        assert_linearizable(&[]);
        assert_linearizable(&[
            get(None, 0, 10),
            put("a", 20, 30),
            get(Some("a"), 40, 50),
            cas(Some("a"), "b", true, 60, 70),
            cas(Some("a"), "c", false, 80, 90),
            cas(None, "c", false, 100, 110),
            get(Some("b"), 120, 130),
        ]);
        assert_linearizable(&[cas(None, "a", true, 0, 10), get(Some("a"), 20, 30)]);
    }

    #[test]
    fn concurrent_overlapping_histories_linearize() {
        // A slow put overlaps reads that see before and after it.
        assert_linearizable(&[
            put("a", 0, 100),
            get(None, 10, 20),
            get(Some("a"), 30, 40),
            get(Some("a"), 50, 60),
        ]);
        // Two concurrent puts may land in either order; the reads fix which.
        assert_linearizable(&[put("a", 0, 50), put("b", 10, 60), get(Some("a"), 70, 80)]);
        assert_linearizable(&[put("a", 0, 50), put("b", 10, 60), get(Some("b"), 70, 80)]);
        // Two concurrent cas from the same state: exactly one wins.
        assert_linearizable(&[
            put("a", 0, 10),
            cas(Some("a"), "b", true, 20, 40),
            cas(Some("a"), "c", false, 25, 45),
            get(Some("b"), 50, 60),
        ]);
        // Intervals that only touch count as concurrent.
        assert_linearizable(&[put("a", 0, 10), get(None, 10, 20)]);
    }

    #[test]
    fn incomplete_ops_that_must_have_happened() {
        // A put that never completed is observed.
        assert_linearizable(&[put_pending("a", 0), get(Some("a"), 50, 60)]);
        // Observed late, after a read that missed it.
        assert_linearizable(&[
            put("a", 0, 10),
            put_pending("b", 20),
            get(Some("a"), 30, 40),
            get(Some("b"), 50, 60),
            get(Some("b"), 70, 80),
        ]);
        // An incomplete cas took effect, then a later put overwrote it.
        assert_linearizable(&[
            cas_pending(None, "a", 0),
            get(Some("a"), 10, 20),
            put("b", 30, 40),
            get(Some("b"), 50, 60),
        ]);
    }

    #[test]
    fn incomplete_ops_that_must_not_have_happened() {
        assert_linearizable(&[
            put("a", 0, 10),
            put_pending("b", 20),
            get(Some("a"), 30, 40),
        ]);
        assert_linearizable(&[
            cas_pending(None, "a", 0),
            get(None, 50, 60),
            get(None, 70, 80),
        ]);
        // An incomplete get constrains nothing.
        let pending_get = op(OpKind::Get, None, None, None, 5, None);
        assert_linearizable(&[put("a", 0, 10), pending_get, get(Some("a"), 30, 40)]);
        // An incomplete cas may fail, too, since its result is unknown.
        assert_linearizable(&[
            put("a", 0, 10),
            cas_pending(Some("z"), "b", 20),
            get(Some("a"), 30, 40),
        ]);
    }

    #[test]
    fn stale_read_after_completed_put_is_rejected() {
        assert_not_linearizable(&[put("a", 0, 10), put("b", 20, 30), get(Some("a"), 40, 50)]);
    }

    #[test]
    fn read_of_value_never_written_is_rejected() {
        assert_not_linearizable(&[put("a", 0, 10), get(Some("z"), 20, 30)]);
        assert_not_linearizable(&[get(Some("z"), 20, 30)]);
    }

    #[test]
    fn two_cas_winning_from_same_state_is_rejected() {
        assert_not_linearizable(&[
            put("a", 0, 10),
            cas(Some("a"), "b", true, 20, 40),
            cas(Some("a"), "c", true, 25, 45),
        ]);
        assert_not_linearizable(&[cas(None, "b", true, 0, 40), cas(None, "c", true, 5, 45)]);
    }

    #[test]
    fn lost_write_is_rejected() {
        assert_not_linearizable(&[put("a", 0, 10), get(None, 20, 30)]);
        assert_not_linearizable(&[cas(None, "a", true, 0, 10), get(None, 20, 30)]);
    }

    #[test]
    fn read_going_back_in_time_is_rejected() {
        assert_not_linearizable(&[
            put("a", 0, 10),
            put("b", 20, 100),
            get(Some("b"), 30, 40),
            get(Some("a"), 50, 60),
        ]);
        // Indeterminate ops do not excuse it either.
        assert_not_linearizable(&[
            put("a", 0, 10),
            put_pending("b", 20),
            get(Some("b"), 30, 40),
            get(Some("a"), 50, 60),
        ]);
    }

    #[test]
    fn failure_names_the_key_and_the_op() {
        let ops = vec![
            on_key(put("a", 0, 10), "good"),
            on_key(get(Some("a"), 20, 30), "good"),
            on_key(put("a", 0, 10), "bad"),
            on_key(put("b", 20, 30), "bad"),
            on_key(get(Some("a"), 40, 50), "bad"),
        ];
        let CheckResult::NotLinearizable { key, reason } = check_ops(&ops, BUDGET) else {
            panic!("not rejected");
        };
        assert_eq!(key, "bad");
        assert!(reason.contains("op 4"), "{reason}");
        assert!(reason.contains("\"b\""), "{reason}");
    }

    #[test]
    fn keys_are_independent() {
        // Per key each is fine; mixing keys would make the reads stale.
        assert_linearizable(&[
            on_key(put("a", 0, 10), "k1"),
            on_key(put("b", 20, 30), "k2"),
            on_key(get(Some("a"), 40, 50), "k1"),
            on_key(get(Some("b"), 40, 50), "k2"),
        ]);
    }

    #[test]
    fn malformed_ops_are_rejected() {
        let mut bad = put("a", 0, 10);
        bad.result = Some(OpResult::Swapped(true));
        assert_not_linearizable(&[bad]);
        let mut bad = put("a", 20, 10);
        bad.complete = Some(10);
        assert_not_linearizable(&[bad]);
        let mut bad = put("a", 0, 10);
        bad.complete = None;
        assert_not_linearizable(&[bad]);
    }

    /// Many concurrent puts of distinct values and an impossible read: exhaustive search.
    fn pathological() -> Vec<HistoryOp> {
        let values: Vec<String> = (0..14).map(|i| format!("v{i}")).collect();
        let mut ops: Vec<HistoryOp> = values.iter().map(|v| put(v, 0, 1_000)).collect();
        ops.push(get(Some("never"), 500, 2_000));
        ops
    }

    #[test]
    fn budget_exhaustion_is_unknown() {
        let unknown = CheckResult::Unknown {
            key: "x".to_owned(),
        };
        let ops = pathological();
        assert_eq!(check_ops(&ops, 1), unknown);
        assert_eq!(check_ops(&ops, 0), unknown);
        assert_eq!(check_ops(&ops, 10_000), unknown);
        let easy = [put("a", 0, 10), get(Some("a"), 20, 30)];
        assert_eq!(check_ops(&easy, 1), unknown);
        assert_eq!(check_ops(&easy, 100), CheckResult::Linearizable);
        // With enough budget the exhaustive search finishes and rejects it.
        assert_not_linearizable(&ops);
    }

    #[test]
    fn history_json_round_trip() {
        let mut history = History::new();
        let put_index = history.invoke(1, OpKind::Put, "k".into(), Some("ok".into()), None, 10);
        let get_some = history.invoke(2, OpKind::Get, "k".into(), None, None, 11);
        let get_absent = history.invoke(3, OpKind::Get, "j".into(), None, None, 12);
        let _get_pending = history.invoke(4, OpKind::Get, "k".into(), None, None, 13);
        let cas_done = history.invoke(5, OpKind::Cas, "k".into(), Some("n".into()), None, 14);
        let _cas_pending = history.invoke(
            6,
            OpKind::Cas,
            "k".into(),
            Some("m".into()),
            Some("ok".into()),
            15,
        );
        let _put_pending = history.invoke(7, OpKind::Put, "k".into(), Some("p".into()), None, 16);
        history.complete(put_index, OpResult::Ok, 20);
        history.complete(get_some, OpResult::Value(Some("ok".into())), 21);
        history.complete(get_absent, OpResult::Value(None), 22);
        history.complete(cas_done, OpResult::Swapped(false), 23);

        let text = history.to_json_lines();
        assert_eq!(text.lines().count(), 7);
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"process":1,"type":"put","key":"k","value":"ok","expected":null,"result":"ok","invoke":10,"complete":20}"#
        );
        assert_eq!(
            text.lines().nth(2).unwrap(),
            r#"{"process":3,"type":"get","key":"j","value":null,"expected":null,"result":null,"invoke":12,"complete":22}"#
        );
        assert_eq!(
            text.lines().nth(3).unwrap(),
            r#"{"process":4,"type":"get","key":"k","value":null,"expected":null,"result":null,"invoke":13,"complete":null}"#
        );
        let parsed = History::from_json_lines(&text).unwrap();
        assert_eq!(parsed, history);
        assert_eq!(parsed.ops[2].result, Some(OpResult::Value(None)));
        assert_eq!(parsed.ops[3].result, None);
        assert_eq!(
            parsed.ops[1].result,
            Some(OpResult::Value(Some("ok".into())))
        );

        let mut written = Vec::new();
        history.write_json_lines(&mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), text);
        assert_eq!(check(&parsed, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn history_json_rejects_malformed_lines() {
        let line = |result: &str, complete: &str| {
            format!(
                r#"{{"process":1,"type":"put","key":"k","value":"v","expected":null,"result":{result},"invoke":10,"complete":{complete}}}"#
            )
        };
        assert!(History::from_json_lines(&line("\"ok\"", "20")).is_ok());
        assert!(History::from_json_lines(&format!("\n{}\n\n", line("null", "null"))).is_ok());
        for (result, complete) in [
            ("true", "20"),
            ("null", "20"),
            ("\"ok\"", "null"),
            ("\"ok\"", "5"),
        ] {
            let text = format!("{}\n{}", line("\"ok\"", "20"), line(result, complete));
            let error = History::from_json_lines(&text).unwrap_err();
            assert!(error.starts_with("history line 2:"), "{error}");
        }
        assert!(History::from_json_lines("{not json").is_err());
    }

    /// splitmix64: a tiny deterministic generator so the test needs no extra crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// A history run sequentially against the model, op `i` taking effect at `100 * (i + 1)` ns,
    /// then each interval widened around that point by up to `widen_ns` each side (so real-time
    /// order stays consistent with the witness order) and some ops left incomplete.
    fn random_history(rng: &mut Rng, ops_count: u64, widen_ns: u64) -> Vec<HistoryOp> {
        let keys = ["k0", "k1", "k2", "k3", "k4"];
        let values = ["a", "b", "c", "d"];
        let mut store: BTreeMap<&str, &str> = BTreeMap::new();
        let mut ops = Vec::new();
        for i in 0..ops_count {
            let key = keys[rng.below(keys.len() as u64) as usize];
            let value = values[rng.below(values.len() as u64) as usize];
            let current = store.get(key).copied();
            let mut op = match rng.below(10) {
                0..4 => {
                    store.insert(key, value);
                    put(value, 0, 0)
                }
                4..8 => get(current, 0, 0),
                _ => {
                    let expected = if rng.below(2) == 0 {
                        current
                    } else {
                        Some(value)
                    };
                    let swapped = expected == current;
                    if swapped {
                        store.insert(key, "new");
                    }
                    cas(expected, "new", swapped, 0, 0)
                }
            };
            let point = 100 * (i + 1);
            op.key = key.to_owned();
            op.process = i % 8;
            op.invoke = point - rng.below(widen_ns + 1).min(point);
            op.complete = Some(point + rng.below(widen_ns + 1));
            if rng.below(20) == 0 {
                op.complete = None;
                op.result = None;
            }
            ops.push(op);
        }
        ops
    }

    #[test]
    fn random_widened_sequential_histories_linearize() {
        for seed in 0..300 {
            let mut rng = Rng(seed);
            let widen_ns = [0, 50, 150, 400][(seed % 4) as usize];
            let mut ops = random_history(&mut rng, 300, widen_ns);
            let result = check_ops(&ops, BUDGET);
            assert_eq!(result, CheckResult::Linearizable, "seed {seed}");

            // A test must be able to fail: one read of a value never written breaks it.
            let gets: Vec<usize> = (0..ops.len())
                .filter(|&i| ops[i].kind == OpKind::Get && ops[i].complete.is_some())
                .collect();
            let victim = gets[rng.below(gets.len() as u64) as usize];
            ops[victim].result = Some(OpResult::Value(Some("never".to_owned())));
            let result = check_ops(&ops, BUDGET);
            assert!(
                matches!(result, CheckResult::NotLinearizable { .. }),
                "seed {seed}"
            );
        }
    }

    /// The model step on plain strings, for the brute-force reference.
    fn reference_step(op: &HistoryOp, state: Option<&String>) -> Option<Option<String>> {
        let swaps = op.expected.as_ref() == state;
        match (op.kind, &op.result) {
            (OpKind::Put, _) => Some(op.value.clone()),
            (OpKind::Get, Some(OpResult::Value(read))) => {
                (read.as_ref() == state).then(|| read.clone())
            }
            (OpKind::Get, _) => Some(state.cloned()),
            (OpKind::Cas, Some(OpResult::Swapped(swapped))) if *swapped != swaps => None,
            (OpKind::Cas, _) => Some(if swaps {
                op.value.clone()
            } else {
                state.cloned()
            }),
        }
    }

    /// Tries every order (with incomplete ops optional) straight from the definition.
    fn reference_linearizable(
        ops: &[HistoryOp],
        placed: &mut [bool],
        state: Option<&String>,
    ) -> bool {
        if (0..ops.len()).all(|i| placed[i] || ops[i].complete.is_none()) {
            return true;
        }
        for i in 0..ops.len() {
            let blocked = (0..ops.len()).any(|j| {
                !placed[j]
                    && ops[j]
                        .complete
                        .is_some_and(|complete| complete < ops[i].invoke)
            });
            if placed[i] || blocked {
                continue;
            }
            if let Some(after) = reference_step(&ops[i], state) {
                placed[i] = true;
                let found = reference_linearizable(ops, placed, after.as_ref());
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let values = [None, Some("a"), Some("b")];
        let mut verdicts = [0; 2];
        for seed in 0..20_000 {
            let mut rng = Rng(seed);
            let ops: Vec<HistoryOp> = (0..=rng.below(6))
                .map(|_| {
                    let invoke = rng.below(20);
                    let read = values[rng.below(3) as usize];
                    let mut op = match rng.below(3) {
                        0 => put(read.unwrap_or("a"), invoke, 0),
                        1 => get(read, invoke, 0),
                        _ => cas(
                            read,
                            ["a", "b"][rng.below(2) as usize],
                            rng.below(2) == 0,
                            invoke,
                            0,
                        ),
                    };
                    op.complete = Some(invoke + rng.below(10));
                    if rng.below(5) == 0 {
                        (op.complete, op.result) = (None, None);
                    }
                    op
                })
                .collect();
            let expected = reference_linearizable(&ops, &mut vec![false; ops.len()], None);
            verdicts[usize::from(expected)] += 1;
            let result = check_ops(&ops, BUDGET);
            assert_eq!(
                result == CheckResult::Linearizable,
                expected,
                "seed {seed}: {ops:#?}"
            );
            assert!(
                !matches!(result, CheckResult::Unknown { .. }),
                "seed {seed}"
            );
        }
        // Both verdicts are well represented, so the comparison means something.
        assert!(verdicts.iter().all(|&count| count > 5_000), "{verdicts:?}");
    }
}
