//! What the bench does to, and reads from, its local cluster while the timed phase runs: the
//! replicas' CPU time and resident memory, and, with `--rejoin-after`, the wipe and rejoin of a
//! backup.
//!
//! [`watch`] runs beside the sessions on the bench's one thread and owns the [`LocalCluster`]
//! meanwhile. Every [`TICK`] it looks at the clock; every [`SAMPLE_INTERVAL`] it checks that the
//! replicas run and reads each one's `/proc/<pid>/status`, keeping per replica index the highest
//! resident memory any of its processes reached (so a killed process's peak is not lost). At
//! `--rejoin-after` into the run it kills the first backup (never the primary), replaces its
//! data directory with one formatted `--recover`, notes the highest commit number of the
//! running replicas and restarts it; from then on it polls the replica's metrics until it is in
//! normal status with its commit number at or beyond that mark, or [`REJOIN_TIMEOUT`] passes
//! (the figures are still reported; the bench then fails).
//! The blocking steps (killing and reaping, removing the directory, `vsr format`) run on
//! tokio's blocking pool, so the sessions' replies are not held up by them. It returns once
//! the load is done and no rejoin is pending.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressBar;

use super::host::{CpuClock, Memory, directory_size_bytes};
use super::{PRIMARY_TIMEOUT, note};
use crate::local_cluster::{LocalCluster, log_tail};
use crate::scrape::{STATUS_NORMAL, replica_state};

/// Interval between two looks at the clock and, while a replica rejoins, at its metrics.
const TICK: Duration = Duration::from_millis(20);
/// Interval between two samples of the replicas' resident memory.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a wiped replica may take to rejoin before the bench gives up.
pub(super) const REJOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What [`watch`] measured.
pub(super) struct Watched {
    /// CPU time of the replica processes from the start of the timed phase to its end (a
    /// killed process's up to its kill; `None` if one could not be read).
    pub(super) server_cpu: Option<Duration>,
    /// Per replica index, the resident memory of its processes.
    pub(super) memory: Vec<ReplicaMemory>,
    /// The wipe and rejoin, with `--rejoin-after`.
    pub(super) rejoin: Option<Rejoin>,
}

/// The resident memory of one replica index.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ReplicaMemory {
    /// The highest `VmHWM` or `VmRSS` read of any of its processes.
    pub(super) peak_bytes: Option<u64>,
    /// `VmRSS` of the process running at the end.
    pub(super) end_bytes: Option<u64>,
}

impl ReplicaMemory {
    /// Takes in one reading of one of its processes.
    fn record(&mut self, memory: Memory) {
        let highest = memory.peak_bytes.max(memory.resident_bytes);
        self.peak_bytes = Some(self.peak_bytes.map_or(highest, |peak| peak.max(highest)));
    }
}

/// A backup wiped and rebuilt during the run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rejoin {
    /// Its index.
    pub(super) replica: usize,
    /// Just before it was killed.
    pub(super) killed: Instant,
    /// Just after its new process was started.
    pub(super) restarted: Instant,
    /// When its metrics first showed it in normal status at or beyond `target`, or when the
    /// bench gave up waiting.
    pub(super) rejoined: Instant,
    /// Whether it was back, rather than [`REJOIN_TIMEOUT`] passing.
    pub(super) back: bool,
    /// The highest commit number of the running replicas at the restart.
    pub(super) target: u64,
    /// The disk space of the primary's data directory at the restart: the state it caught up
    /// from, roughly.
    pub(super) state_bytes: u64,
    /// Whether the load ended before it rejoined.
    pub(super) load_ended_first: bool,
}

/// Where the rejoin stands.
enum Phase {
    /// No `--rejoin-after`.
    Off,
    /// The kill is due at this instant.
    Due(Instant),
    /// Restarted; waiting for it to be back.
    CatchingUp(Rejoin),
    /// Back, or given up on.
    Done(Rejoin),
}

