//! The event loop: virtual time, the event queue, replicas and their disks.
//!
//! Everything that happens is an [`Event`] at a virtual time in nanoseconds; events at the same
//! time run in the order they were scheduled, so the order is a function of the seed alone.
//! A replica event (a delivered message, a tick, a batch of writes made durable) is handed to the
//! core, the commands it emits are carried out at once (sends go to the network, writes to the
//! replica's real storage over a simulated disk, [`crate::storage`] and [`crate::disk_faults`],
//! which writes them in batches and reports them durable after their sync), and the safety and
//! durability checkers inspect the replica and what it sends.
//!
//! The network ([`crate::network`]), the clients ([`crate::workload`]) and the faults
//! ([`crate::faults`]) add their own `impl Simulator` blocks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use vsr::{Command, Config, EntryChecksum, Envelope, Op, Replica, StateMachine, Write};
use vsr_kv::KvStore;

use crate::SimStats;
use crate::checker::SafetyChecker;
use crate::disk_faults::DiskFaultState;
use crate::history::History;
use crate::invariants::{Inspect, Invariants, Step};
use crate::plan::Plan;
use crate::random::Prng;
use crate::storage::ReplicaStorage;
use crate::swarm::MS;
use crate::trace::Trace;
use crate::workload::SimClient;

/// Simulated time of one tick.
pub(crate) const TICK_NS: u64 = 10 * MS;

/// How often the monitor runs: faults before the heal, liveness and convergence after.
pub(crate) const MONITOR_NS: u64 = 100 * MS;

/// A node of the simulated network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Node {
    Replica(u8),
    Client(usize),
}

impl Node {
    /// A number naming the node in the trace.
    pub(crate) fn trace_id(self) -> u64 {
        match self {
            Node::Replica(replica) => u64::from(replica),
            Node::Client(client) => 1000 + client as u64,
        }
    }
}

/// A message in flight: its encoded bytes (possibly corrupted) and what was sent.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) to: Node,
    pub(crate) bytes: Vec<u8>,
    pub(crate) original: Envelope,
    pub(crate) corrupted: bool,
    /// Built by the network's forger: decoding must reject it.
    pub(crate) forged: bool,
}

#[derive(Debug)]
pub(crate) enum EventKind {
    Deliver(Box<Frame>),
    ReplicaTick {
        replica: u8,
        incarnation: u64,
    },
    Persisted {
        replica: u8,
        incarnation: u64,
        seq: u64,
    },
    ClientsTick,
    ClientWake {
        client: usize,
    },
    Monitor,
    Restart {
        replica: u8,
        incarnation: u64,
    },
    Script {
        step: usize,
    },
    /// A crash aimed at a moment when the replica has writes in flight.
    Crash {
        replica: u8,
        incarnation: u64,
    },
    /// The storage of a replica takes its next batch of writes.
    StorageWrite {
        replica: u8,
        incarnation: u64,
    },
    /// The checkpoint a replica handed over to be written in the background is written.
    CheckpointWritten {
        replica: u8,
        incarnation: u64,
    },
    /// The primary is crashed or cut off, racing the restart of `replica`.
    Race {
        replica: u8,
    },
    /// The next isolation of a back-to-back series.
    IsolatePrimary {
        remaining: u32,
    },
}

