//! Swarm testing: each seed draws its own cluster parameters and fault mix.
//!
//! A fixed fault mix tests one corner well and the others never; drawing the mix per seed (some
//! seeds with no loss, some with heavy loss, some with crashes aimed at the primary, some with
//! skewed clocks) covers far more interleavings for the same number of runs. The draws come
//! first from the seed's generator, so a seed names its mix.

use vsr::Config;

use crate::random::{PPM, Prng};

/// Nanoseconds in a millisecond.
pub(crate) const MS: u64 = 1_000_000;

/// Nanoseconds in a second.
pub(crate) const SECOND: u64 = 1_000 * MS;

/// The protocol parameters of one run, deliberately small so that pipelines fill, sessions are
/// evicted, checkpoints happen and state transfer needs deltas in chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterParams {
    /// Prepares in flight at once.
    pub pipeline_max: u64,
    /// Most ops in one prepare.
    pub batch_max: u64,
    /// Client sessions kept in the client table.
    pub clients_max: usize,
    /// Committed entries kept in memory for lagging peers.
    pub log_retained_max: u64,
    /// Ops between checkpoints.
    pub checkpoint_interval: u64,
    /// Bytes of executed entries between checkpoints, at most.
    pub checkpoint_log_size_max: usize,
    /// Largest chunk of a delta in one new_state message, in bytes.
    pub state_chunk_size_max: usize,
    /// Ticks without hearing from the primary before a view change.
    pub view_change_timeout_ticks: u64,
}

impl ClusterParams {
    /// Parameters for `clients` clients that keep every session and trim the log late.
    #[must_use]
    pub fn roomy(clients: usize) -> Self {
        Self {
            pipeline_max: 4,
            batch_max: 4,
            clients_max: clients.max(1),
            log_retained_max: 64,
            checkpoint_interval: 64,
            checkpoint_log_size_max: usize::MAX,
            state_chunk_size_max: 1024,
            view_change_timeout_ticks: 50,
        }
    }

    pub(crate) fn swarm(prng: &mut Prng, clients: usize) -> Self {
        // Small pipelines and batches, so that both fill: requests wait, then leave together.
        let pipeline_max = prng.range(1, 2);
        let batch_max = prng.range(1, 6);
        let clients_max = match prng.below(4) {
            0 if clients >= 2 => clients - 1,
            1 => clients + 2,
            _ => clients,
        };
        let log_retained_max = prng.range(16, 48);
        let checkpoint_interval = prng.range(8, 48);
        // No draw of its own (seeds keep the rest of their parameters): with an even interval,
        // the byte bound comes first, after about a third of the interval's ops (an entry of
        // this workload is some 110 bytes on the wire).
        let checkpoint_log_size_max = if checkpoint_interval.is_multiple_of(2) {
            usize::try_from(checkpoint_interval).expect("small") * 32
        } else {
            usize::MAX
        };
        Self {
            pipeline_max,
            batch_max,
            clients_max: clients_max.max(1),
            log_retained_max,
            checkpoint_interval,
            checkpoint_log_size_max,
            state_chunk_size_max: prng.range(64, 1024) as usize,
            view_change_timeout_ticks: prng.range(30, 80),
        }
    }

    /// The core configuration for a cluster of `replicas`.
    #[must_use]
    pub fn config(&self, cluster: u128, replicas: u8) -> Config {
        let mut config = Config::new(cluster, replicas);
        config.pipeline_max = self.pipeline_max;
        config.batch_max = self.batch_max;
        config.clients_max = self.clients_max;
        config.log_retained_max = self.log_retained_max;
        config.checkpoint_interval = self.checkpoint_interval;
        config.checkpoint_log_size_max = self.checkpoint_log_size_max;
        config.state_chunk_size_max = self.state_chunk_size_max;
        config.view_change_timeout_ticks = self.view_change_timeout_ticks;
        config.validate();
        config
    }
}

