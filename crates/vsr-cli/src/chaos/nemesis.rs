//! The nemesis: carries out the [`Schedule`] on the replica processes and the proxies, keeps
//! the fault timeline, and notices replicas that die by themselves.
//!
//! Kills, pauses and partitions are not limited: any number of them may overlap (availability
//! may drop, safety must hold). Data damage is: a replica is *suspect* from the moment its data
//! is damaged (or it is seen recovering) until it reports normal status again with a commit
//! number at least the cluster's when it restarted, and a damage that would make more than f
//! replicas suspect at once is skipped. Restarted replicas are suspect only if damaged: a
//! SIGKILL loses nothing the storage acknowledged.
//!
//! It also records when it healed and when it injected each fault, for the unavailability
//! after a heal ([`crate::chaos::availability`]), and keeps the time after a heal quiet: the
//! next fault waits, beyond its drawn healthy period, until an operation completed after the
//! heal or the bound `--max-unavailable` (plus [`QUIET_MARGIN`]) passed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::chaos::damage;
use crate::chaos::proxy::{LinkState, Mode, Network};
use crate::chaos::schedule::{DamageKind, Fault, Prng, Schedule, Step, Target};
use crate::chaos::workload::Recorder;
use crate::local_cluster::{LocalCluster, log_tail};
use crate::scrape::{ReplicaState, metric, parse_state, scrape};

/// `vsr_status` of a recovering replica.
const STATUS_RECOVERING: u64 = 2;
/// How often the nemesis looks for dead replicas while it waits.
const WATCH: Duration = Duration::from_millis(100);
/// How often it reads the replicas' status while it waits.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for one replica's metrics.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// How much longer than `--max-unavailable` the nemesis waits after a heal for an operation
/// to complete before it injects the next fault, so a gap over the bound is seen as one.
const QUIET_MARGIN: Duration = Duration::from_secs(1);

/// A replica whose data may be incomplete: damaged, or seen recovering.
#[derive(Clone, Copy, Debug)]
struct Suspect {
    /// The highest commit number among the replicas when it was last (re)started.
    commit_target: u64,
    /// Whether it was seen in recovering status since.
    seen_recovering: bool,
}

/// The fault injector and its record of what it did.
pub(crate) struct Nemesis<'a> {
    pub(crate) cluster: &'a mut LocalCluster,
    network: &'a Network,
    recorder: &'a Recorder,
    /// `--max-unavailable`.
    max_unavailable: Duration,
    /// Draws the details the schedule leaves open (offsets of damage, a replica when no
    /// primary is known).
    prng: Prng,
    started: Instant,
    f: usize,
    paused: BTreeSet<usize>,
    /// Stopped by a fault (or dead): restarted at the next heal.
    down: BTreeSet<usize>,
    suspects: BTreeMap<usize, Suspect>,
    /// Faults injected, by kind.
    pub(crate) counts: BTreeMap<&'static str, u64>,
    /// Damage faults skipped because they would exceed f.
    pub(crate) skipped: u64,
    /// Replicas that exited by themselves: a line each.
    pub(crate) crashes: Vec<String>,
    /// State transfers the replicas counted (`vsr_state_transfers_total`), as far as seen:
    /// those in the last moments before a replica was killed are missed.
    pub(crate) state_transfers: u64,
    /// Per replica: the pid of the process last sampled and the count it reported.
    transfers_seen: Vec<(u32, u64)>,
    last_status: Instant,
    /// When it healed, in nanoseconds since the run started.
    pub(crate) heals_ns: Vec<u64>,
    /// When it injected each fault, in nanoseconds since the run started.
    pub(crate) fault_starts_ns: Vec<u64>,
}

impl<'a> Nemesis<'a> {
    pub(crate) fn new(
        cluster: &'a mut LocalCluster,
        network: &'a Network,
        recorder: &'a Recorder,
        max_unavailable: Duration,
        seed: u64,
        started: Instant,
    ) -> Self {
        let count = cluster.replica_count();
        let f = (count - 1) / 2;
        Self {
            cluster,
            network,
            recorder,
            max_unavailable,
            prng: Prng::new(seed ^ 0xda7a_da7a_da7a_da7a),
            started,
            f,
            paused: BTreeSet::new(),
            down: BTreeSet::new(),
            suspects: BTreeMap::new(),
            counts: BTreeMap::new(),
            skipped: 0,
            crashes: Vec::new(),
            state_transfers: 0,
            transfers_seen: vec![(0, 0); count],
            last_status: Instant::now(),
            heals_ns: Vec::new(),
            fault_starts_ns: Vec::new(),
        }
    }

