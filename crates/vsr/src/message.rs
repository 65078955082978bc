//! The protocol's messages, in the paper's words, as typed values.
//!
//! Replicas and clients exchange [`Envelope`]s. The typed form is what the core consumes and
//! emits; [`crate::wire`] turns it into checksummed bytes and back. A driver hands the core only
//! envelopes that came out of [`crate::wire::decode`] (or, in the simulator, that it built from
//! the core's own output), so every field here has passed its checksum.

use bytes::Bytes;

use crate::checksum::Checksum;

/// Index of a replica in the cluster configuration, `0..replica_count`.
pub type ReplicaIndex = u8;

/// A client's identity: a random 128-bit number chosen by the client.
pub type ClientId = u128;

/// Who sent an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sender {
    /// A replica of the cluster.
    Replica(ReplicaIndex),
    /// A client.
    Client(ClientId),
}

/// A message with the fields every message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The cluster this message belongs to; anything else is dropped.
    pub cluster: u128,
    /// Reserved for reconfiguration; always 0 today.
    pub epoch: u32,
    /// Who sent it.
    pub sender: Sender,
    /// The message itself.
    pub message: Message,
}

/// What a log entry asks the replicated service to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Registers a client session; its reply carries the session number (the op number).
    Register,
    /// An operation of the state machine, encoded in the entry's body.
    StateMachine,
    /// A no-op the primary appends at the start of a view (never sent by clients).
    Noop,
}

/// One entry of the log: a prepared client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub op: u64,
    /// The view in which the primary assigned this op.
    pub view: u64,
    /// Checksum of the previous entry (0 for op 1): the log is a hash chain.
    pub parent: u128,
    /// The client that sent the request (0 for [`Operation::Noop`]).
    pub client: ClientId,
    /// The client's session (the op number of its register entry; 0 when registering).
    pub session: u64,
    /// The client's request number.
    pub request: u64,
    /// What kind of entry this is.
    pub operation: Operation,
    /// The encoded state machine operation (empty for register and no-op).
    pub body: Bytes,
    /// Checksum over every other field: identifies this exact entry.
    pub checksum: u128,
}

impl Entry {
    /// Builds an entry and computes its checksum.
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub fn new(
        op: u64,
        view: u64,
        parent: u128,
        client: ClientId,
        session: u64,
        request: u64,
        operation: Operation,
        body: Bytes,
    ) -> Self {
        let mut entry = Entry {
            op,
            view,
            parent,
            client,
            session,
            request,
            operation,
            body,
            checksum: 0,
        };
        entry.checksum = entry.compute_checksum();
        entry
    }

    /// Recomputes the checksum from the fields.
    #[must_use]
    pub fn compute_checksum(&self) -> u128 {
        let mut hasher = Checksum::default();
        hasher.update(&self.op.to_le_bytes());
        hasher.update(&self.view.to_le_bytes());
        hasher.update(&self.parent.to_le_bytes());
        hasher.update(&self.client.to_le_bytes());
        hasher.update(&self.session.to_le_bytes());
        hasher.update(&self.request.to_le_bytes());
        hasher.update(&[self.operation as u8]);
        hasher.update(&(self.body.len() as u64).to_le_bytes());
        hasher.update(&self.body);
        hasher.finalize()
    }

    /// Whether the stored checksum matches the fields.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.checksum == self.compute_checksum()
    }
}

/// The outcome carried by a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyResult {
    /// The request executed; the encoded state machine result.
    Executed(Bytes),
    /// A register request executed; the session number is the reply's op.
    Registered,
    /// The client's session is not in the client table (evicted, or never registered). The
    /// request was not executed by this session; whether an earlier copy executed is unknown.
    SessionEvicted,
}

/// State sent by [`Message::NewState`]: committed log entries when the responder still has them,
/// otherwise a chunk of a snapshot delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatePayload {
    /// Log entries, consecutive, starting right after the requester's op.
    Entries(Vec<Entry>),
    /// One chunk of an encoded snapshot delta (client table + state machine delta).
    Delta {
        /// The op the delta brings the requester up to (the responder's commit).
        op: u64,
        /// The checksum of the hash-chain entry at `op`, so the requester can continue the chain.
        op_checksum: u128,
        /// The commit number the delta starts from (the requester's commit).
        since: u64,
        /// Byte offset of this chunk in the encoded delta.
        offset: u64,
        /// Total size of the encoded delta.
        total_size: u64,
        /// Checksum of the whole encoded delta.
        total_checksum: u128,
        /// This chunk's bytes.
        chunk: Bytes,
    },
}

