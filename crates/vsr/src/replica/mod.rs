//! A VSR replica: the protocol state and its event handlers.
//!
//! The handlers live in one module per protocol phase: [`normal`] (request, prepare,
//! prepare_ok, commit), [`view_change`] (start_view_change, do_view_change, start_view),
//! [`state_transfer`] (get_state, new_state), [`recovery`] (recovery, recovery_response) and
//! [`client_table`] (at-most-once execution); `bounds` keeps messages from moving a replica
//! to numbers it could not move on from. This module owns the shared state, dispatch,
//! durability ordering and execution of committed entries.
//!
//! Durability: every write leaves as a [`Command::Persist`] with a sequence number. Actions that
//! may only happen once a write is durable (a prepare_ok, the primary's own vote, a message of a
//! view change) wait in `deferred` until the driver reports that sequence number durable.

mod bounds;
mod client_table;
mod invariants;
mod log;
mod normal;
mod pipeline;
mod reads;
mod recovery;
mod state_transfer;
#[cfg(test)]
mod tests;
mod view_change;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::command::{Checkpoint, Command, DurableState, ViewState, Write};
use crate::config::Config;
use crate::message::{
    ClientId, DoViewChange, Entry, Envelope, Message, Operation, PrepareOk, ReplicaIndex, Reply,
    ReplyResult, Sender,
};
use crate::numbers::{EntryChecksum, Op, View};
use crate::snapshot::Snapshot;
use crate::state_machine::{Codec, CodecError, StateMachine};
use crate::wire::{Receiver, Verified};
use client_table::Admission;
pub(crate) use client_table::ClientTable;
use log::Log;
pub use normal::{Backup, Primary};
use pipeline::Pipeline;
use recovery::Recovering;
use state_transfer::{DeltaTransfer, OutgoingTransfer, StateRequest};
use view_change::ViewChange;

/// A replica's status, carrying the data that only that status needs.
#[derive(Debug)]
pub enum Status {
    /// Normal operation in the current view, as its primary or as a backup.
    Normal(Role),
    /// A view change to the current view is in progress.
    ViewChange(ViewChange),
    /// The replica lost its state and is recovering; it takes part in no quorum.
    Recovering(Recovering),
}

/// What a replica in normal status does in its view: the configuration names one primary per
/// view, and every other replica is a backup.
#[derive(Debug)]
pub enum Role {
    /// The view's primary: it orders requests and commits them.
    Primary(Primary),
    /// A backup: it follows the primary's log.
    Backup(Backup),
}

impl Status {
    /// The primary's state, in normal status as the view's primary.
    fn primary_mut(&mut self) -> Option<&mut Primary> {
        match self {
            Status::Normal(Role::Primary(primary)) => Some(primary),
            _ => None,
        }
    }

    /// The backup's state, in normal status as a backup.
    fn backup_mut(&mut self) -> Option<&mut Backup> {
        match self {
            Status::Normal(Role::Backup(backup)) => Some(backup),
            _ => None,
        }
    }

    /// The primary's pipeline. Only code a primary runs asks for it.
    fn pipeline(&mut self) -> &mut Pipeline {
        &mut self
            .primary_mut()
            .expect("only the primary of the view has a pipeline")
            .pipeline
    }
}

/// Counters of protocol events, for tests, the simulator and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// View changes this replica completed as the new primary.
    pub view_changes: u64,
    /// State transfers this replica installed (entries or a delta).
    pub state_transfers: u64,
    /// State transfers installed from a state machine delta.
    pub state_transfers_delta: u64,
    /// Recoveries this replica completed.
    pub recoveries: u64,
    /// Client sessions evicted from the client table.
    pub evictions: u64,
    /// Messages dropped as invalid, misdirected or from another cluster.
    pub messages_dropped: u64,
    /// Of those, messages (or commit numbers in them) dropped because they would move the
    /// replica too far ahead: a view, op or commit number above its jump bound that is not a
    /// single step (see `limits::VIEW_JUMP_MAX` and `limits::OP_JUMP_MAX`).
    pub messages_too_far_ahead: u64,
    /// Ops executed.
    pub ops_executed: u64,
    /// Prepares this replica sent as primary (each a batch of ops).
    pub prepares: u64,
    /// Ops those prepares carried.
    pub ops_prepared: u64,
    /// Prepares that carried more than one op.
    pub prepares_batched: u64,
    /// View changes this replica started as a backup because the primary, though heard
    /// from, committed nothing for two view-change timeouts.
    pub primary_stalls: u64,
    /// View changes this replica started as primary because a read waited two view-change
    /// timeouts without a quorum confirming its view.
    pub primary_read_stalls: u64,
    /// Queries this replica took in as primary.
    pub reads: u64,
    /// Queries it answered (the rest were dropped when it left its role).
    pub reads_answered: u64,
    /// Read rounds it started as primary (each one commit or prepare to every backup, answered
    /// by a confirm from each).
    pub read_rounds: u64,
    /// Checkpoints taken in the background (whole or incremental).
    pub checkpoints: u64,
    /// Of those, the ones reported durable.
    pub checkpoints_durable: u64,
}

