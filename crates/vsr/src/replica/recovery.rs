//! Recovery (VRR §4.3): a replica that lost its state learns the view from f+1 peers, one of
//! them the primary of the latest view, using a fresh nonce so old answers cannot count; then
//! fetches the primary's state and log up to the op the primary reported, and only then takes
//! part in quorums again.

use std::collections::BTreeMap;

use rand_core::Rng;

use super::bounds::view_within_reach;
use super::{Backup, Replica, Role, Status};
use crate::command::Write;
use crate::message::{Message, Recovery, RecoveryResponse, ReplicaIndex};
use crate::numbers::{Op, View};
use crate::state_machine::StateMachine;

/// The data of a recovery in progress.
#[derive(Debug)]
pub struct Recovering {
    nonce: u64,
    /// view, op, primary? of each response with our nonce.
    responses: BTreeMap<ReplicaIndex, (View, Op, bool)>,
    /// The view, its primary and the primary's op once a quorum answered.
    target: Option<(View, ReplicaIndex, Op)>,
    retry_at: u64,
}

impl Recovering {
    pub(super) fn needs_state(&self, view: View, op: Op) -> bool {
        self.target
            .is_some_and(|(target_view, _, target_op)| target_view == view && op < target_op)
    }

    /// Removes the responses whose view is beyond the reach of a replica in view `own` and
    /// not vouched for by `quorum` responses of at least that view (see [`super::bounds`]);
    /// returns how many it removed.
    fn drop_views_too_far_ahead(&mut self, own: View, quorum: usize) -> usize {
        let mut views: Vec<View> = self.responses.values().map(|(view, _, _)| *view).collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&vouched) = views.get(quorum - 1) else {
            return 0;
        };
        let before = self.responses.len();
        self.responses
            .retain(|_, (view, _, _)| *view <= vouched || view_within_reach(own, *view));
        before - self.responses.len()
    }
}

impl<S: StateMachine> Replica<S> {
    /// Starts (or restarts, with a fresh nonce) the recovery protocol.
    pub(super) fn start_recovery(&mut self) {
        let nonce = self.prng.next_u64();
        let retry_at = self.tick + self.config.retry_ticks * 4;
        self.status = Status::Recovering(Recovering {
            nonce,
            responses: BTreeMap::new(),
            target: None,
            retry_at,
        });
        self.state_request = None;
        self.broadcast(&Message::Recovery(Recovery { nonce }));
    }

    pub(super) fn on_recovery(&mut self, from: ReplicaIndex, message: Recovery) {
        let Recovery { nonce } = message;
        if !self.is_normal() {
            crate::mark!(RecoveryUnansweredNotNormal);
            return;
        }
        let primary = self.is_primary();
        let message = Message::RecoveryResponse(RecoveryResponse {
            view: self.view,
            nonce,
            op: self.log.op(),
            commit: self.commit,
            primary,
        });
        self.send(from, message);
    }

    pub(super) fn on_recovery_response(&mut self, from: ReplicaIndex, message: RecoveryResponse) {
        let RecoveryResponse {
            view,
            nonce,
            op,
            primary,
            ..
        } = message;
        let quorum = if crate::bug!(RecoveryQuorumTooSmall) {
            self.config.quorum() - 1
        } else {
            self.config.quorum()
        };
        let is_primary_of_view = self.config.primary(view) == from;
        let Status::Recovering(recovering) = &mut self.status else {
            return;
        };
        if nonce != recovering.nonce || primary != is_primary_of_view || recovering.target.is_some()
        {
            if nonce != recovering.nonce {
                crate::mark!(RecoveryResponseStaleNonceDropped);
            } else if recovering.target.is_some() {
                crate::mark!(RecoveryResponseAfterTargetIgnored);
            }
            return;
        }
        recovering.responses.insert(from, (view, op, primary));
        if recovering.responses.len() < quorum {
            return;
        }
        let dropped = recovering.drop_views_too_far_ahead(self.view, quorum);
        for _ in 0..dropped {
            self.drop_too_far_ahead();
        }
        let Status::Recovering(recovering) = &mut self.status else {
            unreachable!("still recovering");
        };
        if recovering.responses.len() < quorum {
            return;
        }
        let view_max = recovering
            .responses
            .values()
            .map(|(view, _, _)| *view)
            .max()
            .expect("quorum");
        let primary_max = self.config.primary(view_max);
        let Some(&(_, primary_op, true)) = recovering.responses.get(&primary_max) else {
            crate::mark!(RecoveryWaitsForLatestPrimary);
            return;
        };
        if recovering.responses[&primary_max].0 != view_max {
            crate::mark!(RecoveryWaitsForLatestPrimary);
            return;
        }
        recovering.target = Some((view_max, primary_max, primary_op));
        recovering.retry_at = self.tick + self.config.retry_ticks * 8;
        self.view = view_max;
        self.try_finish_recovery();
        if matches!(self.status, Status::Recovering(_)) {
            self.request_state_from(primary_max);
        }
    }

    /// Finishes recovery once the log reaches the op the primary reported.
    pub(super) fn try_finish_recovery(&mut self) {
        let Status::Recovering(recovering) = &self.status else {
            return;
        };
        let Some((view, _, op)) = recovering.target else {
            return;
        };
        let fetched = self.op_verified >= op || crate::bug!(RecoveryFinishesEarly);
        if self.view != view || !fetched {
            return;
        }
        // Entries past the primary's log are from an older view (a damaged log keeps its old
        // tail): they are not this view's log and were never committed, so they go before the
        // replica claims the view.
        if self.log.op() > self.op_verified {
            crate::mark!(RecoveryTruncatesBeyondPrimaryLog);
            self.log.truncate(self.op_verified);
            self.persist(Write::Truncate {
                op: self.op_verified,
            });
        }
        // The view's primary answered, so this replica is a backup of the view.
        self.status = Status::Normal(Role::Backup(Backup::default()));
        self.last_normal_view = view;
        self.commit_max = self.commit_max.max(self.commit);
        self.persist_view_state(false);
        self.stats.recoveries += 1;
        self.reset_view_change_timeout();
        self.vote_for_log();
    }

    pub(super) fn tick_recovery(&mut self) {
        let Status::Recovering(recovering) = &self.status else {
            return;
        };
        if self.tick >= recovering.retry_at {
            crate::mark!(RecoveryRetriesWithFreshNonce);
            self.start_recovery();
        }
    }
}