/// Watches `cluster` from `started` (the start of the timed phase) until `load_done` is set
/// and no rejoin is pending; wipes and rebuilds a backup at `started + rejoin_after`. Hands
/// the cluster back with what it measured.
pub(super) async fn watch(
    mut cluster: LocalCluster,
    started: Instant,
    rejoin_after: Option<Duration>,
    load_done: &AtomicBool,
    bar: &ProgressBar,
) -> anyhow::Result<(LocalCluster, Watched)> {
    let clock = CpuClock::new();
    let mut memory = vec![ReplicaMemory::default(); cluster.replica_count()];
    let cpu_before = clock.processes(&pids(&cluster));
    // CPU time of processes killed during the run, read just before each kill.
    let mut cpu_gone = Some(Duration::ZERO);
    let mut cpu_after = None;
    let mut phase = rejoin_after.map_or(Phase::Off, |after| Phase::Due(started + after));
    let mut next_sample = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_sample {
            cluster.check_running()?;
            sample(&cluster, &mut memory);
            next_sample = now + SAMPLE_INTERVAL;
        }
        let done = load_done.load(Ordering::Acquire);
        if done && cpu_after.is_none() {
            cpu_after = Some(clock.processes(&pids(&cluster)));
        }
        phase = match phase {
            Phase::Due(at) if done => bail!(
                "the load ended {:.1} s into the run, before --rejoin-after {:.1} s: raise \
                 --requests or lower --rejoin-after",
                now.duration_since(started).as_secs_f64(),
                at.duration_since(started).as_secs_f64()
            ),
            Phase::Due(at) if now >= at => {
                let (back, rejoin, gone) = wipe_backup(cluster, &clock, &mut memory, bar).await?;
                cluster = back;
                cpu_gone = cpu_gone.zip(gone).map(|(sum, cpu)| sum + cpu);
                Phase::CatchingUp(rejoin)
            }
            Phase::CatchingUp(rejoin) => check_rejoined(&cluster, rejoin, done, bar).await?,
            other => other,
        };
        if done && !matches!(phase, Phase::CatchingUp(_)) {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    sample(&cluster, &mut memory);
    for (index, replica) in memory.iter_mut().enumerate() {
        replica.end_bytes = cluster
            .pid(index)
            .and_then(Memory::of)
            .map(|memory| memory.resident_bytes);
    }
    let server_cpu = (|| Some(cpu_after.flatten()? + cpu_gone? - cpu_before?))();
    let rejoin = match phase {
        Phase::Done(rejoin) => Some(rejoin),
        _ => None,
    };
    let watched = Watched {
        server_cpu,
        memory,
        rejoin,
    };
    Ok((cluster, watched))
}

/// The pids of the running replicas.
fn pids(cluster: &LocalCluster) -> Vec<u32> {
    (0..cluster.replica_count())
        .filter_map(|index| cluster.pid(index))
        .collect()
}

/// Reads every running replica's resident memory into `memory`.
fn sample(cluster: &LocalCluster, memory: &mut [ReplicaMemory]) {
    for (index, replica) in memory.iter_mut().enumerate() {
        if let Some(reading) = cluster.pid(index).and_then(Memory::of) {
            replica.record(reading);
        }
    }
}

/// Kills the first backup, formats its data directory anew with `--recover` and restarts it;
/// returns the cluster, the rejoin under way, and the CPU time the killed process had spent.
async fn wipe_backup(
    mut cluster: LocalCluster,
    clock: &CpuClock,
    memory: &mut [ReplicaMemory],
    bar: &ProgressBar,
) -> anyhow::Result<(LocalCluster, Rejoin, Option<Duration>)> {
    let (primary, _) = cluster.wait_for_primary(None, PRIMARY_TIMEOUT).await?;
    let replica = (0..cluster.replica_count())
        .find(|index| *index != primary)
        .context("a cluster of one replica has no backup")?;
    let pid = cluster.pid(replica).context("the backup is not running")?;
    if let Some(reading) = Memory::of(pid) {
        memory[replica].record(reading);
    }
    let cpu = clock.process(Some(pid));
    let killed = Instant::now();
    let (mut cluster, state_bytes) = tokio::task::spawn_blocking(move || {
        cluster.kill(replica)?;
        cluster.reformat_recovering(replica)?;
        let state_bytes = directory_size_bytes(&cluster.data_dir(primary));
        anyhow::Ok((cluster, state_bytes))
    })
    .await
    .context("the task that wipes the replica failed")??;
    let target = cluster.commit_max().await?;
    cluster.start(replica)?;
    let restarted = Instant::now();
    bar.suspend(|| {
        note(&format!(
            "rejoin: killed backup replica {replica} (primary {primary}), wiped its data, \
             restarted it recovering; waiting for commit {target}"
        ));
    });
    let rejoin = Rejoin {
        replica,
        killed,
        restarted,
        rejoined: restarted,
        back: false,
        target,
        state_bytes,
        load_ended_first: false,
    };
    Ok((cluster, rejoin, cpu))
}

/// Whether the wiped replica is back (normal status, commit at or beyond the target); gives up
/// once [`REJOIN_TIMEOUT`] passed since its restart.
async fn check_rejoined(
    cluster: &LocalCluster,
    mut rejoin: Rejoin,
    load_done: bool,
    bar: &ProgressBar,
) -> anyhow::Result<Phase> {
    let now = Instant::now();
    let state = replica_state(cluster.metrics[rejoin.replica]).await;
    rejoin.rejoined = now;
    rejoin.load_ended_first = load_done;
    if state.is_some_and(|state| state.status == STATUS_NORMAL && state.commit >= rejoin.target) {
        rejoin.back = true;
        bar.suspend(|| {
            note(&format!(
                "rejoin: replica {} back after {:.2} s",
                rejoin.replica,
                now.duration_since(rejoin.restarted).as_secs_f64()
            ));
        });
        return Ok(Phase::Done(rejoin));
    }
    if now.duration_since(rejoin.restarted) > REJOIN_TIMEOUT {
        let log = cluster.log_path(rejoin.replica);
        note(&format!(
            "the end of {}:\n{}",
            log.display(),
            log_tail(&log)
        ));
        note(&format!(
            "rejoin: replica {} not back within {} s; last seen {state:?}, target commit {}",
            rejoin.replica,
            REJOIN_TIMEOUT.as_secs(),
            rejoin.target
        ));
        return Ok(Phase::Done(rejoin));
    }
    Ok(Phase::CatchingUp(rejoin))
}
