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
//! a return whose operation is not linearized yet. Lowe's memoization skips any configuration
//! (set of linearized ops, register value) already entered. The search keeps its own stack, so
//! long histories cannot overflow the thread's.
//!
//! An operation that never completed may have taken effect at any time after its invocation,
//! or never. An incomplete get constrains nothing and is dropped. An incomplete put or cas gets
//! a call event and no return event: the search may linearize it anywhere after its call, and
//! once every completed operation is placed the rest are "never happened" (equivalently, placed
//! after everything, where no one observes them). An incomplete cas's result is unknown, so it
//! swaps exactly when the register holds the expected value.
//!
//! Many concurrent clients make that search space huge, so it is cut down by rules that each
//! keep at least one linearization whenever there is one. They only ever skip candidates, and
//! the search accepts only an order it has fully walked through the model, so none of them can
//! make a history pass:
//!
//! - A completed op that leaves the register as it is (a get, a failed cas) and could go next
//!   goes next, with no alternatives tried: moving it to the front of any linearization from
//!   here keeps that linearization valid.
//! - An op does not overwrite a value that a completed op still has to read when no op left can
//!   write that value again.
//! - An incomplete op is not placed where it changes nothing anyone can see: when it leaves the
//!   register as it is, or moves it between two values no remaining op tests. Leaving it out
//!   keeps every future open.
//! - Incomplete puts of values no op ever tests are interchangeable, so they are used in the
//!   order they were invoked.
//! - The memoization treats all values no remaining op tests as one register state, since no
//!   remaining op behaves differently on them. Sets are hashed incrementally as the XOR of a
//!   fixed pseudo-random 128-bit word per op; two configurations meeting on one hash would only
//!   make the search skip one, which can reject but never accept, at odds far below 2^-60 for
//!   any history the budget allows.
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
            // A delete writes "absent" (its value is `None`), completed or not.
            (OpKind::Put | OpKind::Delete, _) => Some(ModelOp::Put { value }),
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
        let stranded = deepest.stranded.map_or(String::new(), |reader| {
            format!(
                ", which op {} ({}) has yet to see and no op left can write again",
                self.history_index[reader],
                describe(&self.history[self.history_index[reader]]),
            )
        });
        format!(
            "at most {} of the key's {} ops linearize; then op {} ({}) cannot be placed: \
             the register holds {}{stranded}",
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
        OpKind::Delete => "delete".to_owned(),
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
    /// Every order was tried (up to memoization and pruning).
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
    /// A completed op still to be placed that must see `state`, when no op left can write it:
    /// overwriting `state` would strand it.
    stranded: Option<usize>,
}

/// What trying to linearize an op next did.
enum Attempt {
    /// The op is linearized.
    Placed,
    /// The op cannot or need not go next; try the next candidate.
    Skipped,
    /// The op had to go next and that configuration already failed: so does this one.
    Doomed,
}

