//! Invariants checked after every step of every replica, one checker each, next to the
//! [`SafetyChecker`]'s agreement, execution and reply checks:
//!
//! - [`primary`]: at most one primary per view, the one the view names;
//! - [`monotonic`]: a replica's view never goes back, nor below what its disk made durable;
//! - [`log_agreement`]: a normal backup's log agrees with its primary's;
//! - [`transfer`]: a completed recovery or state transfer holds every op committed before it
//!   began, and its state is the committed log's;
//! - [`client_tables`]: replicas at the same commit number have the same client table.
//!
//! The simulator reads each replica through [`Inspect`] and sums up what it sent in a [`Step`];
//! [`Invariants::after_step`] hands both to every checker, with the safety checker's knowledge
//! of the committed log. The unit tests drive the checkers with planted replicas.

pub mod client_tables;
pub mod log_agreement;
pub mod monotonic;
pub mod primary;
pub mod transfer;

use vsr::{
    Commit, Entry, Message, Op, Prepare, Replica, ReplicaStats, StartView, StateMachine, Status,
    View, ViewState,
};

use crate::checker::SafetyChecker;

/// A replica's status, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Normal operation.
    Normal,
    /// A view change in progress.
    ViewChange,
    /// Recovering lost state.
    Recovering,
}

/// What the checkers read of a replica.
pub trait Inspect {
    /// Its index.
    fn index(&self) -> u8;
    /// Its status.
    fn phase(&self) -> Phase;
    /// Its view.
    fn view(&self) -> View;
    /// The latest view in which it was normal with the view's whole log.
    fn last_normal_view(&self) -> View;
    /// The last op in its log.
    fn op(&self) -> Op;
    /// The log up to this op is the view's log (or committed).
    fn op_verified(&self) -> Op;
    /// Its commit number.
    fn commit(&self) -> Op;
    /// The highest op it knows committed in its view.
    fn commit_max(&self) -> Op;
    /// The entry at `op`, while its log window holds it.
    fn entry(&self, op: Op) -> Option<&Entry>;
    /// Its state machine's digest.
    fn state_digest(&self) -> u128;
    /// Its client table's digest.
    fn client_table_digest(&self) -> u128;
    /// Its event counters.
    fn stats(&self) -> ReplicaStats;
}

impl<S: StateMachine> Inspect for Replica<S> {
    fn index(&self) -> u8 {
        Replica::index(self)
    }
    fn phase(&self) -> Phase {
        match self.status() {
            Status::Normal(_) => Phase::Normal,
            Status::ViewChange(_) => Phase::ViewChange,
            Status::Recovering(_) => Phase::Recovering,
        }
    }
    fn view(&self) -> View {
        Replica::view(self)
    }
    fn last_normal_view(&self) -> View {
        Replica::last_normal_view(self)
    }
    fn op(&self) -> Op {
        Replica::op(self)
    }
    fn op_verified(&self) -> Op {
        Replica::op_verified(self)
    }
    fn commit(&self) -> Op {
        Replica::commit(self)
    }
    fn commit_max(&self) -> Op {
        Replica::commit_max(self)
    }
    fn entry(&self, op: Op) -> Option<&Entry> {
        Replica::entry(self, op)
    }
    fn state_digest(&self) -> u128 {
        self.state_machine().digest()
    }
    fn client_table_digest(&self) -> u128 {
        Replica::client_table_digest(self)
    }
    fn stats(&self) -> ReplicaStats {
        Replica::stats(self)
    }
}

/// What a replica sent during one step, as far as the checkers care.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// (view, message name) of each prepare or commit sent: the acts of a normal primary.
    pub primary_sends: Vec<(View, &'static str)>,
    /// Views of the start_view messages sent (released once durable, so possibly after the
    /// replica moved on to a later view).
    pub start_views: Vec<View>,
    /// Whether it sent a get_state: it needs state it is missing.
    pub get_state: bool,
}

impl Step {
    /// Notes a message the replica sent.
    pub fn record(&mut self, message: &Message) {
        match message {
            Message::Prepare(Prepare { view, .. }) => self.primary_send(*view, "prepare"),
            Message::Commit(Commit { view, .. }) => self.primary_send(*view, "commit"),
            Message::StartView(StartView { view, .. }) if self.start_views.last() != Some(view) => {
                self.start_views.push(*view);
            }
            Message::GetState(_) => self.get_state = true,
            _ => {}
        }
    }

    fn primary_send(&mut self, view: View, name: &'static str) {
        if self.primary_sends.last() != Some(&(view, name)) {
            self.primary_sends.push((view, name));
        }
    }
}

/// Every invariant checker of one run; see the module docs.
#[derive(Debug)]
pub struct Invariants {
    incarnations: Vec<u64>,
    primary: primary::PrimaryChecker,
    monotonic: monotonic::MonotonicChecker,
    log_agreement: log_agreement::LogAgreementChecker,
    transfer: transfer::TransferChecker,
    client_tables: client_tables::ClientTableChecker,
}

