//! View change: start_view_change → do_view_change → start_view (VRR §4.2).
//!
//! A backup that hears nothing from its primary moves to the next view and says so
//! (start_view_change). Once f others agree, it sends its log suffix to the new primary
//! (do_view_change; the new primary's own never crosses the network). With f+1 of them, the new
//! primary takes the log of the one with the largest (last normal view, op), fetching committed
//! entries it lacks first, and starts the view (start_view). The view state is durable before any
//! of these messages leaves.

use std::collections::BTreeMap;

use super::{Backup, Deferred, Primary, Replica, Role, Status};
use crate::command::Write;
use crate::message::{DoViewChange, Entry, Message, ReplicaIndex, StartView, StartViewChange};
use crate::numbers::{Op, View};
use crate::state_machine::StateMachine;

/// The data of a view change in progress.
#[derive(Debug, Default)]
pub struct ViewChange {
    /// Bit i set: replica i sent start_view_change for this view.
    start_view_change_votes: u16,
    /// do_view_change messages received (the new primary only), by sender.
    do_view_change: BTreeMap<ReplicaIndex, DoViewChange>,
    do_view_change_sent: bool,
    /// The new primary is fetching committed entries before it can start the view.
    awaiting_state: bool,
    /// A message of a later view arrived that was too far ahead to take (see
    /// [`super::bounds`]): the peers have moved on.
    peers_ahead: bool,
    resend_at: u64,
    deadline: u64,
}

impl ViewChange {
    pub(super) fn awaiting_state(&self) -> bool {
        self.awaiting_state
    }

    /// Notes that a message of a later view was too far ahead to take.
    pub(super) fn note_peers_ahead(&mut self) {
        self.peers_ahead = true;
    }

    /// Whether another replica is known to be in this view change or beyond it: only then may
    /// a replica above the view jump bound give up on this view (see [`super::bounds`]).
    fn peers_moving(&self, own: ReplicaIndex) -> bool {
        self.start_view_change_votes & !(1 << own) != 0
            || self.do_view_change.keys().any(|from| *from != own)
            || self.peers_ahead
    }

    /// With a quorum of do_view_change: the log of the latest normal view, and of those the
    /// longest (VRR §4.2), and the quorum's highest and lowest commit numbers.
    fn choose(&self, own: ReplicaIndex) -> Chosen {
        let messages = &self.do_view_change;
        let rank = |dvc: &DoViewChange| {
            let view = if crate::bug!(ViewChangeLongestLog) {
                View(0)
            } else {
                dvc.last_normal_view
            };
            (view, dvc.op)
        };
        let (&from, best) = if crate::bug!(ViewChangeWrongLog) {
            messages.iter().min_by_key(|(_, dvc)| rank(dvc))
        } else {
            messages.iter().max_by_key(|(_, dvc)| rank(dvc))
        }
        .expect("quorum");
        let commits = || messages.values().map(|dvc| dvc.commit);
        let chosen = Chosen {
            from,
            log: best.clone(),
            commit_max: commits().max().expect("quorum"),
            commit_min: commits().min().expect("quorum"),
        };
        if messages.get(&own).is_none_or(|own| rank(best) > rank(own)) {
            crate::mark!(ViewChangePicksAnotherLog);
        }
        if messages.values().any(|dvc| dvc.op > best.op) {
            crate::mark!(ViewChangePicksNewerViewOverLongerLog);
        }
        if chosen.commit_max > best.commit {
            crate::mark!(ViewChangeTakesMaxCommit);
        }
        chosen
    }
}

/// The view's log as a quorum of do_view_change messages decides it.
struct Chosen {
    /// Who sent the chosen log.
    from: ReplicaIndex,
    log: DoViewChange,
    commit_max: Op,
    commit_min: Op,
}

impl<S: StateMachine> Replica<S> {
    fn view_change_mut(&mut self) -> Option<&mut ViewChange> {
        match &mut self.status {
            Status::ViewChange(view_change) => Some(view_change),
            _ => None,
        }
    }

