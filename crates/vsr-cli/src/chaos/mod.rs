//! `vsr chaos`: a real cluster of `vsr start` processes under kills, pauses, partitions and
//! data damage, with concurrent clients, then a verdict on what the clients saw.
//!
//! The run, in order:
//!
//! 1. format and start the replicas ([`LocalCluster`]) in a temporary directory, each with its
//!    own `--addresses` list whose peer entries point at fault-injecting proxies
//!    ([`proxy::Network`]);
//! 2. run client sessions ([`workload`]) while the nemesis ([`nemesis`]) carries out the
//!    schedule drawn from the seed ([`schedule`]) for `--duration`;
//! 3. heal everything, stop the workload, and require progress: one write acknowledged
//!    within [`PROGRESS_TIMEOUT`];
//! 4. read every key once more (the final reads, part of the history);
//! 5. wait until every replica is in normal status at the same commit number, stop them with
//!    SIGTERM, and compare their state read back from disk ([`state`]) with each other and
//!    with the final reads;
//! 6. measure on the history how long the cluster answered nothing after each heal
//!    ([`availability`]), then check it ([`verdict`]): linearizability with the simulator's
//!    checker, and the lost acknowledged writes; print the summary and the verdict.
//!
//! Every process and file is removed on every exit path (success, failure, error, SIGINT or
//! SIGTERM) by [`LocalCluster`]'s and [`proxy::Network`]'s `Drop`; `--keep` keeps the
//! directory. Exit status: 0 for a pass, 1 for a failed verdict, 2 when the run could not be
//! carried out. Design and rules: docs/chaos.md.

mod availability;
mod damage;
mod nemesis;
mod proxy;
mod schedule;
mod state;
mod verdict;
mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Args;
use tokio::sync::watch;
use vsr::EntryChecksum;
use vsr_server::Client;
use vsr_sim::history::{History, OpResult};

use crate::args::parse_duration;
use crate::demo::interrupted;
use crate::local_cluster::LocalCluster;
use availability::Unavailability;
use nemesis::Nemesis;
use proxy::Network;
use schedule::{PartitionMode, Schedule};
use verdict::{CHECK_BUDGET_STEPS, Verdict};
use workload::{FINAL_PROCESS, Recorder, Request, until_done};

/// How long the cluster may take to elect its first primary.
const PRIMARY_TIMEOUT: Duration = Duration::from_secs(30);
/// After the faults stop, a write must be acknowledged within this long.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the final reads of every key may take in all.
const FINAL_READS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the replicas may take to reach the same commit number once the reads are done.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a replica may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// `--checkpoint-interval` of the replicas.
const CHECKPOINT_INTERVAL: u64 = 4096;
/// Shortest and longest run.
const DURATION_MIN: Duration = Duration::from_secs(5);
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Shortest and longest `--max-unavailable`.
const MAX_UNAVAILABLE_MIN: Duration = Duration::from_millis(100);
const MAX_UNAVAILABLE_MAX: Duration = Duration::from_secs(600);

/// Options of `vsr chaos`.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// Replicas in the cluster: 3, 5 or 7.
    #[arg(long, default_value_t = 3, value_parser = parse_replicas)]
    replicas: usize,
    /// How long faults are injected: seconds (45), or with a unit (500ms, 90s, 10m).
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_run_duration)]
    duration: Duration,
    /// The seed the fault schedule and the workload are drawn from (default: from the clock;
    /// it is printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent client sessions.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=32))]
    clients: u16,
    /// Write the history here, as JSON lines in the schema of `vsr sim --history`.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Keep the data directories and the replicas' logs, and print where they are.
    #[arg(long)]
    keep: bool,
    /// Plain TCP instead of mutual TLS with throwaway certificates.
    #[arg(long)]
    insecure: bool,
    /// How partitions fail their links: stall (nothing read, nothing acknowledged, the same
    /// connections carry on at the heal), blackhole (bytes acknowledged and discarded), reset
    /// (connections closed and refused), or mixed (each partition draws one).
    #[arg(long, value_enum, value_name = "MODE", default_value = "mixed")]
    partition_mode: PartitionMode,
    /// Fail the run when, after some heal, the cluster answers nothing for longer than this:
    /// seconds (5), or with a unit (2500ms).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_max_unavailable)]
    max_unavailable: Duration,
}

