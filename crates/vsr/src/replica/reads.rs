//! Reads: queries the primary answers from its state, with no log entry and no write.
//!
//! A primary may answer a read from its own state only while it still leads its view: a primary
//! cut off from its backups may have been replaced by a new view whose primary already
//! committed writes it never saw. Leases would need bounded clocks; this is the ReadIndex way
//! (Viewstamped Replication Revisited §6.3 states the problem), which needs none:
//!
//! 1. A read that arrives waits for the next *read round*. Rounds are numbered in increasing
//!    order per replica; the primary starts one by putting its number on a commit (at once,
//!    when no round is in flight) or on a prepare (any prepare sent while reads wait), so a
//!    busy primary's rounds ride on the prepares it sends anyway.
//! 2. A backup in normal status in the primary's view answers any prepare or commit that
//!    carries a round with a confirm of that round, at once and without writing anything.
//! 3. Once f backups confirmed a round (the primary is the quorum's f+1-th member), a quorum
//!    was in the primary's view after every read waiting for that round had arrived. A new view
//!    needs a quorum that left this one, and quorums intersect, so no later view had committed
//!    anything when those reads arrived: every write acknowledged before a read began was
//!    committed in this view or an earlier one.
//! 4. Writes of earlier views are all in the log this view started with, so the primary also
//!    waits until that log is committed (`start_op`). It then answers at its current commit
//!    number, which covers every write it acknowledged in this view before the read arrived.
//!
//! One round in flight covers every read that arrived before it was sent; reads that arrive
//! while it flies wait for the next, which starts when it completes. A round that gets no
//! quorum within the prepare retry timeout is superseded by a new one. A primary that leaves
//! its role drops its waiting reads; clients resend (a read changes nothing).

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;

use super::Replica;
use crate::command::Command;
use crate::config::REPLICAS_MAX;
use crate::message::{ClientId, Commit, Confirm, Message, Query, ReplicaIndex, ReplyResult};
use crate::numbers::{Op, View};
use crate::state_machine::{Codec, StateMachine};

/// What a waiting read asks for.
#[derive(Debug)]
enum Wanted {
    /// A state machine query (its encoding, checked on arrival).
    Query(Bytes),
    /// The whole state at the commit number ([`Replica::request_snapshot`]).
    Snapshot,
}

/// A read waiting for its round.
#[derive(Debug)]
struct Waiting {
    client: ClientId,
    request: u64,
    wanted: Wanted,
    /// The round whose confirmation by a quorum lets it be answered.
    round: u64,
    /// The tick it arrived at.
    arrived: u64,
}

/// The primary's reads: the queries waiting and the rounds confirming its view.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// Waiting queries in arrival order (so their rounds never decrease).
    waiting: VecDeque<Waiting>,
    /// The (client, request) of each waiting query: a resend of one is already covered.
    waiting_ids: BTreeSet<(ClientId, u64)>,
    /// The last op of the log the view started with: every op committed in an earlier view is
    /// at or below it.
    start_op: Op,
    /// The last round sent in this view (0: none), and when.
    sent: u64,
    sent_at: u64,
    /// The highest round a quorum confirmed in this view.
    confirmed: u64,
    /// The highest round each replica confirmed in this view.
    confirmed_by: [u64; REPLICAS_MAX],
}

impl Reads {
    /// The reads of a primary whose view started with a log ending at `start_op` (boxed: a
    /// backup's status need not be as large).
    pub(crate) fn new(start_op: Op) -> Box<Self> {
        Box::new(Self {
            start_op,
            ..Self::default()
        })
    }

    /// Queries waiting.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Checks the rounds' order; for the replica's invariants.
    pub(crate) fn assert_valid(&self, round_last: u64) {
        assert!(self.confirmed <= self.sent && self.sent <= round_last);
        assert_eq!(
            self.waiting_ids.len(),
            self.waiting.len(),
            "a waiting read untracked"
        );
        let mut previous = 0;
        for waiting in &self.waiting {
            assert!(waiting.round >= previous, "reads out of round order");
            assert!(
                waiting.round <= round_last + 1,
                "a read waits for a round beyond the next"
            );
            previous = waiting.round;
        }
    }
}