    /// Moves to `view` and starts a view change to it.
    pub(super) fn start_view_change(&mut self, view: View) {
        assert!(view > self.view || (view == self.view && self.last_normal_view < view));
        assert!(!matches!(self.status, Status::Recovering(_)));
        self.view = view;
        let timeout = self.config.view_change_timeout_ticks;
        let deadline = self.tick + timeout * 2 + self.jitter(timeout * 2);
        self.status = Status::ViewChange(ViewChange {
            resend_at: self.tick + self.config.retry_ticks,
            deadline,
            ..ViewChange::default()
        });
        self.state_request = None;
        self.op_verified = self.commit;
        self.persist_view_state(false);
        self.broadcast_after_durable(&Message::StartViewChange(StartViewChange { view }));
        self.maybe_send_do_view_change();
    }

    pub(super) fn on_start_view_change(&mut self, from: ReplicaIndex, message: StartViewChange) {
        let StartViewChange { view } = message;
        if !self.view_within_reach(view) {
            self.drop_view_too_far_ahead();
            return;
        }
        if view > self.view {
            crate::mark!(StartViewChangeJoinsHigherView);
            self.start_view_change(view);
        }
        if view != self.view {
            crate::mark!(StartViewChangeStaleIgnored);
            return;
        }
        let Some(view_change) = self.view_change_mut() else {
            crate::mark!(StartViewChangeStaleIgnored);
            return;
        };
        view_change.start_view_change_votes |= 1 << from;
        self.maybe_send_do_view_change();
    }

    fn maybe_send_do_view_change(&mut self) {
        let faults_max = self.config.faults_max();
        let Some(view_change) = self.view_change_mut() else {
            return;
        };
        if view_change.do_view_change_sent
            || (view_change.start_view_change_votes.count_ones() as usize) < faults_max
        {
            return;
        }
        view_change.do_view_change_sent = true;
        self.send_do_view_change();
    }

    fn own_do_view_change(&self) -> DoViewChange {
        DoViewChange {
            view: self.view,
            last_normal_view: self.last_normal_view,
            op: self.log.op(),
            commit: self.commit,
            entries: self.log.range(self.commit + 1, self.log.op()),
        }
    }

    pub(super) fn send_do_view_change(&mut self) {
        let own = self.own_do_view_change();
        let primary = self.config.primary(self.view);
        if primary == self.index {
            let index = self.index;
            self.view_change_mut()
                .expect("in view change")
                .do_view_change
                .insert(index, own);
            self.try_complete_view_change();
        } else {
            self.send_after_durable(primary, Message::DoViewChange(own));
        }
    }

    pub(super) fn on_do_view_change(&mut self, from: ReplicaIndex, message: DoViewChange) {
        let view = message.view;
        if self.config.primary(view) != self.index {
            self.stats.messages_dropped += 1;
            return;
        }
        if !self.view_within_reach(view) {
            self.drop_view_too_far_ahead();
            return;
        }
        if view > self.view {
            crate::mark!(DoViewChangeJoinsHigherView);
            self.start_view_change(view);
        }
        if view != self.view {
            crate::mark!(DoViewChangeOldViewIgnored);
            return;
        }
        match &mut self.status {
            Status::ViewChange(view_change) => {
                view_change.do_view_change.insert(from, message);
                self.try_complete_view_change();
            }
            Status::Normal(_) => {
                // The sender missed our start_view.
                crate::mark!(DoViewChangeAnsweredWithStartView);
                self.send_start_view(Some(from));
            }
            Status::Recovering(_) => unreachable!("a recovering replica handles no do_view_change"),
        }
    }

    /// The new primary: with a quorum of do_view_change, installs the chosen log and starts
    /// the view.
    pub(super) fn try_complete_view_change(&mut self) {
        let quorum = self.config.quorum();
        let index = self.index;
        let Some(view_change) = self.view_change_mut() else {
            return;
        };
        if view_change.do_view_change.len() < quorum || view_change.awaiting_state {
            return;
        }
        let chosen = view_change.choose(index);
        if self.commit < chosen.log.commit {
            // Committed entries we lack precede the chosen suffix: fetch them first.
            crate::mark!(ViewChangeFetchesCommittedFirst);
            self.view_change_mut()
                .expect("in view change")
                .awaiting_state = true;
            self.request_state_from(chosen.from);
            return;
        }
        if chosen.commit_max > chosen.log.op || !self.continues_log(&chosen.log.entries) {
            // Honest replicas never send this: a committed op missing from the longest log, or
            // a suffix that does not continue the committed prefix. Try the next view (in the
            // last view there is none: wait for other messages or the deadline).
            self.stats.messages_dropped += 1;
            if let Some(next) = self.next_view(true) {
                self.start_view_change(next);
            }
            return;
        }
        self.start_view_as_primary(&chosen);
    }

