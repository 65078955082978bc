//! The protocol's messages, in the paper's words, as typed values.
//!
//! Replicas and clients exchange [`Envelope`]s. The typed form is what the core emits;
//! [`crate::wire`] turns it into checksummed bytes and back, and defines each message (one
//! struct per message, one file each). The core consumes only [`crate::wire::Verified`]
//! envelopes, which nothing but [`crate::wire::decode`] builds.

pub use crate::wire::{
    Commit, Confirm, DeltaChunk, DeltaCursor, DeltaEnd, DeltaTarget, DoViewChange, Entry, GetState,
    Message, MessageKind, NewState, Operation, Prepare, PrepareOk, Query, Recovery,
    RecoveryResponse, Reply, ReplyResult, Request, StartView, StartViewChange, StatePayload,
};

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
