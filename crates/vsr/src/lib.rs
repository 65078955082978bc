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
//!   on_message(Envelope)  ─┐                                   ┌─▶ Command::Send { to, envelope }
//!   on_tick()             ─┼─▶ normal / view_change /  ────────┼─▶ Command::Reply { client, envelope }
//!   on_persisted(seq)     ─┘   state_transfer / recovery       └─▶ Command::Persist { seq, write }
//! ```
//!
//! A [`Client`] is driven the same way. The replicated service is a [`StateMachine`].

pub mod checksum;
pub mod client;
pub mod command;
pub mod config;
pub mod message;
pub mod replica;
pub mod state_machine;
pub mod wire;

pub use client::{Client, ClientEvent};
pub use command::{Checkpoint, Command, DurableState, ViewState, Write};
pub use config::Config;
pub use message::{
    ClientId, Entry, Envelope, Message, Operation, ReplicaIndex, ReplyResult, Sender,
};
pub use replica::{Replica, ReplicaStats, Status};
pub use state_machine::{Codec, CodecError, StateMachine};