impl Invariants {
    /// The checkers of a cluster of `replica_count` replicas.
    #[must_use]
    pub fn new(replica_count: u8) -> Self {
        Self {
            incarnations: vec![0; usize::from(replica_count)],
            primary: primary::PrimaryChecker::new(replica_count),
            monotonic: monotonic::MonotonicChecker::new(replica_count),
            log_agreement: log_agreement::LogAgreementChecker::new(replica_count),
            transfer: transfer::TransferChecker::new(replica_count),
            client_tables: client_tables::ClientTableChecker::new(replica_count),
        }
    }

    /// A replica (re)started from a disk whose durable view state was `durable` (as the
    /// durability oracle knew it before the disk was opened).
    pub fn on_start(&mut self, replica: u8, durable: ViewState) {
        self.incarnations[usize::from(replica)] += 1;
        self.monotonic.on_start(replica, durable);
        self.log_agreement.on_start(replica);
        self.transfer.on_start(replica);
        self.client_tables.on_start(replica);
    }

    /// Checks replica `index` after a step in which it sent what `step` says; `replicas` holds
    /// every running replica, by index.
    ///
    /// # Errors
    /// A description of the first violation found.
    pub fn after_step(
        &mut self,
        replicas: &[Option<&dyn Inspect>],
        index: u8,
        step: &Step,
        safety: &SafetyChecker,
    ) -> Result<(), String> {
        let replica = replicas[usize::from(index)].expect("the stepped replica runs");
        let incarnation = self.incarnations[usize::from(index)];
        self.primary.check(replica, incarnation, step)?;
        self.monotonic.check(replica)?;
        self.log_agreement.check(replicas, index)?;
        self.transfer.check(replica, step, safety)?;
        self.client_tables.check(replica)
    }
}

/// A replica made of plain fields, for the checkers' tests.
#[cfg(test)]
#[derive(Clone, Debug)]
pub(crate) struct Planted {
    pub(crate) index: u8,
    pub(crate) phase: Phase,
    pub(crate) view: View,
    pub(crate) last_normal_view: View,
    pub(crate) op_verified: Op,
    pub(crate) commit: Op,
    pub(crate) commit_max: Op,
    /// The log window: entries after `base`.
    pub(crate) base: Op,
    pub(crate) log: Vec<Entry>,
    pub(crate) state_digest: u128,
    pub(crate) client_table_digest: u128,
    pub(crate) stats: ReplicaStats,
}

#[cfg(test)]
impl Planted {
    /// Replica `index`, normal in `view` with `log` (from op 1) verified and committed.
    pub(crate) fn normal(index: u8, view: View, log: &[Entry]) -> Self {
        let op = Op(log.len() as u64);
        Self {
            index,
            phase: Phase::Normal,
            view,
            last_normal_view: view,
            op_verified: op,
            commit: op,
            commit_max: op,
            base: Op(0),
            log: log.to_vec(),
            state_digest: 0,
            client_table_digest: 0,
            stats: ReplicaStats::default(),
        }
    }
}

#[cfg(test)]
impl Inspect for Planted {
    fn index(&self) -> u8 {
        self.index
    }
    fn phase(&self) -> Phase {
        self.phase
    }
    fn view(&self) -> View {
        self.view
    }
    fn last_normal_view(&self) -> View {
        self.last_normal_view
    }
    fn op(&self) -> Op {
        self.base + self.log.len() as u64
    }
    fn op_verified(&self) -> Op {
        self.op_verified
    }
    fn commit(&self) -> Op {
        self.commit
    }
    fn commit_max(&self) -> Op {
        self.commit_max
    }
    fn entry(&self, op: Op) -> Option<&Entry> {
        let position = op.get().checked_sub(self.base.get() + 1)?;
        self.log.get(usize::try_from(position).ok()?)
    }
    fn state_digest(&self) -> u128 {
        self.state_digest
    }
    fn client_table_digest(&self) -> u128 {
        self.client_table_digest
    }
    fn stats(&self) -> ReplicaStats {
        self.stats
    }
}

/// Client 7's register, op 1 of view 0: the first entry of the checkers' test logs.
#[cfg(test)]
pub(crate) fn register_of_client_7() -> Entry {
    Entry {
        op: Op(1),
        view: View(0),
        parent: vsr::EntryChecksum(0),
        client: 7,
        session: 0,
        request: 1,
        operation: vsr::Operation::Register,
        body: bytes::Bytes::new(),
        checksum: vsr::EntryChecksum(0),
    }
    .sealed()
}

/// A hash-chained log of `count` no-op entries created in `view`, after `parent`.
#[cfg(test)]
pub(crate) fn chain(
    first_op: Op,
    count: u64,
    view: View,
    parent: vsr::EntryChecksum,
) -> Vec<Entry> {
    let mut parent = parent;
    (first_op.get()..first_op.get() + count)
        .map(|op| {
            let op = Op(op);
            let entry = Entry {
                op,
                view,
                parent,
                client: 0,
                session: 0,
                request: 0,
                operation: vsr::Operation::Noop,
                body: bytes::Bytes::new(),
                checksum: vsr::EntryChecksum(0),
            }
            .sealed();
            parent = entry.checksum;
            entry
        })
        .collect()
}