impl<S: StateMachine> Replica<S> {
    /// A query from `client`: a primary queues it for the next round; any other replica tells
    /// the client which view it is in, so the client finds the primary in one round trip.
    pub(super) fn on_query(&mut self, client: ClientId, query: Query) {
        let Query { request, body } = query;
        if !self.is_primary() {
            self.redirect(client, request);
            return;
        }
        // Decoding bounded the body's size already.
        if client == 0 || S::Query::decode(&body).is_err() {
            self.stats.messages_dropped += 1;
            return;
        }
        self.queue_read(client, request, Wanted::Query(body));
    }

    /// Asks for the whole state at the commit number, as a read: once a quorum confirmed this
    /// primary's view after the request, [`Command::Snapshot`] hands it to the driver for
    /// `client`. Returns `false` (and does nothing) unless this replica is the primary of its
    /// view in normal status; a primary that leaves its role drops the request, as its reads.
    ///
    /// [`Command::Snapshot`]: crate::Command::Snapshot
    pub fn request_snapshot(&mut self, client: ClientId, request: u64) -> bool {
        if !self.is_primary() || client == 0 {
            return false;
        }
        self.queue_read(client, request, Wanted::Snapshot);
        true
    }

    fn queue_read(&mut self, client: ClientId, request: u64, wanted: Wanted) {
        let clients_max = self.config.clients_max;
        let alone = self.config.faults_max() == 0;
        let round = self.round_last + 1;
        let arrived = self.tick;
        let reads = self.reads_mut();
        if reads.waiting_ids.contains(&(client, request)) {
            // A resend: the copy waiting arrived earlier, so its round covers this one too.
            crate::mark!(ReadResendWaiting);
            return;
        }
        // Each client waits for one answer at a time; beyond that a client misbehaves.
        if reads.waiting.len() >= clients_max {
            crate::mark!(ReadQueueFullDropped);
            self.stats.messages_dropped += 1;
            return;
        }
        // A lone replica is a quorum by itself: no round to wait for.
        let round = if alone || crate::bug!(ReadWithoutConfirm) {
            reads.confirmed
        } else {
            round
        };
        reads.waiting_ids.insert((client, request));
        reads.waiting.push_back(Waiting {
            client,
            request,
            wanted,
            round,
            arrived,
        });
        self.stats.reads += 1;
        self.answer_reads();
        self.start_read_round();
    }

    /// A replica that is not the primary of its view answers a request or query with its view,
    /// unless it is recovering (its view may be far behind, and it takes part in nothing).
    pub(super) fn redirect(&mut self, client: ClientId, request: u64) {
        if matches!(self.status, super::Status::Recovering(_)) {
            crate::mark!(DropWhileRecovering);
            return;
        }
        crate::mark!(RequestNotPrimaryRedirected);
        self.reply(client, Op(0), request, ReplyResult::NotPrimary);
    }

    fn reads_mut(&mut self) -> &mut Reads {
        &mut self
            .status
            .primary_mut()
            .expect("only the primary of the view has reads")
            .reads
    }

    /// Starts a read round with a commit if reads wait for one and none is in flight, or the
    /// one in flight is overdue.
    pub(super) fn start_read_round(&mut self) {
        let (tick, retry) = (self.tick, self.config.prepare_retry_ticks);
        let reads = self.reads_mut();
        let Some(newest) = reads.waiting.back().map(|read| read.round) else {
            return;
        };
        let in_flight = reads.sent > reads.confirmed;
        let overdue = in_flight && tick >= reads.sent_at + retry;
        // Nothing to do when every read is covered by a round confirmed (it waits for the
        // view's start) or by the round in flight, unless that round is overdue.
        if newest <= reads.confirmed || (in_flight && !overdue) {
            return;
        }
        if overdue {
            crate::mark!(ReadRoundRetried);
        }
        let round = self.take_read_round();
        let message = Message::Commit(Commit {
            view: self.view,
            commit: self.commit,
            round,
        });
        self.broadcast(&message);
    }

    /// The round a prepare about to be sent carries: a new one while any read waits for a round
    /// not yet confirmed (the prepare goes out anyway, and its round also covers reads that a
    /// round in flight does not), else 0.
    pub(super) fn read_round_for_prepare(&mut self) -> u64 {
        let reads = self.reads_mut();
        if reads
            .waiting
            .back()
            .is_some_and(|read| read.round > reads.confirmed)
        {
            crate::mark!(ReadRoundOnPrepare);
            self.take_read_round()
        } else {
            0
        }
    }

