//! Normal operation: request → prepare → prepare_ok → commit, and commit heartbeats.
//!
//! The primary appends a client request to its log, persists it and sends prepare to every
//! backup. A backup appends prepares strictly in op order (the hash chain must connect), and
//! answers prepare_ok once the entry is durable. The primary commits an op once f+1 replicas,
//! itself included only after its own write is durable, hold it; it then executes and replies.
//! A backup that sees a gap asks for the missing entries at once (state transfer).

use super::pipeline::{Batch, Pipeline, Queued};
use super::reads::Reads;
use super::{Deferred, Replica};
use crate::command::Write;
use crate::config::OPERATION_SIZE_MAX;
use crate::message::{
    ClientId, Commit, Entry, Message, Operation, Prepare, PrepareOk, ReplyResult, Request,
};
use crate::numbers::{EntryChecksum, Op, View};
use crate::state_machine::{Codec, StateMachine};
use crate::wire::ENTRY_HEADER_SIZE;

/// The state only the primary of a view keeps.
#[derive(Debug, Default)]
pub struct Primary {
    /// Prepares in flight, their votes, and the requests waiting for room.
    pub(super) pipeline: Pipeline,
    /// The tick at which an idle primary sends its next commit heartbeat.
    pub(super) heartbeat_at: u64,
    /// Queries waiting for a quorum to confirm the view (see `reads.rs`); boxed, so that a
    /// backup's status is not as large as a primary's.
    pub(super) reads: Box<Reads>,
}

/// The state only a backup keeps.
#[derive(Debug, Default)]
pub struct Backup {
    /// Before the log holds the whole log the view started with: the op it must reach (None
    /// if unknown). Until then `last_normal_view` stays behind `view`, and the replica casts
    /// no prepare_ok: a do_view_change must never present a partial log as the log of a view.
    pub(super) start_view_op: Option<Op>,
}

impl<S: StateMachine> Replica<S> {
    pub(super) fn on_request(&mut self, client: ClientId, message: Request) {
        let Request {
            session,
            request,
            operation,
            body,
        } = message;
        if !self.is_primary() {
            self.redirect(client, request);
            return;
        }
        let valid = match operation {
            Operation::Register => session == 0 && body.is_empty(),
            Operation::StateMachine => {
                body.len() <= OPERATION_SIZE_MAX && S::Operation::decode(&body).is_ok()
            }
            Operation::Noop => false,
        };
        if !valid || client == 0 {
            self.stats.messages_dropped += 1;
            return;
        }
        if self.answered_by_client_table(client, session, request, operation) {
            return;
        }
        if self.status.pipeline().contains(client, request) {
            crate::mark!(RequestResendInPipeline);
            return; // A resend of a request already prepared or waiting.
        }
        // Each session has at most one request outstanding, so a queue as long as the client
        // table holds every legitimate request; beyond that a client misbehaves.
        if self.status.pipeline().queue_len() >= self.config.clients_max {
            crate::mark!(RequestQueueFullDropped);
            self.stats.messages_dropped += 1;
            return;
        }
        if self.status.pipeline().prepares() >= self.config.pipeline_max as usize {
            crate::mark!(RequestQueuedPipelineFull);
        }
        self.status.pipeline().enqueue(Queued {
            client,
            session,
            request,
            operation,
            body,
        });
        self.prepare_queued();
    }