    /// The new primary installs the chosen log, takes its suffix into its pipeline and sends
    /// start_view.
    fn start_view_as_primary(&mut self, chosen: &Chosen) {
        self.install_log_suffix(&chosen.log.entries);
        assert_eq!(self.log.op(), chosen.log.op.max(self.commit));
        self.op_verified = self.log.op();
        self.status = Status::Normal(Role::Primary(Primary {
            heartbeat_at: self.tick + self.config.heartbeat_ticks,
            reads: super::reads::Reads::new(self.log.op()),
            ..Primary::default()
        }));
        self.last_normal_view = self.view;
        self.commit_max = chosen.commit_max.max(self.commit);
        self.persist_view_state(false);
        self.inherit_pipeline();
        self.stats.view_changes += 1;
        if chosen.commit_min < self.commit {
            crate::mark!(StartViewFromQuorumMinCommit);
        }
        self.send_start_view_from(chosen.commit_min, None);
        let (view, op) = (self.view, self.log.op());
        self.after_durable(Deferred::PrimaryDurable { view, op });
        self.execute_committed();
    }

    /// Replaces the log after the commit number with `entries` (those after it).
    /// Whether the entries after our commit number continue our committed prefix as one chain.
    fn continues_log(&self, entries: &[Entry]) -> bool {
        let mut parent = None;
        for entry in entries.iter().filter(|entry| entry.op > self.commit) {
            let expected = match parent {
                None => self.log.checksum(entry.op - 1),
                Some(checksum) => Some(checksum),
            };
            if expected != Some(entry.parent) {
                return false;
            }
            parent = Some(entry.checksum);
        }
        true
    }

    /// Entries we already hold are kept, never truncated and written again: a crash between
    /// the truncate and the appends would lose entries this replica voted for.
    fn install_log_suffix(&mut self, entries: &[Entry]) {
        let commit = self.commit;
        let mut end = commit;
        for entry in entries.iter().filter(|entry| entry.op > commit) {
            if self.log.checksum(entry.op) == Some(entry.checksum) {
                crate::mark!(ViewChangeKeepsHeldEntries);
                end = entry.op;
                continue;
            }
            if self.log.op() > end {
                crate::mark!(ViewChangeReplacesDivergentSuffix);
                self.log.truncate(end);
                self.persist(Write::Truncate { op: end });
            }
            if !self.log.connects(entry) {
                break;
            }
            self.log.append(entry.clone());
            self.persist(Write::Append(entry.clone()));
            end = entry.op;
        }
        // Our entries past the chosen log are not in it, so they were never committed.
        if self.log.op() > end {
            crate::mark!(ViewChangeTruncatesBeyondChosenLog);
            self.log.truncate(end);
            self.persist(Write::Truncate { op: end });
        }
    }

    fn send_start_view(&mut self, to: Option<ReplicaIndex>) {
        self.send_start_view_from(self.commit, to);
    }

    /// Sends start_view with the log after `from_commit` (bounded by the pipeline).
    fn send_start_view_from(&mut self, from_commit: Op, to: Option<ReplicaIndex>) {
        let from = from_commit
            .max(self.log.base_op())
            .max(self.committed_suffix_start());
        let message = Message::StartView(StartView {
            view: self.view,
            op: self.log.op(),
            commit: self.commit_max,
            entries: self.log.range(from + 1, self.log.op()),
        });
        match to {
            Some(to) => self.send_after_durable(to, message),
            None => self.broadcast_after_durable(&message),
        }
    }