fn parse_replicas(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count @ (3 | 5 | 7)) => Ok(count),
        _ => Err(format!(
            "{text:?} is not a replica count for chaos: use 3, 5 or 7 (2f+1 replicas survive f \
             failures; one replica survives none)"
        )),
    }
}

fn parse_run_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if !(DURATION_MIN..=DURATION_MAX).contains(&duration) {
        return Err(format!(
            "{text:?} is outside the supported range: give at least {} s and at most 24 hours",
            DURATION_MIN.as_secs()
        ));
    }
    Ok(duration)
}

fn parse_max_unavailable(text: &str) -> Result<Duration, String> {
    let bound = parse_duration(text)?;
    if !(MAX_UNAVAILABLE_MIN..=MAX_UNAVAILABLE_MAX).contains(&bound) {
        return Err(format!(
            "{text:?} is outside the supported range: give at least 100ms and at most 10m"
        ));
    }
    Ok(bound)
}

/// Prints a line on stdout; a closed pipe is not an error.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Runs `vsr chaos`.
pub(crate) fn run(args: &ChaosArgs) -> anyhow::Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        (nanos as u64) ^ u64::from(std::process::id())
    });
    // A bad --history path fails now, not after the run.
    let history_file = match &args.history {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the history file {}", path.display()))?,
        ),
        None => None,
    };
    let (runtime, mut cluster) =
        LocalCluster::in_temp_dir("vsr-chaos-", args.replicas, !args.insecure)?;
    // Under faults a run commits some 15,000 ops a minute: checkpoint often enough that
    // checkpoints, log rotations and checkpoint damage happen in every run.
    cluster.checkpoint_interval = Some(CHECKPOINT_INTERVAL);
    say(&format!(
        "vsr chaos: {} replicas, {} client sessions, {} s of faults, seed {seed}",
        args.replicas,
        args.clients,
        args.duration.as_secs_f64()
    ));
    say(&format!(
        "partition mode: {}; --max-unavailable {} s",
        partition_mode_name(args.partition_mode),
        args.max_unavailable.as_secs_f64()
    ));
    let result = runtime.block_on(async {
        let interrupted = interrupted()?;
        tokio::select! {
            result = chaos(&mut cluster, args, seed) => result,
            () = interrupted => Err(anyhow!("interrupted: stopped the cluster and removed its files")),
        }
    });
    drop(runtime);
    let kept = args.keep.then(|| cluster.keep()).flatten();
    drop(cluster);
    if let Some(path) = &kept {
        say(&format!("kept the data and logs in {}", path.display()));
    }
    let (history, verdict) = result?;
    if let (Some(file), Some(path)) = (history_file, &args.history) {
        history
            .write_json_lines(std::io::BufWriter::new(file))
            .with_context(|| format!("cannot write the history to {}", path.display()))?;
        say(&format!("history written to {}", path.display()));
    }
    for line in verdict.lines() {
        say(&line);
    }
    Ok(if verdict.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The whole run on a created (not yet started) cluster: the history and the verdict.
async fn chaos(
    cluster: &mut LocalCluster,
    args: &ChaosArgs,
    seed: u64,
) -> anyhow::Result<(History, Verdict)> {
    let clients = usize::from(args.clients);
    let network = Network::start(&cluster.addresses, clients).await?;
    start_cluster(cluster, &network).await?;
    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(started));
    let (stop, stopped) = watch::channel(false);
    let mut sessions = tokio::task::JoinSet::new();
    for session in 0..clients {
        let client = Client::connect_with(
            cluster.network()?,
            cluster.cluster,
            network.client_addresses(session),
        )?;
        let recorder = Arc::clone(&recorder);
        let stopped = stopped.clone();
        sessions.spawn(workload::session(
            session, clients, client, recorder, seed, stopped,
        ));
    }
    let mut nemesis = Nemesis::new(
        cluster,
        &network,
        &recorder,
        args.max_unavailable,
        seed,
        started,
    );
    let mut schedule = Schedule::new(seed, args.replicas, clients, args.partition_mode);
    nemesis.run(&mut schedule, started + args.duration).await;
    let _ = stop.send(true);
    watching(&mut nemesis, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    nemesis.event("faults stopped; the workload stopped");
    let mut failures = Vec::new();
    let reads = settle(&mut nemesis, &recorder, &mut failures).await?;
    if let Some(reads) = reads {
        converge(&mut nemesis, &reads, &mut failures).await?;
    }
    failures.extend(
        nemesis
            .crashes
            .iter()
            .map(|crash| format!("{crash} (a crash is a failure)")),
    );
    failures.extend(
        recorder
            .bad_replies()
            .into_iter()
            .map(|bad| format!("bad reply: {bad}")),
    );
    failures.extend(panics(nemesis.cluster));
    summarize(&nemesis, &recorder);
    let history = recorder.history();
    let unavailability = Unavailability {
        gaps: availability::gaps(&history, &nemesis.heals_ns, &nemesis.fault_starts_ns),
        bound: args.max_unavailable,
    };
    for line in unavailability.lines() {
        say(&line);
    }
    failures.extend(unavailability.failure());
    let keys: std::collections::BTreeSet<&str> =
        history.ops.iter().map(|op| op.key.as_str()).collect();
    say(&format!(
        "checking linearizability of {} operations on {} keys",
        history.ops.len(),
        keys.len()
    ));
    let checked = Instant::now();
    let verdict = Verdict::of(&history, CHECK_BUDGET_STEPS, failures);
    say(&format!(
        "checked in {:.1} s",
        checked.elapsed().as_secs_f64()
    ));
    Ok((history, verdict))
}

/// The word `--partition-mode` takes for `mode`.
fn partition_mode_name(mode: PartitionMode) -> &'static str {
    match mode {
        PartitionMode::Mixed => "mixed (reset, black hole or stall)",
        PartitionMode::Stall => "stall",
        PartitionMode::Blackhole => "black hole",
        PartitionMode::Reset => "reset",
    }
}

