//! Viewstamped Replication (Liskov & Cowling, "Viewstamped Replication Revisited", 2012) as a
//! sans-IO, deterministic protocol core.
//!
//! The core never touches a clock, a socket, a file or global randomness. A driver (the
//! simulator, the tokio runtime, a unit test) feeds it events and carries out the commands it
//! emits:
//!
//! ```text
//!   driver                          Replica                           driver
//!   ──────                          ───────                           ──────
//!   on_message(Verified)  ─┐                                   ┌─▶ Command::Send { to, envelope }
//!   on_tick()             ─┼─▶ normal / view_change /  ────────┼─▶ Command::Reply { client, envelope }
//!   on_persisted(seq)     ─┘   state_transfer / recovery       └─▶ Command::Persist { seq, write }
//! ```
//!
//! A [`Client`] is driven the same way. The replicated service is a [`StateMachine`].

#[cfg(feature = "bugs")]
pub mod bugs;
pub mod checksum;
pub mod client;
pub mod command;
pub mod config;
pub mod coverage;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod message;
pub mod numbers;
pub mod replica;
pub mod snapshot;
pub mod state_machine;
pub mod wire;

pub use client::{Client, ClientEvent};
pub use command::{Checkpoint, Command, DurableState, ViewState, Write};
pub use config::Config;
pub use message::{
    ClientId, Commit, Confirm, DeltaChunk, DeltaCursor, DeltaEnd, DeltaTarget, DoViewChange, Entry,
    Envelope, GetState, Message, NewState, Operation, Prepare, PrepareOk, Query, Recovery,
    RecoveryResponse, ReplicaIndex, Reply, ReplyResult, Request, Sender, StartView,
    StartViewChange, StatePayload,
};
pub use numbers::{EntryChecksum, Op, View};
pub use replica::{Replica, ReplicaStats, Role, Status};
pub use snapshot::{DeltaSource, EncodedDelta, Snapshot};
pub use state_machine::{Codec, CodecError, StateMachine, StateSize};
pub use wire::{Receiver, Verified};

/// Counts a hit of the named coverage mark on this thread: `vsr::mark!(WalTornTailCut)` (see
/// `coverage`). Present in every build; it never changes behaviour.
#[macro_export]
macro_rules! mark {
    ($variant:ident) => {
        $crate::coverage::hit($crate::coverage::Mark::$variant)
    };
}

/// Whether the named deliberate slip is switched on for this thread: `vsr::bug!(SkipDedup)`
/// (see `bugs`, present with the `bugs` feature).
#[cfg(feature = "bugs")]
#[macro_export]
macro_rules! bug {
    ($variant:ident) => {
        $crate::bugs::active($crate::bugs::Bug::$variant)
    };
}

/// Without the `bugs` feature no slip exists: `vsr::bug!(Name)` is `false`.
#[cfg(not(feature = "bugs"))]
#[macro_export]
macro_rules! bug {
    ($variant:ident) => {
        false
    };
}
