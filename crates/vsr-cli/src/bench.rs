//! `vsr bench`: the key-value service's throughput, latency and CPU cost per operation.
//!
//! Without `--addresses` the bench starts a local durable 3-replica cluster of `vsr start`
//! processes ([`LocalCluster`]) in a temporary directory under `--data-dir` (default: the
//! current directory, so that it measures the disk the operator is on and not a tmpfs `/tmp`),
//! names the filesystem and times a few syncs there ([`host`]), and warns when a sync costs
//! nothing. With `--addresses` it loads that cluster instead.
//!
//! Data flow: `--clients` sessions ([`vsr_server::Client`], one request in flight each, as VR
//! requires) run as tasks of one tokio runtime and share `--connections` connections to each
//! replica ([`ClientPool`]). They take request numbers from a shared
//! [`Workload`] until `--requests` are taken: back to back (closed loop), or each at its
//! scheduled instant `index / --rate` (open loop, latency counted from the schedule so a slow
//! cluster cannot hide its queueing). Each session keeps its own latencies; they are merged and
//! sorted at the end ([`Report`]). Before the timed phase every session makes one untimed write,
//! so registration and connection set-up are not measured. The CPU time of the replica
//! processes and of the bench itself is read before and after the timed phase.
//!
//! On a local cluster, [`watch`] runs beside the sessions: it samples the replicas' resident
//! memory every second (reported per replica at the end, with what each holds then) and, with
//! `--rejoin-after`, kills a backup mid-run, wipes its data and times how long its rebuilt
//! replacement takes to catch up, comparing the latency of the requests completed meanwhile
//! with that of those completed before the kill.
//!
//! A request that returns an error (its `--timeout` passed, or an unexpected result) counts as
//! failed; more than 1% failed makes the exit status non-zero.

mod host;
mod watch;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::task::JoinSet;
use vsr::Codec;
use vsr_kv::{KEY_SIZE_MAX, KvOperation, KvQuery, KvResult, VALUE_SIZE_MAX};
use vsr_server::{Client, ClientPool, Network};

use crate::args::{
    ClientIdentity, Security, client_network, parse_address, parse_cluster, parse_duration,
};
use crate::demo::interrupted;
use crate::local_cluster::{LocalCluster, REPLICA_COUNT};
use host::{CpuClock, Filesystem};
use watch::{REJOIN_TIMEOUT, Rejoin, ReplicaMemory, Watched};

/// Most concurrent sessions: the replicas' client table holds 1024.
const CLIENTS_MAX: u64 = 1024;
/// Share of failed requests above which the bench fails.
const FAILED_SHARE_MAX: f64 = 0.01;
/// How long the untimed first write of each session may keep failing.
const WARM_UP_GIVE_UP: Duration = Duration::from_secs(30);
/// How long a local cluster may take to elect its first primary.
const PRIMARY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes in a MiB, for the sizes printed.
const MIB: f64 = 1024.0 * 1024.0;

/// Options of `vsr bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --addresses, starts a local durable 3-replica cluster in a \
                        temporary directory under --data-dir and removes it afterwards, and \
                        reports each replica's peak and final resident memory (VmHWM and VmRSS, \
                        sampled every second)."
)]
pub(crate) struct BenchArgs {
    /// Concurrent client sessions, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    clients: u64,
    /// TCP connections to each replica that the sessions share (default: one per 64 sessions,
    /// at most 4).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    connections: Option<u64>,
    /// Operations in total, across all sessions.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Open loop: start this many operations per second (queued when every session is busy;
    /// latency counts from the scheduled start). Without it, closed loop.
    #[arg(long, value_name = "OPS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Bytes per key.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=KEY_SIZE_MAX as u64))]
    key_size: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=VALUE_SIZE_MAX as u64))]
    value_size: u64,
    /// Distinct keys, drawn uniformly.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Share of operations that are reads (0 to 1); the rest are puts.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    get_ratio: f64,
    /// Load an existing cluster: every replica's host:port, comma-separated, the i-th for
    /// replica i. Server CPU is then not measured.
    #[arg(long, value_delimiter = ',', value_parser = parse_address)]
    addresses: Vec<String>,
    /// The existing cluster's id (decimal, or hex with 0x); with --addresses.
    #[arg(long, default_value = "0", value_parser = parse_cluster, requires = "addresses")]
    cluster: u128,
    /// Where the local cluster's temporary directory goes (default: the current directory).
    #[arg(long, value_name = "PATH", conflicts_with = "addresses")]
    data_dir: Option<PathBuf>,
    /// How long one request may take before it counts as failed (for example 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Ops between checkpoints of the local replicas (`vsr start --checkpoint-interval`, with
    /// the log-size bound lifted so that OPS alone decides); a value beyond the run keeps
    /// checkpoints out of the measurement.
    #[arg(long, value_name = "OPS", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "addresses")]
    checkpoint_interval: Option<u64>,
    /// Before measuring, write every key once (untimed), so that reads and overwrites meet a
    /// full key space.
    #[arg(long)]
    fill: bool,
    /// SECS into the timed phase, kill the first backup replica (never the primary), wipe its
    /// data directory, format it with --recover and restart it; report how long it takes to
    /// be back (normal status, commit number at or beyond the primary's at the restart; at
    /// most 300 s) and the p99 latency of requests completed meanwhile against that of those
    /// completed before the kill. The state size printed is the disk space the primary's
    /// data directory takes at the restart (checkpoints, WAL and superblock, as du counts
    /// them), not a figure from its metrics. Local cluster only.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    rejoin_after: Option<Duration>,
    /// The local cluster uses throwaway certificates for mutual TLS unless --insecure; an
    /// existing cluster (--addresses) needs --tls DIR or --insecure.
    #[command(flatten)]
    security: Security,
    #[command(flatten)]
    identity: ClientIdentity,
}

