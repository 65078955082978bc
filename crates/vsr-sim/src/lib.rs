//! A deterministic simulator of a whole `vsr` cluster: real replicas, real clients and the real
//! key-value store, under network, disk, clock and crash faults, with virtual time.
//!
//! One seed fixes everything: the cluster parameters, the fault mix (swarm testing), every
//! latency, every crash and every client operation. A run is single-threaded; [`run`] returns a
//! [`SimReport`] with a verdict, the client [`History`](history::History) and a hash of the whole
//! event trace, identical on every run, build and platform for the same seed and options.
//!
//! ```text
//!   plan (seed) ──▶ sim: event queue ──▶ Replica::on_message / on_tick / on_persisted
//!                    ▲      │                      │ commands
//!                    │      ▼                      ▼
//!        network (faults)  clients ◀── replies   vsr-storage on SimDisk (faults) ──▶ completions
//!                                   │
//!                                   ▼
//!   checker (after every step) · linearizability (history) · liveness and convergence (heal)
//! ```
//!
//! Modules: [`sim`](crate) owns the event loop and replicas, `network` the faulty links,
//! `storage` each replica's real storage over a faulty disk and the durability oracle,
//! `disk_faults` the storage events and disk faults, `workload` the clients, `faults` fault injection, the fault
//! budget and the end-of-run checks, [`checker`] the safety invariants, [`invariants`] the
//! invariants of primaries, views, logs, transfers and client tables checked after every step,
//! [`history`] and [`linearizability`] the client history and its check, [`scenario`] scripted
//! fault schedules.

mod backups;
pub mod checker;
mod disk_faults;
mod faults;
pub mod history;
pub mod invariants;
pub mod linearizability;
mod liveness;
mod network;
mod panics;
mod plan;
mod random;
pub mod scenario;
mod sim;
mod storage;
mod swarm;
mod trace;
mod workload;

use serde::Serialize;
use vsr::ReplicaStats;

pub use scenario::{Action, Scenario};
pub use swarm::ClusterParams;

use crate::history::History;
use crate::linearizability::CheckResult;
use crate::plan::Plan;
use crate::random::Prng;
use crate::sim::Simulator;

/// What to simulate. Everything not given here is drawn from the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// The seed: it fixes the whole run.
    pub seed: u64,
    /// Number of replicas: 1, 3, 5 or 7. Default 3.
    pub replicas: u8,
    /// Number of clients. Default 4.
    pub clients: usize,
    /// Requests each client issues; `None` (the default) draws 10 to 30 from the seed.
    pub requests_per_client: Option<u32>,
    /// Whether to inject faults (the seed draws which and how many). Default true.
    pub faults: bool,
    /// After the heal, every request must complete within this much simulated time. Default 60 s.
    pub liveness_timeout_ns: u64,
    /// After the clients finish, the replicas must converge within this. Default 30 s.
    pub convergence_timeout_ns: u64,
    /// Search steps for the linearizability check; running out fails the seed. Default 10^7.
    pub linearizability_budget: u64,
    /// A deliberate slip switched on for this run (only with the `bugs` feature).
    #[cfg(feature = "bugs")]
    pub bug: Option<vsr::bugs::Bug>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            replicas: 3,
            clients: 4,
            requests_per_client: None,
            faults: true,
            liveness_timeout_ns: 60 * swarm::SECOND,
            convergence_timeout_ns: 30 * swarm::SECOND,
            linearizability_budget: 10_000_000,
            #[cfg(feature = "bugs")]
            bug: None,
        }
    }
}

