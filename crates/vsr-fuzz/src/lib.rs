//! Coverage-guided fuzz targets for every decoder that reads bytes a replica did not produce
//! itself in this process: frames from the network, state-transfer chunks, WAL records, header
//! copies, superblocks and checkpoints from disk, and the key-value store's encodings.
//!
//! Each target is one function from arbitrary bytes to nothing: it must never panic, whatever
//! the bytes. Where cheap it also checks a property (a value decodes from its own encoding).
//! The same functions run under AFL++ (`src/bin/vsr-fuzz.rs`, feature `afl`) and in
//! `tests/corpus.rs`, which replays every checked-in corpus file, so an input that once crashed
//! a target stays a regression test. `docs/fuzzing.md` says how to run and extend them.
//!
//! ```text
//!   fuzz input ──▶ target ──▶ seal (fix checksums) ──▶ the real decoder ──▶ property checks
//! ```
//!
//! Checksums guard every encoding, and a fuzzer cannot guess a 128-bit checksum: a target
//! whose input asks for it seals the bytes first ([`seal`]), recomputing each checksum over
//! the bytes the fuzzer chose, so that mutations reach the parsing behind the checksums.
//! Unsealed inputs exercise the checksum checks themselves.

#![warn(missing_docs, unreachable_pub)]

mod client_table;
mod frame;
mod kv;
pub mod seal;
pub mod seeds;
mod state_transfer;
mod storage;

pub use client_table::client_table;
pub use frame::frame;
pub use kv::kv;
pub use state_transfer::state_transfer;
pub use storage::{checkpoint, wal};

/// The cluster every target's replicas and clients belong to.
pub const CLUSTER: u128 = 0x5eed_f022;

/// Replicas in the cluster every target decodes for.
pub const REPLICA_COUNT: u8 = 3;

/// A fuzz target: its name (the corpus directory's and the harness argument's) and function.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: [Target; 6] = [
    Target {
        name: "frame",
        run: frame,
    },
    Target {
        name: "state_transfer",
        run: state_transfer,
    },
    Target {
        name: "wal",
        run: wal,
    },
    Target {
        name: "checkpoint",
        run: checkpoint,
    },
    Target {
        name: "kv",
        run: kv,
    },
    Target {
        name: "client_table",
        run: client_table,
    },
];

/// The target named `name`.
#[must_use]
pub fn target(name: &str) -> Option<Target> {
    TARGETS.into_iter().find(|target| target.name == name)
}