/// Rates and bounds of every fault, for the fault phase. After it the simulator heals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FaultProfile {
    pub(crate) fault_phase_ns: u64,
    pub(crate) latency_min_ns: u64,
    pub(crate) latency_max_ns: u64,
    pub(crate) loss_ppm: u32,
    pub(crate) duplicate_ppm: u32,
    pub(crate) corrupt_ppm: u32,
    /// Per chaos step (100 ms): chance the partitions change.
    pub(crate) partition_ppm: u32,
    /// Per chaos step: chance a link turns slow (or fast again).
    pub(crate) slow_link_ppm: u32,
    pub(crate) slow_factor_max: u64,
    /// Per chaos step: chance a replica crashes.
    pub(crate) crash_ppm: u32,
    /// Of those crashes, the share aimed at the primary.
    pub(crate) crash_primary_ppm: u32,
    /// Per chaos step: chance the whole cluster crashes.
    pub(crate) crash_all_ppm: u32,
    /// Per chaos step: chance a replica restarts having lost its state.
    pub(crate) wipe_ppm: u32,
    pub(crate) downtime_min_ns: u64,
    pub(crate) downtime_max_ns: u64,
    /// Tick periods, per mille of the nominal 10 ms (clock jitter when not both 1000).
    pub(crate) tick_permille_min: u64,
    pub(crate) tick_permille_max: u64,
    pub(crate) disk_latency_min_ns: u64,
    pub(crate) disk_latency_max_ns: u64,
    /// Per crash: chance the disk had written only a prefix of the writes in flight (otherwise
    /// it wrote them all).
    pub(crate) disk_cut_ppm: u32,
    /// Per cut: chance the first write after the prefix is torn.
    pub(crate) disk_torn_ppm: u32,
    /// Per restart: chance some entries read back corrupt.
    pub(crate) disk_corrupt_ppm: u32,
    /// Per restart: chance the checkpoint reads back corrupt.
    pub(crate) disk_checkpoint_corrupt_ppm: u32,
    /// Per completed append: chance it landed on another entry's place.
    pub(crate) disk_misdirect_ppm: u32,
    /// Per batch: chance the replica crashes between the batch's writes and its sync.
    pub(crate) disk_crash_ppm: u32,
    /// Per cut crash, within the fault budget: chance the unsynced writes reach the platter in
    /// any order (any subset kept, writes torn in any sectors) rather than a prefix in order.
    pub(crate) disk_reorder_ppm: u32,
    /// Per restart: chance some sectors fail every read (latent sector errors).
    pub(crate) disk_read_error_ppm: u32,
    /// Per batch: chance the process dies at one of the batch's disk calls.
    pub(crate) disk_batch_crash_ppm: u32,
    /// Per batch holding a checkpoint: chance the process dies at one of its disk calls (in
    /// the checkpoint file, the superblock updates or the rotation).
    pub(crate) disk_checkpoint_crash_ppm: u32,
    /// Per batch: chance one of its disk calls fails with EIO.
    pub(crate) disk_eio_ppm: u32,
    /// Per batch: chance one of its disk calls fails with ENOSPC.
    pub(crate) disk_enospc_ppm: u32,
    /// Per crash of a replica: chance only the process dies (the page cache survives) rather
    /// than the machine losing power.
    pub(crate) process_crash_ppm: u32,
    /// Per chaos step: chance the weather changes — loss and corruption stop, or start again
    /// (0: they last the whole fault phase).
    pub(crate) storm_toggle_ppm: u32,
    /// Per message between replicas: chance it is held back for 1 to 15 s, to arrive after view
    /// changes, recoveries and retries.
    pub(crate) hold_ppm: u32,
    /// Per chaos step: chance some old messages between replicas are delivered again.
    pub(crate) replay_ppm: u32,
    /// Per chaos step: chance the primary of the moment is cut off (with, in larger clusters,
    /// another replica): back-to-back view changes, each isolating a different minority.
    pub(crate) isolate_primary_ppm: u32,
    /// Of the wipes, the share aimed at the replica holding the most uncommitted ops.
    pub(crate) wipe_longest_ppm: u32,
    /// Per restart: chance the primary is crashed or cut off within 300 ms, racing the
    /// restarted replica's recovery or state transfer with a view change.
    pub(crate) race_ppm: u32,
    /// Whether the heal leaves up to f replicas crashed, partitioned or cut one way until the
    /// clients are done: the f + 1 others must serve every request alone.
    pub(crate) partial_heal: bool,
    /// Per batch of writes: chance the storage thread takes only part of the queue (it woke
    /// while the replica was still issuing writes), so one event's writes sync apart.
    pub(crate) storage_batch_cut_ppm: u32,
    /// Per damaging restart: chance the damage is aimed at the newest sectors of the log.
    pub(crate) disk_damage_newest_ppm: u32,
    /// Per primary isolated or raced: chance what it sent in its last 300 ms arrives again
    /// 1 to 10 s later, after the view change.
    pub(crate) straggle_ppm: u32,
    /// Per chaos step: chance a forged message (another cluster's, a bad sender, numbers out
    /// of bounds, a primary's message from a replica that is not the primary) reaches a
    /// replica, which must drop it.
    pub(crate) forge_ppm: u32,
    /// Per damaging restart: chance a header-copies file is gone from the disk.
    pub(crate) disk_headers_lost_ppm: u32,
}