/// Totals of one run (or, added up, of many).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Client requests that completed with a result.
    pub ops_completed: u64,
    /// Client requests whose session was evicted: outcome unknown.
    pub ops_indeterminate: u64,
    /// The highest op committed.
    pub ops_committed: u64,
    /// View changes completed (counted by new primaries).
    pub view_changes: u64,
    /// State transfers installed (entries or delta).
    pub state_transfers: u64,
    /// State transfers installed from a delta.
    pub state_transfers_delta: u64,
    /// Recoveries completed.
    pub recoveries: u64,
    /// Client sessions evicted (counted by every replica that executed the eviction).
    pub evictions: u64,
    /// Prepares sent by primaries.
    pub prepares: u64,
    /// Ops those prepares carried.
    pub ops_prepared: u64,
    /// Prepares that carried a batch of more than one op.
    pub prepares_batched: u64,
    /// Replica crashes (each replica of a whole-cluster crash counts).
    pub crashes: u64,
    /// Crashes of the whole cluster at once.
    pub cluster_crashes: u64,
    /// Crashes of a replica's process alone: the machine, and its page cache, stayed up.
    pub process_crashes: u64,
    /// Restarts that lost the replica's state.
    pub wipes: u64,
    /// Partition changes.
    pub partitions: u64,
    /// Links made slow.
    pub slow_links: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages delivered.
    pub messages_delivered: u64,
    /// Messages lost (random loss, or a destination that was down).
    pub messages_lost: u64,
    /// Messages dropped by a partition.
    pub messages_partitioned: u64,
    /// Messages duplicated.
    pub messages_duplicated: u64,
    /// Messages between replicas held back for seconds.
    pub messages_held: u64,
    /// Old messages between replicas delivered again.
    pub messages_replayed: u64,
    /// Header-copies files removed from a down replica's disk.
    pub disk_headers_lost: u64,
    /// Well-formed messages no honest replica sends, delivered to be dropped.
    pub messages_forged: u64,
    /// Times the primary of the moment was cut off (rolling isolation).
    pub primary_isolations: u64,
    /// Wipes aimed at the replica holding the most uncommitted ops.
    pub wipes_of_longest_log: u64,
    /// Primaries crashed or cut off just after another replica restarted.
    pub races: u64,
    /// Batches of writes the storage thread took before the whole queue was in.
    pub storage_batches_cut: u64,
    /// Heals that left up to f replicas out until the clients were done.
    pub partial_heals: u64,
    /// Replicas those heals left out.
    pub replicas_left_out: u64,
    /// View changes backups started because the primary, though heard from, committed
    /// nothing.
    pub primary_stalls: u64,
    /// Monitor steps (100 ms) at which a quorum had been up and connected in calm weather for
    /// the stall window: commit had to advance if a request waited all that while.
    pub stall_windows: u64,
    /// Corrupted messages, rejected by the wire codec.
    pub messages_corrupted: u64,
    /// Forged messages decoding rejected at their replica (each forged message must be).
    pub messages_rejected: u64,
    /// Writes in flight at a crash that the disk never wrote (lost unsynced writes).
    pub disk_writes_lost: u64,
    /// Writes a crash interrupted (torn): lost too.
    pub disk_writes_torn: u64,
    /// Entries and checkpoints that read back corrupt at a restart.
    pub disk_corruptions: u64,
    /// Appends reported durable that landed on another entry's place.
    pub disk_misdirected_writes: u64,
    /// Restarts whose disk reported damage: the replica repaired itself through recovery.
    pub damaged_restarts: u64,
    /// Creates and removes of files lost at a crash because the directory was not synced.
    pub disk_names_lost: u64,
    /// Crashes whose disk kept its unsynced writes out of order (within the fault budget).
    pub disk_reordered_crashes: u64,
    /// Sectors made unreadable (latent sector errors) before a restart.
    pub disk_read_errors: u64,
    /// Disk calls that failed with EIO: the replica stopped.
    pub disk_write_eio: u64,
    /// Disk calls that failed with ENOSPC: the replica stopped.
    pub disk_write_enospc: u64,
    /// Running replicas whose storage stopped on a latent read error.
    pub disk_read_stops: u64,
    /// Crashes that found unsynced writes on the disk (between a write and its sync).
    pub crashes_before_sync: u64,
    /// Crashes at a disk call of a batch without a checkpoint.
    pub crashes_in_batch: u64,
    /// Crashes at a disk call writing a checkpoint file.
    pub crashes_in_checkpoint: u64,
    /// Crashes at a disk call of a checkpoint's superblock updates, WAL rotation or removals.
    pub crashes_in_rotation: u64,
}