    /// How far back before the commit number a start_view reaches: at most a pipeline of
    /// committed entries, by count and by bytes, to spare lagging backups a state transfer.
    fn committed_suffix_start(&self) -> Op {
        let mut from = self.commit;
        let mut size = 0;
        while from > self.log.base_op() && self.commit - from < self.config.pipeline_ops_max() {
            let entry = self
                .log
                .get(from)
                .expect("the log holds ops after its base");
            size += crate::wire::entry_size(entry);
            if size > self.config.pipeline_size_max() {
                break;
            }
            from -= 1;
        }
        from
    }

    pub(super) fn on_start_view(&mut self, message: StartView) {
        let StartView {
            view,
            op,
            commit,
            entries,
        } = message;
        let complete = self.is_normal() && self.last_normal_view == view;
        if view < self.view || (view == self.view && complete) {
            crate::mark!(StartViewStaleIgnored);
            return;
        }
        if !self.view_within_reach(view) {
            self.drop_view_too_far_ahead();
            return;
        }
        self.view = view;
        self.become_backup(Some(op));
        self.state_request = None;
        self.commit_max = self.commit;
        self.op_verified = self.commit;
        // The view's log replaces ours only where it differs: our suffix may hold committed
        // ops we voted for, and the start_view's suffix may not reach back to our commit.
        let _ = self.merge_entries(&entries);
        if entries
            .first()
            .is_some_and(|first| first.op > self.commit + 1 && self.op_verified >= first.op)
        {
            crate::mark!(StartViewKeepsOwnEntries);
        }
        self.persist_view_state(false);
        let _ = self.maybe_complete_view();
        self.reset_view_change_timeout();
        self.vote_for_log();
        self.advance_commit(commit);
        if self.op_verified < op {
            crate::mark!(StartViewIncompleteRequestsState);
            self.request_state();
        }
    }

    /// Learns of `view` from its primary's normal-operation message (VRR §5.2). Unlike the
    /// paper, the log is not truncated to the commit number: a suffix this replica voted for may
    /// hold committed ops, and dropping them could let a later view change lose them. Only the
    /// committed prefix counts as the view's log until the primary's entries verify the rest.
    pub(super) fn adopt_view(&mut self, view: View) {
        assert!(view >= self.view);
        self.view = view;
        // The log length of the view's start is unknown: the first entry of this view, or the
        // primary's state, completes it.
        self.become_backup(None);
        self.state_request = None;
        self.commit_max = self.commit;
        self.op_verified = self.commit;
        self.persist_view_state(false);
        self.request_state();
    }

    pub(super) fn tick_view_change(&mut self) {
        let tick = self.tick;
        let retry_ticks = self.config.retry_ticks;
        let index = self.index;
        let view_change = self.view_change_mut().expect("in view change");
        if tick >= view_change.deadline {
            let peers_moving = view_change.peers_moving(index);
            if let Some(next) = self.next_view(peers_moving) {
                crate::mark!(ViewChangeTimesOut);
                self.start_view_change(next);
                return;
            }
            // The last view, or above the view jump bound with no peer moving on: stay, keep
            // asking, and look again after another timeout.
            let timeout = self.config.view_change_timeout_ticks;
            let deadline = tick + timeout * 2 + self.jitter(timeout * 2);
            self.view_change_mut().expect("in view change").deadline = deadline;
        }
        let view_change = self.view_change_mut().expect("in view change");
        if tick < view_change.resend_at {
            return;
        }
        view_change.resend_at = tick + retry_ticks;
        let resend_do_view_change = view_change.do_view_change_sent;
        self.broadcast(&Message::StartViewChange(StartViewChange {
            view: self.view,
        }));
        if resend_do_view_change && self.config.primary(self.view) != self.index {
            self.send_do_view_change();
        }
    }

    /// The new primary received the committed entries it was missing.
    pub(super) fn on_view_change_state_installed(&mut self) {
        if let Some(view_change) = self.view_change_mut() {
            view_change.awaiting_state = false;
            self.try_complete_view_change();
        }
    }

    /// Enters normal status in the current view as a backup that must reach `start_view_op`
    /// (None if unknown) before its log is the view's whole log.
    fn become_backup(&mut self, start_view_op: Option<Op>) {
        assert!(!self.leads_view());
        self.status = Status::Normal(Role::Backup(Backup { start_view_op }));
    }
}
