//! State transfer: get_state / new_state (VRR §5.2), for a replica that is behind.
//!
//! A responder normal in the requester's view may send its whole log suffix after the
//! requester's op (uncommitted entries included: they are that view's log). Any other responder
//! sends only committed entries. When the responder no longer holds the entries the requester
//! needs, it sends a delta of the state machine since the requester's commit number (plus the
//! client table), in bounded chunks. Entries are merged by checksum: an entry already held is
//! kept, a different one at the same op replaces the suffix from there.

use std::collections::BTreeMap;

use super::{Replica, Status};
use crate::checksum::checksum;
use crate::command::Write;
use crate::config::{MESSAGE_BODY_SIZE_MAX, OPERATION_SIZE_MAX};
use crate::message::{DeltaChunk, Entry, GetState, Message, NewState, ReplicaIndex, StatePayload};
use crate::numbers::{EntryChecksum, Op};
use crate::state_machine::StateMachine;

/// Most entries in one new_state message.
const NEW_STATE_ENTRIES_MAX: usize = 256;

/// Largest encoded delta a replica accepts.
const DELTA_SIZE_MAX: u64 = 1 << 30;

/// An outstanding get_state.
#[derive(Debug)]
pub(crate) struct StateRequest {
    to: ReplicaIndex,
    sent_tick: u64,
}

impl StateRequest {
    /// The replica asked.
    pub(crate) fn to(&self) -> ReplicaIndex {
        self.to
    }
}

/// A delta being received in chunks.
#[derive(Debug)]
pub(crate) struct DeltaTransfer {
    from: ReplicaIndex,
    op: Op,
    op_checksum: EntryChecksum,
    since: Op,
    total_size: u64,
    total_checksum: u128,
    /// Chunks received, by offset: they may arrive in any order.
    chunks: BTreeMap<u64, Vec<u8>>,
    /// Bytes of those chunks.
    received: u64,
}

impl DeltaTransfer {
    /// A transfer of the delta `chunk` is part of, from `from`, nothing received yet.
    fn new(from: ReplicaIndex, chunk: &DeltaChunk) -> Self {
        DeltaTransfer {
            from,
            op: chunk.op,
            op_checksum: chunk.op_checksum,
            since: chunk.since,
            total_size: chunk.total_size,
            total_checksum: chunk.total_checksum,
            chunks: BTreeMap::new(),
            received: 0,
        }
    }

    /// Whether `chunk`, from `from`, belongs to this transfer's delta.
    fn is_of(&self, from: ReplicaIndex, chunk: &DeltaChunk) -> bool {
        (self.from, self.op, self.since, self.total_checksum)
            == (from, chunk.op, chunk.since, chunk.total_checksum)
    }

    /// Keeps `chunk` at `offset` if it lies inside the delta and overlaps none received (a
    /// duplicate is dropped); returns whether it did.
    fn insert(&mut self, offset: u64, chunk: &[u8]) -> bool {
        let Some(end) = offset.checked_add(chunk.len() as u64) else {
            return false;
        };
        let overlaps_before = self
            .chunks
            .range(..=offset)
            .next_back()
            .is_some_and(|(&start, bytes)| start + bytes.len() as u64 > offset);
        let overlaps_after = self
            .chunks
            .range(offset..)
            .next()
            .is_some_and(|(&start, _)| start < end);
        if chunk.is_empty() || end > self.total_size || overlaps_before || overlaps_after {
            crate::mark!(DeltaChunkDuplicateDropped);
            return false;
        }
        let follows = |(&start, bytes): (&u64, &Vec<u8>)| start + bytes.len() as u64 == offset;
        if offset > 0 && !self.chunks.range(..offset).next_back().is_some_and(follows) {
            crate::mark!(DeltaChunkOutOfOrderKept);
        }
        self.chunks.insert(offset, chunk.to_vec());
        self.received += chunk.len() as u64;
        true
    }
}

