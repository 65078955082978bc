//! vsr-cli's integration tests, one module per area, in one test binary so the whole stack is
//! linked once: `cargo test -p vsr-cli --test integration` runs them all, and
//! `cargo test -p vsr-cli --test integration chaos::` (or `damage::`, `cluster::`, `service::`,
//! ...) one area.

mod backup;
mod bad_input;
mod bench;
mod chaos;
mod cli;
mod cluster;
mod common;
mod damage;
mod demo;
mod flood;
mod lock;
mod ops;
mod service;
mod status;
mod tls;
