//! What the core asks its driver to do, and the durable state those requests build up.
//!
//! The replica never performs I/O. It emits [`Command`]s; the driver sends messages, replies to
//! clients and carries out [`Write`]s in the order emitted, reporting each write's completion
//! with `Replica::on_persisted(seq)` once it is durable. A driver may complete several writes at
//! once (group commit) but never out of order.

use std::collections::VecDeque;

use crate::message::{ClientId, Entry, Envelope, ReplicaIndex};
use crate::numbers::{EntryChecksum, Op, View};
use crate::snapshot::Snapshot;

/// An effect for the driver to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send a message to another replica (never to the sender itself).
    Send {
        /// The destination replica.
        to: ReplicaIndex,
        /// The message.
        envelope: Envelope,
    },
    /// Send a reply to a client.
    Reply {
        /// The destination client.
        client: ClientId,
        /// The message (a [`crate::Message::Reply`]).
        envelope: Envelope,
    },
    /// Write a checkpoint durably in the background, then call
    /// `Replica::on_checkpoint_durable(op)`. Every write persisted before this command must be
    /// durable before the checkpoint is; writes persisted after it need not wait for it (the
    /// replica keeps running while it is written, and they may be reported durable first).
    /// Storage keeps the entries after `op` and drops those before it only once the checkpoint
    /// is durable. A driver may also carry it out in order, as a [`Write::Checkpoint`].
    Checkpoint {
        /// The checkpoint (whole, or an increment on the previous one).
        checkpoint: Checkpoint,
    },
    /// Hand the whole state at the commit number to the client that asked for it with
    /// `Replica::request_snapshot` (a backup): a read of the whole state, answered as queries
    /// are (after a quorum confirmed the primary's view), so it holds every write acknowledged
    /// before the request arrived.
    Snapshot {
        /// The client that asked.
        client: ClientId,
        /// Its request number.
        request: u64,
        /// The view the primary answers in.
        view: View,
        /// The state: a whole checkpoint at the commit number.
        checkpoint: Checkpoint,
    },
    /// Make a write durable, then call `Replica::on_persisted(seq)`.
    Persist {
        /// Sequence number of this write; strictly increasing per replica incarnation.
        seq: u64,
        /// What to write.
        write: Write,
    },
}

/// The replica's view state, persisted (redundantly, by the storage layer) before the replica
/// takes part in a view change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ViewState {
    /// The current view.
    pub view: View,
    /// The latest view in which the replica's status was normal.
    pub last_normal_view: View,
    /// The commit number; may lag the real one (persisted lazily).
    pub commit: Op,
    /// Set for a replica that lost its state and has not finished recovery: it must not vote.
    pub recovering: bool,
}

/// A snapshot of the replicated state (client table and state machine) at an op: the whole
/// state (`since` 0), or an increment holding the changes after the previous checkpoint's op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last op whose effects the snapshot contains.
    pub op: Op,
    /// Checksum of the log entry at `op` (0 for op 0), to continue the hash chain.
    pub op_checksum: EntryChecksum,
    /// 0 for a whole state; otherwise the op of the checkpoint this one is an increment on.
    pub since: Op,
    /// The snapshot, possibly still to be encoded (see [`Snapshot`]).
    pub snapshot: Snapshot,
}

/// One durable write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Replace the view state.
    ViewState(ViewState),
    /// Append an entry; its op is one more than the last entry's (or the checkpoint's).
    Append(Entry),
    /// Remove every entry after `op`.
    Truncate {
        /// The last op kept.
        op: Op,
    },
    /// Store a checkpoint; entries at or before its op may be dropped.
    Checkpoint(Checkpoint),
}

/// What a replica's storage holds: enough to restart after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DurableState {
    /// The latest view state.
    pub view_state: ViewState,
    /// The latest whole checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Increments on it, in order: each one's `since` is the op of the one before.
    pub increments: Vec<Checkpoint>,
    /// Entries after the checkpoint's op, consecutive.
    pub entries: VecDeque<Entry>,
    /// Set by the storage layer when it found damage other than a torn tail (a corrupt entry in
    /// the middle of the log, a corrupt checkpoint): `entries` then holds only what precedes the
    /// damage, and the replica may have voted for entries it no longer has. Such a replica
    /// repairs itself through the recovery protocol before it votes again. Not persisted.
    pub damaged: bool,
}

impl DurableState {
    /// The newest checkpoint: the last increment, or the whole checkpoint without one.
    #[must_use]
    pub fn newest_checkpoint(&self) -> Option<&Checkpoint> {
        self.increments.last().or(self.checkpoint.as_ref())
    }

    /// The op of the newest checkpoint (0 without one).
    #[must_use]
    pub fn checkpoint_op(&self) -> Op {
        self.increments
            .last()
            .or(self.checkpoint.as_ref())
            .map_or(Op(0), |checkpoint| checkpoint.op)
    }

    /// Applies one write, as an ideal disk would.
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::ViewState(view_state) => self.view_state = *view_state,
            Write::Append(entry) => {
                let expected = self
                    .entries
                    .back()
                    .map_or(self.checkpoint_op() + 1, |e| e.op + 1);
                assert_eq!(entry.op, expected, "appends must be consecutive");
                self.entries.push_back(entry.clone());
            }
            Write::Truncate { op } => {
                while self.entries.back().is_some_and(|entry| entry.op > *op) {
                    self.entries.pop_back();
                }
            }
            Write::Checkpoint(checkpoint) => {
                while self
                    .entries
                    .front()
                    .is_some_and(|entry| entry.op <= checkpoint.op)
                {
                    self.entries.pop_front();
                }
                if self
                    .entries
                    .front()
                    .is_some_and(|entry| entry.op != checkpoint.op + 1)
                {
                    self.entries.clear();
                }
                if checkpoint.since == Op(0) {
                    self.checkpoint = Some(checkpoint.clone());
                    self.increments.clear();
                } else {
                    assert_eq!(
                        checkpoint.since,
                        self.checkpoint_op(),
                        "an increment continues the chain"
                    );
                    self.increments.push(checkpoint.clone());
                }
            }
        }
    }
}

impl DurableState {
    /// The durable state of a replica that lost its data and must recover before voting:
    /// storage must hold exactly this before `Replica::recover` runs on it.
    #[must_use]
    pub fn recovering() -> Self {
        Self {
            view_state: ViewState {
                recovering: true,
                ..ViewState::default()
            },
            ..Self::default()
        }
    }

    /// The durable state of a replica restored from a backup (`vsr restore`): a whole
    /// `checkpoint` and nothing after it, normal in `view`, committed up to the checkpoint's op.
    #[must_use]
    pub fn restored(view: View, checkpoint: Checkpoint) -> Self {
        Self {
            view_state: ViewState {
                view,
                last_normal_view: view,
                commit: checkpoint.op,
                recovering: false,
            },
            checkpoint: Some(checkpoint),
            ..Self::default()
        }
    }
}