impl EventKind {
    fn trace_tag(&self) -> (u8, u64) {
        match self {
            EventKind::Deliver(frame) => (1, frame.to.trace_id()),
            EventKind::ReplicaTick { replica, .. } => (2, u64::from(*replica)),
            EventKind::Persisted { replica, seq, .. } => (3, u64::from(*replica) | seq << 8),
            EventKind::ClientsTick => (4, 0),
            EventKind::ClientWake { client } => (5, *client as u64),
            EventKind::Monitor => (6, 0),
            EventKind::Restart { replica, .. } => (7, u64::from(*replica)),
            EventKind::Script { step } => (8, *step as u64),
            EventKind::Crash { replica, .. } => (9, u64::from(*replica)),
            EventKind::StorageWrite { replica, .. } => (10, u64::from(*replica)),
            EventKind::Race { replica } => (11, u64::from(*replica)),
            EventKind::IsolatePrimary { remaining } => (12, u64::from(*remaining)),
            EventKind::CheckpointWritten { replica, .. } => (13, u64::from(*replica)),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Event {
    time: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// One replica's place in the cluster: the running incarnation (if up) and its storage.
pub(crate) struct ReplicaSlot {
    pub(crate) replica: Option<Replica<KvStore>>,
    pub(crate) storage: ReplicaStorage,
    pub(crate) disk_faults: DiskFaultState,
    /// Incremented on every start; events of older incarnations are discarded.
    pub(crate) incarnation: u64,
    /// This replica's tick period, per mille of [`TICK_NS`].
    pub(crate) tick_permille: u64,
    /// A checkpoint being written in the background (see `disk_faults.rs`).
    pub(crate) checkpoint: Option<vsr::Checkpoint>,
}

impl ReplicaSlot {
    /// Whether this replica counts against the fault budget: its disk might not give back
    /// everything it wrote, or it is recovering (see `faults.rs`).
    pub(crate) fn is_impaired(&self) -> bool {
        self.storage.is_impaired()
            || self
                .replica
                .as_ref()
                .is_some_and(|replica| replica.status_name() == "recovering")
    }
}

/// The whole simulated world of one run.
pub(crate) struct Simulator {
    pub(crate) plan: Plan,
    pub(crate) config: Config,
    pub(crate) prng: Prng,
    pub(crate) now: u64,
    queue: BinaryHeap<Reverse<Event>>,
    event_seq: u64,
    pub(crate) replicas: Vec<ReplicaSlot>,
    pub(crate) clients: Vec<SimClient>,
    pub(crate) client_index: BTreeMap<u128, usize>,
    pub(crate) network: crate::network::Network,
    pub(crate) checker: SafetyChecker,
    pub(crate) invariants: Invariants,
    pub(crate) history: History,
    pub(crate) trace: Trace,
    pub(crate) stats: SimStats,
    pub(crate) healed: bool,
    pub(crate) monitor: crate::liveness::Monitor,
    pub(crate) clients_done_at: Option<u64>,
    pub(crate) finished: bool,
    /// The latest value of each key some client saw, to make compare-and-swap succeed often.
    pub(crate) last_values: BTreeMap<String, Option<String>>,
    /// (op, entry checksum) → the replicas on whose disk that entry has ever been durable.
    pub(crate) ever_durable: BTreeMap<(Op, EntryChecksum), u8>,
    /// Per replica, the highest op of a checkpoint ever durable on its disk.
    pub(crate) checkpoint_durable: Vec<Op>,
    /// Backups asked of primaries, and what they must hold.
    pub(crate) backups: crate::backups::Backups,
}

impl Simulator {
    pub(crate) fn new(plan: Plan, mut prng: Prng) -> Self {
        let cluster = u128::from(prng.next_u64()) << 64 | u128::from(prng.next_u64());
        let config = plan.params.config(cluster, plan.replicas);
        let replicas = (0..plan.replicas)
            .map(|index| ReplicaSlot {
                replica: None,
                storage: ReplicaStorage::format(
                    identity(cluster, index, plan.replicas),
                    false,
                    plan.storage_tuning,
                ),
                disk_faults: DiskFaultState::default(),
                incarnation: 0,
                tick_permille: prng.range(
                    plan.profile.tick_permille_min,
                    plan.profile.tick_permille_max,
                ),
                checkpoint: None,
            })
            .collect();
        let checker = SafetyChecker::new(plan.replicas, plan.params.clients_max);
        let invariants = Invariants::new(plan.replicas);
        let network = crate::network::Network::new(&plan.profile, plan.replicas);
        let mut simulator = Self {
            config,
            prng,
            now: 0,
            queue: BinaryHeap::new(),
            event_seq: 0,
            replicas,
            clients: Vec::new(),
            client_index: BTreeMap::new(),
            network,
            checker,
            invariants,
            history: History::new(),
            trace: Trace::default(),
            stats: SimStats::default(),
            healed: false,
            monitor: crate::liveness::Monitor::new(plan.replicas, stall_window_ns(&plan)),
            clients_done_at: None,
            finished: false,
            last_values: BTreeMap::new(),
            ever_durable: BTreeMap::new(),
            checkpoint_durable: vec![Op(0); usize::from(plan.replicas)],
            backups: crate::backups::Backups::default(),
            plan,
        };
        simulator.create_clients();
        simulator
    }

    pub(crate) fn schedule(&mut self, time: u64, kind: EventKind) {
        let seq = self.event_seq;
        self.event_seq += 1;
        self.queue.push(Reverse(Event { time, seq, kind }));
    }

    /// Runs until the clients are done and the replicas converged, or a check fails.
    pub(crate) fn run(&mut self) -> Result<(), String> {
        for replica in 0..self.plan.replicas {
            self.start_replica(replica)?;
        }
        self.schedule(TICK_NS, EventKind::ClientsTick);
        self.schedule(MONITOR_NS, EventKind::Monitor);
        for client in 0..self.clients.len() {
            let wake = self.prng.range(0, self.plan.think_ns_max);
            self.schedule(wake, EventKind::ClientWake { client });
        }
        for step in 0..self.plan.script.len() {
            let at = self.plan.script[step].0;
            self.schedule(at, EventKind::Script { step });
        }
        while !self.finished {
            let Some(Reverse(event)) = self.queue.pop() else {
                return Err("the event queue ran dry".to_owned());
            };
            assert!(event.time >= self.now, "time never goes backwards");
            self.now = event.time;
            let (tag, node) = event.kind.trace_tag();
            self.trace.event(tag, self.now, node);
            self.handle(event.kind)?;
        }
        Ok(())
    }

    fn handle(&mut self, kind: EventKind) -> Result<(), String> {
        match kind {
            EventKind::Deliver(frame) => self.deliver(*frame)?,
            EventKind::ReplicaTick {
                replica,
                incarnation,
            } => {
                if let Some(running) = self.running(replica, incarnation) {
                    running.on_tick();
                    self.maybe_ask_backup(replica);
                    self.after_replica(replica)?;
                    self.schedule_tick(replica);
                }
            }
            EventKind::Persisted {
                replica,
                incarnation,
                seq,
            } => {
                if self.running(replica, incarnation).is_some() {
                    self.storage_sync(replica, seq)?;
                }
            }
            EventKind::StorageWrite {
                replica,
                incarnation,
            } => {
                if self.running(replica, incarnation).is_some() {
                    self.storage_write(replica)?;
                }
            }
            EventKind::CheckpointWritten {
                replica,
                incarnation,
            } => {
                if self.running(replica, incarnation).is_some() {
                    self.checkpoint_written(replica)?;
                }
            }
            EventKind::ClientsTick => {
                for client in 0..self.clients.len() {
                    self.clients[client].client.on_tick();
                    self.poll_client(client)?;
                }
                self.schedule(self.now + TICK_NS, EventKind::ClientsTick);
            }
            EventKind::ClientWake { client } => self.client_next(client)?,
            EventKind::Monitor => {
                self.monitor()?;
                self.schedule(self.now + MONITOR_NS, EventKind::Monitor);
            }
            EventKind::Restart {
                replica,
                incarnation,
            } => {
                let slot = &self.replicas[usize::from(replica)];
                if slot.replica.is_none()
                    && slot.incarnation == incarnation
                    && !self.monitor.held_down(replica)
                {
                    self.start_replica(replica)?;
                    if !self.healed && self.prng.chance(self.plan.profile.race_ppm) {
                        let at = self.now + self.prng.range(0, 300 * MS);
                        self.schedule(at, EventKind::Race { replica });
                    }
                }
            }
            EventKind::Script { step } => self.script_step(step)?,
            EventKind::Race { replica } => {
                if !self.healed {
                    self.race(replica);
                }
            }
            EventKind::IsolatePrimary { remaining } => {
                if !self.healed {
                    self.isolate_primary(remaining);
                }
            }
            EventKind::Crash {
                replica,
                incarnation,
            } => {
                if !self.healed && self.running(replica, incarnation).is_some() {
                    self.crash(replica);
                    self.schedule_restarts();
                }
            }
        }
        Ok(())
    }

    /// The replica, if it is up and still the incarnation an event was meant for.
    fn running(&mut self, replica: u8, incarnation: u64) -> Option<&mut Replica<KvStore>> {
        let slot = &mut self.replicas[usize::from(replica)];
        if slot.incarnation == incarnation {
            slot.replica.as_mut()
        } else {
            None
        }
    }

    /// Starts a replica from its disk: fresh, restarted, or recovering if its state was lost or
    /// the disk reports damage (which the fault injector may add as the disk is read).
    pub(crate) fn start_replica(&mut self, index: u8) -> Result<(), String> {
        let first = self.replicas[usize::from(index)].incarnation == 0;
        if !first {
            self.read_faults(index);
        }
        let cluster = self.config.cluster;
        let durable_before = self.replicas[usize::from(index)].storage.durable.view_state;
        let durable = self.replicas[usize::from(index)]
            .storage
            .open(cluster)
            .map_err(|violation| format!("replica {index}: {violation}"))?;
        self.log_disk(index, || {
            format!(
                "opened: {} entries after checkpoint {}, damaged {}",
                durable.entries.len(),
                durable.checkpoint_op(),
                durable.damaged
            )
        });
        if durable.damaged {
            self.stats.damaged_restarts += 1;
            self.trace.event(24, self.now, u64::from(index));
        }
        // What open read back is durable, whether or not its sync was ever reported.
        for entry in &durable.entries {
            self.record_durable(index, &Write::Append(entry.clone()));
        }
        for checkpoint in durable.checkpoint.iter().chain(&durable.increments) {
            self.record_durable(index, &Write::Checkpoint(checkpoint.clone()));
        }
        let seed = self.prng.next_u64();
        let config = self.config.clone();
        let slot = &mut self.replicas[usize::from(index)];
        assert!(slot.replica.is_none());
        slot.incarnation += 1;
        let replica = if first {
            Replica::new(config, index, KvStore::new(), seed)
        } else {
            Replica::open(config, index, KvStore::new(), seed, &durable)
        };
        slot.replica = Some(replica);
        self.trace.event(20, self.now, u64::from(index));
        self.checker.on_start(index);
        self.invariants.on_start(index, durable_before);
        self.schedule_tick(index);
        self.after_replica(index)
    }

    /// Replaces a replica's disk with a freshly formatted one that says it lost its state.
    pub(crate) fn rebuild_storage(&mut self, index: u8) {
        let identity = identity(self.config.cluster, index, self.plan.replicas);
        let slot = &mut self.replicas[usize::from(index)];
        assert!(slot.replica.is_none());
        slot.storage = ReplicaStorage::format(identity, true, self.plan.storage_tuning);
        slot.disk_faults = DiskFaultState::default();
    }

    fn schedule_tick(&mut self, replica: u8) {
        let slot = &self.replicas[usize::from(replica)];
        let period = TICK_NS * slot.tick_permille / 1000;
        let incarnation = slot.incarnation;
        let jitter = if self.plan.profile.tick_permille_min == self.plan.profile.tick_permille_max {
            0
        } else {
            self.prng.range(0, period / 10)
        };
        self.schedule(
            self.now + period + jitter,
            EventKind::ReplicaTick {
                replica,
                incarnation,
            },
        );
    }

    /// Carries out the commands a replica emitted, then checks it.
    pub(crate) fn after_replica(&mut self, index: u8) -> Result<(), String> {
        let slot = &mut self.replicas[usize::from(index)];
        let replica = slot
            .replica
            .as_mut()
            .expect("an event reached a running replica");
        replica.invariants();
        let commands: Vec<Command> = replica.drain_commands().collect();
        let mut step = Step::default();
        for command in commands {
            match command {
                Command::Send { to, envelope } => {
                    step.record(&envelope.message);
                    self.check_acknowledgement(index, &envelope.message)?;
                    self.send(Node::Replica(index), Node::Replica(to), envelope);
                }
                Command::Reply { client, envelope } => {
                    self.check_reply_durable(index, &envelope.message)?;
                    self.backups.on_reply(&envelope.message);
                    if let Some(&client) = self.client_index.get(&client) {
                        self.send(Node::Replica(index), Node::Client(client), envelope);
                    }
                }
                Command::Persist { seq, write } => self.persist(index, seq, write),
                Command::Checkpoint { checkpoint } => self.checkpoint_background(index, checkpoint),
                Command::Snapshot {
                    request,
                    view,
                    checkpoint,
                    ..
                } => self.check_backup(index, request, view, &checkpoint)?,
            }
        }
        let replica = self.replicas[usize::from(index)]
            .replica
            .as_ref()
            .expect("running");
        let commit = replica.commit();
        self.checker.observe(
            index,
            commit,
            |op| replica.entry(op),
            || replica.state_machine().digest(),
        )?;
        let mut running: [Option<&dyn Inspect>; vsr::config::REPLICAS_MAX] = Default::default();
        for (slot, running) in self.replicas.iter().zip(&mut running) {
            *running = slot.replica.as_ref().map(|replica| replica as &dyn Inspect);
        }
        let running = &running[..self.replicas.len()];
        self.invariants
            .after_step(running, index, &step, &self.checker)
    }

    /// Every replica's view, status, op and commit, for failure messages.
    pub(crate) fn describe_replicas(&self) -> String {
        let mut out = String::new();
        for (index, slot) in self.replicas.iter().enumerate() {
            match &slot.replica {
                Some(replica) => out.push_str(&format!(
                    "[replica {index}: view {} {} op {} commit {}] ",
                    replica.view(),
                    replica.status_name(),
                    replica.op(),
                    replica.commit()
                )),
                None => out.push_str(&format!("[replica {index}: down] ")),
            }
        }
        out.trim_end().to_owned()
    }
}

pub(crate) fn trace_write(trace: &mut Trace, seq: u64, write: &Write) {
    trace.number(u128::from(seq));
    match write {
        Write::ViewState(state) => {
            trace.number(
                u128::from(state.view.get()) << 64 | u128::from(state.last_normal_view.get()),
            );
            trace.number(u128::from(state.commit.get()) << 1 | u128::from(state.recovering));
        }
        Write::Append(entry) => trace.number(entry.checksum.get()),
        Write::Truncate { op } => trace.number(u128::from(op.get())),
        Write::Checkpoint(checkpoint) => {
            trace
                .number(u128::from(checkpoint.op.get()) << 64 | u128::from(checkpoint.since.get()));
            trace.bytes(&checkpoint.snapshot.to_bytes());
        }
    }
}

/// The stall window of the liveness monitor: 10 view-change timeouts at the slowest clock.
fn stall_window_ns(plan: &Plan) -> u64 {
    10 * plan.params.view_change_timeout_ticks * TICK_NS * plan.profile.tick_permille_max / 1000
}

/// Who replica `index` of the simulated cluster is, for its storage.
fn identity(cluster: u128, index: u8, replicas: u8) -> vsr_storage::Identity {
    vsr_storage::Identity {
        cluster,
        replica: index,
        replica_count: replicas,
    }
}
