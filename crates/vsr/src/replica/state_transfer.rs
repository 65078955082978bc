//! State transfer: get_state / new_state (VRR §5.2), for a replica that is behind.
//!
//! A responder normal in the requester's view may send its whole log suffix after the
//! requester's op (uncommitted entries included: they are that view's log). Any other responder
//! sends only committed entries. Entries are merged by checksum: an entry already held is kept,
//! a different one at the same op replaces the suffix from there.
//!
//! When the responder no longer holds the entries the requester needs, it streams a delta of
//! the state since the requester's commit number (plus the client table), pulled by the
//! requester:
//!
//! ```text
//!   requester                                   sender
//!   get_state (no cursor)            ──────▶    freezes a snapshot, draws a transfer id,
//!                                               encodes up to DELTA_WINDOW_CHUNKS chunks
//!                                    ◀──────    new_state chunk, chunk, ...
//!   appends chunk k in order;
//!   get_state (cursor: target, end of k) ────▶  drops the chunks acknowledged, encodes and
//!                                               sends as many as the window allows
//!                                    ◀──────    ... last chunk (whole size and checksum)
//!   checks size and checksum, decodes, installs
//! ```
//!
//! The sender keeps one [`OutgoingTransfer`] per requester: the frozen snapshot's pieces, and
//! the chunks sent but not acknowledged. Its memory is the window, and its encoding work per
//! event is bounded ([`DELTA_PIECES_PER_EVENT_MAX`]). The requester keeps one
//! [`DeltaTransfer`]: the bytes received so far, in order, in one buffer, and the few chunks
//! (at most a window) that overtook one before them. A lost message is asked for again at the
//! retry timeout, from the same sender if the transfer moved since the last timeout, or at once
//! when the rest of a window arrived past it. A get_state naming the
//! window's start resends the window; one naming a transfer the sender does not hold (it
//! restarted, or it is another replica) starts a new transfer, and the requester drops what it
//! held when that transfer's first chunk arrives.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use bytes::Bytes;
use rand_core::Rng;

use super::{Replica, Status};
use crate::checksum::{Checksum, checksum};
use crate::command::Write;
use crate::config::{MESSAGE_BODY_SIZE_MAX, OPERATION_SIZE_MAX};
use crate::message::{
    DeltaChunk, DeltaCursor, DeltaEnd, DeltaTarget, Entry, GetState, Message, NewState,
    ReplicaIndex, StatePayload,
};
use crate::numbers::Op;
use crate::snapshot::Snapshot;
use crate::state_machine::StateMachine;

/// Most entries in one new_state message.
const NEW_STATE_ENTRIES_MAX: usize = 256;

/// Chunks of a delta a sender has sent and not yet seen acknowledged, at most.
pub(crate) const DELTA_WINDOW_CHUNKS: usize = 4;

/// Pieces of a snapshot's encoding a sender pulls for one transfer in one event, at most (empty
/// pieces count): the encoding work one message or tick may do.
const DELTA_PIECES_PER_EVENT_MAX: u32 = 16;

/// Retry periods an outgoing transfer waits for its requester before the sender drops it.
const OUTGOING_IDLE_RETRIES_MAX: u64 = 4;

/// Transfer ids a sender remembers having replaced for one requester: a late get_state naming
/// one of them is stale, and starts nothing new.
const RETIRED_TRANSFERS_MAX: usize = 8;

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

/// A delta being received, in order, from one sender.
#[derive(Debug)]
pub(crate) struct DeltaTransfer {
    from: ReplicaIndex,
    target: DeltaTarget,
    /// The delta's bytes received so far.
    received: Vec<u8>,
    /// Chunks that arrived ahead of `received`, by offset, until the gap fills: at most
    /// [`DELTA_WINDOW_CHUNKS`].
    ahead: BTreeMap<u64, DeltaChunk>,
    /// A get_state has asked again for the bytes after `received` since a chunk was appended.
    gap_asked: bool,
    /// A chunk was appended since the last retry timeout.
    progressed: bool,
}

impl DeltaTransfer {
    /// Where this transfer stands, for a get_state.
    pub(super) fn cursor(&self) -> DeltaCursor {
        DeltaCursor {
            target: self.target,
            offset: self.received.len() as u64,
        }
    }
}