impl FaultProfile {
    /// No faults: a short fault phase, a fast network and disk, nominal clocks.
    pub(crate) fn quiet() -> Self {
        Self {
            fault_phase_ns: SECOND,
            latency_min_ns: MS / 10,
            latency_max_ns: MS,
            loss_ppm: 0,
            duplicate_ppm: 0,
            corrupt_ppm: 0,
            partition_ppm: 0,
            slow_link_ppm: 0,
            slow_factor_max: 1,
            crash_ppm: 0,
            crash_primary_ppm: 0,
            crash_all_ppm: 0,
            wipe_ppm: 0,
            downtime_min_ns: 100 * MS,
            downtime_max_ns: SECOND,
            tick_permille_min: 1000,
            tick_permille_max: 1000,
            disk_latency_min_ns: MS / 20,
            disk_latency_max_ns: MS / 2,
            disk_cut_ppm: 0,
            disk_torn_ppm: 0,
            disk_corrupt_ppm: 0,
            disk_checkpoint_corrupt_ppm: 0,
            disk_misdirect_ppm: 0,
            disk_crash_ppm: 0,
            disk_reorder_ppm: 0,
            disk_read_error_ppm: 0,
            disk_batch_crash_ppm: 0,
            disk_checkpoint_crash_ppm: 0,
            disk_eio_ppm: 0,
            disk_enospc_ppm: 0,
            process_crash_ppm: 0,
            storm_toggle_ppm: 0,
            hold_ppm: 0,
            replay_ppm: 0,
            isolate_primary_ppm: 0,
            wipe_longest_ppm: 0,
            race_ppm: 0,
            partial_heal: false,
            storage_batch_cut_ppm: 0,
            disk_damage_newest_ppm: 0,
            straggle_ppm: 0,
            forge_ppm: 0,
            disk_headers_lost_ppm: 0,
        }
    }

