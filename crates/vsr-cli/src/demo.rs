//! `vsr demo`: a local 3-replica cluster of real processes through a primary failure.
//!
//! The demo formats three data directories in a temporary directory and starts three
//! `vsr start` child processes of this same binary on free loopback ports ([`LocalCluster`]).
//! Concurrent clients then write, each write to its own key ([`Workload`]), while the demo:
//!
//! 1. finds the primary through the replicas' metrics (`vsr_view`, `vsr_status`) and kills it
//!    with SIGKILL a third of the way through;
//! 2. times the view change (a new primary in normal status) and the first write acknowledged
//!    after the kill;
//! 3. restarts the old primary from its data directory two thirds of the way through, and
//!    watches its `vsr_commit` reach the others';
//! 4. reads every acknowledged write back and counts the writes lost.
//!
//! It exits 0 only if no acknowledged write was lost. The child processes are killed and the
//! directory removed on every exit path — success, error, Ctrl-C — by [`LocalCluster`]'s
//! `Drop`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;
use vsr::Codec;
use vsr_kv::{KvOperation, KvQuery, KvResult};
use vsr_server::{Client, Network};

use crate::local_cluster::{LocalCluster, REPLICA_COUNT};

/// How long one client request may take before it is retried.
const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// How long one write (or read) may keep failing before the demo gives up.
const OPERATION_GIVE_UP: Duration = Duration::from_secs(30);
/// How long the cluster may take to elect a primary, at start and after the kill.
const PRIMARY_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval between two looks at the metrics.
const POLL: Duration = Duration::from_millis(10);

/// Options of `vsr demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Writes the workload makes, each to its own key.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(30..))]
    writes: u64,
    /// Writes started per second, across all clients.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Concurrent clients (each has one write in flight at a time).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    clients: u16,
    /// Keep the data directories and the replicas' logs, and print where they are.
    #[arg(long)]
    keep: bool,
    /// Plain TCP instead of mutual TLS with throwaway certificates.
    #[arg(long)]
    insecure: bool,
}