/// A delta being sent to one requester: the frozen snapshot's encoding, pulled a little at a
/// time, and the chunks sent but not acknowledged.
pub(crate) struct OutgoingTransfer {
    target: DeltaTarget,
    pieces: Box<dyn Iterator<Item = Bytes> + Send>,
    /// The rest of the piece pulled last, not yet in a chunk.
    pending: Bytes,
    /// The chunk being filled.
    filling: Vec<u8>,
    /// Bytes in chunks produced so far: the offset of `filling`.
    produced: u64,
    /// Of those bytes.
    checksum: Checksum,
    /// The last chunk was produced.
    finished: bool,
    /// Chunks sent and not acknowledged, in order: at most [`DELTA_WINDOW_CHUNKS`].
    window: VecDeque<DeltaChunk>,
    /// A get_state naming this transfer arrived: the requester knows it.
    acknowledged: bool,
    /// The tick of the last get_state for this transfer.
    active_tick: u64,
    /// Ids of transfers to this requester that this one replaced (see
    /// [`RETIRED_TRANSFERS_MAX`]).
    retired: VecDeque<u64>,
}

impl fmt::Debug for OutgoingTransfer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OutgoingTransfer")
            .field("target", &self.target)
            .field("produced", &self.produced)
            .field("finished", &self.finished)
            .field("window", &self.window.len())
            .finish_non_exhaustive()
    }
}

/// What a get_state's cursor means to the sender's transfer.
enum Acknowledged {
    /// Chunks were acknowledged: the window moved.
    Advanced,
    /// Nothing new was acknowledged: the requester lost something.
    Stalled,
    /// The offset is none the window can resume from.
    Lost,
}

impl OutgoingTransfer {
    fn new(target: DeltaTarget, snapshot: &Snapshot, tick: u64) -> Self {
        OutgoingTransfer {
            target,
            pieces: snapshot.pieces(),
            pending: Bytes::new(),
            filling: Vec::new(),
            produced: 0,
            checksum: Checksum::default(),
            finished: false,
            window: VecDeque::new(),
            acknowledged: false,
            active_tick: tick,
            retired: VecDeque::new(),
        }
    }

    /// Chunks in the window: sent and not acknowledged.
    pub(super) fn window_len(&self) -> usize {
        self.window.len()
    }

    /// The offset the window starts at: every byte before it is acknowledged.
    fn acknowledged_offset(&self) -> u64 {
        self.window
            .front()
            .map_or(self.produced, |chunk| chunk.offset)
    }

    /// Takes the requester's offset as an acknowledgement of every chunk before it.
    fn acknowledge(&mut self, offset: u64) -> Acknowledged {
        self.acknowledged = true;
        if offset == self.acknowledged_offset() {
            return Acknowledged::Stalled;
        }
        let Some(position) = self
            .window
            .iter()
            .position(|chunk| chunk.offset + chunk.chunk.len() as u64 == offset)
        else {
            return Acknowledged::Lost;
        };
        self.window.drain(..=position);
        Acknowledged::Advanced
    }

    /// The next chunk, if the pieces pulled within `budget` fill one (or end the delta). A
    /// chunk is full at `chunk_size_max` bytes and leaves once a byte after it is known to
    /// exist; the last chunk carries the whole delta's size and checksum.
    fn produce(&mut self, chunk_size_max: usize, budget: &mut u32) -> Option<DeltaChunk> {
        // Each turn moves bytes into the chunk, emits it, or spends budget: bounded by the
        // chunk's size and the budget.
        while !self.finished {
            if !self.pending.is_empty() {
                if self.filling.len() == chunk_size_max {
                    let bytes = Bytes::from(std::mem::take(&mut self.filling));
                    return Some(self.chunk(bytes, false));
                }
                if self.filling.is_empty() && self.pending.len() > chunk_size_max {
                    // A whole chunk, and more after it, already in one piece: no copy.
                    let bytes = self.pending.split_to(chunk_size_max);
                    return Some(self.chunk(bytes, false));
                }
                let take = (chunk_size_max - self.filling.len()).min(self.pending.len());
                self.filling.extend_from_slice(&self.pending.split_to(take));
                continue;
            }
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            match self.pieces.next() {
                Some(piece) => self.pending = piece,
                None => {
                    self.finished = true;
                    let bytes = Bytes::from(std::mem::take(&mut self.filling));
                    return Some(self.chunk(bytes, true));
                }
            }
        }
        None
    }

    /// The chunk of `bytes` at the produced offset, the last one if `last`.
    fn chunk(&mut self, bytes: Bytes, last: bool) -> DeltaChunk {
        assert!(
            last || !bytes.is_empty(),
            "only the last chunk may be empty"
        );
        self.checksum.update(&bytes);
        let offset = self.produced;
        self.produced += bytes.len() as u64;
        let end = last.then(|| DeltaEnd {
            size: self.produced,
            checksum: std::mem::take(&mut self.checksum).finalize(),
        });
        DeltaChunk {
            target: self.target,
            offset,
            end,
            chunk: bytes,
        }
    }

