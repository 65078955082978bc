//! The errors of the server and the client: operator and API mistakes, as typed values whose
//! messages say what to do. Faults of peers and of the network never surface here: they are
//! dropped, counted and logged where they happen.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::storage::StorageError;
use crate::tls::TlsError;

/// Why [`run_replica`](crate::run_replica) could not start or had to stop.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory could not be opened.
    #[error(
        "cannot open the data directory {dir}: {source} \
         (format it first with vsr_storage::format, or pass the right --data-dir and --cluster)"
    )]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// What the storage layer reported.
        source: StorageError,
    },
    /// Another process holds the data directory ([`StorageError::Locked`]): a replica already
    /// runs there.
    #[error(transparent)]
    DataDirectoryInUse {
        /// The storage layer's error, naming the directory and the holder's process id.
        source: StorageError,
    },
    /// The number of addresses differs from the replica count the data directory was formatted
    /// with.
    #[error(
        "the data directory was formatted for {replica_count} replicas but {addresses} addresses \
         were given: pass exactly one address per replica, the i-th for replica i"
    )]
    AddressCount {
        /// Replicas in the cluster, from the data directory.
        replica_count: u8,
        /// Addresses given.
        addresses: usize,
    },
    /// An address could not be resolved.
    #[error("cannot resolve the address {address:?}: {reason} (expected host:port)")]
    Resolve {
        /// The address as given.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// `ReplicaOptions::config` names another cluster or replica count than the data directory.
    #[error(
        "the configuration does not match the data directory (cluster {cluster:x}, \
         {replica_count} replicas): build it with Config::new(cluster, replica_count)"
    )]
    ConfigMismatch {
        /// The data directory's cluster.
        cluster: u128,
        /// The data directory's replica count.
        replica_count: u8,
    },
    /// `ReplicaOptions::checkpoint_interval` or `checkpoint_log_bytes` is zero.
    #[error("the checkpoint interval must be at least one op and its log bound at least one byte")]
    CheckpointInterval,
    /// The listening socket could not be opened.
    #[error("cannot listen on {address}: {source} (is another process using this port?)")]
    Listen {
        /// The address.
        address: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The storage thread stopped after a write or sync failed; the replica stopped rather than
    /// acknowledge writes that may not be durable.
    #[error("storage failed and the replica stopped: {source}")]
    StorageFailed {
        /// The storage thread's error: what failed, and what to do about it.
        source: StorageError,
    },
    /// The operating system's random number generator failed.
    #[error("cannot read OS entropy for the replica's seed: {0}")]
    Entropy(String),
    /// The TLS certificates could not be loaded.
    #[error("cannot load the TLS certificates: {0} (write them with `vsr certs`)")]
    Tls(#[from] TlsError),
}

/// Why [`Client::connect`](crate::Client::connect) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The number of addresses is not a supported cluster size.
    #[error("{addresses} addresses given: pass one address per replica, 1, 3, 5 or 7 of them")]
    AddressCount {
        /// Addresses given.
        addresses: usize,
    },
    /// The operating system's random number generator failed.
    #[error("cannot read OS entropy for the client id: {0}")]
    Entropy(String),
}

/// Why [`Client::request`](crate::Client::request) returned without a result.
///
/// The variants differ in what the caller knows: after [`RequestError::NotExecuted`] (and
/// [`RequestError::WrongCluster`], a configuration mistake no retry mends) the operation
/// certainly did not execute; after [`RequestError::Unknown`] it may or may not have
/// executed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The operation was never sent to any replica, so it did not execute.
    #[error("request not executed (it was never sent): {reason}")]
    NotExecuted {
        /// Why.
        reason: String,
    },
    /// The operation was sent but its outcome is unknown: it may or may not have executed.
    #[error("request outcome unknown (it was sent and may have executed): {reason}")]
    Unknown {
        /// Why.
        reason: String,
    },
    /// The replicas the request went to serve another cluster than the client's: none of them
    /// executed it, so it did not execute. The cluster id, or the addresses, are wrong.
    #[error(
        "request not executed: replica {replica} at {address} serves cluster {found:#x}, not \
         {expected:#x} (pass the id the cluster was formatted with, or that cluster's addresses)"
    )]
    WrongCluster {
        /// The client's cluster.
        expected: u128,
        /// The cluster the replica serves.
        found: u128,
        /// The replica: the index of its address among the client's.
        replica: u8,
        /// Its address, as the client was given it.
        address: String,
    },
}