impl SimStats {
    /// Adds a replica incarnation's counters.
    pub fn add_replica(&mut self, stats: &ReplicaStats) {
        self.view_changes += stats.view_changes;
        self.state_transfers += stats.state_transfers;
        self.state_transfers_delta += stats.state_transfers_delta;
        self.recoveries += stats.recoveries;
        self.evictions += stats.evictions;
        self.prepares += stats.prepares;
        self.ops_prepared += stats.ops_prepared;
        self.prepares_batched += stats.prepares_batched;
        self.primary_stalls += stats.primary_stalls;
    }

    /// Adds another run's totals.
    pub fn add(&mut self, other: &SimStats) {
        self.ops_completed += other.ops_completed;
        self.ops_indeterminate += other.ops_indeterminate;
        self.ops_committed += other.ops_committed;
        self.add_replica(&ReplicaStats {
            view_changes: other.view_changes,
            state_transfers: other.state_transfers,
            state_transfers_delta: other.state_transfers_delta,
            recoveries: other.recoveries,
            evictions: other.evictions,
            prepares: other.prepares,
            ops_prepared: other.ops_prepared,
            prepares_batched: other.prepares_batched,
            primary_stalls: other.primary_stalls,
            ..ReplicaStats::default()
        });
        self.crashes += other.crashes;
        self.cluster_crashes += other.cluster_crashes;
        self.process_crashes += other.process_crashes;
        self.wipes += other.wipes;
        self.partitions += other.partitions;
        self.slow_links += other.slow_links;
        self.messages_sent += other.messages_sent;
        self.messages_delivered += other.messages_delivered;
        self.messages_lost += other.messages_lost;
        self.messages_partitioned += other.messages_partitioned;
        self.messages_duplicated += other.messages_duplicated;
        self.messages_held += other.messages_held;
        self.messages_replayed += other.messages_replayed;
        self.messages_forged += other.messages_forged;
        self.disk_headers_lost += other.disk_headers_lost;
        self.primary_isolations += other.primary_isolations;
        self.wipes_of_longest_log += other.wipes_of_longest_log;
        self.races += other.races;
        self.partial_heals += other.partial_heals;
        self.storage_batches_cut += other.storage_batches_cut;
        self.replicas_left_out += other.replicas_left_out;
        self.stall_windows += other.stall_windows;
        self.messages_corrupted += other.messages_corrupted;
        self.messages_rejected += other.messages_rejected;
        self.disk_writes_lost += other.disk_writes_lost;
        self.disk_writes_torn += other.disk_writes_torn;
        self.disk_corruptions += other.disk_corruptions;
        self.disk_misdirected_writes += other.disk_misdirected_writes;
        self.damaged_restarts += other.damaged_restarts;
        self.disk_names_lost += other.disk_names_lost;
        self.disk_reordered_crashes += other.disk_reordered_crashes;
        self.disk_read_errors += other.disk_read_errors;
        self.disk_write_eio += other.disk_write_eio;
        self.disk_write_enospc += other.disk_write_enospc;
        self.disk_read_stops += other.disk_read_stops;
        self.crashes_before_sync += other.crashes_before_sync;
        self.crashes_in_batch += other.crashes_in_batch;
        self.crashes_in_checkpoint += other.crashes_in_checkpoint;
        self.crashes_in_rotation += other.crashes_in_rotation;
    }