    /// Whether the client table settles `client`'s request before it reaches the pipeline: a
    /// duplicate answered from the cached reply, an old one dropped, a session unknown (evicted,
    /// or its register not yet committed).
    fn answered_by_client_table(
        &mut self,
        client: ClientId,
        session: u64,
        request: u64,
        operation: Operation,
    ) -> bool {
        if operation == Operation::Register {
            // A resent or delayed register of a live session: never a second session.
            if let Some(table) = self.client_table.get(client)
                && request <= table.request
            {
                if request == table.request {
                    crate::mark!(RequestRegisterDuplicateAnswered);
                    let (op, result) = (table.reply_op, table.reply.clone());
                    self.reply(client, op, request, result);
                } else {
                    crate::mark!(RequestRegisterOldDropped);
                }
                return true;
            }
        }
        if operation == Operation::StateMachine {
            match self.client_table.get(client) {
                Some(table) if table.session == session => {
                    if request < table.request {
                        crate::mark!(RequestOldDropped);
                        return true;
                    }
                    if request == table.request && !crate::bug!(SkipDedup) {
                        crate::mark!(RequestDuplicateAnswered);
                        let (op, result) = (table.reply_op, table.reply.clone());
                        self.reply(client, op, request, result);
                        return true;
                    }
                }
                // An uncommitted register of this client may be in the log (after a view
                // change): wait for it rather than call the session gone.
                _ if self.register_pending(client) => {
                    crate::mark!(RequestWaitsForPendingRegister);
                    return true;
                }
                _ => {
                    crate::mark!(RequestSessionEvicted);
                    self.reply(client, Op(0), request, ReplyResult::SessionEvicted);
                    return true;
                }
            }
        }
        false
    }

    /// Whether an uncommitted register of `client` is in the log.
    fn register_pending(&self, client: ClientId) -> bool {
        self.commit.next().through(self.log.op()).any(|op| {
            let entry = self.log.get(op).expect("uncommitted ops are in the log");
            entry.client == client && entry.operation == Operation::Register
        })
    }

    /// Prepares waiting requests while the pipeline has room, each prepare a batch.
    pub(super) fn prepare_queued(&mut self) {
        while self.status.pipeline().queue_len() > 0
            && self.status.pipeline().prepares() < self.config.pipeline_max as usize
            && self.has_next_op()
        {
            self.prepare_batch();
        }
    }

    /// Appends the longest batch of waiting requests that fits one prepare, and sends it.
    fn prepare_batch(&mut self) {
        assert!(self.is_primary());
        let mut entries = Vec::new();
        let mut batch = Batch::new(self.config.batch_max);
        loop {
            let room = self.has_next_op();
            let Some(queued) = self.status.pipeline().queue_front() else {
                break;
            };
            if !room || !batch.take(ENTRY_HEADER_SIZE + queued.body.len()) {
                break;
            }
            let queued = self.status.pipeline().dequeue().expect("checked");
            let entry = Entry {
                op: self.log.op().next(),
                view: self.view,
                parent: self.log.head_checksum(),
                client: queued.client,
                session: queued.session,
                request: queued.request,
                operation: queued.operation,
                body: queued.body,
                checksum: EntryChecksum(0),
            }
            .sealed();
            self.log.append(entry.clone());
            self.persist(Write::Append(entry.clone()));
            entries.push(entry);
        }
        let (first, last) = (entries[0].op, self.log.op());
        self.stats.prepares += 1;
        self.stats.ops_prepared += entries.len() as u64;
        self.stats.prepares_batched += u64::from(entries.len() > 1);
        if entries.len() > 1 {
            crate::mark!(PrepareBatchesSeveralOps);
        }
        self.op_verified = last;
        self.status.pipeline().push(first, last, self.tick);
        if crate::bug!(PrimaryVotesBeforeDurable) {
            self.status.pipeline().vote(self.index, last);
        }
        let round = self.read_round_for_prepare();
        let message = Message::Prepare(Prepare {
            view: self.view,
            commit: self.commit,
            entries,
            round,
        });
        self.broadcast(&message);
        let heartbeat_at = self.tick + self.config.heartbeat_ticks;
        self.status
            .primary_mut()
            .expect("asserted above")
            .heartbeat_at = heartbeat_at;
        self.after_durable(Deferred::PrimaryDurable {
            view: self.view,
            op: last,
        });
    }