    /// A random mix: each kind of fault is off in some seeds and heavy in others.
    pub(crate) fn swarm(prng: &mut Prng) -> Self {
        let latency_min_ns = prng.range(MS / 20, 2 * MS);
        let latency_spread = prng.pick(&[MS, 5 * MS, 20 * MS, 60 * MS]);
        let disk_latency_min_ns = prng.range(MS / 100, MS);
        let disk_spread = prng.pick(&[MS / 2, 5 * MS, 30 * MS]);
        let jitter = prng.chance(PPM_HALF);
        let downtime_max_ns = prng.pick(&[500 * MS, 2 * SECOND, 5 * SECOND]);
        Self {
            fault_phase_ns: prng.range(3, 30) * SECOND,
            latency_min_ns,
            latency_max_ns: latency_min_ns + latency_spread,
            loss_ppm: level(prng, 300_000),
            duplicate_ppm: level(prng, 100_000),
            corrupt_ppm: level(prng, 20_000),
            partition_ppm: level(prng, 100_000),
            slow_link_ppm: level(prng, 100_000),
            slow_factor_max: prng.range(2, 50),
            crash_ppm: level(prng, 30_000),
            crash_primary_ppm: prng.range(0, 1_000_000) as u32,
            crash_all_ppm: level(prng, 5_000),
            wipe_ppm: level(prng, 20_000),
            downtime_min_ns: 50 * MS,
            downtime_max_ns,
            tick_permille_min: if jitter { prng.range(400, 1000) } else { 1000 },
            tick_permille_max: if jitter { prng.range(1000, 2500) } else { 1000 },
            disk_latency_min_ns,
            disk_latency_max_ns: disk_latency_min_ns + disk_spread,
            // In a third of the seeds the disk always wrote everything before a crash.
            disk_cut_ppm: prng.pick(&[0, PPM / 2, PPM]),
            disk_torn_ppm: prng.pick(&[0, PPM / 2, PPM]),
            disk_corrupt_ppm: level(prng, 500_000),
            disk_checkpoint_corrupt_ppm: level(prng, 100_000),
            disk_misdirect_ppm: level(prng, 10_000),
            disk_crash_ppm: level(prng, 50_000),
            disk_reorder_ppm: level(prng, PPM),
            disk_read_error_ppm: level(prng, 300_000),
            disk_batch_crash_ppm: level(prng, 20_000),
            disk_checkpoint_crash_ppm: level(prng, PPM / 2),
            disk_eio_ppm: level(prng, 15_000),
            disk_enospc_ppm: level(prng, 12_000),
            process_crash_ppm: prng.pick(&[0, PPM / 4, PPM / 2]),
            storm_toggle_ppm: prng.pick(&[0, 20_000, 100_000]),
            hold_ppm: level(prng, 20_000),
            replay_ppm: level(prng, 300_000),
            isolate_primary_ppm: level(prng, 60_000),
            wipe_longest_ppm: prng.pick(&[0, PPM / 2, PPM]),
            race_ppm: prng.pick(&[0, PPM / 4, PPM / 2]),
            partial_heal: prng.chance(PPM / 3),
            storage_batch_cut_ppm: prng.pick(&[0, PPM / 4, PPM / 2, PPM]),
            disk_damage_newest_ppm: prng.pick(&[0, PPM / 2, PPM]),
            straggle_ppm: prng.pick(&[0, PPM / 2, PPM]),
            forge_ppm: level(prng, 200_000),
            disk_headers_lost_ppm: prng.pick(&[0, PPM / 4]),
        }
    }
}

const PPM_HALF: u32 = 500_000;

/// A rate for one kind of fault: off in about a third of the seeds, otherwise anywhere from
/// light to `max_ppm`, with light rates as likely as heavy ones on a log scale.
fn level(prng: &mut Prng, max_ppm: u32) -> u32 {
    match prng.below(6) {
        0 | 1 => 0,
        2 => prng.range(1, u64::from(max_ppm / 100).max(1)) as u32,
        3 => prng.range(1, u64::from(max_ppm / 10).max(1)) as u32,
        _ => prng.range(1, u64::from(max_ppm)) as u32,
    }
}

/// Storage sizes for a seed: small growth steps, chunks and flush thresholds, so that file
/// growth, chunked checkpoints and records written before their sync all happen on short logs.
pub(crate) fn storage_tuning(prng: &mut Prng) -> vsr_storage::Tuning {
    vsr_storage::Tuning {
        wal_grow_bytes: prng.pick(&[4 << 10, 16 << 10, 64 << 10]),
        headers_grow_bytes: prng.pick(&[512, 4 << 10]),
        checkpoint_chunk_bytes: prng.pick(&[64, 1 << 10, 1 << 20]),
        rotation_copy_bytes_max: prng.pick(&[0, 1 << 10, 1 << 20]),
        flush_bytes: prng.pick(&[128, 512, 4 << 10, 1 << 20]),
        // The simulator writes checkpoints itself, never resting on a real clock.
        checkpoint_disk_share_percent: 100,
    }
}

/// Storage sizes for scripted scenarios: small, fixed; records reach the disk before their
/// sync, so a crash finds unsynced writes there.
pub(crate) fn scenario_storage_tuning() -> vsr_storage::Tuning {
    vsr_storage::Tuning {
        wal_grow_bytes: 16 << 10,
        headers_grow_bytes: 512,
        checkpoint_chunk_bytes: 1 << 10,
        rotation_copy_bytes_max: 1 << 10,
        flush_bytes: 128,
        checkpoint_disk_share_percent: 100,
    }
}