/// Runs `vsr demo`.
pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let (runtime, mut cluster) =
        LocalCluster::in_temp_dir("vsr-demo-", REPLICA_COUNT, !args.insecure)?;
    let result = runtime.block_on(async {
        let interrupted = interrupted()?;
        tokio::select! {
            result = demo(&mut cluster, args) => result,
            () = interrupted => Err(anyhow!("interrupted: stopping the cluster")),
        }
    });
    let kept = args.keep.then(|| cluster.keep()).flatten();
    drop(cluster);
    match &kept {
        Some(path) => say(&format!("kept the data and logs in {}", path.display())),
        None => say("stopped the cluster and removed its files"),
    }
    let summary = result?;
    Ok(if summary.lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Completes on the first SIGINT or SIGTERM.
pub(crate) fn interrupted() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Prints a line on stdout; a closed pipe is not an error.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// What the demo found.
struct Summary {
    lost: u64,
}

/// The whole demo, on a created (not yet started) cluster.
async fn demo(cluster: &mut LocalCluster, args: &DemoArgs) -> anyhow::Result<Summary> {
    say(&format!(
        "starting 3 replicas in {} (cluster {:x})",
        cluster.root().display(),
        cluster.cluster
    ));
    for index in 0..REPLICA_COUNT {
        let pid = cluster.start(index)?;
        say(&format!(
            "  replica {index}: pid {pid}, listening on {}, metrics on http://{}/metrics",
            cluster.addresses[index], cluster.metrics[index]
        ));
    }
    let started = Instant::now();
    let (primary, state) = cluster.wait_for_primary(None, PRIMARY_TIMEOUT).await?;
    say(&format!(
        "replica {primary} is primary of view {} after {} ms",
        state.view,
        started.elapsed().as_millis()
    ));
    say(&format!(
        "writing {} keys with {} clients at {} writes/s; each write has its own key",
        args.writes, args.clients, args.rate
    ));
    let workload = Arc::new(Workload::new(args.writes, args.rate));
    let mut writers = JoinSet::new();
    for _ in 0..args.clients {
        let client = Client::connect_with(
            cluster.network()?,
            cluster.cluster,
            cluster.addresses.clone(),
        )?;
        writers.spawn(write_loop(client, Arc::clone(&workload), cluster.cluster));
    }
    let failover = match fail_over(cluster, &workload).await {
        Ok(failover) => failover,
        Err(error) => {
            // A client's own error explains more than "a client gave up".
            writers.abort_all();
            while let Some(joined) = writers.join_next().await {
                if let Ok(Err(client_error)) = joined {
                    return Err(client_error);
                }
            }
            return Err(error);
        }
    };
    while let Some(joined) = writers.join_next().await {
        joined.context("a client task failed")??;
    }
    workload.bar.finish_and_clear();
    say(&format!(
        "workload done: {} writes acknowledged in {:.1} s ({} retried after a timeout)",
        workload.acknowledged.load(Ordering::Relaxed),
        workload.started.elapsed().as_secs_f64(),
        workload.retries.load(Ordering::Relaxed)
    ));
    let commit = cluster.wait_converged().await?;
    say(&format!(
        "all 3 replicas at commit {commit}, replica {} included",
        failover.killed
    ));
    let lost = verify(cluster, &workload, args.clients).await?;
    report(&workload, &failover, lost);
    Ok(Summary { lost })
}

/// What happened around the primary's failure.
struct Failover {
    /// The replica that was killed and restarted.
    killed: usize,
    /// When it was killed.
    at: Instant,
    /// Kill to a new primary in normal status.
    view_change: Duration,
}

/// Kills the primary a third of the way through, reports the view change, and restarts the
/// old primary two thirds of the way through.
async fn fail_over(cluster: &mut LocalCluster, workload: &Workload) -> anyhow::Result<Failover> {
    workload.wait_acknowledged(workload.writes / 3).await?;
    let (primary, state) = cluster.wait_for_primary(None, PRIMARY_TIMEOUT).await?;
    let pid = cluster.kill(primary)?;
    let at = Instant::now();
    workload.say(&format!(
        "killed primary replica {primary} (pid {pid}) with SIGKILL after {} writes",
        workload.acknowledged.load(Ordering::Relaxed)
    ));
    let (new_primary, new_state) = cluster
        .wait_for_primary(Some(state.view), PRIMARY_TIMEOUT)
        .await?;
    let view_change = at.elapsed();
    workload.say(&format!(
        "view change: replica {new_primary} is primary of view {} after {} ms",
        new_state.view,
        view_change.as_millis()
    ));
    let resumed = workload.wait_resumed(at).await?;
    workload.say(&format!(
        "service resumed: writes acknowledged again {} ms after the kill",
        resumed.as_millis()
    ));
    workload.wait_acknowledged(workload.writes * 2 / 3).await?;
    let pid = cluster.start(primary)?;
    let restarted = Instant::now();
    let target = cluster.commit_max().await?;
    workload.say(&format!(
        "restarted replica {primary} (pid {pid}) from its data directory; the primary is at \
         commit {target}"
    ));
    let commit = cluster.wait_reaches(primary, target).await?;
    workload.say(&format!(
        "replica {primary} caught up: at commit {commit}, past the primary's {target} at its \
         restart, {} ms after the restart",
        restarted.elapsed().as_millis()
    ));
    Ok(Failover {
        killed: primary,
        at,
        view_change,
    })
}

/// Prints the summary.
fn report(workload: &Workload, failover: &Failover, lost: u64) {
    let acknowledged = workload.acknowledged.load(Ordering::Relaxed);
    let resumed = workload.resumed_after(failover.at);
    say("summary:");
    say(&format!("  writes acknowledged: {acknowledged}"));
    say(&format!("  writes lost:         {lost}"));
    say(&format!(
        "  failover time:       {} ms from the kill to the first write acknowledged after it \
         (view change: {} ms)",
        resumed.map_or_else(|| "?".to_owned(), |d| d.as_millis().to_string()),
        failover.view_change.as_millis()
    ));
    say(&format!(
        "  slowest write:       {} ms",
        workload.slowest().as_millis()
    ));
    if lost == 0 {
        say("OK: every acknowledged write survived the failure of the primary");
    } else {
        say(&format!("FAILED: {lost} acknowledged writes were lost"));
    }
}

/// The key and value of write `index`.
fn key_value(index: u64, cluster: u128) -> (Bytes, Bytes) {
    (
        Bytes::from(format!("demo-{index:06}")),
        Bytes::from(format!("value-{index}-{cluster:x}")),
    )
}

/// The shared state of the writing clients.
struct Workload {
    writes: u64,
    rate: u64,
    started: Instant,
    /// The next write to start.
    next: AtomicU64,
    acknowledged: AtomicU64,
    /// Set when a client gave up: nothing waits for progress any more.
    failed: AtomicBool,
    /// Requests retried after their deadline passed.
    retries: AtomicU64,
    /// Per write: when it started and when it was acknowledged.
    times: Mutex<Vec<(Option<Instant>, Option<Instant>)>>,
    bar: ProgressBar,
}

impl Workload {
    fn new(writes: u64, rate: u64) -> Self {
        let bar = ProgressBar::new(writes);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} writes acknowledged ({per_sec})",
            )
            .expect("a valid template"),
        );
        Self {
            writes,
            rate,
            started: Instant::now(),
            next: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            retries: AtomicU64::new(0),
            times: Mutex::new(vec![(None, None); usize::try_from(writes).unwrap_or(0)]),
            bar,
        }
    }

    /// Prints a line above the progress bar.
    fn say(&self, line: &str) {
        self.bar.suspend(|| say(line));
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Vec<(Option<Instant>, Option<Instant>)>> {
        self.times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next write to make and when to start it, or `None` when all have started.
    fn take(&self) -> Option<(u64, tokio::time::Instant)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if index >= self.writes {
            return None;
        }
        let offset = Duration::from_secs_f64(index as f64 / self.rate as f64);
        Some((index, tokio::time::Instant::from_std(self.started + offset)))
    }

    fn record(&self, index: u64, started: Instant) {
        let now = Instant::now();
        self.times()[usize::try_from(index).expect("bounded")] = (Some(started), Some(now));
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        self.bar.inc(1);
    }

    /// Whether write `index` was acknowledged.
    fn is_acknowledged(&self, index: u64) -> bool {
        self.times()[usize::try_from(index).expect("bounded")]
            .1
            .is_some()
    }

    /// Waits until `count` writes were acknowledged; fails if a client gave up.
    async fn wait_acknowledged(&self, count: u64) -> anyhow::Result<()> {
        while self.acknowledged.load(Ordering::Relaxed) < count {
            self.check_failed()?;
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    fn check_failed(&self) -> anyhow::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            bail!("a client gave up");
        }
        Ok(())
    }

    /// The time from `at` to the first acknowledgement of a write started after `at`: such a
    /// write cannot have been answered by the replica killed at `at`.
    fn resumed_after(&self, at: Instant) -> Option<Duration> {
        self.times()
            .iter()
            .filter_map(|(started, acknowledged)| match (started, acknowledged) {
                (Some(started), Some(acknowledged)) if *started >= at => Some(*acknowledged),
                _ => None,
            })
            .min()
            .map(|acknowledged| acknowledged.duration_since(at))
    }

    /// Waits for [`Workload::resumed_after`]; fails if a client gave up.
    async fn wait_resumed(&self, at: Instant) -> anyhow::Result<Duration> {
        loop {
            if let Some(resumed) = self.resumed_after(at) {
                return Ok(resumed);
            }
            self.check_failed()?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// The longest time a write took to be acknowledged.
    fn slowest(&self) -> Duration {
        self.times()
            .iter()
            .filter_map(|(started, acknowledged)| {
                Some(acknowledged.as_ref()?.duration_since(*started.as_ref()?))
            })
            .max()
            .unwrap_or_default()
    }
}

/// One client: takes writes from the workload until none are left. A write whose deadline
/// passes is sent again (a put of the same value is idempotent) until it is acknowledged.
async fn write_loop(
    client: Client<Network>,
    workload: Arc<Workload>,
    cluster: u128,
) -> anyhow::Result<()> {
    let result = write_all(&client, &workload, cluster).await;
    if result.is_err() {
        workload.failed.store(true, Ordering::Relaxed);
    }
    result
}

/// The body of [`write_loop`].
async fn write_all(
    client: &Client<Network>,
    workload: &Workload,
    cluster: u128,
) -> anyhow::Result<()> {
    while let Some((index, start_at)) = workload.take() {
        tokio::time::sleep_until(start_at).await;
        let (key, value) = key_value(index, cluster);
        let operation = Bytes::from(KvOperation::Put { key, value }.to_bytes());
        let started = Instant::now();
        loop {
            match client.request(operation.clone(), REQUEST_DEADLINE).await {
                Ok(result) => {
                    match KvResult::decode(&result) {
                        Ok(KvResult::Ok) => {}
                        other => bail!("write {index}: unexpected result {other:?}"),
                    }
                    workload.record(index, started);
                    break;
                }
                Err(error) if started.elapsed() > OPERATION_GIVE_UP => {
                    bail!(
                        "write {index} failed for {} s: {error}",
                        OPERATION_GIVE_UP.as_secs()
                    );
                }
                Err(_) => {
                    workload.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}

/// Reads every acknowledged write back through `clients` clients; returns how many are lost
/// (missing or with another value).
async fn verify(
    cluster: &LocalCluster,
    workload: &Arc<Workload>,
    clients: u16,
) -> anyhow::Result<u64> {
    let indices: Vec<u64> = (0..workload.writes)
        .filter(|index| workload.is_acknowledged(*index))
        .collect();
    say(&format!(
        "reading back all {} acknowledged writes",
        indices.len()
    ));
    let indices = Arc::new(indices);
    let mut readers = JoinSet::new();
    for reader in 0..usize::from(clients) {
        let client = Client::connect_with(
            cluster.network()?,
            cluster.cluster,
            cluster.addresses.clone(),
        )?;
        let indices = Arc::clone(&indices);
        let (cluster, clients) = (cluster.cluster, usize::from(clients));
        readers.spawn(async move {
            let mut lost = 0;
            for index in indices.iter().skip(reader).step_by(clients) {
                let (key, value) = key_value(*index, cluster);
                let read = read(&client, key).await?;
                if read.as_ref() != Some(&value) {
                    lost += 1;
                }
            }
            anyhow::Ok(lost)
        });
    }
    let mut lost = 0;
    while let Some(joined) = readers.join_next().await {
        lost += joined.context("a reader task failed")??;
    }
    Ok(lost)
}

/// Reads `key`, retrying until the cluster answers.
async fn read(client: &Client<Network>, key: Bytes) -> anyhow::Result<Option<Bytes>> {
    let query = Bytes::from(KvQuery::Get { key: key.clone() }.to_bytes());
    let started = Instant::now();
    loop {
        match client.query(query.clone(), REQUEST_DEADLINE).await {
            Ok(result) => match KvResult::decode(&result) {
                Ok(KvResult::Value(value)) => return Ok(value),
                other => bail!("read {key:?}: unexpected result {other:?}"),
            },
            Err(error) if started.elapsed() > OPERATION_GIVE_UP => {
                bail!(
                    "read {key:?} failed for {} s: {error}",
                    OPERATION_GIVE_UP.as_secs()
                );
            }
            Err(_) => {}
        }
    }
}