/// Points every replica's peers at the proxies, starts them and waits for a primary.
async fn start_cluster(cluster: &mut LocalCluster, network: &Network) -> anyhow::Result<()> {
    say(&format!("data and logs in {}", cluster.root().display()));
    for index in 0..cluster.replica_count() {
        cluster.set_start_addresses(index, network.replica_addresses(index));
        let pid = cluster.start(index)?;
        say(&format!(
            "  replica {index}: pid {pid}, listening on {}, peers via proxies {}",
            cluster.addresses[index],
            network.replica_addresses(index).join(",")
        ));
    }
    let (primary, state) = cluster.wait_for_primary(None, PRIMARY_TIMEOUT).await?;
    say(&format!(
        "replica {primary} is primary of view {}",
        state.view
    ));
    Ok(())
}

/// Runs `future` while the nemesis watches for replicas that die by themselves (and restarts
/// them: the run goes on, the crash is a failure).
async fn watching<F: Future>(nemesis: &mut Nemesis<'_>, future: F) -> F::Output {
    tokio::pin!(future);
    loop {
        tokio::select! {
            output = &mut future => return output,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                let crashes = nemesis.crashes.len();
                nemesis.watch().await;
                if nemesis.crashes.len() > crashes {
                    nemesis.heal();
                }
            }
        }
    }
}

/// After the faults: one write must be acknowledged (progress), then every key is read once
/// more. Returns the final reads, or `None` (with a failure) when the cluster did not answer.
async fn settle(
    nemesis: &mut Nemesis<'_>,
    recorder: &Recorder,
    failures: &mut Vec<String>,
) -> anyhow::Result<Option<Vec<(String, Option<String>)>>> {
    let cluster = nemesis.cluster.cluster;
    let client = Client::connect_with(
        nemesis.cluster.network()?,
        cluster,
        nemesis.cluster.addresses.clone(),
    )?;
    let mut process = FINAL_PROCESS;
    let healed = Instant::now();
    let probe = |attempt| Request::put("progress".to_owned(), format!("progress.{attempt}"));
    let give_up = healed + PROGRESS_TIMEOUT;
    let done = watching(
        nemesis,
        until_done(&client, recorder, &mut process, probe, give_up),
    )
    .await;
    if done.is_none() {
        failures.push(format!(
            "no progress after the faults stopped: no write acknowledged within {} s",
            PROGRESS_TIMEOUT.as_secs()
        ));
        return Ok(None);
    }
    nemesis.event(&format!(
        "progress: a write acknowledged {} ms after the faults stopped",
        healed.elapsed().as_millis()
    ));
    let mut keys = recorder.keys();
    keys.push("progress".to_owned());
    let give_up = Instant::now() + FINAL_READS_TIMEOUT;
    let mut reads = Vec::with_capacity(keys.len());
    for key in keys {
        process += 1;
        let get = |_| Request::get(key.clone());
        let read = watching(
            nemesis,
            until_done(&client, recorder, &mut process, get, give_up),
        );
        match read.await {
            Some(OpResult::Value(value)) => reads.push((key, value)),
            _ => {
                failures.push(format!(
                    "no progress after the faults stopped: the final read of {key:?} did not \
                     complete within {} s",
                    FINAL_READS_TIMEOUT.as_secs()
                ));
                return Ok(None);
            }
        }
    }
    nemesis.event(&format!("final reads: {} keys read", reads.len()));
    Ok(Some(reads))
}