    /// A new primary takes over the ops after its commit number as prepares in flight, split
    /// as the batch bounds require, so that retries resend them within those bounds. Requests
    /// of ops not yet known committed are tracked (committing untracks them).
    pub(super) fn inherit_pipeline(&mut self) {
        let mut op = self.commit + 1;
        while op <= self.log.op() {
            let first = op;
            let mut batch = Batch::new(self.config.batch_max);
            while let Some(entry) = self.log.get(op) {
                if !batch.take(crate::wire::entry_size(entry)) {
                    break;
                }
                if entry.operation != Operation::Noop && op > self.commit_max {
                    self.status.pipeline().track(entry.client, entry.request);
                }
                op += 1;
            }
            self.status.pipeline().push(first, op - 1, self.tick);
            crate::mark!(PrimaryInheritsPrepares);
        }
    }

    pub(super) fn on_prepare_ok(&mut self, from: u8, message: PrepareOk) {
        let PrepareOk { view, op, checksum } = message;
        if view != self.view || !self.is_primary() {
            crate::mark!(PrepareOkOldViewIgnored);
            return;
        }
        if self.log.checksum(op) != Some(checksum) {
            crate::mark!(PrepareOkEntryNotHeldIgnored);
            return;
        }
        self.on_prepare_ok_votes(from, op);
    }

    /// Replica `from` durably holds every op up to `op`.
    pub(super) fn on_prepare_ok_votes(&mut self, from: u8, op: Op) {
        self.status.pipeline().vote(from, op);
        self.commit_pipeline();
    }

    fn commit_pipeline(&mut self) {
        let quorum = if crate::bug!(CommitWithoutQuorum) {
            1
        } else {
            self.config.quorum()
        };
        let committed = self
            .status
            .pipeline()
            .quorum_op(self.config.replica_count, quorum)
            .min(self.log.op());
        if committed > self.commit_max {
            for op in self.commit_max.next().through(committed) {
                let entry = self.log.get(op).expect("pipeline ops are in the log");
                self.status.pipeline().untrack(entry.client, entry.request);
            }
            self.commit_max = committed;
        }
        self.status.pipeline().pop_committed(self.commit_max);
        self.execute_committed();
        self.answer_reads();
        self.prepare_queued();
    }

    pub(super) fn tick_primary(&mut self) {
        let (tick, heartbeat_ticks) = (self.tick, self.config.heartbeat_ticks);
        let primary = self
            .status
            .primary_mut()
            .expect("dispatched to the primary");
        if tick >= primary.heartbeat_at {
            primary.heartbeat_at = tick + heartbeat_ticks;
            self.broadcast(&Message::Commit(Commit {
                view: self.view,
                commit: self.commit,
                round: 0,
            }));
        }
        self.tick_reads();
        let Some(sent_before) = self.tick.checked_sub(self.config.prepare_retry_ticks) else {
            return;
        };
        for (first, last) in self.status.pipeline().take_due(sent_before, self.tick) {
            let message = Message::Prepare(Prepare {
                view: self.view,
                commit: self.commit,
                entries: self.log.range(first, last),
                round: 0,
            });
            for to in self.others() {
                if !self.status.pipeline().has_voted(to, last) {
                    self.send(to, message.clone());
                }
            }
        }
    }

    pub(super) fn tick_backup(&mut self) {
        if self.tick >= self.view_change_timeout_at {
            self.leave_view();
        } else if self.commit_stalled() {
            crate::mark!(BackupLeavesStalledPrimary);
            self.stats.primary_stalls += 1;
            self.leave_view();
        }
    }

    /// A backup gives up on its view's primary: it starts a view change to the next view, or,
    /// in the last view a message can carry, stays and waits a timeout more.
    fn leave_view(&mut self) {
        match self.next_view(true) {
            Some(next) => self.start_view_change(next),
            None => {
                self.reset_view_change_timeout();
                self.progress.2 = self.tick;
            }
        }
    }