/// Increments taken on a whole checkpoint before the next whole one: a restart reads the whole
/// checkpoint and at most this many increments.
pub const CHECKPOINT_INCREMENTS_MAX: u32 = 8;

/// An action that waits until every write issued before it is durable.
#[derive(Debug)]
enum Deferred {
    /// Send a message or reply.
    Send(Box<Command>),
    /// A backup's prepare_ok for `op`, if the log still holds that entry in `view`.
    PrepareOk {
        view: View,
        op: Op,
        checksum: EntryChecksum,
    },
    /// The primary's own vote for every op up to `op`, if still primary of `view`.
    PrimaryDurable { view: View, op: Op },
}

/// A VSR replica of state machine `S`, driven by events; see the crate docs.
#[derive(Debug)]
pub struct Replica<S: StateMachine> {
    config: Config,
    index: ReplicaIndex,
    status: Status,
    view: View,
    last_normal_view: View,
    log: Log,
    /// The log up to this op is known to be the current view's log (or committed): only this
    /// prefix is voted for, served to peers as the view's log, and executed. Entries after it
    /// are kept (they may be committed ops this replica voted for) until entries of the view's
    /// log confirm or replace them.
    op_verified: Op,
    /// The last op executed.
    commit: Op,
    /// The highest op known committed in the current view (may exceed the log).
    commit_max: Op,
    /// The commit number last written to the view state.
    commit_persisted: Op,
    /// The op of the last checkpoint taken (durable, or handed to the driver and not yet
    /// reported durable): the next increment is on it.
    checkpoint_op: Op,
    /// Wire bytes of the entries executed since `checkpoint_op`.
    checkpoint_log_size: usize,
    /// A checkpoint handed over with [`Command::Checkpoint`] and not yet reported durable: no
    /// other starts until it is.
    checkpoint_writing: Option<Op>,
    /// Increments taken since the last whole checkpoint.
    checkpoint_increments: u32,
    state_machine: S,
    client_table: ClientTable,
    prng: Xoshiro256PlusPlus,
    tick: u64,
    seq_next: u64,
    seq_durable: u64,
    deferred: VecDeque<(u64, Deferred)>,
    commands: Vec<Command>,
    /// Wire bytes of the entries executed since the commit number was last persisted.
    commit_unpersisted_size: usize,
    view_change_timeout_at: u64,
    /// A backup's watch over its view's primary: (view, the commit number the primary last
    /// announced, since which tick). A backup that holds ops of the view's log beyond that
    /// number for two view-change timeouts leaves a primary that is heard from but commits
    /// nothing (it may not hear its backups). It outlives status changes: a replica that goes
    /// back to normal status in the same view continues the same watch.
    progress: (View, Op, u64),
    state_request: Option<StateRequest>,
    /// The delta this replica is receiving, if any.
    transfer: Option<DeltaTransfer>,
    /// The deltas this replica is sending, at most one per requester.
    outgoing: BTreeMap<ReplicaIndex, OutgoingTransfer>,
    /// The last read round this replica started as a primary; rounds increase over its whole
    /// life, so a confirm of an older round never completes a newer one.
    round_last: u64,
    stats: ReplicaStats,
}

impl<S: StateMachine> Replica<S> {
    /// A replica of a freshly formatted cluster: view 0, empty log.
    #[must_use]
    pub fn new(config: Config, index: ReplicaIndex, state_machine: S, seed: u64) -> Self {
        Self::start(
            config,
            index,
            state_machine,
            seed,
            &DurableState::default(),
            true,
        )
    }

    /// A replica restarting from its durable state; `state_machine` must be empty.
    ///
    /// It rebuilds the state machine from the checkpoint and the committed entries, then rejoins:
    /// as a backup of its view if it was one, otherwise through a view change. A replica whose
    /// state says it was recovering resumes recovery, and so does one whose storage reported
    /// damage ([`DurableState::damaged`]): protocol-aware repair, never "I never had it".
    #[must_use]
    pub fn open(
        config: Config,
        index: ReplicaIndex,
        state_machine: S,
        seed: u64,
        durable: &DurableState,
    ) -> Self {
        Self::start(config, index, state_machine, seed, durable, false)
    }