impl<S: StateMachine> Replica<S> {
    /// Asks the current primary (or, if that is us, nobody) for what we are missing.
    pub(super) fn request_state(&mut self) {
        if self.state_request.is_some() {
            return;
        }
        let primary = self.config.primary(self.view);
        if primary != self.index {
            self.request_state_from(primary);
        }
    }

    pub(super) fn request_state_from(&mut self, to: ReplicaIndex) {
        assert_ne!(to, self.index);
        self.state_request = Some(StateRequest {
            to,
            sent_tick: self.tick,
        });
        // Our log up to op_verified is this view's log in normal status, and the recovery
        // target's log while recovering; during a view change only committed entries count.
        let op = match self.status {
            Status::Normal(_) | Status::Recovering(_) => self.op_verified,
            Status::ViewChange(_) => self.commit,
        };
        let message = Message::GetState(GetState {
            view: self.view,
            op,
            commit: self.commit,
        });
        self.send(to, message);
    }

    fn needs_state(&self) -> bool {
        match &self.status {
            // Behind the commit number, or not yet holding the log the view started with.
            Status::Normal(_) => {
                self.commit_max > self.op_verified || self.last_normal_view < self.view
            }
            Status::ViewChange(view_change) => view_change.awaiting_state(),
            Status::Recovering(recovering) => recovering.needs_state(self.view, self.op_verified),
        }
    }

    pub(super) fn tick_state_request(&mut self) {
        let Some(request) = &self.state_request else {
            return;
        };
        if self.tick < request.sent_tick + self.config.retry_ticks {
            return;
        }
        let previous = request.to;
        self.state_request = None;
        if !self.needs_state() {
            return;
        }
        let to = match &self.status {
            Status::Recovering(_) => previous,
            _ => {
                crate::mark!(StateRequestRetriesAnotherReplica);
                let count = self.config.replica_count;
                let mut to = (previous + 1) % count;
                if to == self.index {
                    to = (to + 1) % count;
                }
                to
            }
        };
        if to != self.index {
            self.request_state_from(to);
        }
    }

    pub(super) fn on_get_state(&mut self, from: ReplicaIndex, message: GetState) {
        let GetState { view, op, commit } = message;
        let same_view = self.is_normal() && view == self.view;
        let (after, up_to) = if same_view {
            (op, self.op_verified)
        } else {
            crate::mark!(GetStateOtherViewCommittedOnly);
            (commit, self.commit)
        };
        if commit > op {
            self.stats.messages_dropped += 1;
            return;
        }
        if up_to <= after {
            // Nothing to send, but the primary's answer tells a backup that it holds the
            // whole log of the view.
            if same_view && self.is_primary() && up_to == after {
                crate::mark!(GetStatePrimaryConfirmsLog);
                self.send_new_state(from, true, StatePayload::Entries(Vec::new()));
            }
            return;
        }
        if after >= self.log.base_op() {
            let mut size = 0;
            let entries: Vec<Entry> = self
                .log
                .range(after + 1, up_to)
                .into_iter()
                .take(NEW_STATE_ENTRIES_MAX)
                .take_while(|entry| {
                    size += entry.body.len() + 128;
                    size <= MESSAGE_BODY_SIZE_MAX - OPERATION_SIZE_MAX
                })
                .collect();
            let payload = StatePayload::Entries(entries);
            self.send_new_state(from, same_view, payload);
        } else if commit < self.commit {
            crate::mark!(GetStateSendsDelta);
            self.send_delta(from, commit);
        }
    }

    fn send_new_state(&mut self, to: ReplicaIndex, normal: bool, payload: StatePayload) {
        let message = Message::NewState(NewState {
            view: self.view,
            op: self.op_verified,
            commit: self.commit,
            normal,
            payload,
        });
        self.send(to, message);
    }

