//! Cluster configuration and the protocol's bounds.

pub use crate::limits::{
    BATCH_MAX, BATCH_SIZE_MAX, MESSAGE_BODY_SIZE_MAX, OPERATION_SIZE_MAX, PIPELINE_MAX,
    REPLICAS_MAX,
};
use crate::message::ReplicaIndex;

/// The largest `state_transfer_size_max` a configuration may set: 1 TiB, far above any state
/// this library is meant for, and small enough that offsets never come near the numbers a
/// message may carry.
pub const STATE_TRANSFER_SIZE_LIMIT: u64 = 1 << 40;
use crate::numbers::View;

/// Static configuration of one replica. All replicas of a cluster must agree on it, except for
/// the checkpoint bounds (`checkpoint_interval`, `checkpoint_log_size_max`): checkpoints are
/// local to each replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The cluster's identity; messages of other clusters are dropped.
    pub cluster: u128,
    /// Number of replicas: 1, 3, 5 or 7.
    pub replica_count: u8,
    /// Prepares in flight at once. A request that arrives while the pipeline is full waits and
    /// joins the next prepare, so batches grow with load and a lone request never waits.
    pub pipeline_max: u64,
    /// Most entries in one prepare.
    pub batch_max: u64,
    /// Client sessions kept in the client table.
    pub clients_max: usize,
    /// Committed entries each replica keeps in memory for lagging peers.
    pub log_retained_max: u64,
    /// Ops between checkpoints of the state machine. A checkpoint writes the whole snapshot, so
    /// it should come rarely enough that its cost, spread over the ops between checkpoints,
    /// stays small next to the log itself.
    pub checkpoint_interval: u64,
    /// Wire bytes of entries executed between checkpoints, at most: a checkpoint is taken at
    /// whichever of this and `checkpoint_interval` comes first. It bounds the log a restart
    /// replays (and holds in memory while it does) when operations are large.
    pub checkpoint_log_size_max: usize,
    /// Largest chunk of a delta in one new_state message, in bytes.
    pub state_chunk_size_max: usize,
    /// Largest delta a replica receives by state transfer, in bytes. The delta is streamed
    /// into one buffer and decoded whole once complete, so this bounds the memory a transfer
    /// takes on the receiver; at most [`STATE_TRANSFER_SIZE_LIMIT`].
    pub state_transfer_size_max: u64,
    /// Ticks between commit heartbeats from an idle primary.
    pub heartbeat_ticks: u64,
    /// Ticks without hearing from the primary before a backup starts a view change.
    pub view_change_timeout_ticks: u64,
    /// Ticks before an unacknowledged prepare is sent again.
    pub prepare_retry_ticks: u64,
    /// Ticks before a view change, a state transfer or a recovery attempt is retried.
    pub retry_ticks: u64,
}

impl Config {
    /// A configuration with defaults suited to a real network (a tick of 10 ms).
    #[must_use]
    pub fn new(cluster: u128, replica_count: u8) -> Self {
        let config = Self {
            cluster,
            replica_count,
            pipeline_max: 4,
            batch_max: 512,
            clients_max: 1024,
            log_retained_max: 8192,
            checkpoint_interval: 65_536,
            checkpoint_log_size_max: 64 * 1024 * 1024,
            state_chunk_size_max: 256 * 1024,
            state_transfer_size_max: 64 << 30,
            heartbeat_ticks: 10,
            view_change_timeout_ticks: 50,
            prepare_retry_ticks: 20,
            retry_ticks: 40,
        };
        config.validate();
        config
    }

    /// Asserts the configuration is one the protocol supports.
    pub fn validate(&self) {
        assert!(
            matches!(self.replica_count, 1 | 3 | 5 | 7),
            "replica count must be 1, 3, 5 or 7"
        );
        assert!(self.pipeline_max >= 1 && self.pipeline_max <= PIPELINE_MAX);
        assert!(self.batch_max >= 1 && self.batch_max <= BATCH_MAX);
        assert!(self.clients_max >= 1);
        assert!(self.log_retained_max >= 1);
        assert!(self.checkpoint_interval >= 1);
        assert!(self.checkpoint_log_size_max >= 1);
        assert!(
            self.state_chunk_size_max >= 64
                && self.state_chunk_size_max <= MESSAGE_BODY_SIZE_MAX / 2
        );
        assert!(
            self.state_transfer_size_max >= self.state_chunk_size_max as u64
                && self.state_transfer_size_max <= STATE_TRANSFER_SIZE_LIMIT,
            "state_transfer_size_max must hold a chunk and stay within STATE_TRANSFER_SIZE_LIMIT"
        );
        assert!(self.heartbeat_ticks >= 1);
        assert!(self.view_change_timeout_ticks > self.heartbeat_ticks);
        assert!(self.prepare_retry_ticks >= 1 && self.retry_ticks >= 1);
    }

    /// Most ops after the commit number the primary prepares: a full pipeline of full batches.
    #[must_use]
    pub fn pipeline_ops_max(&self) -> u64 {
        self.pipeline_max * self.batch_max
    }

    /// Most bytes of entries after the commit number the primary prepares.
    #[must_use]
    pub fn pipeline_size_max(&self) -> usize {
        self.pipeline_max as usize * BATCH_SIZE_MAX
    }

    /// f: failures tolerated.
    #[must_use]
    pub fn faults_max(&self) -> usize {
        usize::from(self.replica_count) / 2
    }

    /// f + 1: replicas that make a quorum.
    #[must_use]
    pub fn quorum(&self) -> usize {
        self.faults_max() + 1
    }

    /// The primary of `view`.
    #[must_use]
    pub fn primary(&self, view: View) -> ReplicaIndex {
        view.primary(self.replica_count)
    }
}