    fn start(
        config: Config,
        index: ReplicaIndex,
        state_machine: S,
        seed: u64,
        durable: &DurableState,
        fresh: bool,
    ) -> Self {
        config.validate();
        assert!(index < config.replica_count);
        let view_state = durable.view_state;
        let mut replica = Self {
            prng: Xoshiro256PlusPlus::seed_from_u64(seed ^ (u64::from(index) << 56)),
            config,
            index,
            status: Status::Normal(Role::Backup(Backup::default())),
            view: view_state.view,
            last_normal_view: view_state.last_normal_view,
            log: Log::default(),
            op_verified: Op(0),
            commit: Op(0),
            commit_max: Op(0),
            commit_persisted: view_state.commit,
            checkpoint_op: Op(0),
            checkpoint_log_size: 0,
            checkpoint_writing: None,
            checkpoint_increments: 0,
            state_machine,
            client_table: ClientTable::default(),
            tick: 0,
            seq_next: 1,
            seq_durable: 0,
            deferred: VecDeque::new(),
            commands: Vec::new(),
            commit_unpersisted_size: 0,
            view_change_timeout_at: 0,
            progress: (View(0), Op(0), 0),
            state_request: None,
            transfer: None,
            outgoing: BTreeMap::new(),
            round_last: 0,
            stats: ReplicaStats::default(),
        };
        if replica.leads_view() {
            replica.status = Status::Normal(Role::Primary(Primary::default()));
        }
        let broken = replica.load(durable);
        let start_op = replica.log.op();
        if let Some(primary) = replica.status.primary_mut() {
            primary.reads = reads::Reads::new(start_op);
        }
        replica.rejoin(durable, broken, fresh);
        replica.invariants_constant();
        replica
    }

    /// After loading its durable state, takes its place in the cluster: resumes (or starts, if
    /// its storage is damaged or its log `broken`) recovery, starts a view change when its
    /// in-memory votes mattered, or waits as a backup of its view.
    fn rejoin(&mut self, durable: &DurableState, broken: bool, fresh: bool) {
        let view_state = durable.view_state;
        self.commit_persisted = self.commit_persisted.max(self.commit);
        // A commit number beyond the last op the storage returned proves that committed
        // entries were lost, whatever the storage layer concluded.
        let last_op = durable
            .entries
            .back()
            .map_or(durable.checkpoint_op(), |entry| entry.op);
        let reported = durable.damaged && !crate::bug!(DamagedLogRejoins);
        let damaged = reported || broken || view_state.commit > last_op;
        if view_state.recovering || damaged {
            if view_state.recovering {
                crate::mark!(RestartResumesRecovery);
            } else {
                crate::mark!(RestartDamagedRecovers);
                // A damaged log may have lost entries this replica voted for: it must not vote
                // again until it holds the current primary's log, and a crash during the repair
                // must resume it.
                self.persist_view_state(true);
            }
            self.start_recovery();
        } else if fresh {
            assert_eq!(
                view_state,
                ViewState::default(),
                "a fresh replica has no state"
            );
            self.reset_view_change_timeout();
        } else if self.leads_view() || self.last_normal_view < self.view {
            // In-memory votes are gone: let a view change rebuild them.
            crate::mark!(RestartStartsViewChange);
            match self.next_view(true) {
                Some(next) => self.start_view_change(next),
                // At the last view: its view change is all that is left; a primary keeps it.
                None if self.last_normal_view < self.view => self.start_view_change(self.view),
                None => self.reset_view_change_timeout(),
            }
        } else {
            self.reset_view_change_timeout();
        }
    }

    /// A replica that lost its state (a new or wiped disk): it runs the recovery protocol and
    /// takes part in no quorum until it has recovered. Its storage must already hold
    /// [`DurableState::recovering`], so that a crash during recovery resumes recovery.
    #[must_use]
    pub fn recover(config: Config, index: ReplicaIndex, state_machine: S, seed: u64) -> Self {
        Self::open(
            config,
            index,
            state_machine,
            seed,
            &DurableState::recovering(),
        )
    }

