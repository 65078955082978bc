//! How far a message may move a replica: the jump bounds of [`crate::limits`].
//!
//! Decoding keeps every view, op and commit number below `NUMBER_MAX`, but a faulty peer can
//! still send a number just below it, and a replica that took it would be stuck for good:
//! views and ops only grow, and there would be no next one. So a replica takes a view from a
//! message only up to `VIEW_JUMP_MAX` or as a single step from its own view, and an op or
//! commit number only up to `OP_JUMP_MAX` or at most one past its own log. Anything further
//! ahead is dropped and counted ([`super::ReplicaStats::messages_too_far_ahead`], and
//! `messages_dropped`). Its own view never goes past `NUMBER_MAX - 1`, nor its log past
//! op `NUMBER_MAX - 1`. Honest clusters never come near the bounds, so none of this changes
//! what they do.
//!
//! Above the view jump bound views advance one at a time, so a replica must not run ahead of
//! its peers there: a replica whose view change times out above the bound moves on only when
//! its peers are moving too (another replica's start_view_change or do_view_change of its
//! view, or a message of a later view it had to drop). An isolated replica thus waits one view
//! past the one it was normal in, and a lagging one climbs to its peers one view per timeout
//! (a primary left behind, which has no timeout, starts climbing at the first such message).
//! A recovering replica, which has no view of its own to step from, takes a view beyond its
//! reach only when a quorum of recovery responses reports at least that view: one of them is
//! honest, and honest replicas get there step by step.

use super::{Replica, Role, Status};
use crate::limits::{NUMBER_MAX, OP_JUMP_MAX, VIEW_JUMP_MAX};
use crate::numbers::{Op, View};
use crate::state_machine::StateMachine;

/// Whether a message may move a replica in view `own` to `view`.
pub(super) fn view_within_reach(own: View, view: View) -> bool {
    view.get() <= VIEW_JUMP_MAX || view <= own.next()
}

impl<S: StateMachine> Replica<S> {
    /// Whether a message may move this replica to `view`.
    pub(super) fn view_within_reach(&self, view: View) -> bool {
        view_within_reach(self.view, view)
    }

    /// Whether a message may move this replica's log or commit number to `op`.
    pub(super) fn op_within_reach(&self, op: Op) -> bool {
        op.get() <= OP_JUMP_MAX || op <= self.log.op().next()
    }

    /// Drops a message, or a number in one, that would move this replica too far ahead.
    pub(super) fn drop_too_far_ahead(&mut self) {
        self.stats.messages_dropped += 1;
        self.stats.messages_too_far_ahead += 1;
    }

    /// Drops a message of a view too far ahead. Its peers have moved on: in a view change the
    /// replica notes it, to climb after them; a primary, which has no timeout that would take
    /// it out of its view, leaves it now (a backup's timeout does, as it hears no primary).
    pub(super) fn drop_view_too_far_ahead(&mut self) {
        self.drop_too_far_ahead();
        match &mut self.status {
            Status::ViewChange(view_change) => view_change.note_peers_ahead(),
            Status::Normal(Role::Primary(_)) => {
                if let Some(next) = self.next_view(true) {
                    self.start_view_change(next);
                }
            }
            Status::Normal(Role::Backup(_)) | Status::Recovering(_) => {}
        }
    }

    /// The view this replica moves to when it gives up on its own: the next one, unless its
    /// view is the last a message can carry, or the next one lies above the view jump bound and
    /// `peers_moving` is false.
    pub(super) fn next_view(&self, peers_moving: bool) -> Option<View> {
        let next = self.view.next();
        let allowed = next.get() < NUMBER_MAX && (next.get() <= VIEW_JUMP_MAX || peers_moving);
        allowed.then_some(next)
    }

    /// Whether the log has room for one more op a message can carry.
    pub(super) fn has_next_op(&self) -> bool {
        self.log.op().next().get() < NUMBER_MAX
    }
}