/// A hasher for memoization keys that are already uniformly random 128-bit words.
#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, word: u128) {
        self.0 ^= (word as u64) ^ ((word >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// splitmix64: the fixed pseudo-random words the memoization keys are built from.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A pseudo-random 128-bit word for `index` in the domain `salt`.
fn random_word(salt: u64, index: usize) -> u128 {
    let base = mix(salt ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    u128::from(mix(base)) << 64 | u128::from(mix(base ^ 0x5555_5555_5555_5555))
}

/// Per value: how many ops not linearized yet relate to it.
#[derive(Clone, Copy, Default)]
struct ValueCounts {
    /// Ops whose outcome depends on whether the register holds the value: gets reading it and
    /// cas expecting it.
    tests: u32,
    /// Completed ops that can only be placed while the register holds the value: gets that
    /// read it and cas that swapped from it.
    needs: u32,
    /// Ops that may set the register to the value.
    writes: u32,
}

/// What the search knows about one op beyond its model.
#[derive(Clone, Copy)]
struct OpFacts {
    completed: bool,
    /// The value the op's outcome compares the register with.
    tests: Option<ValueId>,
    /// The value the register must hold when a completed op is placed.
    needs: Option<ValueId>,
    /// The value the op may write.
    writes: Option<ValueId>,
    /// For an incomplete put of a value no op ever tests: its place in invocation order among
    /// those puts. They are interchangeable, so they are only ever used in that order.
    spare_rank: Option<usize>,
    /// A completed op that leaves every state it accepts as it is: a get, a failed cas, a cas
    /// to the value it expected. If it can go next it may as well go first.
    reads_only: bool,
    /// This op's share of the memoization key.
    word: u128,
}

impl OpFacts {
    fn new(op: ModelOp, completed: bool, index: usize) -> OpFacts {
        let (tests, needs, writes) = match op {
            ModelOp::Put { value } => (None, None, Some(value)),
            ModelOp::Get { read } => (Some(read), Some(read), None),
            ModelOp::Cas {
                expected,
                new,
                swapped,
            } => match swapped {
                Some(true) => (Some(expected), Some(expected), Some(new)),
                Some(false) => (Some(expected), None, None),
                None => (Some(expected), None, Some(new)),
            },
        };
        OpFacts {
            completed,
            tests,
            needs,
            writes,
            spare_rank: None,
            reads_only: completed && (writes.is_none() || writes == needs),
            word: random_word(0x6F70, index),
        }
    }
}

/// One linearized op on the search's stack.
#[derive(Clone, Copy)]
struct Placed {
    op: usize,
    state_before: ValueId,
}

/// Marks the end of a list link.
const NONE: usize = usize::MAX;
/// The list's sentinel head node; event `i` is node `i + 1`.
const HEAD: usize = 0;

/// The state of the search over one key's events.
struct Search<'a> {
    key_ops: &'a KeyOps<'a>,
    /// Per node: the next and previous node still in the list (dancing links).
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per op: its call node and its return node (`NONE` if it never completed).
    call_node: Vec<usize>,
    return_node: Vec<usize>,
    facts: Vec<OpFacts>,
    /// Per value id, the ops not linearized yet that relate to it.
    counts: Vec<ValueCounts>,
    /// Per value id, then one for every value no remaining op tests: the register's share of
    /// the memoization key.
    state_words: Vec<u128>,
    /// The XOR of the linearized ops' words: the set of linearized ops, hashed incrementally.
    set_word: u128,
    /// Memoization: every (set of linearized ops, canonical state) configuration entered.
    cache: HashSet<u128, BuildHasherDefault<FoldHasher>>,
    calls: Vec<Placed>,
    state: ValueId,
    /// Completed ops not linearized yet; the search succeeds when none are left.
    completed_left: usize,
    /// Spare puts (see [`OpFacts::spare_rank`]) linearized so far.
    spares_used: usize,
    deepest: Option<Deepest>,
}

impl<'a> Search<'a> {
    fn new(key_ops: &'a KeyOps<'a>) -> Search<'a> {
        let nodes = key_ops.events.len() + 1;
        let ops = key_ops.model.len();
        let values = key_ops.values.ids.len() + 1;
        let mut search = Search {
            key_ops,
            next: (1..=nodes)
                .map(|n| if n == nodes { NONE } else { n })
                .collect(),
            prev: (0..nodes).map(|n| n.wrapping_sub(1)).collect(),
            call_node: vec![NONE; ops],
            return_node: vec![NONE; ops],
            facts: Vec::with_capacity(ops),
            counts: vec![ValueCounts::default(); values],
            state_words: (0..=values)
                .map(|value| random_word(0x7374_6174, value))
                .collect(),
            set_word: 0,
            cache: HashSet::default(),
            calls: Vec::new(),
            state: ABSENT,
            completed_left: 0,
            spares_used: 0,
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
        for (op, &model) in key_ops.model.iter().enumerate() {
            let facts = OpFacts::new(model, search.return_node[op] != NONE, op);
            search.facts.push(facts);
            search.count(op, 1);
        }
        search.rank_spares();
        search
    }

    /// Ranks the incomplete puts of values no op tests, in the order their calls are listed.
    fn rank_spares(&mut self) {
        let mut rank = 0;
        for event in &self.key_ops.events {
            let facts = &mut self.facts[event.op];
            let ModelOp::Put { value } = self.key_ops.model[event.op] else {
                continue;
            };
            if !facts.completed && self.counts[value as usize].tests == 0 {
                facts.spare_rank = Some(rank);
                rank += 1;
            }
        }
    }

    /// Adds `delta` (1 or -1 as wrapping) to the counts of the values `op` relates to.
    fn count(&mut self, op: usize, delta: u32) {
        let facts = self.facts[op];
        if let Some(value) = facts.tests {
            let tests = &mut self.counts[value as usize].tests;
            *tests = tests.wrapping_add(delta);
        }
        if let Some(value) = facts.needs {
            let needs = &mut self.counts[value as usize].needs;
            *needs = needs.wrapping_add(delta);
        }
        if let Some(value) = facts.writes {
            let writes = &mut self.counts[value as usize].writes;
            *writes = writes.wrapping_add(delta);
        }
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
                match self.try_linearize(event.op) {
                    Attempt::Placed => {
                        node = self.next[HEAD];
                        continue;
                    }
                    Attempt::Skipped => {
                        node = self.next[node];
                        continue;
                    }
                    Attempt::Doomed => {}
                }
            }
            self.note_stuck(event.op);
            node = self.backtrack()?;
        }
        Ok(())
    }

    /// Leaves the current configuration, which cannot be completed: takes back linearized ops
    /// up to the last one that had alternatives, and returns the node to try next instead.
    fn backtrack(&mut self) -> Result<usize, SearchError> {
        loop {
            let placed = self.calls.pop().ok_or(SearchError::Stuck)?;
            self.undo(placed);
            // An op that only reads was placed with no alternatives: its configuration fails too.
            if !self.facts[placed.op].reads_only {
                return Ok(self.next[self.call_node[placed.op]]);
            }
        }
    }

    /// The register value as the memoization key sees it: values no remaining op tests all
    /// lead to the same futures, so they are one state.
    fn canonical(&self, state: ValueId) -> usize {
        if self.counts[state as usize].tests == 0 {
            self.state_words.len() - 1
        } else {
            state as usize
        }
    }

    /// Linearizes `op` next if the model allows it, no pruning rule forbids it, and the
    /// configuration it leads to is new.
    fn try_linearize(&mut self, op: usize) -> Attempt {
        let Some(state_after) = self.key_ops.model[op].step(self.state) else {
            return Attempt::Skipped;
        };
        let facts = self.facts[op];
        if !facts.completed
            && (state_after == self.state
                || facts
                    .spare_rank
                    .is_some_and(|rank| rank != self.spares_used))
        {
            return Attempt::Skipped;
        }
        self.count(op, 1_u32.wrapping_neg());
        if self.pruned(&facts, state_after) {
            self.count(op, 1);
            return Attempt::Skipped;
        }
        let key = self.set_word ^ facts.word ^ self.state_words[self.canonical(state_after)];
        if !self.cache.insert(key) {
            self.count(op, 1);
            return if facts.reads_only {
                Attempt::Doomed
            } else {
                Attempt::Skipped
            };
        }
        self.set_word ^= facts.word;
        self.calls.push(Placed {
            op,
            state_before: self.state,
        });
        self.state = state_after;
        if facts.completed {
            self.completed_left -= 1;
        }
        if facts.spare_rank.is_some() {
            self.spares_used += 1;
        }
        self.unlink(self.call_node[op]);
        self.unlink(self.return_node[op]);
        Attempt::Placed
    }

    /// Whether moving the register from the current state to `state_after` by an op with
    /// `facts` (already uncounted) can be skipped without losing any linearization.
    fn pruned(&self, facts: &OpFacts, state_after: ValueId) -> bool {
        let before = self.counts[self.state as usize];
        // An incomplete op between two values no remaining op tests changes nothing anyone
        // sees: leaving it out keeps every future open.
        if !facts.completed && before.tests == 0 && self.counts[state_after as usize].tests == 0 {
            return true;
        }
        // Overwriting a value some completed op still has to read, with no op left to write it
        // again, strands that op.
        state_after != self.state && before.needs > 0 && before.writes == 0
    }

    /// Takes back the last linearized op, restoring the register to its state before.
    fn undo(&mut self, placed: Placed) {
        let op = placed.op;
        self.relink(self.return_node[op]);
        self.relink(self.call_node[op]);
        let facts = self.facts[op];
        if facts.completed {
            self.completed_left += 1;
        }
        if facts.spare_rank.is_some() {
            self.spares_used -= 1;
        }
        self.count(op, 1);
        self.set_word ^= facts.word;
        self.state = placed.state_before;
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
                stranded: self.stranded_reader(),
            });
        }
    }

    /// A completed op not linearized yet that must see the current state, if no op left can
    /// write that state.
    fn stranded_reader(&self) -> Option<usize> {
        let counts = self.counts[self.state as usize];
        if counts.needs == 0 || counts.writes > 0 {
            return None;
        }
        let mut node = self.next[HEAD];
        while node != NONE {
            let op = self.event(node).op;
            if self.facts[op].completed && self.facts[op].needs == Some(self.state) {
                return Some(op);
            }
            node = self.next[node];
        }
        unreachable!("a needing op is listed")
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

    fn delete(invoke: u64, complete: u64) -> HistoryOp {
        op(
            OpKind::Delete,
            None,
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
    fn incomplete_puts_no_one_reads_hide_a_value_at_most_once_each() {
        // A failed cas says the register did not hold "a": an incomplete put explains it once.
        let hide_twice = |first: u64, second: u64| {
            vec![
                put("a", 0, 10),
                put_pending("u1", first),
                cas(Some("a"), "c", false, 20, 30),
                put("a", 40, 50),
                put_pending("u2", second),
                cas(Some("a"), "c", false, 60, 70),
            ]
        };
        assert_linearizable(&hide_twice(5, 45));
        assert_linearizable(&hide_twice(5, 5));
        // The second put comes too late for the first failed cas, or arrives never.
        assert_not_linearizable(&hide_twice(35, 45));
        assert_not_linearizable(&hide_twice(5, 80));
        let mut once = hide_twice(5, 45);
        once.remove(4);
        assert_not_linearizable(&once);
    }

    #[test]
    fn incomplete_cas_changes_nothing_unless_it_swaps() {
        assert_not_linearizable(&[
            put("a", 0, 10),
            cas_pending(Some("z"), "b", 20),
            get(Some("b"), 30, 40),
        ]);
        assert_linearizable(&[
            put("a", 0, 10),
            cas_pending(Some("a"), "b", 20),
            get(Some("b"), 30, 40),
        ]);
        // Once overwritten, the expected value is gone for good.
        assert_not_linearizable(&[
            put("a", 0, 10),
            put("c", 20, 30),
            cas_pending(Some("a"), "b", 25),
            get(Some("b"), 40, 50),
        ]);
    }

    #[test]
    fn reads_placed_early_do_not_excuse_stale_reads() {
        // Each get could go first while concurrent; none may read a value already overwritten.
        assert_not_linearizable(&[
            put("a", 0, 10),
            get(None, 5, 15),
            get(Some("a"), 20, 30),
            get(None, 40, 50),
        ]);
        assert_not_linearizable(&[
            put("a", 0, 100),
            put("b", 0, 100),
            get(Some("a"), 10, 20),
            get(Some("b"), 30, 40),
            get(Some("a"), 50, 60),
        ]);
        assert_linearizable(&[
            put("a", 0, 100),
            put("b", 0, 100),
            get(Some("a"), 10, 20),
            get(Some("b"), 30, 40),
            get(Some("b"), 50, 60),
        ]);
    }

    #[test]
    fn values_no_one_reads_stay_distinct_from_values_read() {
        // "u1" and "u2" are never read, so the search treats them alike; "a" is read.
        assert_not_linearizable(&[
            put("u1", 0, 10),
            put("a", 20, 30),
            put("u2", 40, 50),
            get(Some("a"), 60, 70),
        ]);
        assert_linearizable(&[
            put("u1", 0, 10),
            put("a", 20, 55),
            put("u2", 40, 50),
            get(Some("a"), 60, 70),
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
            (OpKind::Delete, _) => Some(None),
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
                    let mut op = match rng.below(4) {
                        0 => put(read.unwrap_or("a"), invoke, 0),
                        1 => get(read, invoke, 0),
                        2 => delete(invoke, 0),
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
    /// The pieces of one small random op: kind, value written, value read or expected, cas
    /// result, invocation time, duration, and whether it completed.
    type OpSeed = (u8, usize, usize, bool, u64, u64, bool);

    /// Values written; reads and cas name only the first few, so some writes are never seen.
    const WRITTEN: [&str; 5] = ["a", "b", "c", "u1", "u2"];
    const READ: [Option<&str>; 4] = [None, Some("a"), Some("b"), Some("c")];

    fn op_from_seed(
        &(kind, write, read, swapped, invoke, duration, completed): &OpSeed,
    ) -> HistoryOp {
        let mut op = match kind {
            0 => put(WRITTEN[write], invoke, 0),
            1 => get(READ[read], invoke, 0),
            _ => cas(READ[read], WRITTEN[write], swapped, invoke, 0),
        };
        op.complete = Some(invoke + duration);
        if !completed {
            (op.complete, op.result) = (None, None);
        }
        op
    }

    fn op_seeds() -> impl proptest::strategy::Strategy<Value = Vec<OpSeed>> {
        use proptest::prelude::*;
        let op = (
            0_u8..3,
            0..WRITTEN.len(),
            0..READ.len(),
            any::<bool>(),
            0_u64..24,
            0_u64..12,
            proptest::bool::weighted(0.7),
        );
        proptest::collection::vec(op, 0..8)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3_000))]

        /// The pruned, memoized search agrees with trying every order, on small histories with
        /// incomplete ops and values no one reads.
        #[test]
        fn search_agrees_with_brute_force(seeds in op_seeds()) {
            let ops: Vec<HistoryOp> = seeds.iter().map(op_from_seed).collect();
            let expected = reference_linearizable(&ops, &mut vec![false; ops.len()], None);
            let result = check_ops(&ops, BUDGET);
            let unknown = matches!(result, CheckResult::Unknown { .. });
            proptest::prop_assert!(!unknown);
            proptest::prop_assert_eq!(result == CheckResult::Linearizable, expected, "{:#?}", ops);
        }
    }
}