    /// Rebuilds state from storage; returns whether the log was found broken.
    fn load(&mut self, durable: &DurableState) -> bool {
        if let Some(checkpoint) = &durable.checkpoint {
            self.install_snapshot(&checkpoint.snapshot.to_bytes())
                .expect("a durable checkpoint decodes");
            for increment in &durable.increments {
                self.install_snapshot(&increment.snapshot.to_bytes())
                    .expect("a durable increment decodes");
            }
            let last = durable.increments.last().unwrap_or(checkpoint);
            self.commit = last.op;
            self.checkpoint_op = last.op;
            self.checkpoint_increments =
                u32::try_from(durable.increments.len()).unwrap_or(u32::MAX);
            self.log.reset(last.op, last.op_checksum);
        }
        for entry in &durable.entries {
            if !self.log.connects(entry) {
                // Storage handed over entries that do not continue the chain: what follows
                // cannot be trusted, and may have been voted for. Repair.
                return true;
            }
            self.log.append(entry.clone());
        }
        // Only what was executed before is known committed; the rest is verified again against
        // the view's log. A damaged log executes nothing past its checkpoint: its valid prefix
        // may still hold entries a lost truncate had removed (the committed ones at those ops
        // were written after it), so the commit number does not vouch for them. Recovery
        // brings the committed state.
        let commit_known = if durable.damaged {
            if durable.view_state.commit > self.commit {
                crate::mark!(RestartDamagedNotExecuted);
            }
            self.commit
        } else {
            durable.view_state.commit
        };
        self.commit_max = commit_known.min(self.log.op()).max(self.commit);
        self.op_verified = self.commit_max;
        self.execute_committed();
        false
    }

    // ---- Accessors -------------------------------------------------------------------------

    /// This replica's index.
    #[must_use]
    pub fn index(&self) -> ReplicaIndex {
        self.index
    }

    /// The current view.
    #[must_use]
    pub fn view(&self) -> View {
        self.view
    }

    /// The latest view in which this replica's status was normal with the view's whole log.
    #[must_use]
    pub fn last_normal_view(&self) -> View {
        self.last_normal_view
    }

    /// The log up to this op is known to be the current view's log (or committed).
    #[must_use]
    pub fn op_verified(&self) -> Op {
        self.op_verified
    }