/// Parses a share between 0 and 1.
fn parse_share(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|share| (0.0..=1.0).contains(share))
        .ok_or_else(|| format!("{text:?} is not a share between 0 and 1 (for example 0.5)"))
}

/// Runs `vsr bench`.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    check_key_space(args)?;
    if args.rejoin_after.is_some() && !args.addresses.is_empty() {
        bail!(
            "--rejoin-after kills and wipes a replica of the bench's own local cluster: drop \
             --addresses to use it"
        );
    }
    // One thread drives every session and connection: cheaper than handing each request and
    // reply between threads, and it leaves the other cores to the replicas.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let (report, failed) = runtime.block_on(async {
        let interrupted = interrupted()?;
        tokio::select! {
            result = bench(args) => result,
            () = interrupted => Err(anyhow!("interrupted: stopping the bench")),
        }
    })?;
    if args.json {
        say(&report.to_json());
    } else {
        report.print();
    }
    if let Some(message) = failed {
        bail!(message);
    }
    Ok(ExitCode::SUCCESS)
}

/// Keys are decimal numbers padded to `--key-size`: `--keys` distinct ones must fit.
fn check_key_space(args: &BenchArgs) -> anyhow::Result<()> {
    let digits = (args.keys - 1).checked_ilog10().map_or(1, |log| log + 1);
    if u64::from(digits) > args.key_size {
        bail!(
            "--keys {} needs keys of at least {digits} bytes: raise --key-size or lower --keys",
            args.keys
        );
    }
    Ok(())
}

/// Prints a line on stdout; a closed pipe is not an error.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Prints a status line on stderr, so stdout carries only the result.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Sets up the target cluster, loads it and reports; the message is set when too many
/// requests failed.
async fn bench(args: &BenchArgs) -> anyhow::Result<(Report, Option<String>)> {
    let mut local = None;
    let (cluster, addresses, target, network) = if args.addresses.is_empty() {
        if args.security.tls.is_some() {
            bail!(
                "--tls DIR is for an existing cluster (--addresses); a local one makes its own certificates"
            );
        }
        let (started, target) = start_local(args).await?;
        let identity = (started.cluster, started.addresses.clone());
        let network = started.network()?;
        local = Some(started);
        (identity.0, identity.1, target, network)
    } else {
        let network = client_network(&args.security, &args.identity, args.cluster, "bench")?;
        let target = Target {
            description: format!("existing cluster at {}", args.addresses.join(",")),
            filesystem: None,
        };
        (args.cluster, args.addresses.clone(), target, network)
    };
    note(&format!(
        "transport: {}",
        if network.tls().is_some() {
            "mutual TLS"
        } else {
            "plain TCP (--insecure)"
        }
    ));
    let measured = load(args, cluster, &addresses, &mut local, &network).await;
    let mut turn_max = None;
    if let Some(cluster) = local.as_mut() {
        cluster.check_running()?;
        turn_max = longest_turn(&cluster.metrics).await;
    }
    let mut report = Report::new(args, target, measured?);
    report.turn_max = turn_max;
    let failed = report.failed_message();
    drop(local);
    if args.addresses.is_empty() {
        note("stopped the cluster and removed its files");
    }
    Ok((report, failed))
}

/// The longest event-loop turn of any replica since it started, in ms, and which replica: from
/// `vsr_event_loop_turn_max_seconds` on each metrics endpoint.
async fn longest_turn(metrics: &[std::net::SocketAddr]) -> Option<(usize, f64)> {
    let mut longest: Option<(usize, f64)> = None;
    for (index, address) in metrics.iter().enumerate() {
        let text = crate::scrape::scrape(*address).await?;
        let seconds: f64 = crate::scrape::sample(&text, "vsr_event_loop_turn_max_seconds")?;
        if longest.is_none_or(|(_, ms)| seconds * 1e3 > ms) {
            longest = Some((index, seconds * 1e3));
        }
    }
    longest
}