    /// Faults injected: crashes, wipes, partition changes, slow links, messages lost,
    /// duplicated or corrupted by the network, and disk writes lost, torn, corrupted or
    /// misdirected.
    #[must_use]
    pub fn faults_injected(&self) -> u64 {
        self.crashes
            + self.wipes
            + self.disk_writes_lost
            + self.disk_writes_torn
            + self.disk_corruptions
            + self.disk_misdirected_writes
            + self.disk_names_lost
            + self.disk_reordered_crashes
            + self.disk_read_errors
            + self.disk_headers_lost
            + self.disk_write_eio
            + self.disk_write_enospc
            + self.partitions
            + self.slow_links
            + self.messages_lost
            + self.messages_partitioned
            + self.messages_duplicated
            + self.messages_corrupted
            + self.messages_held
            + self.messages_replayed
            + self.messages_forged
            + self.primary_isolations
            + self.races
            + self.replicas_left_out
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed that was run.
    pub seed: u64,
    /// Whether every check passed.
    pub passed: bool,
    /// The first failed check, or the panic, if any.
    pub failure: Option<String>,
    /// Hash of the whole event trace.
    pub trace: u128,
    /// What the clients asked and got.
    pub history: History,
    /// Simulated time at the end of the run, in nanoseconds.
    pub simulated_ns: u64,
    /// Totals.
    pub stats: SimStats,
    /// How often the run hit each coverage mark (`vsr::coverage`).
    pub coverage: vsr::coverage::Counts,
}

/// Runs one seed of the swarm: cluster, workload and faults drawn from `options.seed`.
#[must_use]
pub fn run(options: &SimOptions) -> SimReport {
    let mut prng = Prng::new(options.seed);
    let plan = Plan::swarm(options, &mut prng);
    #[cfg(feature = "bugs")]
    vsr::bugs::select(options.bug);
    let report = simulate(options.seed, plan, prng);
    #[cfg(feature = "bugs")]
    vsr::bugs::select(None);
    report
}

/// Runs a scripted scenario; `seed` drives only latencies and the workload. (With the `bugs`
/// feature, the slip selected on this thread by `vsr::bugs::select` applies.)
#[must_use]
pub fn run_scenario(scenario: &Scenario, seed: u64) -> SimReport {
    simulate(seed, Plan::scenario(scenario), Prng::new(seed))
}

fn simulate(seed: u64, plan: Plan, prng: Prng) -> SimReport {
    // The run is on this thread: what the marks count from here on is this run's.
    let _ = vsr::coverage::take();
    let budget = plan.linearizability_budget;
    let mut simulator = Simulator::new(plan, prng);
    let outcome = panics::catching(|| simulator.run());
    let mut failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(violation)) => Some(violation),
        Err(panic) => Some(format!("panic: {panic}")),
    };
    if failure.is_none() {
        failure = simulator.checker.check_replies(true).err();
    }
    if failure.is_none() {
        failure = check_linearizable(&simulator.history, budget).err();
    }
    let mut stats = simulator.stats;
    for slot in &simulator.replicas {
        if let Some(replica) = &slot.replica {
            stats.add_replica(&replica.stats());
        }
    }
    stats.ops_committed = simulator.checker.commit_max().get();
    SimReport {
        seed,
        passed: failure.is_none(),
        failure,
        trace: simulator.trace.finish(),
        history: std::mem::take(&mut simulator.history),
        simulated_ns: simulator.now,
        stats,
        coverage: vsr::coverage::take(),
    }
}

/// The linearizability verdict on `history` as a run's failure, if any.
///
/// # Errors
/// When the history is not linearizable, or the search ran out of `budget`.
pub fn check_linearizable(history: &History, budget: u64) -> Result<(), String> {
    match linearizability::check(history, budget) {
        CheckResult::Linearizable => Ok(()),
        CheckResult::NotLinearizable { key, reason } => Err(format!(
            "linearizability: the history of key {key:?} is not linearizable: {reason}"
        )),
        CheckResult::Unknown { key } => Err(format!(
            "linearizability: the search ran out of its budget of {budget} steps on key {key:?}"
        )),
    }
}
