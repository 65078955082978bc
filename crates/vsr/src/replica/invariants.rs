//! One replica's own state, checked as a whole: facts that hold after every event whatever
//! the network and disk did. A violation is a bug in this replica and panics (these are
//! `assert!`s, on in release builds). The simulator's checkers compare replicas with each
//! other; these look at one.
//!
//! [`Replica::invariants_constant`] costs O(1) and runs after every event, in every build
//! (`vsr start` included). [`Replica::invariants`] adds the checks that walk the log, the
//! pipeline and the deferred actions; the simulator runs it after every event, and so do the
//! unit tests' drivers.

use super::state_transfer::DELTA_WINDOW_CHUNKS;
use super::{Deferred, Replica, Role, Status};
use crate::limits::NUMBER_MAX;
use crate::state_machine::StateMachine;

impl<S: StateMachine> Replica<S> {
    /// The O(1) invariants: numbers in order, and a status consistent with the view.
    pub(super) fn invariants_constant(&self) {
        assert!(
            self.last_normal_view <= self.view,
            "last normal view after the view"
        );
        assert!(
            self.checkpoint_op <= self.commit,
            "checkpoint past the commit number"
        );
        assert!(
            self.log.base_op() <= self.commit,
            "log trimmed past the commit number"
        );
        assert!(
            self.commit <= self.commit_max,
            "executed past the known commit number"
        );
        assert!(
            self.commit <= self.op_verified,
            "executed past the verified log"
        );
        assert!(self.op_verified <= self.log.op(), "verified past the log");
        assert!(
            self.view.get() < NUMBER_MAX && self.log.op().get() < NUMBER_MAX,
            "a view or op no message can carry"
        );
        assert!(
            self.seq_durable < self.seq_next,
            "a write durable before it was issued"
        );
        if let Some((seq, _)) = self.deferred.front() {
            assert!(
                *seq > self.seq_durable,
                "an action still waits for a durable write"
            );
        }
        if let Some(request) = &self.state_request {
            assert_ne!(request.to(), self.index, "state requested from itself");
        }
        // Bounded by the replica count, each by the window.
        for (&to, outgoing) in &self.outgoing {
            assert_ne!(to, self.index, "a delta sent to itself");
            assert!(
                outgoing.window_len() <= DELTA_WINDOW_CHUNKS,
                "a delta sent past its window"
            );
        }
        match &self.status {
            Status::Normal(Role::Primary(primary)) => {
                assert!(
                    self.leads_view(),
                    "primary of a view the configuration gives another"
                );
                assert_eq!(
                    self.last_normal_view, self.view,
                    "primary without its view's log"
                );
                assert_eq!(
                    self.op_verified,
                    self.log.op(),
                    "primary's own log unverified"
                );
                assert!(primary.pipeline.queue_len() <= self.config.clients_max);
                assert!(primary.reads.len() <= self.config.clients_max);
            }
            Status::Normal(Role::Backup(_)) => {
                assert!(
                    !self.leads_view(),
                    "backup of a view the configuration gives it"
                );
            }
            Status::ViewChange(_) => {
                assert!(
                    self.last_normal_view < self.view,
                    "view change to a view it was normal in"
                );
            }
            Status::Recovering(_) => {}
        }
    }

    /// Every invariant of this replica's own state: the O(1) ones, then the log's hash chain,
    /// the pipeline against the log, the order of deferred actions and the client table's
    /// bound. Drivers that can afford it (the simulator, tests) call it after every event.
    ///
    /// # Panics
    /// When an invariant does not hold: a bug in this replica.
    pub fn invariants(&self) {
        self.invariants_constant();
        self.log.assert_chain();
        if let Status::Normal(Role::Primary(primary)) = &self.status {
            primary
                .pipeline
                .assert_within(self.config.replica_count, self.log.op());
            primary.reads.assert_valid(self.round_last);
        }
        let mut seq_previous = self.seq_durable;
        for (seq, action) in &self.deferred {
            assert!(
                *seq >= seq_previous && *seq < self.seq_next,
                "deferred actions out of order"
            );
            seq_previous = *seq;
            if let Deferred::PrepareOk { view, .. } | Deferred::PrimaryDurable { view, .. } = action
            {
                assert!(*view <= self.view, "an action deferred for a later view");
            }
        }
        assert!(
            self.client_table.len() <= self.config.clients_max,
            "client table over its bound"
        );
    }
}
