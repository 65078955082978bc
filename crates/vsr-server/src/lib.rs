//! A tokio runtime for vsr: implement [`vsr::StateMachine`], call [`run_replica`] on every
//! replica, and talk to the cluster with [`Client`].
//!
//! The protocol core ([`vsr::Replica`]) does no I/O; this crate carries out its commands:
//!
//! * [`run_replica`] opens the data directory (`vsr_storage`), listens on the replica's address
//!   and runs one event loop task that owns the replica. Inbound connections (from peers and
//!   clients) feed it verified messages through a bounded channel; a tick interval drives its
//!   timeouts; a storage thread makes writes durable with group commit and reports back. Its
//!   commands go to per-peer outbound queues, to the client connections replies belong to, and
//!   to the storage thread.
//! * [`Client`] is an async wrapper around [`vsr::Client`]: one session, one request in
//!   flight, retries driven by ticks, and errors that say whether the request may have run.
//! * Sockets sit behind the [`Transport`] trait: [`TlsTransport`] (mutual TLS: every connection
//!   proves which replica, client or operator of the cluster is at each end, and a connection
//!   may only carry the messages its certificate allows), [`TcpTransport`] (plain TCP, for a
//!   trusted network), or [`Network`], either one chosen at run time. [`tls::generate`] writes
//!   a cluster's certificates.
//!
//! Garbage from the network is dropped, counted in the metrics (`--metrics`, Prometheus text at
//! `GET /metrics`) and logged at most once a second per kind; it never stops a replica.

pub mod backup;
mod client;
mod error;
mod frame;
mod inbound;
mod metrics;
mod peer;
mod ports;
mod server;
pub mod status;
mod storage;
pub mod tls;
mod transport;

pub use client::{Client, ClientPool};
pub use error::{ClientError, RequestError, ServerError};
pub use ports::loopback_ports;
pub use server::{ReplicaOptions, run_replica, run_replica_with};
pub use tls::{Identity, TlsTransport};
pub use transport::{Network, NetworkStream, TcpTransport, Transport};
