//! Normal operation: request → prepare → prepare_ok → commit, and commit heartbeats.
//!
//! The primary appends a client request to its log, persists it and sends prepare to every
//! backup. A backup appends prepares strictly in op order (the hash chain must connect), and
//! answers prepare_ok once the entry is durable. The primary commits an op once f+1 replicas,
//! itself included only after its own write is durable, hold it; it then executes and replies.
//! A backup that sees a gap asks for the missing entries at once (state transfer).

use super::{Deferred, Replica, Status};
use crate::command::Write;
use crate::config::OPERATION_SIZE_MAX;
use crate::message::{ClientId, Entry, Message, Operation, ReplyResult, Sender};
use crate::state_machine::{Codec, StateMachine};

/// An op the primary prepared and has not committed yet.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Bit i set: replica i holds the op durably.
    votes: u16,
    sent_tick: u64,
}

impl<S: StateMachine> Replica<S> {
    pub(super) fn on_request(&mut self, client: ClientId, message: Message) {
        let Message::Request {
            session,
            request,
            operation,
            body,
        } = message
        else {
            unreachable!("dispatch sends only requests here")
        };
        if !matches!(self.status, Status::Normal) || !self.is_primary() {
            return; // The client will try the others.
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
        if operation == Operation::Register {
            // A resent or delayed register of a live session: never a second session.
            if let Some(table) = self.client_table.get(client)
                && request <= table.request
            {
                if request == table.request {
                    let (op, result) = (table.reply_op, table.reply.clone());
                    self.reply(client, op, request, result);
                }
                return;
            }
        }
        if operation == Operation::StateMachine {
            match self.client_table.get(client) {
                Some(table) if table.session == session => {
                    if request < table.request {
                        return;
                    }
                    if request == table.request && !cfg!(feature = "bug-skip-dedup") {
                        let (op, result) = (table.reply_op, table.reply.clone());
                        self.reply(client, op, request, result);
                        return;
                    }
                }
                // An uncommitted register of this client may be in the log (after a view
                // change): wait for it rather than call the session gone.
                _ if self.register_pending(client) => return,
                _ => {
                    self.reply(client, 0, request, ReplyResult::SessionEvicted);
                    return;
                }
            }
        }
        if self.is_in_pipeline(client, request) {
            return;
        }
        let queued = self.request_queue.iter().any(|(sender, queued)| {
            *sender == Sender::Client(client)
                && matches!(queued, Message::Request { request: r, .. } if *r == request)
        });
        if queued {
            return;
        }
        let message = Message::Request {
            session,
            request,
            operation,
            body,
        };
        if self.pipeline_full() {
            // Each session has at most one request outstanding, so a queue as long as the
            // client table holds every legitimate request; beyond that a client misbehaves.
            if self.request_queue.len() < self.config.clients_max {
                self.request_queue
                    .push_back((Sender::Client(client), message));
            } else {
                self.stats.messages_dropped += 1;
            }
            return;
        }
        self.prepare(client, message);
    }

    /// Whether an uncommitted register of `client` is in the log.
    fn register_pending(&self, client: ClientId) -> bool {
        (self.commit + 1..=self.log.op()).any(|op| {
            let entry = self.log.get(op).expect("uncommitted ops are in the log");
            entry.client == client && entry.operation == Operation::Register
        })
    }

    fn is_in_pipeline(&self, client: ClientId, request: u64) -> bool {
        self.pipeline.keys().any(|&op| {
            let entry = self.log.get(op).expect("pipeline ops are in the log");
            entry.client == client && entry.request == request
        })
    }

    fn pipeline_full(&self) -> bool {
        self.log.op() - self.commit >= self.config.pipeline_max
    }

    fn prepare(&mut self, client: ClientId, message: Message) {
        let Message::Request {
            session,
            request,
            operation,
            body,
        } = message
        else {
            unreachable!("only requests are prepared")
        };
        assert!(matches!(self.status, Status::Normal) && self.is_primary());
        let op = self.log.op() + 1;
        let parent = self.log.head_checksum();
        let entry = Entry::new(
            op, self.view, parent, client, session, request, operation, body,
        );
        self.append_as_primary(entry);
    }

    /// Appends an entry the primary created, persists it and sends it to the backups.
    pub(super) fn append_as_primary(&mut self, entry: Entry) {
        let op = entry.op;
        self.pipeline.insert(op, Prepared::new(self.tick));
        self.log.append(entry.clone());
        self.op_verified = op;
        self.persist(Write::Append(entry.clone()));
        let message = Message::Prepare {
            view: self.view,
            commit: self.commit,
            entry,
        };
        self.broadcast(&message);
        self.heartbeat_at = self.tick + self.config.heartbeat_ticks;
        self.after_durable(Deferred::PrimaryDurable {
            view: self.view,
            op,
        });
    }

    pub(super) fn on_prepare_ok(&mut self, from: u8, view: u64, op: u64, checksum: u128) {
        if view != self.view || !matches!(self.status, Status::Normal) || !self.is_primary() {
            return;
        }
        if self.log.checksum(op) != Some(checksum) {
            return;
        }
        self.on_prepare_ok_votes(from, op);
    }

    /// Replica `from` durably holds every op up to `op`.
    pub(super) fn on_prepare_ok_votes(&mut self, from: u8, op: u64) {
        for (_, prepared) in self.pipeline.range_mut(..=op) {
            prepared.votes |= 1 << from;
        }
        self.commit_pipeline();
    }

    fn commit_pipeline(&mut self) {
        let quorum = if cfg!(feature = "bug-commit-without-quorum") {
            1
        } else {
            self.config.quorum()
        };
        while let Some((&op, prepared)) = self.pipeline.first_key_value() {
            if (prepared.votes.count_ones() as usize) < quorum {
                break;
            }
            self.pipeline.pop_first();
            self.commit_max = self.commit_max.max(op);
        }
        self.execute_committed();
        while !self.pipeline_full() {
            let Some((Sender::Client(client), message)) = self.request_queue.pop_front() else {
                break;
            };
            self.on_request(client, message);
        }
    }

    pub(super) fn tick_primary(&mut self) {
        if self.tick >= self.heartbeat_at {
            self.heartbeat_at = self.tick + self.config.heartbeat_ticks;
            self.broadcast(&Message::Commit {
                view: self.view,
                commit: self.commit,
            });
        }
        let retry = self.config.prepare_retry_ticks;
        let due: Vec<(u64, u16)> = self
            .pipeline
            .iter()
            .filter(|(_, prepared)| prepared.sent_tick + retry <= self.tick)
            .map(|(&op, prepared)| (op, prepared.votes))
            .collect();
        for (op, votes) in due {
            let entry = self
                .log
                .get(op)
                .expect("pipeline ops are in the log")
                .clone();
            let message = Message::Prepare {
                view: self.view,
                commit: self.commit,
                entry,
            };
            for to in self.others() {
                if votes & (1 << to) == 0 {
                    self.send(to, message.clone());
                }
            }
            self.pipeline.get_mut(&op).expect("due op").sent_tick = self.tick;
        }
    }

    pub(super) fn tick_backup(&mut self) {
        if self.tick >= self.view_change_timeout_at {
            self.start_view_change(self.view + 1);
        }
    }

    /// A prepare from `view`'s primary.
    pub(super) fn on_prepare(&mut self, view: u64, commit: u64, entry: Entry) {
        if !self.accept_from_primary(view) {
            return;
        }
        if self.merge_entries(std::slice::from_ref(&entry)).is_some() {
            // Appended, or a retry of an entry we hold: (re)vote for our verified log.
            let _ = self.maybe_complete_view();
            self.vote_for_log();
        } else {
            // A gap, or our suffix is not this view's: fetch the primary's log after what we
            // know to be this view's. Nothing is truncated here: our suffix may hold committed
            // ops we voted for, and only entries of this view's log may replace them.
            self.request_state();
        }
        self.advance_commit(commit);
    }

    pub(super) fn on_commit(&mut self, view: u64, commit: u64) {
        if self.accept_from_primary(view) {
            self.advance_commit(commit);
        }
    }

    /// Filters a normal-operation message from `view`'s primary; adopts a newer view.
    fn accept_from_primary(&mut self, view: u64) -> bool {
        if view < self.view || (view == self.view && self.is_primary()) {
            return false;
        }
        if view > self.view || !matches!(self.status, Status::Normal) {
            self.adopt_view(view);
        }
        self.reset_view_change_timeout();
        true
    }

    /// The current view's primary says ops up to `commit` are committed.
    pub(super) fn advance_commit(&mut self, commit: u64) {
        self.commit_max = self.commit_max.max(commit);
        self.execute_committed();
        if self.commit_max > self.op_verified {
            self.request_state();
        }
    }
}

impl Prepared {
    pub(crate) fn new(tick: u64) -> Self {
        Self {
            votes: 0,
            sent_tick: tick,
        }
    }
}