/// What is loaded.
struct Target {
    description: String,
    /// The local cluster's filesystem; `None` for an existing cluster.
    filesystem: Option<Filesystem>,
}

/// Starts a local cluster under `--data-dir` and waits for its primary.
async fn start_local(args: &BenchArgs) -> anyhow::Result<(LocalCluster, Target)> {
    let parent = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let parent = parent.canonicalize().unwrap_or(parent);
    let dir = tempfile::Builder::new()
        .prefix(".vsr-bench-")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "cannot create a directory in {}: pass a writable --data-dir on the disk to \
                 measure",
                parent.display()
            )
        })?;
    let filesystem = Filesystem::probe(dir.path())
        .with_context(|| format!("cannot write and sync a file in {}", dir.path().display()))?;
    warn_if_sync_is_free(&filesystem);
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut cluster = LocalCluster::create(exe, dir, !args.security.insecure)?;
    cluster.checkpoint_interval = args.checkpoint_interval;
    let mut pids = Vec::with_capacity(REPLICA_COUNT);
    for index in 0..REPLICA_COUNT {
        pids.push(cluster.start(index)?);
    }
    let (primary, _) = cluster.wait_for_primary(None, PRIMARY_TIMEOUT).await?;
    let description = format!(
        "local cluster of {REPLICA_COUNT} replicas (pids {}) in {} on {}, 4 KiB write + \
         fdatasync {:.2} ms; replica {primary} is primary",
        pids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        cluster.root().display(),
        filesystem.kind,
        filesystem.sync.as_secs_f64() * 1e3,
    );
    note(&description);
    let target = Target {
        description,
        filesystem: Some(filesystem),
    };
    Ok((cluster, target))
}

/// Says loudly that the figures will mean nothing.
fn warn_if_sync_is_free(filesystem: &Filesystem) {
    if let Some(reason) = filesystem.sync_is_free() {
        let rule = "!".repeat(78);
        note(&rule);
        note(&format!("WARNING: {reason}."));
        note("WARNING: throughput measured here is not that of a durable service; pass");
        note("WARNING: --data-dir on a real disk.");
        note(&rule);
    }
}

/// The raw results of the timed phase.
struct Measured {
    elapsed: Duration,
    /// Latencies of the requests that succeeded, sorted.
    latencies: Vec<Duration>,
    /// Of those, the reads' and the writes', sorted.
    reads: Vec<Duration>,
    writes: Vec<Duration>,
    failed: u64,
    first_error: Option<String>,
    /// With `--rejoin-after`: when each successful request completed, and its latency.
    completions: Vec<(Instant, Duration)>,
    /// CPU time of this process during the timed phase.
    bench_cpu: Option<Duration>,
    /// What the watch of a local cluster measured (`None`: not ours).
    watched: Option<Watched>,
}

/// Connects the sessions, warms them up, and runs the timed phase; a local cluster is
/// [`watch`]ed meanwhile (and handed back in `local`).
async fn load(
    args: &BenchArgs,
    cluster: u128,
    addresses: &[String],
    local: &mut Option<LocalCluster>,
    network: &Network,
) -> anyhow::Result<Measured> {
    let connections = args
        .connections
        .unwrap_or_else(|| args.clients.div_ceil(64).min(4));
    let pools = (0..connections)
        .map(|_| ClientPool::connect_with(network.clone(), cluster, addresses.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut clients = Vec::new();
    for index in 0..args.clients {
        let pool = &pools[(index % connections) as usize];
        clients.push(Arc::new(pool.client()?));
    }
    warm_up(&clients, args).await?;
    if args.fill {
        fill(&clients, args).await?;
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} ops/s"),
        None => "closed loop".to_owned(),
    };
    note(&format!(
        "{} requests from {} sessions, {mode}: {}-byte keys ({} of them), {}-byte values, {}% \
         reads",
        args.requests,
        args.clients,
        args.key_size,
        args.keys,
        args.value_size,
        args.get_ratio * 100.0
    ));
    let clock = CpuClock::new();
    let bench_before = clock.process(None);
    let workload = Arc::new(Workload::new(args));
    let mut sessions = JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        sessions.spawn(session(client, Arc::clone(&workload), index as u64));
    }
    let load_done = AtomicBool::new(false);
    let run = async {
        let mut results = Vec::with_capacity(sessions.len());
        let mut failed = None;
        while let Some(joined) = sessions.join_next().await {
            match joined {
                Ok(result) => results.push(result),
                Err(error) => failed = failed.or(Some(error)),
            }
        }
        let elapsed = workload.started.elapsed();
        let bench_cpu = clock.process(None).zip(bench_before);
        load_done.store(true, Ordering::Release);
        workload.bar.finish_and_clear();
        if let Some(error) = failed {
            return Err(anyhow!(error).context("a session task failed"));
        }
        Ok((
            results,
            elapsed,
            bench_cpu.map(|(after, before)| after - before),
        ))
    };
    let watching = local.take();
    let watch = async {
        match watching {
            Some(cluster) => {
                let bar = &workload.bar;
                let rejoin_after = args.rejoin_after;
                watch::watch(cluster, workload.started, rejoin_after, &load_done, bar)
                    .await
                    .map(Some)
            }
            None => Ok(None),
        }
    };
    let ((results, elapsed, bench_cpu), watched) = tokio::try_join!(run, watch)?;
    let watched = watched.map(|(cluster, watched)| {
        *local = Some(cluster);
        watched
    });
    Ok(Measured::merge(results, elapsed, bench_cpu, watched))
}