    fn take_read_round(&mut self) -> u64 {
        self.round_last += 1;
        self.stats.read_rounds += 1;
        let (round, tick) = (self.round_last, self.tick);
        let reads = self.reads_mut();
        reads.sent = round;
        reads.sent_at = tick;
        round
    }

    /// A backup of `view` got a message of that view's primary carrying `round`: it confirms
    /// at once, writing nothing (the confirm speaks of this moment only).
    pub(super) fn confirm_round(&mut self, view: View, round: u64) {
        if round == 0 || view != self.view || !matches!(self.status, super::Status::Normal(_)) {
            return;
        }
        let primary = self.config.primary(view);
        self.send(primary, Message::Confirm(Confirm { view, round }));
    }

    pub(super) fn on_confirm(&mut self, from: ReplicaIndex, confirm: Confirm) {
        let Confirm { view, round } = confirm;
        if view != self.view || !self.is_primary() {
            crate::mark!(ConfirmOtherViewIgnored);
            return;
        }
        if round > self.round_last {
            // Never sent: a faulty peer.
            self.stats.messages_dropped += 1;
            return;
        }
        let faults = self.config.faults_max();
        let reads = self.reads_mut();
        let slot = &mut reads.confirmed_by[usize::from(from)];
        *slot = (*slot).max(round);
        // The primary is one member of the quorum; the f-th highest backup round completes it.
        // Its own slot (and those past the cluster's size) stay 0, so they never rank above a
        // backup's.
        let mut rounds = reads.confirmed_by;
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_round = rounds[faults - 1];
        if quorum_round > reads.confirmed {
            reads.confirmed = quorum_round;
            self.answer_reads();
            self.start_read_round();
        }
    }

    /// Answers the waiting reads whose round a quorum confirmed, once the log the view started
    /// with is committed.
    pub(super) fn answer_reads(&mut self) {
        let commit = self.commit;
        let Some(primary) = self.status.primary_mut() else {
            return;
        };
        let reads = &mut primary.reads;
        let confirmed = reads.confirmed;
        if reads
            .waiting
            .front()
            .is_none_or(|read| read.round > confirmed)
        {
            return;
        }
        if commit < reads.start_op {
            crate::mark!(ReadWaitsForViewStart);
            return;
        }
        loop {
            let reads = &mut self.status.primary_mut().expect("checked above").reads;
            if reads
                .waiting
                .front()
                .is_none_or(|read| read.round > confirmed)
            {
                break;
            }
            let read = reads.waiting.pop_front().expect("checked");
            reads.waiting_ids.remove(&(read.client, read.request));
            match read.wanted {
                Wanted::Query(body) => {
                    let query = S::Query::decode(&body).expect("validated on arrival");
                    let answer = Bytes::from(self.state_machine.query(query).to_bytes());
                    self.reply(
                        read.client,
                        commit,
                        read.request,
                        ReplyResult::Answered(answer),
                    );
                }
                Wanted::Snapshot => {
                    crate::mark!(SnapshotAnswered);
                    let checkpoint = self.checkpoint_at_commit();
                    self.commands.push(Command::Snapshot {
                        client: read.client,
                        request: read.request,
                        view: self.view,
                        checkpoint,
                    });
                }
            }
            self.stats.reads_answered += 1;
        }
    }

    /// Drops every waiting read.
    pub(super) fn drop_reads(&mut self) {
        let reads = self.reads_mut();
        reads.waiting.clear();
        reads.waiting_ids.clear();
    }

    /// Whether the primary's oldest read has waited two view-change timeouts, so that it must
    /// leave its view.
    ///
    /// Such a primary is not hearing a quorum: it may be cut off one way, sending and not
    /// receiving. Its backups still hear its heartbeats, so none of them times out, and with no
    /// write in flight none sees ops stall either; only the primary knows that its reads get no
    /// quorum. Starting a view change is always safe, and the backups that hear it join it.
    pub(super) fn reads_stalled(&mut self) -> bool {
        let Some(since) = self
            .tick
            .checked_sub(2 * self.config.view_change_timeout_ticks)
        else {
            return false;
        };
        let stalled = self
            .reads_mut()
            .waiting
            .front()
            .is_some_and(|read| read.arrived <= since);
        if stalled {
            crate::mark!(PrimaryLeavesUnconfirmedView);
            self.stats.primary_read_stalls += 1;
        }
        stalled
    }
}