/// The protocol's messages (Viewstamped Replication Revisited, §4–§5, plus session registration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client → primary: execute an operation.
    Request {
        /// The client's session (0 when registering).
        session: u64,
        /// The client's request number (strictly increasing per client).
        request: u64,
        /// What to execute.
        operation: Operation,
        /// The encoded state machine operation.
        body: Bytes,
    },
    /// Replica → client: the result of a request.
    Reply {
        /// The client this reply is for, so replies of many sessions can share a connection.
        client: ClientId,
        /// The view of the replying primary, so the client learns who is primary.
        view: u64,
        /// The op number at which the request executed (the session for a register).
        op: u64,
        /// The client's request number this replies to.
        request: u64,
        /// The outcome.
        result: ReplyResult,
    },
    /// Primary → backups: append these entries, a batch of client requests.
    Prepare {
        /// The primary's view.
        view: u64,
        /// The primary's commit number.
        commit: u64,
        /// The entries to append: at least one, consecutive, bounded by
        /// [`crate::config::BATCH_SIZE_MAX`] bytes.
        entries: Vec<Entry>,
    },
    /// Backup → primary: the entry is durable in my log.
    PrepareOk {
        /// The backup's view.
        view: u64,
        /// The op now durable (all earlier ops are durable too).
        op: u64,
        /// The checksum of the entry at `op`.
        checksum: u128,
    },
    /// Primary → backups, when idle: the commit number.
    Commit {
        /// The primary's view.
        view: u64,
        /// The primary's commit number.
        commit: u64,
    },
    /// Any replica → all: I have moved to this view.
    StartViewChange {
        /// The new view.
        view: u64,
    },
    /// Replica → new primary: my log for the view change.
    DoViewChange {
        /// The new view.
        view: u64,
        /// The latest view in which the sender's status was normal.
        last_normal_view: u64,
        /// The sender's op number.
        op: u64,
        /// The sender's commit number.
        commit: u64,
        /// The sender's log suffix after `commit`, up to `op` (bounded by the pipeline).
        entries: Vec<Entry>,
    },
    /// New primary → all: the view has started; here is the log suffix.
    StartView {
        /// The new view.
        view: u64,
        /// The new primary's op number.
        op: u64,
        /// The new primary's commit number.
        commit: u64,
        /// The log suffix after `commit`, up to `op`.
        entries: Vec<Entry>,
    },
    /// A lagging replica asks a peer for what it is missing after `op`.
    GetState {
        /// The requester's view.
        view: u64,
        /// The requester's last op it holds and trusts (its commit after a view change).
        op: u64,
        /// The requester's commit number (a delta starts here).
        commit: u64,
    },
    /// The answer to [`Message::GetState`].
    NewState {
        /// The responder's view.
        view: u64,
        /// The responder's op number (only meaningful when the responder is normal in `view`).
        op: u64,
        /// The responder's commit number.
        commit: u64,
        /// Whether `Entries` may include uncommitted entries of `view` (responder normal in it).
        normal: bool,
        /// The state.
        payload: StatePayload,
    },
    /// A replica that lost its state asks everyone for the view.
    Recovery {
        /// A fresh nonce, echoed in responses.
        nonce: u64,
    },
    /// The answer to [`Message::Recovery`].
    RecoveryResponse {
        /// The responder's view.
        view: u64,
        /// The recovering replica's nonce.
        nonce: u64,
        /// The responder's op number (meaningful from the primary).
        op: u64,
        /// The responder's commit number (meaningful from the primary).
        commit: u64,
        /// Whether the responder is the primary of `view` in normal status.
        primary: bool,
    },
}

impl Message {
    /// The message's name in the paper's words, for logs and traces.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Message::Request { .. } => "request",
            Message::Reply { .. } => "reply",
            Message::Prepare { .. } => "prepare",
            Message::PrepareOk { .. } => "prepare_ok",
            Message::Commit { .. } => "commit",
            Message::StartViewChange { .. } => "start_view_change",
            Message::DoViewChange { .. } => "do_view_change",
            Message::StartView { .. } => "start_view",
            Message::GetState { .. } => "get_state",
            Message::NewState { .. } => "new_state",
            Message::Recovery { .. } => "recovery",
            Message::RecoveryResponse { .. } => "recovery_response",
        }
    }
}