    /// The status.
    #[must_use]
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The status's name: "normal", "view_change" or "recovering".
    #[must_use]
    pub fn status_name(&self) -> &'static str {
        match self.status {
            Status::Normal(_) => "normal",
            Status::ViewChange(_) => "view_change",
            Status::Recovering(_) => "recovering",
        }
    }

    /// The last op in the log.
    #[must_use]
    pub fn op(&self) -> Op {
        self.log.op()
    }

    /// The last op executed (the commit number).
    #[must_use]
    pub fn commit(&self) -> Op {
        self.commit
    }

    /// The highest op this replica knows committed in its view (its log may not reach it yet).
    #[must_use]
    pub fn commit_max(&self) -> Op {
        self.commit_max
    }

    /// The log entry at `op`, while the in-memory window holds it.
    #[must_use]
    pub fn entry(&self, op: Op) -> Option<&Entry> {
        self.log.get(op)
    }

    /// The state machine.
    #[must_use]
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// A checksum of the client table: equal on every replica at the same commit number.
    #[must_use]
    pub fn client_table_digest(&self) -> u128 {
        self.client_table.digest()
    }

    /// Event counters.
    #[must_use]
    pub fn stats(&self) -> ReplicaStats {
        self.stats
    }

    /// The op of the newest checkpoint taken: durable, or being written (see
    /// [`Command::Checkpoint`]); 0 before the first.
    #[must_use]
    pub fn checkpoint_op(&self) -> Op {
        self.checkpoint_op
    }

    /// The whole replicated state (client table and state machine) at the commit number,
    /// frozen now, with the view: `None` outside normal status. Not a linearizable read: a
    /// replica cut off from its peers may be behind the cluster; a backup asks the primary
    /// with [`Replica::request_snapshot`] instead. Costs what [`StateMachine::frozen_delta`]
    /// costs; the encoding happens when the snapshot's pieces are pulled.
    #[must_use]
    pub fn snapshot_at_commit(&self) -> Option<(View, Checkpoint)> {
        self.is_normal()
            .then(|| (self.view, self.checkpoint_at_commit()))
    }

    /// A whole checkpoint of the state at the commit number.
    fn checkpoint_at_commit(&self) -> Checkpoint {
        let op_checksum = self
            .log
            .checksum(self.commit)
            .expect("the log knows the commit's checksum");
        Checkpoint {
            op: self.commit,
            op_checksum,
            since: Op(0),
            snapshot: self.snapshot(Op(0)),
        }
    }

    /// Whether this replica is the primary of its view, in normal status.
    #[must_use]
    pub fn is_primary(&self) -> bool {
        matches!(self.status, Status::Normal(Role::Primary(_)))
    }

    /// Whether the configuration names this replica the primary of its current view, whatever
    /// its status.
    fn leads_view(&self) -> bool {
        self.config.primary(self.view) == self.index
    }

    fn is_normal(&self) -> bool {
        matches!(self.status, Status::Normal(_))
    }

    /// What a driver decodes this replica's frames for: [`crate::wire::decode`] with it admits
    /// only messages this replica may act on.
    #[must_use]
    pub fn receiver(&self) -> Receiver {
        Receiver::replica(&self.config, self.index)
    }

    /// Takes the commands emitted so far.
    pub fn drain_commands(&mut self) -> std::vec::Drain<'_, Command> {
        self.commands.drain(..)
    }

    // ---- Events ----------------------------------------------------------------------------

    /// Handles a message decoded for [`Replica::receiver`]. One the replica's state makes
    /// useless (stale, for another status) is dropped.
    pub fn on_message(&mut self, verified: Verified) {
        self.dispatch(verified);
        self.invariants_constant();
    }

    fn dispatch(&mut self, verified: Verified) {
        let Envelope {
            sender, message, ..
        } = verified.into_envelope();
        let from = match sender {
            Sender::Client(client) => {
                return match message {
                    Message::Request(request) => self.on_request(client, request),
                    Message::Query(query) => self.on_query(client, query),
                    _ => unreachable!("decoding admits only requests and queries from clients"),
                };
            }
            Sender::Replica(from) => from,
        };
        if let Status::Recovering(_) = self.status {
            match message {
                Message::RecoveryResponse(response) => self.on_recovery_response(from, response),
                Message::NewState(new_state) => self.on_new_state(from, new_state),
                _ => crate::mark!(DropWhileRecovering),
            }
            return;
        }
        match message {
            Message::Prepare(prepare) => self.on_prepare(prepare),
            Message::PrepareOk(prepare_ok) => self.on_prepare_ok(from, prepare_ok),
            Message::Commit(commit) => self.on_commit(commit),
            Message::StartViewChange(start_view_change) => {
                self.on_start_view_change(from, start_view_change);
            }
            Message::DoViewChange(do_view_change) => self.on_do_view_change(from, do_view_change),
            Message::StartView(start_view) => self.on_start_view(start_view),
            Message::GetState(get_state) => self.on_get_state(from, get_state),
            Message::NewState(new_state) => self.on_new_state(from, new_state),
            Message::Recovery(recovery) => self.on_recovery(from, recovery),
            Message::RecoveryResponse(_) => {
                crate::mark!(DropOutOfPlace);
                self.stats.messages_dropped += 1;
            }
            Message::Confirm(confirm) => self.on_confirm(from, confirm),
            Message::Request(_) | Message::Query(_) | Message::Reply(_) => {
                unreachable!(
                    "decoding admits requests and queries only from clients, replies only to \
                     clients"
                )
            }
        }
    }

    /// Advances time by one tick: heartbeats, retries and timeouts.
    pub fn on_tick(&mut self) {
        self.tick += 1;
        match self.status {
            Status::Normal(Role::Primary(_)) => self.tick_primary(),
            Status::Normal(Role::Backup(_)) => self.tick_backup(),
            Status::ViewChange(_) => self.tick_view_change(),
            Status::Recovering(_) => self.tick_recovery(),
        }
        self.tick_state_request();
        self.invariants_constant();
    }

    /// The checkpoint at `op`, handed over with [`Command::Checkpoint`], is durable. A report
    /// of a checkpoint that a later one superseded is ignored.
    pub fn on_checkpoint_durable(&mut self, op: Op) {
        if self.checkpoint_writing == Some(op) {
            self.checkpoint_writing = None;
            self.stats.checkpoints_durable += 1;
        }
        self.invariants_constant();
    }

    /// Every write up to and including `seq` is durable.
    pub fn on_persisted(&mut self, seq: u64) {
        assert!(seq < self.seq_next, "completion of a write never issued");
        if seq <= self.seq_durable {
            return;
        }
        self.seq_durable = seq;
        while self
            .deferred
            .front()
            .is_some_and(|(waiting, _)| *waiting <= seq)
        {
            let (_, action) = self.deferred.pop_front().expect("checked");
            self.release(action);
        }
        self.invariants_constant();
    }

    // ---- Durability ------------------------------------------------------------------------

    fn persist(&mut self, write: Write) {
        let seq = self.seq_next;
        self.seq_next += 1;
        self.commands.push(Command::Persist { seq, write });
    }

    fn persist_view_state(&mut self, recovering: bool) {
        self.commit_persisted = self.commit;
        self.commit_unpersisted_size = 0;
        self.persist(Write::ViewState(ViewState {
            view: self.view,
            last_normal_view: self.last_normal_view,
            commit: self.commit,
            recovering,
        }));
    }

    /// Runs `action` once every write issued so far is durable.
    fn after_durable(&mut self, action: Deferred) {
        self.after_durable_at(self.seq_next - 1, action);
    }

    /// Runs `action` once write `seq` and every write before it are durable.
    fn after_durable_at(&mut self, seq: u64, action: Deferred) {
        if seq <= self.seq_durable {
            self.release(action);
        } else {
            self.deferred.push_back((seq, action));
        }
    }

    fn release(&mut self, action: Deferred) {
        match action {
            Deferred::Send(command) => {
                if self.still_vouches(&command) {
                    self.commands.push(*command);
                } else if self.in_view_change_of(&command) {
                    // Still in that view change, but the log changed under the message (a
                    // new_state replaced its suffix): tell the new primary what it is now.
                    crate::mark!(DoViewChangeRebuiltAfterLogChanged);
                    self.send_do_view_change();
                } else {
                    crate::mark!(DoViewChangeStaleAfterDurable);
                }
            }
            Deferred::PrepareOk { view, op, checksum } => {
                let still_held = self.log.checksum(op) == Some(checksum);
                let complete =
                    view == self.view && self.last_normal_view == view && op <= self.op_verified;
                if still_held && complete && self.is_normal() {
                    let primary = self.config.primary(view);
                    self.send(
                        primary,
                        Message::PrepareOk(PrepareOk { view, op, checksum }),
                    );
                } else if !still_held {
                    crate::mark!(PrepareOkWithheldEntryReplaced);
                } else {
                    crate::mark!(PrepareOkWithheldViewChanged);
                }
            }
            Deferred::PrimaryDurable { view, op } => {
                if view == self.view && self.is_primary() {
                    self.on_prepare_ok_votes(self.index, op);
                } else {
                    crate::mark!(PrimaryVoteStaleAfterDurable);
                }
            }
        }
    }

    /// A backup in normal status whose log now holds the log its view started with claims the
    /// view as its last normal view (durably, before any prepare_ok that follows).
    /// Returns whether it did.
    fn maybe_complete_view(&mut self) -> bool {
        let Some(backup) = self.status.backup_mut() else {
            return false;
        };
        let start_view_op = backup.start_view_op;
        if self.last_normal_view == self.view {
            return false;
        }
        // An entry of this view at the head: the primary created it after the start_view, so
        // the hash chain below it is the whole start_view log.
        let head_of_view = self
            .log
            .get(self.op_verified)
            .is_some_and(|entry| entry.view == self.view);
        let reached = start_view_op.is_some_and(|op| self.op_verified >= op);
        if head_of_view || reached {
            if !reached {
                crate::mark!(ViewCompletedByEntryOfView);
            }
            // Entries after the verified prefix are from older views and lie beyond the view's
            // start, so they were never committed (every op committed before this view is in
            // its start log): drop them, so the log we present for this view is its log.
            if self.log.op() > self.op_verified {
                crate::mark!(ViewCompleteTruncatesOldSuffix);
                self.log.truncate(self.op_verified);
                self.persist(Write::Truncate {
                    op: self.op_verified,
                });
            }
            self.last_normal_view = self.view;
            self.status
                .backup_mut()
                .expect("checked above")
                .start_view_op = None;
            self.persist_view_state(false);
            return true;
        }
        false
    }

    /// A backup in normal status votes for its whole verified log, once durable. Ops it has
    /// already executed count too: a new primary may still need votes for ops that the old
    /// view committed without telling the new view's quorum.
    fn vote_for_log(&mut self) {
        self.vote_for_log_at(self.seq_next - 1);
    }

    /// Votes for the verified log once write `seq` (and every write before it) is durable.
    fn vote_for_log_at(&mut self, seq: u64) {
        let op = self.op_verified;
        if matches!(self.status, Status::Normal(Role::Backup(_))) && op > Op(0) {
            let (view, checksum) = (
                self.view,
                self.log.checksum(op).expect("verified ops are in the log"),
            );
            self.after_durable_at(seq, Deferred::PrepareOk { view, op, checksum });
        }
    }

    // ---- Messages --------------------------------------------------------------------------

    fn envelope(&self, message: Message) -> Envelope {
        Envelope {
            cluster: self.config.cluster,
            epoch: 0,
            sender: Sender::Replica(self.index),
            message,
        }
    }

    fn send(&mut self, to: ReplicaIndex, message: Message) {
        assert_ne!(to, self.index, "a replica never sends to itself");
        let envelope = self.envelope(message);
        self.commands.push(Command::Send { to, envelope });
    }

    /// Whether a message deferred until durable still says what is true. A do_view_change
    /// vouches for the sender's log: once the replica left that view change (a start_view
    /// arrived, which may have truncated entries the message carries), it is stale; so it is
    /// once the log no longer holds every entry it carries (a new_state during the view change
    /// replaced them with committed ones, and the truncate may be durable by now).
    fn still_vouches(&self, command: &Command) -> bool {
        match command {
            Command::Send { envelope, .. } => match &envelope.message {
                Message::DoViewChange(DoViewChange { entries, .. }) => {
                    self.in_view_change_of(command)
                        && entries
                            .iter()
                            .all(|entry| self.log.checksum(entry.op) == Some(entry.checksum))
                }
                _ => true,
            },
            Command::Reply { .. }
            | Command::Persist { .. }
            | Command::Checkpoint { .. }
            | Command::Snapshot { .. } => true,
        }
    }

    /// Whether `command` is a do_view_change for the view change the replica is in.
    fn in_view_change_of(&self, command: &Command) -> bool {
        matches!(
            command,
            Command::Send { envelope, .. }
                if matches!(
                    envelope.message,
                    Message::DoViewChange(DoViewChange { view, .. }) if view == self.view
                )
        ) && matches!(self.status, Status::ViewChange(_))
    }

    fn send_after_durable(&mut self, to: ReplicaIndex, message: Message) {
        assert_ne!(to, self.index, "a replica never sends to itself");
        let envelope = self.envelope(message);
        self.after_durable(Deferred::Send(Box::new(Command::Send { to, envelope })));
    }

    /// Every replica but this one.
    fn others(&self) -> impl Iterator<Item = ReplicaIndex> + use<S> {
        let index = self.index;
        (0..self.config.replica_count).filter(move |&to| to != index)
    }

    fn broadcast(&mut self, message: &Message) {
        for to in self.others() {
            self.send(to, message.clone());
        }
    }

    fn broadcast_after_durable(&mut self, message: &Message) {
        for to in self.others() {
            self.send_after_durable(to, message.clone());
        }
    }

    fn reply(&mut self, client: ClientId, op: Op, request: u64, result: ReplyResult) {
        let message = Message::Reply(Reply {
            client,
            view: self.view,
            op,
            request,
            result,
        });
        let envelope = self.envelope(message);
        self.commands.push(Command::Reply { client, envelope });
    }

    // ---- Execution -------------------------------------------------------------------------

    /// Executes committed entries up to `commit_max`, as far as the log reaches.
    fn execute_committed(&mut self) {
        while self.commit < self.commit_max.min(self.op_verified) {
            let op = self.commit.next();
            let entry = self
                .log
                .get(op)
                .expect("the log holds every op after the commit")
                .clone();
            self.execute(&entry);
            let size = crate::wire::entry_size(&entry);
            self.commit_unpersisted_size += size;
            self.checkpoint_log_size += size;
            self.commit = op;
            self.stats.ops_executed += 1;
            self.after_execute();
        }
    }

    fn execute(&mut self, entry: &Entry) {
        let primary = self.is_primary();
        match entry.operation {
            Operation::Noop => {}
            Operation::Register => match self.client_table.admit_register(entry) {
                Admission::Execute => {
                    if self.client_table.register(entry, self.config.clients_max) {
                        self.stats.evictions += 1;
                    }
                    if primary {
                        let result = ReplyResult::Registered;
                        self.reply(entry.client, entry.op, entry.request, result);
                    }
                }
                Admission::Reply { op, result } => {
                    if primary {
                        self.reply(entry.client, op, entry.request, result);
                    }
                }
                Admission::Drop => {}
            },
            Operation::StateMachine => match self.client_table.admit(entry) {
                Admission::Execute => {
                    let result = match S::Operation::decode(&entry.body) {
                        Ok(operation) => self.state_machine.apply(entry.op, operation).to_bytes(),
                        // The primary validates operations, so this is a faulty primary's entry:
                        // every replica skips it identically.
                        Err(_) => Vec::new(),
                    };
                    let result = Bytes::from(result);
                    self.client_table.record(entry, result.clone());
                    if primary {
                        let reply = ReplyResult::Executed(result);
                        self.reply(entry.client, entry.op, entry.request, reply);
                    }
                }
                Admission::Reply { op, result } => {
                    if primary {
                        self.reply(entry.client, op, entry.request, result);
                    }
                }
                Admission::Drop => {}
            },
        }
    }

    /// Checkpoints, lazy commit persistence and log trimming after an op executed.
    fn after_execute(&mut self) {
        let due = self.commit - self.checkpoint_op >= self.config.checkpoint_interval
            || self.checkpoint_log_size >= self.config.checkpoint_log_size_max;
        if due && self.checkpoint_writing.is_some() {
            // The previous checkpoint is still being written: the log grows until it is.
            crate::mark!(CheckpointWaitsForPrevious);
        }
        if due && self.checkpoint_writing.is_none() {
            self.checkpoint();
        } else if self.commit.saturating_since(self.commit_persisted)
            >= self.config.pipeline_ops_max()
            || self.commit_unpersisted_size >= self.config.pipeline_size_max()
        {
            let recovering = matches!(self.status, Status::Recovering(_));
            self.persist_view_state(recovering);
        }
        let retained = self.config.log_retained_max;
        if self.commit > self.log.base_op() + retained * 2 {
            self.log.trim(self.commit - retained);
        }
    }

    /// Takes a checkpoint at the commit number and hands it to the driver to write in the
    /// background: an increment on the previous checkpoint, or every
    /// [`CHECKPOINT_INCREMENTS_MAX`] + 1 checkpoints (and for the first) the whole state, which
    /// lets storage drop the chain before it.
    fn checkpoint(&mut self) {
        let op = self.commit;
        let op_checksum = self
            .log
            .checksum(op)
            .expect("the log holds the commit's checksum");
        let incremental =
            self.checkpoint_op > Op(0) && self.checkpoint_increments < CHECKPOINT_INCREMENTS_MAX;
        let since = if incremental {
            crate::mark!(CheckpointIncremental);
            self.checkpoint_increments += 1;
            self.checkpoint_op
        } else {
            self.checkpoint_increments = 0;
            Op(0)
        };
        let snapshot = self.snapshot(since);
        self.commands.push(Command::Checkpoint {
            checkpoint: Checkpoint {
                op,
                op_checksum,
                since,
                snapshot,
            },
        });
        self.checkpoint_writing = Some(op);
        self.stats.checkpoints += 1;
        self.checkpoint_op = op;
        self.checkpoint_log_size = 0;
        // Persist the commit number with it, never a lower one: a restart re-executing the
        // ops after an older checkpoint reaches this op again below the commit it persisted.
        if self.commit > self.commit_persisted || crate::bug!(CheckpointLowersCommit) {
            let recovering = matches!(self.status, Status::Recovering(_));
            self.persist_view_state(recovering);
        }
    }

    /// Persists a whole checkpoint of the current state at `op` (the commit number) in order
    /// with the other writes, then the view state, and restarts the checkpoint bounds from
    /// there. For a state that jumped (state transfer): the log restarts after `op`, so the
    /// checkpoint cannot wait in the background. It supersedes one being written.
    fn persist_checkpoint(&mut self, op: Op, op_checksum: EntryChecksum) {
        let snapshot = self.snapshot(Op(0));
        self.persist(Write::Checkpoint(Checkpoint {
            op,
            op_checksum,
            since: Op(0),
            snapshot,
        }));
        self.checkpoint_writing = None;
        self.checkpoint_increments = 0;
        self.checkpoint_op = op;
        self.checkpoint_log_size = 0;
        let recovering = matches!(self.status, Status::Recovering(_));
        self.persist_view_state(recovering);
    }

    /// The client table and the state machine's delta since `since`, frozen now.
    fn snapshot(&self, since: Op) -> Snapshot {
        let mut table = Vec::new();
        self.client_table
            .encode(&mut table, !crate::bug!(SnapshotDropsReplies));
        Snapshot::new(&table, self.state_machine.frozen_delta(since))
    }

    /// Installs a snapshot from [`Replica::encode_snapshot`]; the client table is replaced.
    fn install_snapshot(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        let (client_table, delta) = decode_snapshot::<S>(bytes)?;
        self.client_table = client_table;
        self.state_machine.apply_delta(delta);
        Ok(())
    }

    // ---- Timers ----------------------------------------------------------------------------

    fn jitter(&mut self, range: u64) -> u64 {
        self.prng.next_u64() % (range + 1)
    }

    fn reset_view_change_timeout(&mut self) {
        let timeout = self.config.view_change_timeout_ticks;
        self.view_change_timeout_at = self.tick + timeout + self.jitter(timeout);
    }
}

/// Decodes a snapshot from [`Replica::encode_snapshot`]: the client table's size (u32), the
/// client table, then the state machine's delta. Checkpoints and state transfer both read
/// snapshots through here; the bytes come from a peer or a disk, so every failure is an error.
pub(crate) fn decode_snapshot<S: StateMachine>(
    bytes: &[u8],
) -> Result<(ClientTable, S::Delta), CodecError> {
    let error = |reason| CodecError::new("snapshot", reason);
    let (size, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| error("truncated"))?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > rest.len() {
        return Err(error("truncated client table"));
    }
    let (table, delta) = rest.split_at(size);
    let (client_table, used) = ClientTable::decode(table)?;
    if used != size {
        return Err(error("client table size"));
    }
    let delta = S::Delta::decode(delta)?;
    Ok((client_table, delta))
}