    fn send_delta(&mut self, to: ReplicaIndex, since: Op) {
        let delta = self.snapshot(since).to_bytes();
        let total_checksum = checksum(&delta);
        let op = self.commit;
        let op_checksum = self
            .log
            .checksum(op)
            .expect("the log knows the commit's checksum");
        let chunk_size = self.config.state_chunk_size_max;
        let total_size = delta.len() as u64;
        let mut offset = 0;
        loop {
            let end = (offset + chunk_size).min(delta.len());
            let chunk = delta.slice(offset..end);
            let payload = StatePayload::Delta(DeltaChunk {
                op,
                op_checksum,
                since,
                offset: offset as u64,
                total_size,
                total_checksum,
                chunk,
            });
            self.send_new_state(to, false, payload);
            offset = end;
            if offset == delta.len() {
                break;
            }
        }
    }

    pub(super) fn on_new_state(&mut self, from: ReplicaIndex, message: NewState) {
        if self.is_primary() {
            // The primary's log is the view's log; a late answer to an old request must not
            // replace it.
            crate::mark!(NewStateToPrimaryIgnored);
            return;
        }
        let NewState {
            view,
            op,
            commit,
            normal,
            payload,
        } = message;
        if view > self.view && self.is_normal() {
            // Our verified log is our view's log, and a later view's committed entries need not
            // continue it: our view's primary may hold entries there that the later view
            // replaced. We take the later view's log once we learn of that view from its primary.
            crate::mark!(NewStateFromNewerViewIgnored);
            return;
        }
        // The sender's log is our view's log: it is normal in our view, and we are normal too
        // or recovering from that view's primary.
        let authoritative =
            normal && view == self.view && (self.config.primary(view) == from || self.is_normal());
        let verified_before = self.op_verified;
        if authoritative
            && self.config.primary(view) == from
            && let Some(backup) = self.status.backup_mut()
        {
            // The primary's log holds the whole log the view started with.
            backup.start_view_op = Some(backup.start_view_op.unwrap_or(Op(0)).max(op));
        }
        let installed = match payload {
            StatePayload::Entries(entries) => self.install_entries(&entries, commit, authoritative),
            StatePayload::Delta(delta) => self.receive_delta_chunk(from, delta),
        };
        if !installed {
            if self.maybe_complete_view() {
                self.vote_for_log();
            }
            if !self.needs_state() {
                self.state_request = None;
            }
            return;
        }
        self.after_state_installed(from, commit, authoritative, verified_before);
    }

    /// After a new_state installed entries or a delta: claim the view if the log now holds its
    /// start, take the sender's commit number if it speaks for our view, vote for what is newly
    /// verified, and go on with the status's own work.
    fn after_state_installed(
        &mut self,
        from: ReplicaIndex,
        commit: Op,
        authoritative: bool,
        verified_before: Op,
    ) {
        self.stats.state_transfers += 1;
        self.state_request = None;
        let completed = self.maybe_complete_view();
        // The sender's commit number is a fact about our view's log; a recovering replica
        // executes as it goes, so its commit number keeps up with its log.
        if authoritative && !matches!(self.status, Status::ViewChange(_)) {
            self.advance_commit(commit);
        }
        if completed || self.op_verified > verified_before {
            self.vote_for_log();
        }
        match self.status {
            Status::ViewChange(_) => self.on_view_change_state_installed(),
            Status::Recovering(_) => self.try_finish_recovery(),
            Status::Normal(_) => {}
        }
        if self.needs_state() && self.state_request.is_none() && from != self.index {
            self.request_state_from(from);
        }
    }

    /// Takes entries from a new_state: all of them from a sender whose log is our view's log
    /// (`authoritative`), otherwise only committed ones. Returns whether anything changed.
    fn install_entries(&mut self, entries: &[Entry], commit: Op, authoritative: bool) -> bool {
        let usable = if authoritative || crate::bug!(StateTransferTakesUncommitted) {
            entries
        } else {
            let committed = entries
                .iter()
                .take_while(|entry| entry.op <= commit)
                .count();
            if committed < entries.len() {
                crate::mark!(NewStateCommittedOnly);
            }
            &entries[..committed]
        };
        let verified_before = self.op_verified;
        let Some(through) = self.merge_entries(usable) else {
            return false;
        };
        let commit_before = self.commit;
        if !authoritative {
            // These positions now hold the sender's committed entries.
            self.commit_max = self.commit_max.max(through.min(commit));
            self.execute_committed();
        }
        self.op_verified > verified_before || self.commit > commit_before
    }

