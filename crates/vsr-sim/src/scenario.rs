//! Scripted fault schedules: a regression test for a bug found by a seed, independent of it.
//!
//! A [`Scenario`] names the cluster, the workload and a list of [`Action`]s at given ticks;
//! the network is otherwise clean (latency only). After `heal_at_tick` everything is healed and
//! the run is checked exactly like a swarm seed: safety after every step, linearizability,
//! liveness and convergence. The seed passed to [`crate::run_scenario`] only drives latencies,
//! think times and operations, so a scenario keeps testing what it was written for.

use crate::swarm::ClusterParams;

/// A fault to inject at a given tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Crash this replica (its disk survives).
    Crash(u8),
    /// Crash the replica that is primary of the highest view among normal replicas.
    CrashPrimary,
    /// Restart this replica from its disk, if it is down.
    Restart(u8),
    /// Crash every replica at once.
    CrashAll,
    /// Restart every replica that is down.
    RestartAll,
    /// Crash this replica if it is up, wipe its disk and restart it recovering.
    Wipe(u8),
    /// Cut this replica off from every other, both ways.
    Isolate(u8),
    /// Cut these replicas off from the rest, both ways.
    Partition(Vec<u8>),
    /// Drop every message from one replica to another (one way).
    OneWay {
        /// The sender whose messages are dropped.
        from: u8,
        /// The receiver that does not hear them.
        to: u8,
    },
    /// Remove every partition.
    HealNetwork,
    /// Crash this replica; every write it issued that had not completed is lost.
    CrashLosingWrites(u8),
    /// The entry in the middle of this replica's durable log reads back corrupt at its next
    /// restart (the log must hold at least 3 entries; counts against the fault budget).
    CorruptEntry(u8),
    /// This replica's checkpoint reads back corrupt at its next restart (it must have one;
    /// counts against the fault budget).
    CorruptCheckpoint(u8),
    /// The next append of this replica to complete lands on another entry's place: both read
    /// back corrupt at its next restart (counts against the fault budget).
    MisdirectNextAppend(u8),
}

/// A scripted run; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// A name for reports.
    pub name: String,
    /// Number of replicas: 1, 3, 5 or 7.
    pub replicas: u8,
    /// Number of clients.
    pub clients: usize,
    /// Requests each client issues.
    pub requests_per_client: u32,
    /// Longest think time between a client's requests, in ticks.
    pub think_ticks_max: u64,
    /// Number of distinct keys.
    pub keys: usize,
    /// Protocol parameters.
    pub params: ClusterParams,
    /// The faults, by tick (10 ms each).
    pub steps: Vec<(u64, Action)>,
    /// When every fault ends: partitions removed, crashed replicas restarted.
    pub heal_at_tick: u64,
    /// Slowest disk write, in ms: writes take 1 ms up to this, so crashes find writes in
    /// flight. 0 (the default): a fast disk, 0.05 to 0.5 ms.
    pub disk_latency_ms_max: u64,
}

impl Scenario {
    /// A scenario without faults yet: `replicas` replicas, 3 clients of 20 requests each.
    #[must_use]
    pub fn new(name: &str, replicas: u8) -> Self {
        Self {
            name: name.to_owned(),
            replicas,
            clients: 3,
            requests_per_client: 20,
            think_ticks_max: 5,
            keys: 3,
            params: ClusterParams::roomy(3),
            steps: Vec::new(),
            heal_at_tick: 100,
            disk_latency_ms_max: 0,
        }
    }

    /// Adds `action` at `tick`.
    #[must_use]
    pub fn at(mut self, tick: u64, action: Action) -> Self {
        self.steps.push((tick, action));
        self
    }

    /// Makes disk writes take 1 ms up to `ms_max` ms.
    #[must_use]
    pub fn slow_disk(mut self, ms_max: u64) -> Self {
        self.disk_latency_ms_max = ms_max;
        self
    }

    /// Sets when everything heals.
    #[must_use]
    pub fn heal_at(mut self, tick: u64) -> Self {
        self.heal_at_tick = tick;
        self
    }
}