    /// Whether this backup has held ops of its view's log for two view-change timeouts
    /// without the primary committing any: a primary still heard from (its heartbeats and
    /// retries reset the view-change timeout) may be unable to hear its backups, and would
    /// otherwise keep the view forever without progress. What counts is the commit number the
    /// primary announces, not the one this backup knows: a backup may know its ops committed
    /// (it committed them as an earlier primary, or learned it by state transfer) while the
    /// primary, which took them into its view uncommitted, waits for votes it cannot hear.
    fn commit_stalled(&mut self) -> bool {
        let (view, commit, since) = self.progress;
        if view != self.view || self.op_verified <= commit {
            self.progress.2 = self.tick;
            return false;
        }
        self.tick >= since + 2 * self.config.view_change_timeout_ticks
    }

    /// The current view's primary announced `commit`; a higher one (or a new view) restarts
    /// the stall clock. Replays of older messages carry lower numbers and change nothing.
    fn primary_announced_commit(&mut self, commit: Op) {
        let (view, known, _) = self.progress;
        if view != self.view || commit > known {
            self.progress = (self.view, commit, self.tick);
        }
    }

    /// A prepare from `view`'s primary.
    pub(super) fn on_prepare(&mut self, message: Prepare) {
        let Prepare {
            view,
            commit,
            entries,
            round,
        } = message;
        if !self.accept_from_primary(view) {
            return;
        }
        self.confirm_round(view, round);
        let first_write = self.seq_next;
        if self.merge_entries(&entries).is_some() {
            // Appended, or a retry of an entry we hold: (re)vote for our verified log.
            let _ = self.maybe_complete_view();
            if crate::bug!(BatchVoteEarly) && self.seq_next > first_write + 1 {
                self.vote_for_log_at(first_write);
            }
            self.vote_for_log();
        } else {
            // A gap, or our suffix is not this view's: fetch the primary's log after what we
            // know to be this view's. Nothing is truncated here: our suffix may hold committed
            // ops we voted for, and only entries of this view's log may replace them.
            crate::mark!(PrepareGapRequestsState);
            self.request_state();
        }
        self.primary_announced_commit(commit);
        self.advance_commit(commit);
    }

    pub(super) fn on_commit(&mut self, message: Commit) {
        let Commit {
            view,
            commit,
            round,
        } = message;
        if self.accept_from_primary(view) {
            self.confirm_round(view, round);
            self.primary_announced_commit(commit);
            self.advance_commit(commit);
        }
    }

    /// Filters a normal-operation message from `view`'s primary; adopts a newer view.
    fn accept_from_primary(&mut self, view: View) -> bool {
        if crate::bug!(TimeoutResetByOldView) && self.is_normal() {
            self.reset_view_change_timeout();
        }
        if view < self.view || (view == self.view && self.leads_view()) {
            crate::mark!(PrimaryMessageOldViewDropped);
            return false;
        }
        if !self.view_within_reach(view) {
            self.drop_view_too_far_ahead();
            return false;
        }
        if view > self.view || !self.is_normal() {
            if view > self.view {
                crate::mark!(AdoptViewFromPrimaryMessage);
            } else {
                crate::mark!(AdoptViewEndsViewChange);
            }
            self.adopt_view(view);
        }
        self.reset_view_change_timeout();
        true
    }

    /// The current view's primary says ops up to `commit` are committed. A number too far
    /// ahead of the log is dropped (see [`super::bounds`]); what the log already allows still
    /// executes.
    pub(super) fn advance_commit(&mut self, commit: Op) {
        if self.op_within_reach(commit) {
            self.commit_max = self.commit_max.max(commit);
        } else {
            self.drop_too_far_ahead();
        }
        self.execute_committed();
        if self.commit_max > self.op_verified {
            crate::mark!(CommitBeyondLogRequestsState);
            self.request_state();
        }
    }
}