    /// Remembers that the transfer `id` to this requester is over.
    fn retire(&mut self, id: u64) {
        if self.retired.contains(&id) {
            return;
        }
        if self.retired.len() == RETIRED_TRANSFERS_MAX {
            self.retired.pop_front();
        }
        self.retired.push_back(id);
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
        // A delta built on an older commit number can never install: drop it.
        if self
            .transfer
            .as_ref()
            .is_some_and(|transfer| transfer.target.since != self.commit)
        {
            self.transfer = None;
        }
        let message = Message::GetState(GetState {
            view: self.view,
            op,
            commit: self.commit,
            cursor: self.transfer.as_ref().map(DeltaTransfer::cursor),
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

    /// Retries an unanswered get_state, and moves outgoing transfers on (see
    /// [`Replica::tick_outgoing`]).
    pub(super) fn tick_state_request(&mut self) {
        self.tick_outgoing();
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
        // A delta that moved since the last timeout is asked for again where it stands, from
        // its sender; one that did not is given up on that sender.
        let resume = self
            .transfer
            .as_mut()
            .filter(|transfer| transfer.from == previous)
            .is_some_and(|transfer| std::mem::take(&mut transfer.progressed));
        let to = match &self.status {
            Status::Recovering(_) => previous,
            _ if resume => previous,
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
        let GetState {
            view,
            op,
            commit,
            cursor,
        } = message;
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
            self.serve_delta(from, commit, cursor);
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

    /// Answers a get_state for entries no longer held with the delta since `since`: resumes
    /// the transfer the cursor names where the requester stands, or starts a new one.
    fn serve_delta(&mut self, to: ReplicaIndex, since: Op, cursor: Option<DeltaCursor>) {
        let tick = self.tick;
        let current = self
            .outgoing
            .get_mut(&to)
            .filter(|outgoing| outgoing.target.since == since);
        let resend = match (current, cursor) {
            (Some(outgoing), Some(cursor)) if outgoing.target == cursor.target => {
                outgoing.active_tick = tick;
                match outgoing.acknowledge(cursor.offset) {
                    Acknowledged::Advanced => {
                        crate::mark!(DeltaWindowAdvanced);
                        false
                    }
                    Acknowledged::Stalled => {
                        crate::mark!(DeltaTransferResumed);
                        true
                    }
                    Acknowledged::Lost => {
                        crate::mark!(DeltaSenderStartsAnew);
                        self.start_outgoing(to, since, None);
                        false
                    }
                }
            }
            (Some(outgoing), cursor)
                if !outgoing.acknowledged
                    || cursor.is_some_and(|cursor| {
                        outgoing.retired.contains(&cursor.target.transfer)
                    }) =>
            {
                // The requester has not seen this transfer yet, or names one this transfer
                // replaced: a late get_state. Send the window again rather than start anew.
                crate::mark!(DeltaCursorStaleResendsWindow);
                outgoing.active_tick = tick;
                true
            }
            (_, cursor) => {
                if cursor.is_some() {
                    crate::mark!(DeltaSenderStartsAnew);
                }
                self.start_outgoing(to, since, cursor.map(|cursor| cursor.target.transfer));
                false
            }
        };
        if resend {
            let window: Vec<DeltaChunk> = self.outgoing[&to].window.iter().cloned().collect();
            for chunk in window {
                self.send_delta_chunk(to, chunk);
            }
        }
        self.fill_window(to);
    }

    /// Freezes the state since `since` and starts sending it to `to`, replacing any transfer
    /// to it (and remembering the ids replaced: the transfer's and `replaced`, the one the
    /// requester named).
    fn start_outgoing(&mut self, to: ReplicaIndex, since: Op, replaced: Option<u64>) {
        crate::mark!(GetStateSendsDelta);
        let op_checksum = self
            .log
            .checksum(self.commit)
            .expect("the log knows the commit's checksum");
        let target = DeltaTarget {
            transfer: self.prng.next_u64(),
            op: self.commit,
            op_checksum,
            since,
        };
        let mut outgoing = OutgoingTransfer::new(target, &self.snapshot(since), self.tick);
        if let Some(previous) = self.outgoing.remove(&to) {
            outgoing.retired = previous.retired;
            outgoing.retire(previous.target.transfer);
        }
        if let Some(replaced) = replaced {
            outgoing.retire(replaced);
        }
        self.outgoing.insert(to, outgoing);
    }

    /// Encodes and sends chunks of the transfer to `to` while its window has room, within the
    /// encoding budget of one event.
    fn fill_window(&mut self, to: ReplicaIndex) {
        let chunk_size_max = self.config.state_chunk_size_max;
        let Some(outgoing) = self.outgoing.get_mut(&to) else {
            return;
        };
        let mut budget = DELTA_PIECES_PER_EVENT_MAX;
        let mut produced = Vec::new();
        while outgoing.window.len() < DELTA_WINDOW_CHUNKS {
            let Some(chunk) = outgoing.produce(chunk_size_max, &mut budget) else {
                break;
            };
            outgoing.window.push_back(chunk.clone());
            produced.push(chunk);
        }
        if outgoing.window.len() == DELTA_WINDOW_CHUNKS && !outgoing.finished {
            // The requester's acknowledgement lets more go.
            crate::mark!(DeltaWindowFull);
        }
        for chunk in produced {
            self.send_delta_chunk(to, chunk);
        }
    }

    fn send_delta_chunk(&mut self, to: ReplicaIndex, chunk: DeltaChunk) {
        self.send_new_state(to, false, StatePayload::Delta(Box::new(chunk)));
    }

    /// Each tick: an outgoing transfer whose requester went quiet is dropped, the others go on
    /// encoding what their window has room for (an event's budget may have cut them short).
    fn tick_outgoing(&mut self) {
        let idle_ticks_max = self.config.retry_ticks * OUTGOING_IDLE_RETRIES_MAX;
        let tick = self.tick;
        self.outgoing
            .retain(|_, outgoing| tick - outgoing.active_tick <= idle_ticks_max);
        let waiting: Vec<ReplicaIndex> = self
            .outgoing
            .iter()
            .filter(|(_, outgoing)| {
                !outgoing.finished && outgoing.window.len() < DELTA_WINDOW_CHUNKS
            })
            .map(|(&to, _)| to)
            .collect();
        for to in waiting {
            self.fill_window(to);
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
            StatePayload::Delta(delta) => self.receive_delta_chunk(from, *delta),
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

    /// Appends a delta chunk that continues the transfer in order (with the chunks kept aside
    /// that it joins), and asks for what follows; installs the delta once complete. Returns
    /// whether it installed.
    fn receive_delta_chunk(&mut self, from: ReplicaIndex, delta: DeltaChunk) -> bool {
        let target = delta.target;
        if !self.op_within_reach(target.op) {
            self.drop_too_far_ahead();
            return false;
        }
        if target.since != self.commit || target.op <= self.commit {
            crate::mark!(DeltaChunkWrongBaseDropped);
            return false;
        }
        let held = self
            .transfer
            .as_ref()
            .is_some_and(|transfer| (transfer.from, transfer.target) == (from, target));
        if !held {
            if self.transfer.is_some() && delta.offset != 0 {
                // The middle of a transfer this replica does not hold (any more).
                crate::mark!(DeltaChunkDuplicateDropped);
                return false;
            }
            if self.transfer.is_some() {
                crate::mark!(DeltaTransferRestarted);
            }
            self.transfer = Some(DeltaTransfer {
                from,
                target,
                received: Vec::new(),
                ahead: BTreeMap::new(),
                gap_asked: false,
                progressed: false,
            });
        }
        let transfer = self.transfer.as_mut().expect("set above");
        let received = transfer.received.len() as u64;
        if delta.offset < received || transfer.ahead.contains_key(&delta.offset) {
            crate::mark!(DeltaChunkDuplicateDropped);
            return false;
        }
        if delta.offset > received {
            if transfer.ahead.len() >= DELTA_WINDOW_CHUNKS {
                crate::mark!(DeltaChunkDuplicateDropped);
                return false;
            }
            crate::mark!(DeltaChunkOutOfOrderKept);
            transfer.ahead.insert(delta.offset, delta);
            // The rest of a window arrived past the gap: its chunk was most likely lost.
            if transfer.ahead.len() + 1 >= DELTA_WINDOW_CHUNKS
                && !std::mem::replace(&mut transfer.gap_asked, true)
            {
                crate::mark!(DeltaGapAskedAgain);
                self.request_state_from(from);
            }
            return false;
        }
        self.append_delta_chunks(from, delta)
    }

    /// Appends `delta`, which continues the transfer, and the chunks kept aside that follow it;
    /// installs the delta if that completes it, otherwise asks for what follows.
    fn append_delta_chunks(&mut self, from: ReplicaIndex, delta: DeltaChunk) -> bool {
        let size_max = self.config.state_transfer_size_max;
        let transfer = self.transfer.as_mut().expect("a transfer to append to");
        let mut next = Some(delta);
        // Bounded by the chunks kept aside.
        while let Some(chunk) = next.take() {
            if transfer.received.len() as u64 + chunk.chunk.len() as u64 > size_max {
                self.transfer = None;
                self.stats.messages_dropped += 1;
                return false;
            }
            transfer.received.extend_from_slice(&chunk.chunk);
            transfer.gap_asked = false;
            transfer.progressed = true;
            if let Some(end) = chunk.end {
                let transfer = self.transfer.take().expect("appended to");
                return self.install_received(&transfer, end);
            }
            let received = transfer.received.len() as u64;
            transfer.ahead = transfer.ahead.split_off(&received);
            next = transfer.ahead.remove(&received);
        }
        self.request_state_from(from);
        false
    }

    /// Checks a complete delta's size and checksum against the bytes assembled, then installs
    /// it.
    fn install_received(&mut self, transfer: &DeltaTransfer, end: DeltaEnd) -> bool {
        if end.size != transfer.received.len() as u64
            || checksum(&transfer.received) != end.checksum
        {
            self.stats.messages_dropped += 1;
            return false;
        }
        self.install_delta(transfer.target, &transfer.received)
    }

    fn install_delta(&mut self, target: DeltaTarget, delta: &[u8]) -> bool {
        if self.install_snapshot(delta).is_err() {
            self.stats.messages_dropped += 1;
            return false;
        }
        let (op, op_checksum) = (target.op, target.op_checksum);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::numbers::EntryChecksum;
    use crate::snapshot::DeltaSource;

    /// A delta whose encoding comes in the given pieces.
    struct Pieces(Vec<Bytes>);

    impl DeltaSource for Pieces {
        fn pieces(self: Arc<Self>) -> Box<dyn Iterator<Item = Bytes> + Send> {
            Box::new(self.0.clone().into_iter())
        }
    }

    /// Chunks are full but for the last, which carries the whole size and checksum; empty
    /// pieces spend the budget, and production goes on where the budget stopped it.
    #[test]
    fn chunks_are_cut_from_pieces_within_a_budget() {
        let piece = |size: usize, byte: u8| Bytes::from(vec![byte; size]);
        let mut pieces = vec![piece(100, 1), Bytes::new(), Bytes::new(), piece(30, 2)];
        pieces.extend((0..20).map(|_| Bytes::new()));
        pieces.push(piece(250, 3));
        let snapshot = Snapshot::new(b"table", Arc::new(Pieces(pieces)));
        let expected = snapshot.to_bytes();
        let target = DeltaTarget {
            transfer: 9,
            op: Op(10),
            op_checksum: EntryChecksum(1),
            since: Op(2),
        };
        let mut outgoing = OutgoingTransfer::new(target, &snapshot, 0);
        let mut chunks = Vec::new();
        let mut events = 0;
        while !outgoing.finished {
            events += 1;
            assert!(events < 100, "production stalls");
            let mut budget = 4;
            while let Some(chunk) = outgoing.produce(64, &mut budget) {
                chunks.push(chunk);
            }
        }
        assert!(events > 5, "the empty pieces spread the work over events");
        let mut assembled = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.offset, assembled.len() as u64);
            assert_eq!(chunk.target, target);
            let last = index + 1 == chunks.len();
            assert_eq!(chunk.end.is_some(), last);
            if !last {
                assert_eq!(chunk.chunk.len(), 64, "every chunk but the last is full");
            }
            assembled.extend_from_slice(&chunk.chunk);
        }
        assert_eq!(assembled, expected);
        let end = chunks
            .last()
            .and_then(|chunk| chunk.end)
            .expect("a last chunk");
        assert_eq!(end.size, expected.len() as u64);
        assert_eq!(end.checksum, checksum(&expected));
        // Acknowledgements move the window only to a chunk boundary it holds.
        outgoing.window = chunks.into_iter().take(3).collect();
        assert!(matches!(outgoing.acknowledge(0), Acknowledged::Stalled));
        assert!(matches!(outgoing.acknowledge(100), Acknowledged::Lost));
        assert!(matches!(outgoing.acknowledge(128), Acknowledged::Advanced));
        assert_eq!(outgoing.acknowledged_offset(), 128);
    }
}