/// Waits until every replica is in normal status at the same view and commit number, stops
/// them with SIGTERM, and compares their state on disk with each other and with `reads`.
async fn converge(
    nemesis: &mut Nemesis<'_>,
    reads: &[(String, Option<String>)],
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(commit) = wait_converged(nemesis).await else {
        let states = nemesis.states().await;
        failures.push(format!(
            "the replicas did not converge within {} s after the faults stopped: {states:?}",
            CONVERGE_TIMEOUT.as_secs()
        ));
        return Ok(());
    };
    nemesis.event(&format!(
        "every replica in normal status at commit {commit}"
    ));
    nemesis.watch().await;
    let cluster = &mut *nemesis.cluster;
    for index in 0..cluster.replica_count() {
        if let Some(pid) = cluster.pid(index) {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("a pid")?);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }
    for index in 0..cluster.replica_count() {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match cluster.wait_exit(index, Duration::ZERO) {
                Some(status) => break Some(status),
                None if cluster.pid(index).is_none() => break None,
                None if Instant::now() >= deadline => break None,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        match status {
            Some(status) if status.success() => {}
            Some(status) => failures.push(format!("replica {index} stopped with {status}")),
            None => failures.push(format!(
                "replica {index} did not stop within {} s of SIGTERM",
                STOP_TIMEOUT.as_secs()
            )),
        }
    }
    compare_images(cluster, commit, reads, failures);
    Ok(())
}

/// The common commit number once every replica runs in normal status at the same view and
/// commit, twice in a row; `None` after [`CONVERGE_TIMEOUT`].
async fn wait_converged(nemesis: &mut Nemesis<'_>) -> Option<u64> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut previous = None;
    while Instant::now() < deadline {
        let states = nemesis.states().await;
        let first = states.first().copied().flatten();
        let agreed = first.filter(|first| {
            states.iter().all(|state| {
                state.is_some_and(|state| {
                    state.status == 0 && state.view == first.view && state.commit == first.commit
                })
            })
        });
        match agreed {
            Some(state) if previous == Some(state) => return Some(state.commit),
            _ => previous = agreed,
        }
        nemesis.wait(Duration::from_millis(200), deadline).await;
        if !nemesis.crashes.is_empty() {
            nemesis.heal();
        }
    }
    None
}

/// Reads every stopped replica's state at `commit` and compares them, and the first with the
/// final reads.
fn compare_images(
    cluster: &LocalCluster,
    commit: u64,
    reads: &[(String, Option<String>)],
    failures: &mut Vec<String>,
) {
    // The commit number arrives as a plain number from the replicas' metrics.
    let commit = vsr::Op(commit);
    let count = cluster.replica_count();
    let mut images = Vec::with_capacity(count);
    for index in 0..count {
        match state::read(
            &cluster.data_dir(index),
            cluster.cluster,
            count,
            index,
            commit,
        ) {
            Ok(image) => images.push(image),
            Err(error) => {
                failures.push(format!("replica {index}'s data after the run: {error:#}"));
                return;
            }
        }
    }
    let first = &images[0];
    for (index, image) in images.iter().enumerate() {
        if image.damaged {
            failures.push(format!(
                "replica {index}'s data is damaged after a clean stop"
            ));
        }
        if image.executed != commit || image.head.is_none() {
            failures.push(format!(
                "replica {index} holds the committed log only up to op {} of {commit}",
                image.executed
            ));
        } else if image.head != first.head || image.digest != first.digest {
            failures.push(format!(
                "replica {index}'s state differs from replica 0's at commit {commit}: log head \
                 {:x?} vs {:x?}, store digest {:x} vs {:x}",
                image.head.map(EntryChecksum::get),
                first.head.map(EntryChecksum::get),
                image.digest,
                first.digest
            ));
        }
    }
    let differing: Vec<&str> = reads
        .iter()
        .filter(|(key, value)| {
            let stored = first.store.get(key.as_bytes());
            stored.map(|bytes| bytes.as_ref()) != value.as_ref().map(String::as_bytes)
        })
        .map(|(key, _)| key.as_str())
        .collect();
    if !differing.is_empty() {
        failures.push(format!(
            "the replicas' final state differs from the final reads on keys {differing:?}"
        ));
    }
    let converged = failures.is_empty();
    say(&format!(
        "replicas converged: {} (commit {commit}, log head {:x}, store digest {:x}, {} keys \
         match the final reads)",
        if converged { "yes" } else { "no" },
        first.head.unwrap_or_default().get(),
        first.digest,
        reads.len() - differing.len()
    ));
}

/// A line for every panic in a replica's log: a panic in a task does not always end the
/// process, so the exit status alone would miss it.
fn panics(cluster: &LocalCluster) -> Vec<String> {
    let mut found = Vec::new();
    for index in 0..cluster.replica_count() {
        let log = std::fs::read_to_string(cluster.log_path(index)).unwrap_or_default();
        for line in log.lines().filter(|line| line.contains("panicked at")) {
            found.push(format!("replica {index} panicked: {}", line.trim()));
        }
    }
    found
}

/// From the status changes the replicas' logs record: view changes started (each new view
/// entered in view change status) and recoveries started (recovering status entered from
/// another status, or at a start).
fn status_changes(cluster: &LocalCluster) -> (usize, usize) {
    let mut counts = (0, 0);
    for index in 0..cluster.replica_count() {
        let log = std::fs::read_to_string(cluster.log_path(index)).unwrap_or_default();
        let mut recovering = false;
        for line in log.lines() {
            if line.contains(" listening ") {
                recovering = false;
            } else if line.contains(" status view_change primary ") {
                counts.0 += 1;
                recovering = false;
            } else if line.contains(" status recovering primary ") {
                counts.1 += usize::from(!recovering);
                recovering = true;
            } else if line.contains(" status normal primary ") {
                recovering = false;
            }
        }
    }
    counts
}

/// Prints the faults by kind and what became of the operations.
fn summarize(nemesis: &Nemesis<'_>, recorder: &Recorder) {
    let faults: Vec<String> = nemesis
        .counts
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    let total: u64 = nemesis.counts.values().sum();
    say("summary:");
    say(&format!(
        "  faults injected: {total} ({})",
        faults.join(", ")
    ));
    say(&format!(
        "  damage skipped (it would have made more than f replicas damaged or recovering): {}",
        nemesis.skipped
    ));
    say(&format!(
        "  replicas that crashed by themselves: {}",
        nemesis.crashes.len()
    ));
    let (view_changes, recoveries) = status_changes(nemesis.cluster);
    say(&format!(
        "  protocol: {view_changes} view changes and {recoveries} recoveries started (replica \
         logs), at least {} state transfers (replica metrics)",
        nemesis.state_transfers
    ));
    let counts = &recorder.counts;
    let invoked = counts.invoked.load(Ordering::Relaxed);
    let ok = counts.ok.load(Ordering::Relaxed);
    let not_executed = counts.not_executed.load(Ordering::Relaxed);
    let unknown = counts.unknown.load(Ordering::Relaxed);
    say(&format!(
        "  operations: {invoked} invoked, {ok} ok, {not_executed} failed (not executed), \
         {unknown} indeterminate (timed out); {} writes acknowledged",
        counts.writes_acknowledged.load(Ordering::Relaxed)
    ));
    let share = if invoked == 0 {
        0.0
    } else {
        100.0 * (ok + not_executed) as f64 / invoked as f64
    };
    say(&format!(
        "  definite outcome: {share:.1}% of operations ({:.1}% ok)",
        if invoked == 0 {
            0.0
        } else {
            100.0 * ok as f64 / invoked as f64
        }
    ));
}