    /// Nanoseconds since the run started: the history's clock.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Prints one line of the timeline, stamped with the time since the run started.
    pub(crate) fn event(&self, text: &str) {
        crate::chaos::say(&format!(
            "[{:>8.3} s] {text}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// Runs the schedule until `until`, then heals every fault.
    pub(crate) async fn run(&mut self, schedule: &mut Schedule, until: Instant) {
        let mut faulty = false;
        while Instant::now() < until {
            match schedule.next_step() {
                Step::Healthy(duration) => {
                    self.wait(duration, until).await;
                    self.quiet(until).await;
                }
                Step::Fault(fault, hold) => {
                    self.inject(&fault).await;
                    faulty = true;
                    self.wait(hold, until).await;
                }
                Step::Heal => {
                    self.heal();
                    faulty = false;
                }
            }
        }
        if faulty || !self.down.is_empty() || !self.paused.is_empty() {
            self.heal();
        }
    }

    /// Waits `duration` (not past `until`), watching for dead replicas and their status.
    pub(crate) async fn wait(&mut self, duration: Duration, until: Instant) {
        let end = (Instant::now() + duration).min(until);
        while Instant::now() < end {
            self.watch().await;
            tokio::time::sleep(WATCH.min(end.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// After the healthy period that follows a heal: waits until an operation completed
    /// after the heal, or the bound plus [`QUIET_MARGIN`] passed (not past `until`).
    async fn quiet(&mut self, until: Instant) {
        let Some(&heal_ns) = self.heals_ns.last() else {
            return;
        };
        if self.recorder.completed_since(heal_ns) || Instant::now() >= until {
            return;
        }
        let heal = self.started + Duration::from_nanos(heal_ns);
        let end = (heal + self.max_unavailable + QUIET_MARGIN).min(until);
        while Instant::now() < end && !self.recorder.completed_since(heal_ns) {
            self.wait(WATCH, end).await;
        }
        let outcome = if self.recorder.completed_since(heal_ns) {
            "an operation completed"
        } else {
            "still no operation completed"
        };
        self.event(&format!(
            "quiet: the next fault waited until {:.1} s after the heal: {outcome}",
            heal.elapsed().as_secs_f64()
        ));
    }

    /// Notes replicas that exited by themselves (they restart at the next heal) and, now and
    /// then, the replicas' status.
    pub(crate) async fn watch(&mut self) {
        for (index, status) in self.cluster.reap_exited() {
            let log = self.cluster.log_path(index);
            let tail = log_tail(&log);
            eprintln!("replica {index} exited by itself ({status}); the end of its log:\n{tail}");
            let line = format!("replica {index} exited by itself ({status})");
            self.event(&format!("CRASH: {line}"));
            self.crashes.push(line);
            self.paused.remove(&index);
            self.down.insert(index);
        }
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.last_status = Instant::now();
            self.observe().await;
        }
    }

    /// The state of every replica that runs and is not paused.
    pub(crate) async fn states(&self) -> Vec<Option<ReplicaState>> {
        let samples = self.samples().await;
        samples
            .into_iter()
            .map(|sample| sample.map(|(state, _)| state))
            .collect()
    }

    /// The state and the state transfer count of every replica that runs and is not paused.
    async fn samples(&self) -> Vec<Option<(ReplicaState, u64)>> {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..self.cluster.replica_count() {
            if self.cluster.pid(index).is_some() && !self.paused.contains(&index) {
                let address = self.cluster.metrics[index];
                tasks.spawn(async move {
                    let text = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(address));
                    let text = text.await.ok().flatten().unwrap_or_default();
                    let transfers = metric(&text, "vsr_state_transfers_total").unwrap_or(0);
                    (index, parse_state(&text).map(|state| (state, transfers)))
                });
            }
        }
        let mut samples = vec![None; self.cluster.replica_count()];
        while let Some(Ok((index, sample))) = tasks.join_next().await {
            samples[index] = sample;
        }
        samples
    }

    /// Adds the state transfers each replica process counted since the last look.
    fn count_transfers(&mut self, samples: &[Option<(ReplicaState, u64)>]) {
        for (index, sample) in samples.iter().enumerate() {
            let (Some((_, transfers)), Some(pid)) = (sample, self.cluster.pid(index)) else {
                continue;
            };
            let seen = &mut self.transfers_seen[index];
            if seen.0 != pid {
                *seen = (pid, 0);
            }
            self.state_transfers += transfers.saturating_sub(seen.1);
            seen.1 = seen.1.max(*transfers);
        }
    }

    /// Updates the suspects from the replicas' status.
    async fn observe(&mut self) {
        let samples = self.samples().await;
        self.count_transfers(&samples);
        let states: Vec<Option<ReplicaState>> = samples
            .into_iter()
            .map(|sample| sample.map(|(state, _)| state))
            .collect();
        let commit_max = states.iter().flatten().map(|s| s.commit).max().unwrap_or(0);
        for (index, state) in states.iter().enumerate() {
            let Some(state) = state else { continue };
            if state.status == STATUS_RECOVERING {
                self.suspects
                    .entry(index)
                    .or_insert(Suspect {
                        commit_target: commit_max,
                        seen_recovering: true,
                    })
                    .seen_recovering = true;
                continue;
            }
            let Some(suspect) = self.suspects.get(&index) else {
                continue;
            };
            let caught_up = state.commit >= suspect.commit_target;
            if state.status == 0 && caught_up && (suspect.seen_recovering || state.commit > 0) {
                self.suspects.remove(&index);
                self.event(&format!(
                    "replica {index} repaired: normal at commit {}",
                    state.commit
                ));
            }
        }
    }

    /// The replica `target` names now.
    async fn resolve(&mut self, target: Target) -> usize {
        match target {
            Target::Replica(index) => index,
            Target::Primary => {
                let count = self.cluster.replica_count();
                let states = self.states().await;
                let primary = (0..count).find(|index| {
                    states[*index].is_some_and(|state| state.is_primary(*index, count))
                });
                primary.unwrap_or_else(|| self.prng.index(count))
            }
        }
    }

    /// Every fault is healed: links pass, paused replicas continue, stopped ones restart.
    pub(crate) fn heal(&mut self) {
        self.heals_ns.push(self.now_ns());
        self.network.heal();
        let paused: Vec<usize> = std::mem::take(&mut self.paused).into_iter().collect();
        for index in &paused {
            self.signal(*index, Signal::SIGCONT);
        }
        let down: Vec<usize> = std::mem::take(&mut self.down).into_iter().collect();
        for index in &down {
            self.restart(*index);
        }
        self.event(&format!(
            "heal: links pass, continued {paused:?}, restarted {down:?}"
        ));
    }

    fn signal(&self, index: usize, signal: Signal) {
        if let Some(pid) = self.cluster.pid(index) {
            let pid = Pid::from_raw(i32::try_from(pid).expect("a pid fits i32"));
            if let Err(error) = kill(pid, signal) {
                self.event(&format!("cannot send {signal} to replica {index}: {error}"));
            }
        }
    }

    fn restart(&mut self, index: usize) {
        if self.cluster.pid(index).is_some() {
            return;
        }
        if let Err(error) = self.cluster.start(index) {
            self.event(&format!("cannot restart replica {index}: {error:#}"));
            self.down.insert(index);
        }
    }

    fn stop(&mut self, index: usize) {
        self.paused.remove(&index);
        if self.cluster.pid(index).is_some() {
            let _ = self.cluster.kill(index);
        }
        self.down.insert(index);
    }
}

impl Nemesis<'_> {
    /// Injects one fault and adds it to the timeline; a fault that finds nothing to do (a kill
    /// or pause of a replica that is down, a damage that would exceed f) is not counted.
    async fn inject(&mut self, fault: &Fault) {
        self.fault_starts_ns.push(self.now_ns());
        let (text, injected) = match fault {
            Fault::Kill(target) => {
                let index = self.resolve(*target).await;
                if self.cluster.pid(index).is_none() {
                    (format!("kill replica {index}: already down"), false)
                } else {
                    self.stop(index);
                    (
                        format!("SIGKILL replica {index}{}", primary_note(*target)),
                        true,
                    )
                }
            }
            Fault::KillAll { down } => {
                for index in 0..self.cluster.replica_count() {
                    self.stop(index);
                }
                self.event(&format!(
                    "SIGKILL every replica; restart in {} ms",
                    down.as_millis()
                ));
                tokio::time::sleep(*down).await;
                let down: Vec<usize> = std::mem::take(&mut self.down).into_iter().collect();
                for index in down {
                    self.restart(index);
                }
                ("restarted every replica".to_owned(), true)
            }
            Fault::Pause(target) => {
                let index = self.resolve(*target).await;
                if self.cluster.pid(index).is_none() || !self.paused.insert(index) {
                    (format!("pause replica {index}: not running"), false)
                } else {
                    self.signal(index, Signal::SIGSTOP);
                    (
                        format!("SIGSTOP replica {index}{}", primary_note(*target)),
                        true,
                    )
                }
            }
            Fault::Damage { target, kind } => self.damage(*target, *kind).await,
            _ => (self.partition(fault).await, true),
        };
        if injected {
            *self.counts.entry(fault.kind()).or_insert(0) += 1;
        }
        self.event(&text);
    }

    /// Injects a partition fault; returns its timeline line.
    async fn partition(&mut self, fault: &Fault) -> String {
        let count = self.cluster.replica_count();
        let network = self.network;
        match fault {
            Fault::Isolate { target, mode } => {
                let index = self.resolve(*target).await;
                for other in (0..count).filter(|other| *other != index) {
                    network.set_replica_link(index, other, *mode);
                    network.set_replica_link(other, index, *mode);
                }
                format!(
                    "partition: replica {index}{} isolated ({})",
                    primary_note(*target),
                    mode.name()
                )
            }
            Fault::Split { side, mode } => {
                for from in side {
                    for to in (0..count).filter(|to| !side.contains(to)) {
                        network.set_replica_link(*from, to, *mode);
                        network.set_replica_link(to, *from, *mode);
                    }
                }
                format!("partition: {side:?} | the rest ({})", mode.name())
            }
            Fault::OneWay { from, to, mode } => {
                network.set_replica_link(*from, *to, *mode);
                format!(
                    "partition one-way: replica {from} -> {to} dropped ({})",
                    mode.name()
                )
            }
            Fault::Mute { target, mode } => {
                let index = self.resolve(*target).await;
                for other in (0..count).filter(|other| *other != index) {
                    network.set_replica_link(index, other, *mode);
                }
                format!(
                    "partition one-way: replica {index}{} cannot send to any peer ({})",
                    primary_note(*target),
                    mode.name()
                )
            }
            Fault::ClientPartition {
                target,
                sessions,
                mode,
            } => {
                let index = self.resolve(*target).await;
                let state = LinkState {
                    forward: *mode,
                    backward: *mode,
                };
                for session in sessions {
                    network.set_client_link(*session, index, state);
                }
                format!(
                    "partition: client sessions {sessions:?} cut off from replica {index}{} ({})",
                    primary_note(*target),
                    mode.name()
                )
            }
            Fault::LostReplies { target, mode } => {
                let index = self.resolve(*target).await;
                let state = LinkState {
                    forward: Mode::Pass,
                    backward: *mode,
                };
                for session in 0..self.network.client_sessions() {
                    network.set_client_link(session, index, state);
                }
                format!(
                    "partition one-way: replies of replica {index}{} to clients dropped ({})",
                    primary_note(*target),
                    mode.name()
                )
            }
            Fault::Kill(_) | Fault::KillAll { .. } | Fault::Pause(_) | Fault::Damage { .. } => {
                unreachable!("not a partition")
            }
        }
    }

    /// Kills the target, damages its data and restarts it, unless that would make more than f
    /// replicas suspect; returns the timeline line.
    async fn damage(&mut self, target: Target, kind: DamageKind) -> (String, bool) {
        self.observe().await;
        let index = self.resolve(target).await;
        if !self.suspects.contains_key(&index) && self.suspects.len() + 1 > self.f {
            self.skipped += 1;
            let suspects: Vec<usize> = self.suspects.keys().copied().collect();
            let text = format!(
                "damage of replica {index} skipped: {suspects:?} already damaged or recovering \
                 (f = {})",
                self.f
            );
            return (text, false);
        }
        let commit_target = self.commit_max().await;
        self.stop(index);
        let done = match self.damage_files(index, kind) {
            Ok(done) => done,
            Err(error) => format!("damage failed: {error:#}"),
        };
        self.suspects.insert(
            index,
            Suspect {
                commit_target,
                seen_recovering: false,
            },
        );
        self.down.remove(&index);
        self.restart(index);
        let text = format!(
            "SIGKILL replica {index}{}, {done}, restarted it",
            primary_note(target)
        );
        (text, true)
    }

    async fn commit_max(&self) -> u64 {
        let states = self.states().await;
        states.iter().flatten().map(|s| s.commit).max().unwrap_or(0)
    }

    /// Damages the stopped replica's files; falls back to the next kind when there is nothing
    /// to damage (no checkpoint yet, an empty log).
    fn damage_files(&mut self, index: usize, kind: DamageKind) -> anyhow::Result<String> {
        let dir = self.cluster.data_dir(index);
        let prng = &mut self.prng;
        let mut kind = kind;
        loop {
            let done = match kind {
                DamageKind::FlipCheckpoint => damage::flip_checkpoint(&dir, prng)?,
                DamageKind::FlipWal => damage::flip_wal(&dir, prng)?,
                DamageKind::TruncateWal => damage::truncate_wal(&dir, prng)?,
                DamageKind::Wipe => {
                    self.cluster
                        .reformat_recovering(index)
                        .context("cannot rebuild a wiped replica")?;
                    return Ok("deleted its data, vsr format --recover".to_owned());
                }
            };
            if let Some(done) = done {
                return Ok(done);
            }
            kind = match kind {
                DamageKind::FlipCheckpoint => DamageKind::FlipWal,
                _ => DamageKind::Wipe,
            };
        }
    }
}

fn primary_note(target: Target) -> &'static str {
    match target {
        Target::Primary => " (the primary)",
        Target::Replica(_) => "",
    }
}