    /// Merges consecutive entries of our view's log (or committed entries) into ours, along the
    /// hash chain: an entry is placed only where its parent matches ours, and an entry we hold
    /// differently replaces our suffix from there. Returns the highest op of `entries` that our
    /// log now holds.
    pub(super) fn merge_entries(&mut self, entries: &[Entry]) -> Option<Op> {
        let mut through = None;
        for entry in entries {
            if entry.op == Op(0) {
                break;
            }
            if entry.op <= self.op_verified {
                let held = self.log.checksum(entry.op) == Some(entry.checksum);
                if held || (entry.op <= self.commit && self.log.get(entry.op).is_none()) {
                    through = Some(entry.op);
                }
                continue;
            }
            if self.log.checksum(entry.op - 1) != Some(entry.parent) {
                break;
            }
            if self.log.checksum(entry.op) != Some(entry.checksum) {
                if self.log.op() >= entry.op {
                    crate::mark!(MergeReplacesDivergentSuffix);
                    self.log.truncate(entry.op - 1);
                    self.persist(Write::Truncate { op: entry.op - 1 });
                }
                self.log.append(entry.clone());
                self.persist(Write::Append(entry.clone()));
            }
            self.op_verified = entry.op;
            through = Some(entry.op);
        }
        through
    }

    /// Buffers a delta chunk; installs the delta once complete. Returns whether it installed.
    fn receive_delta_chunk(&mut self, from: ReplicaIndex, delta: DeltaChunk) -> bool {
        if !self.op_within_reach(delta.op) {
            self.drop_too_far_ahead();
            return false;
        }
        if delta.since != self.commit
            || delta.op <= self.commit
            || delta.total_size > DELTA_SIZE_MAX
        {
            crate::mark!(DeltaChunkWrongBaseDropped);
            return false;
        }
        if !self
            .transfer
            .as_ref()
            .is_some_and(|transfer| transfer.is_of(from, &delta))
        {
            if self.transfer.is_some() {
                crate::mark!(DeltaTransferRestarted);
            }
            self.transfer = Some(DeltaTransfer::new(from, &delta));
        }
        let transfer = self.transfer.as_mut().expect("set above");
        if !transfer.insert(delta.offset, &delta.chunk) || transfer.received < transfer.total_size {
            return false;
        }
        // No overlaps and as many bytes as the delta: the chunks tile it exactly.
        let transfer = self.transfer.take().expect("set above");
        let delta: Vec<u8> = transfer.chunks.values().flatten().copied().collect();
        if checksum(&delta) != transfer.total_checksum {
            self.stats.messages_dropped += 1;
            return false;
        }
        self.install_delta(&transfer, &delta)
    }

    fn install_delta(&mut self, transfer: &DeltaTransfer, delta: &[u8]) -> bool {
        if self.install_snapshot(delta).is_err() {
            self.stats.messages_dropped += 1;
            return false;
        }
        let (op, op_checksum) = (transfer.op, transfer.op_checksum);
        // Entries after the delta's op stay if they continue its chain.
        let kept: Vec<Entry> = self.log.range(op + 1, self.log.op());
        self.log.reset(op, op_checksum);
        for entry in kept {
            if !self.log.connects(&entry) {
                crate::mark!(DeltaDropsEntriesOffChain);
                break;
            }
            crate::mark!(DeltaKeepsEntriesOnChain);
            self.log.append(entry);
        }
        self.commit = op;
        self.commit_max = self.commit_max.max(op);
        self.op_verified = op;
        // Truncate first: a crash between the two writes must not leave entries after the
        // checkpoint that do not continue its chain.
        self.persist(Write::Truncate { op: self.log.op() });
        self.persist_checkpoint(op, op_checksum);
        self.stats.state_transfers_delta += 1;
        self.execute_committed();
        true
    }
}
