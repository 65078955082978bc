//! The replicated service: what a library user implements.

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::numbers::Op;
use crate::snapshot::{DeltaSource, EncodedDelta};

/// A value could not be decoded from bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("cannot decode {what}: {reason}")]
#[non_exhaustive]
pub struct CodecError {
    /// The type being decoded.
    pub what: &'static str,
    /// Why it failed.
    pub reason: &'static str,
}

impl CodecError {
    /// A decoding error for `what`, because of `reason`.
    #[must_use]
    pub fn new(what: &'static str, reason: &'static str) -> Self {
        Self { what, reason }
    }
}

/// A value with a deterministic byte encoding.
///
/// `decode(encode(x)) == x` must hold, and `decode` must reject (never panic on) arbitrary bytes:
/// operations arrive from clients over the network.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a value that occupies all of `bytes`.
    ///
    /// # Errors
    /// When `bytes` is not the encoding of a value.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;

    /// The encoding of `self` as a fresh vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A deterministic state machine replicated by VSR.
///
/// Every replica applies the same committed operations in the same order, so `apply` must be a
/// pure function of the state and its arguments: no clocks, no randomness, no I/O, no iteration
/// over hash maps whose order can reach the result.
///
/// # Deltas
/// A replica that falls behind further than its peers keep log entries catches up from a delta:
/// `delta(since)` describes every change made by ops after `since`, and `apply_delta` on a state
/// machine that has executed exactly the ops up to `since` brings it to the sender's state.
/// **The full state is always a valid delta**: an implementation that cannot compute a true
/// delta may return its whole state for any `since`, and `delta(Op(0))` must always be the whole
/// state (it is also what checkpoints store).
///
/// # Queries
/// A query reads the state and changes nothing, so it never enters the log: the primary
/// answers it from [`StateMachine::query`] once a quorum has confirmed that it still leads its
/// view (see `docs/ARCHITECTURE.md`, "Reads"). The contract: `query` is a pure function of the
/// state and the query, deterministic and free of side effects, like `apply`, and it must not
/// change anything `apply`, `delta` or `digest` can observe. A state machine with nothing to
/// read this way still names a `Query` type whose `decode` rejects every input.
pub trait StateMachine {
    /// An operation a client asks to execute.
    type Operation: Codec;
    /// What executing an operation or answering a query returns to the client.
    type Result: Codec;
    /// A read a client asks for; answered without entering the log.
    type Query: Codec;
    /// A description of the changes after some op, see above.
    type Delta: Codec;

    /// Executes `operation`, committed at log position `op`.
    fn apply(&mut self, op: Op, operation: Self::Operation) -> Self::Result;

    /// Answers `query` from the state as it is: no effect on the state.
    fn query(&self, query: Self::Query) -> Self::Result;

    /// The changes made by ops after `since`, up to the last op applied.
    fn delta(&self, since: Op) -> Self::Delta;

    /// Applies a delta produced by a peer's [`StateMachine::delta`].
    fn apply_delta(&mut self, delta: Self::Delta);

    /// `delta(since)`, frozen now and encoded later, in pieces, possibly on another thread.
    ///
    /// Checkpoints (`since` the previous checkpoint, or `Op(0)` for a whole one) and state
    /// transfer take the state through here. The default encodes `delta(since)` at once, on the
    /// replica's event loop, which blocks the replica for as long as encoding takes. A state
    /// machine that can freeze its state cheaply (a persistent structure whose clone shares
    /// everything, copy-on-write pages) overrides it to return the frozen copy, and the work
    /// moves to the storage thread or to the transfer's pace. The bytes must be exactly those of
    /// `delta(since).encode(..)` at the moment of the call.
    fn frozen_delta(&self, since: Op) -> Arc<dyn DeltaSource> {
        Arc::new(EncodedDelta(Bytes::from(self.delta(since).to_bytes())))
    }

    /// A checksum-like digest of the whole state, used by tests to check that replicas converge.
    fn digest(&self) -> u128;

    /// The kind of the operation encoded in `operation` (a request's body, not decoded), as a
    /// runtime's metrics label it: per-operation latency, say `put` or `get`. The default,
    /// `"request"`, puts every operation in one kind.
    ///
    /// The runtime calls it for every request the primary receives, so it must be cheap (look
    /// at a tag byte; decoding would copy the operation) and never panic: the bytes may be
    /// anything a client sent. It must answer from a small fixed set of names made of lower
    /// case ASCII letters, digits and `_` (a runtime keeps a few series per name and folds
    /// names past its bound, or not of that form, into one).
    fn operation_name(operation: &[u8]) -> &'static str {
        let _ = operation;
        "request"
    }

    /// As [`StateMachine::operation_name`], for the query encoded in `query`; the default is
    /// `"query"`.
    fn query_name(query: &[u8]) -> &'static str {
        let _ = query;
        "query"
    }

    /// The size of the state as it is now, for a runtime's metrics; `None` (the default) when
    /// the state machine does not keep count. Called after every batch of events the replica
    /// handles: it must be O(1), from counts kept as operations execute, never a walk.
    fn size(&self) -> Option<StateSize> {
        None
    }
}

/// The size of a state machine's state ([`StateMachine::size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Live keys (or whatever the state's unit of content is).
    pub keys: u64,
    /// Bytes of live content: keys and values, without the structure that holds them.
    pub bytes: u64,
}