/// One untimed write per session, retried until it succeeds: registers the sessions and opens
/// their connections.
async fn warm_up(clients: &[Arc<Client<Network>>], args: &BenchArgs) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        let client = Arc::clone(client);
        let timeout = args.timeout;
        tasks.spawn(async move {
            let key = Bytes::from(format!("warm-up-{index:05}"));
            let value = Bytes::from_static(b"warm");
            let operation = Bytes::from(KvOperation::Put { key, value }.to_bytes());
            let started = Instant::now();
            loop {
                match client.request(operation.clone(), timeout).await {
                    Ok(_) => return Ok(()),
                    Err(error) if started.elapsed() > WARM_UP_GIVE_UP => {
                        bail!(
                            "the cluster did not answer a first request within {} s: {error}",
                            WARM_UP_GIVE_UP.as_secs()
                        )
                    }
                    Err(_) => {}
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a warm-up task failed")??;
    }
    Ok(())
}

/// Writes every key of the workload once, untimed, every session taking the next key left;
/// each write is retried until it succeeds.
async fn fill(clients: &[Arc<Client<Network>>], args: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workload = Arc::new(Workload::new(args));
    let mut tasks = JoinSet::new();
    for client in clients {
        let (client, next, workload) =
            (Arc::clone(client), Arc::clone(&next), Arc::clone(&workload));
        tasks.spawn(async move {
            loop {
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= workload.keys {
                    return Ok(());
                }
                let operation = KvOperation::Put {
                    key: workload.key(number),
                    value: workload.value.clone(),
                };
                let operation = Bytes::from(operation.to_bytes());
                let since = Instant::now();
                while let Err(error) = client.request(operation.clone(), workload.timeout).await {
                    if since.elapsed() > WARM_UP_GIVE_UP {
                        bail!(
                            "filling key {number}: no answer within {} s: {error}",
                            WARM_UP_GIVE_UP.as_secs()
                        );
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a fill task failed")??;
    }
    workload.bar.finish_and_clear();
    note(&format!(
        "filled {} keys of {} bytes in {:.1} s (untimed)",
        args.keys,
        args.value_size,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The requests to make, shared by the sessions.
struct Workload {
    requests: u64,
    /// Open loop: seconds between two scheduled starts.
    interval: Option<f64>,
    keys: u64,
    key_size: usize,
    value: Bytes,
    get_ratio: f64,
    timeout: Duration,
    started: Instant,
    /// Whether the sessions keep each request's completion instant (for `--rejoin-after`).
    keep_completions: bool,
    /// The next request to take.
    next: AtomicU64,
    bar: ProgressBar,
}

impl Workload {
    fn new(args: &BenchArgs) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(args.requests);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} requests ({per_sec}, eta {eta})",
                )
                .expect("a valid template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            requests: args.requests,
            interval: args.rate.map(|rate| 1.0 / rate as f64),
            keys: args.keys,
            key_size: usize::try_from(args.key_size).expect("bounded by KEY_SIZE_MAX"),
            value: Bytes::from(vec![
                b'v';
                usize::try_from(args.value_size).expect("bounded")
            ]),
            get_ratio: args.get_ratio,
            timeout: args.timeout,
            started: Instant::now(),
            keep_completions: args.rejoin_after.is_some(),
            next: AtomicU64::new(0),
            bar,
        }
    }

    /// The next request and, in open loop, when it is scheduled to start; `None` when all
    /// were taken.
    fn take(&self) -> Option<Option<Instant>> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index < self.requests).then(|| {
            self.interval
                .map(|interval| self.started + Duration::from_secs_f64(index as f64 * interval))
        })
    }

    /// Key number `number`, zero-padded to the key size.
    fn key(&self, number: u64) -> Bytes {
        Bytes::from(format!("{number:0width$}", width = self.key_size))
    }

    /// A random request: a read (a query, answered without the log) with probability
    /// `get_ratio`, else a put; and whether it is the read.
    fn operation(&self, random: &mut WorkloadRandom) -> (Bytes, bool) {
        let key = self.key(random.next() % self.keys);
        if random.unit() < self.get_ratio {
            (Bytes::from(KvQuery::Get { key }.to_bytes()), true)
        } else {
            let operation = KvOperation::Put {
                key,
                value: self.value.clone(),
            };
            (Bytes::from(operation.to_bytes()), false)
        }
    }
}

/// What one session saw.
#[derive(Default)]
struct SessionResult {
    latencies: Vec<Duration>,
    /// The latencies of reads and of writes alone.
    reads: Vec<Duration>,
    writes: Vec<Duration>,
    /// With `--rejoin-after`: when each completed, and its latency.
    completions: Vec<(Instant, Duration)>,
    failed: u64,
    first_error: Option<String>,
}

/// One session: takes requests until none are left, one in flight at a time.
async fn session(
    client: Arc<Client<Network>>,
    workload: Arc<Workload>,
    index: u64,
) -> SessionResult {
    let mut random = WorkloadRandom::new(index);
    let mut result = SessionResult::default();
    while let Some(scheduled) = workload.take() {
        if let Some(at) = scheduled {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        }
        let (operation, read) = workload.operation(&mut random);
        let sent = Instant::now();
        let reply = if read {
            client.query(operation, workload.timeout).await
        } else {
            client.request(operation, workload.timeout).await
        };
        let outcome = match reply {
            Ok(reply) => match (KvResult::decode(&reply), read) {
                (Ok(KvResult::Value(_)), true) | (Ok(KvResult::Ok), false) => Ok(()),
                (other, _) => Err(format!("unexpected result {other:?}")),
            },
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => {
                let completed = Instant::now();
                let latency = completed.duration_since(scheduled.unwrap_or(sent));
                result.latencies.push(latency);
                if workload.keep_completions {
                    result.completions.push((completed, latency));
                }
                if read {
                    result.reads.push(latency);
                } else {
                    result.writes.push(latency);
                }
            }
            Err(error) => {
                result.failed += 1;
                result.first_error.get_or_insert(error);
            }
        }
        workload.bar.inc(1);
    }
    result
}

/// The workload's random numbers: the workspace's pinned PRNG, seeded per session, so keys
/// repeat run to run.
struct WorkloadRandom(Xoshiro256PlusPlus);

impl WorkloadRandom {
    /// The generator of session `session`.
    fn new(session: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(session))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

impl Measured {
    fn merge(
        results: Vec<SessionResult>,
        elapsed: Duration,
        bench_cpu: Option<Duration>,
        watched: Option<Watched>,
    ) -> Self {
        let (mut latencies, mut reads, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        let mut completions = Vec::new();
        let mut failed = 0;
        let mut first_error = None;
        for result in results {
            latencies.extend(result.latencies);
            reads.extend(result.reads);
            writes.extend(result.writes);
            completions.extend(result.completions);
            failed += result.failed;
            first_error = first_error.or(result.first_error);
        }
        latencies.sort_unstable();
        reads.sort_unstable();
        writes.sort_unstable();
        Self {
            elapsed,
            latencies,
            reads,
            writes,
            failed,
            first_error,
            completions,
            bench_cpu,
            watched,
        }
    }

    /// The latency below which `share` of the successful requests finished (nearest rank).
    fn percentile(&self, share: f64) -> Duration {
        percentile(&self.latencies, share)
    }
}

/// The latency below which `share` of the sorted `latencies` lie (nearest rank); zero for none.
fn percentile(latencies: &[Duration], share: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    let rank = (share * latencies.len() as f64).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

/// The figures `vsr bench` prints.
struct Report {
    target: String,
    filesystem: Option<Filesystem>,
    clients: u64,
    rate: Option<u64>,
    requests: u64,
    succeeded: u64,
    failed: u64,
    first_error: Option<String>,
    elapsed_s: f64,
    ops_per_sec: f64,
    /// p50, p90, p99, p99.9, max and mean, in ms.
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    /// Reads and writes apart (p50 and p99, in ms; `None` when there were none) and how many.
    reads: u64,
    read_p50_ms: Option<f64>,
    read_p99_ms: Option<f64>,
    writes: u64,
    write_p50_ms: Option<f64>,
    write_p99_ms: Option<f64>,
    server_cpu_us_per_op: Option<f64>,
    /// This process's CPU time over wall time: 1.0 is one core busy.
    bench_cpu_cores: Option<f64>,
    /// The local replicas' longest event-loop turn since start (replica, ms), set after.
    turn_max: Option<(usize, f64)>,
    bench_cpu_us_per_op: Option<f64>,
    /// The local replicas' resident memory, per replica (`None`: not ours).
    memory: Option<Vec<ReplicaMemory>>,
    /// The wipe and rejoin of a backup, with `--rejoin-after`.
    rejoin: Option<RejoinReport>,
}

/// The figures of a backup's wipe and rejoin.
#[derive(Clone, Debug, PartialEq)]
struct RejoinReport {
    replica: usize,
    /// From its restart until it was back, or until the bench gave up.
    seconds: f64,
    /// Whether it was back within [`REJOIN_TIMEOUT`].
    back: bool,
    /// The primary's data directory at the restart.
    state_mib: f64,
    /// Requests completed before the kill: how many, p50 and p99 (ms; `None`: none).
    before: u64,
    before_p50_ms: Option<f64>,
    before_p99_ms: Option<f64>,
    /// Requests completed from the restart until it was back.
    during: u64,
    during_p50_ms: Option<f64>,
    during_p99_ms: Option<f64>,
    load_ended_first: bool,
}

impl RejoinReport {
    /// Splits `completions` (instant, latency) into the windows of `rejoin`.
    fn new(rejoin: &Rejoin, completions: &[(Instant, Duration)]) -> Self {
        let window = |keep: &dyn Fn(Instant) -> bool| {
            let mut latencies: Vec<Duration> = completions
                .iter()
                .filter(|(completed, _)| keep(*completed))
                .map(|(_, latency)| *latency)
                .collect();
            latencies.sort_unstable();
            let ms = |share| {
                (!latencies.is_empty()).then(|| percentile(&latencies, share).as_secs_f64() * 1e3)
            };
            (latencies.len() as u64, ms(0.5), ms(0.99))
        };
        let (before, before_p50_ms, before_p99_ms) = window(&|at| at < rejoin.killed);
        let (during, during_p50_ms, during_p99_ms) =
            window(&|at| at >= rejoin.restarted && at <= rejoin.rejoined);
        Self {
            replica: rejoin.replica,
            seconds: rejoin
                .rejoined
                .duration_since(rejoin.restarted)
                .as_secs_f64(),
            back: rejoin.back,
            state_mib: rejoin.state_bytes as f64 / MIB,
            before,
            before_p50_ms,
            before_p99_ms,
            during,
            during_p50_ms,
            during_p99_ms,
            load_ended_first: rejoin.load_ended_first,
        }
    }

    /// p99 during over p99 before.
    fn ratio(&self) -> Option<f64> {
        let before = self.before_p99_ms.filter(|ms| *ms > 0.0)?;
        Some(self.during_p99_ms? / before)
    }

    /// The `rejoin:` line.
    fn line(&self) -> String {
        let figure =
            |value: Option<f64>| value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let outcome = if self.back {
            format!("back in {:.2} s", self.seconds)
        } else {
            format!("did not rejoin within {} s", REJOIN_TIMEOUT.as_secs())
        };
        format!(
            "rejoin:      replica {} {outcome} (state {:.1} MiB); p99 during {} ms vs {} ms \
             before ({} x){}",
            self.replica,
            self.state_mib,
            figure(self.during_p99_ms),
            figure(self.before_p99_ms),
            figure(self.ratio()),
            if self.load_ended_first {
                " (load ended before it rejoined)"
            } else {
                ""
            }
        )
    }
}

/// The `memory:` line.
fn memory_line(memory: &[ReplicaMemory]) -> String {
    let list = |value: fn(&ReplicaMemory) -> Option<u64>| {
        memory
            .iter()
            .enumerate()
            .map(|(index, replica)| {
                value(replica).map_or_else(
                    || format!("r{index} ?"),
                    |bytes| format!("r{index} {:.0} MiB", bytes as f64 / MIB),
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "memory:      peak RSS {}; at end {}",
        list(|replica| replica.peak_bytes),
        list(|replica| replica.end_bytes)
    )
}

impl Report {
    fn new(args: &BenchArgs, target: Target, measured: Measured) -> Self {
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        let succeeded = measured.latencies.len() as u64;
        let elapsed_s = measured.elapsed.as_secs_f64();
        let per_op = |cpu: Option<Duration>| {
            cpu.filter(|_| succeeded > 0)
                .map(|cpu| cpu.as_secs_f64() * 1e6 / succeeded as f64)
        };
        let of = |latencies: &[Duration], share| {
            (!latencies.is_empty()).then(|| ms(percentile(latencies, share)))
        };
        let server_cpu = measured
            .watched
            .as_ref()
            .and_then(|watched| watched.server_cpu);
        let rejoin = measured
            .watched
            .as_ref()
            .and_then(|watched| watched.rejoin.as_ref())
            .map(|rejoin| RejoinReport::new(rejoin, &measured.completions));
        let mean_ms = if succeeded == 0 {
            0.0
        } else {
            ms(measured.latencies.iter().sum::<Duration>()) / succeeded as f64
        };
        Self {
            target: target.description,
            filesystem: target.filesystem,
            clients: args.clients,
            rate: args.rate,
            requests: args.requests,
            succeeded,
            failed: measured.failed,
            first_error: measured.first_error.clone(),
            elapsed_s,
            ops_per_sec: succeeded as f64 / elapsed_s.max(f64::MIN_POSITIVE),
            p50_ms: ms(measured.percentile(0.5)),
            p90_ms: ms(measured.percentile(0.9)),
            p99_ms: ms(measured.percentile(0.99)),
            p999_ms: ms(measured.percentile(0.999)),
            max_ms: ms(measured.latencies.last().copied().unwrap_or_default()),
            mean_ms,
            reads: measured.reads.len() as u64,
            read_p50_ms: of(&measured.reads, 0.5),
            read_p99_ms: of(&measured.reads, 0.99),
            writes: measured.writes.len() as u64,
            write_p50_ms: of(&measured.writes, 0.5),
            write_p99_ms: of(&measured.writes, 0.99),
            server_cpu_us_per_op: per_op(server_cpu),
            bench_cpu_cores: measured
                .bench_cpu
                .map(|cpu| cpu.as_secs_f64() / elapsed_s.max(f64::MIN_POSITIVE)),
            bench_cpu_us_per_op: per_op(measured.bench_cpu),
            turn_max: None,
            memory: measured.watched.map(|watched| watched.memory),
            rejoin,
        }
    }

    /// Set when more than [`FAILED_SHARE_MAX`] of the requests failed, or a wiped replica did
    /// not rejoin.
    fn failed_message(&self) -> Option<String> {
        let share = self.failed as f64 / self.requests as f64;
        let lost = self
            .rejoin
            .as_ref()
            .filter(|rejoin| !rejoin.back)
            .map(|rejoin| {
                format!(
                    "replica {} did not rejoin within {} s of its restart",
                    rejoin.replica,
                    REJOIN_TIMEOUT.as_secs()
                )
            });
        let failed = (share > FAILED_SHARE_MAX).then(|| {
            format!(
                "{} of {} requests failed ({:.1}%, more than {}%); the first: {}",
                self.failed,
                self.requests,
                share * 100.0,
                FAILED_SHARE_MAX * 100.0,
                self.first_error.as_deref().unwrap_or("?")
            )
        });
        failed.or(lost)
    }

    fn print(&self) {
        let optional = |value: Option<f64>, unit: &str| {
            value.map_or_else(|| "not measured".to_owned(), |v| format!("{v:.1} {unit}"))
        };
        say(&format!("target:      {}", self.target));
        let mode = self.rate.map_or_else(
            || "closed loop".to_owned(),
            |rate| format!("open loop, {rate}/s"),
        );
        say(&format!(
            "load:        {} sessions, {mode}: {} requests, {} ok, {} failed, in {:.2} s",
            self.clients, self.requests, self.succeeded, self.failed, self.elapsed_s
        ));
        say(&format!("throughput:  {:.0} ops/s", self.ops_per_sec));
        say(&format!(
            "latency:     p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms \
             (mean {:.2} ms)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        ));
        let split = |count: u64, p50: Option<f64>, p99: Option<f64>| match (p50, p99) {
            (Some(p50), Some(p99)) => format!("{count}, p50 {p50:.2} ms, p99 {p99:.2} ms"),
            _ => "none".to_owned(),
        };
        say(&format!(
            "reads:       {} (queries, no log entry)",
            split(self.reads, self.read_p50_ms, self.read_p99_ms)
        ));
        say(&format!(
            "writes:      {}",
            split(self.writes, self.write_p50_ms, self.write_p99_ms)
        ));
        say(&format!(
            "server cpu:  {} per op, all replicas summed",
            optional(self.server_cpu_us_per_op, "µs")
        ));
        say(&format!(
            "bench cpu:   {} per op, {} cores busy",
            optional(self.bench_cpu_us_per_op, "µs"),
            self.bench_cpu_cores
                .map_or_else(|| "?".to_owned(), |cores| format!("{cores:.2}"))
        ));
        if let Some((replica, ms)) = self.turn_max {
            say(&format!(
                "event loop:  longest turn {ms:.2} ms (replica {replica}, since start)"
            ));
        }
        if let Some(memory) = &self.memory {
            say(&memory_line(memory));
        }
        if let Some(rejoin) = &self.rejoin {
            say(&rejoin.line());
        }
        if let Some(error) = &self.first_error {
            say(&format!("first error: {error}"));
        }
    }

    fn to_json(&self) -> String {
        let filesystem = self.filesystem.as_ref();
        let rss = |value: fn(&ReplicaMemory) -> Option<u64>| {
            self.memory.as_ref().map(|memory| {
                memory
                    .iter()
                    .map(|replica| value(replica).map(|bytes| bytes as f64 / MIB))
                    .collect::<Vec<_>>()
            })
        };
        let rejoin = self.rejoin.as_ref();
        serde_json::json!({
            "ops_per_sec": self.ops_per_sec,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "reads": self.reads,
            "read_p50_ms": self.read_p50_ms,
            "read_p99_ms": self.read_p99_ms,
            "writes": self.writes,
            "write_p50_ms": self.write_p50_ms,
            "write_p99_ms": self.write_p99_ms,
            "server_cpu_us_per_op": self.server_cpu_us_per_op,
            "bench_cpu_us_per_op": self.bench_cpu_us_per_op,
            "bench_cpu_cores": self.bench_cpu_cores,
            "turn_max_ms": self.turn_max.map(|(_, ms)| ms),
            "peak_rss_mib": rss(|replica| replica.peak_bytes),
            "end_rss_mib": rss(|replica| replica.end_bytes),
            "rejoin_replica": rejoin.map(|rejoin| rejoin.replica),
            "rejoin_seconds": rejoin.filter(|rejoin| rejoin.back).map(|rejoin| rejoin.seconds),
            "rejoin_back": rejoin.map(|rejoin| rejoin.back),
            "rejoin_state_mib": rejoin.map(|rejoin| rejoin.state_mib),
            "rejoin_requests": rejoin.map(|rejoin| rejoin.during),
            "rejoin_p50_ms": rejoin.and_then(|rejoin| rejoin.during_p50_ms),
            "rejoin_p99_ms": rejoin.and_then(|rejoin| rejoin.during_p99_ms),
            "before_requests": rejoin.map(|rejoin| rejoin.before),
            "before_p50_ms": rejoin.and_then(|rejoin| rejoin.before_p50_ms),
            "before_p99_ms": rejoin.and_then(|rejoin| rejoin.before_p99_ms),
            "rejoin_load_ended_first": rejoin.map(|rejoin| rejoin.load_ended_first),
            "clients": self.clients,
            "rate": self.rate,
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "first_error": self.first_error,
            "elapsed_s": self.elapsed_s,
            "filesystem": filesystem.map(|f| f.kind.clone()),
            "fsync_ms": filesystem.map(|f| f.sync.as_secs_f64() * 1e3),
            "fsync_is_free": filesystem.map(|f| f.sync_is_free().is_some()),
            "target": self.target,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let measured = Measured::merge(
            vec![SessionResult {
                latencies: (1..=1000).rev().map(Duration::from_millis).collect(),
                ..SessionResult::default()
            }],
            Duration::from_secs(1),
            None,
            None,
        );
        assert_eq!(measured.percentile(0.5), Duration::from_millis(500));
        assert_eq!(measured.percentile(0.99), Duration::from_millis(990));
        assert_eq!(measured.percentile(0.999), Duration::from_millis(999));
        assert_eq!(measured.percentile(1.0), Duration::from_millis(1000));
    }

    #[test]
    fn shares_parse_between_zero_and_one() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("half").is_err());
        let mut random = WorkloadRandom::new(1);
        assert!(
            (0..1000)
                .map(|_| random.unit())
                .all(|u| (0.0..1.0).contains(&u))
        );
    }

    #[test]
    fn rejoin_windows_split_by_completion() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let rejoin = Rejoin {
            replica: 2,
            killed: at(100),
            restarted: at(200),
            rejoined: at(1_700),
            back: true,
            target: 10,
            state_bytes: 3 << 20,
            load_ended_first: false,
        };
        // Before the kill: 1..=100 ms; between kill and restart: ignored; during: 10 ms each.
        let mut completions: Vec<(Instant, Duration)> = (1..=100)
            .map(|i| (at(i - 1), Duration::from_millis(i)))
            .collect();
        completions.push((at(150), Duration::from_secs(9)));
        completions.extend((0..50).map(|i| (at(200 + i * 10), Duration::from_millis(10))));
        completions.push((at(1_800), Duration::from_secs(9)));
        let report = RejoinReport::new(&rejoin, &completions);
        assert_eq!((report.before, report.during), (100, 50));
        assert_eq!(report.before_p99_ms, Some(99.0));
        assert_eq!(report.during_p99_ms, Some(10.0));
        assert_eq!(
            report.line(),
            "rejoin:      replica 2 back in 1.50 s (state 3.0 MiB); p99 during 10.00 ms vs 99.00 \
             ms before (0.10 x)"
        );
        let late = RejoinReport::new(
            &Rejoin {
                load_ended_first: true,
                ..rejoin
            },
            &[],
        );
        assert_eq!(
            late.line(),
            "rejoin:      replica 2 back in 1.50 s (state 3.0 MiB); p99 during n/a ms vs n/a ms \
             before (n/a x) (load ended before it rejoined)"
        );
        let lost = RejoinReport::new(
            &Rejoin {
                back: false,
                ..rejoin
            },
            &completions,
        );
        assert!(
            lost.line()
                .starts_with("rejoin:      replica 2 did not rejoin within 300 s (state 3.0 MiB)"),
            "{}",
            lost.line()
        );
    }

    #[test]
    fn memory_line_names_every_replica() {
        let memory = [
            ReplicaMemory {
                peak_bytes: Some(300 << 20),
                end_bytes: Some(200 << 20),
            },
            ReplicaMemory {
                peak_bytes: Some(10 << 20),
                end_bytes: None,
            },
        ];
        assert_eq!(
            memory_line(&memory),
            "memory:      peak RSS r0 300 MiB, r1 10 MiB; at end r0 200 MiB, r1 ?"
        );
    }
}
