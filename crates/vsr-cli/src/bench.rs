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
//! A request that returns an error (its `--timeout` passed, or an unexpected result) counts as
//! failed; more than 1% failed makes the exit status non-zero.

mod host;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Most concurrent sessions: the replicas' client table holds 1024.
const CLIENTS_MAX: u64 = 1024;
/// Share of failed requests above which the bench fails.
const FAILED_SHARE_MAX: f64 = 0.01;
/// How long the untimed first write of each session may keep failing.
const WARM_UP_GIVE_UP: Duration = Duration::from_secs(30);
/// How long a local cluster may take to elect its first primary.
const PRIMARY_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of `vsr bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --addresses, starts a local durable 3-replica cluster in a \
                        temporary directory under --data-dir and removes it afterwards."
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
    /// Ops between checkpoints of the local replicas (`vsr start --checkpoint-interval`); a
    /// value beyond the run keeps checkpoints out of the measurement.
    #[arg(long, value_name = "OPS", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "addresses")]
    checkpoint_interval: Option<u64>,
    /// Before measuring, write every key once (untimed), so that reads and overwrites meet a
    /// full key space.
    #[arg(long)]
    fill: bool,
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
            pids: Vec::new(),
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
    let measured = load(args, cluster, &addresses, &target, &network).await;
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
    /// The replica processes, when they are ours.
    pids: Vec<u32>,
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
        pids,
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
    /// CPU time of the replica processes during the timed phase (`None`: not ours).
    server_cpu: Option<Duration>,
    /// CPU time of this process during the timed phase.
    bench_cpu: Option<Duration>,
}

/// Connects the sessions, warms them up, and runs the timed phase.
async fn load(
    args: &BenchArgs,
    cluster: u128,
    addresses: &[String],
    target: &Target,
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
    let server_before = clock.processes(&target.pids);
    let bench_before = clock.process(None);
    let workload = Arc::new(Workload::new(args));
    let mut sessions = JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        sessions.spawn(session(client, Arc::clone(&workload), index as u64));
    }
    let mut results = Vec::with_capacity(sessions.len());
    while let Some(joined) = sessions.join_next().await {
        results.push(joined.context("a session task failed")?);
    }
    let elapsed = workload.started.elapsed();
    workload.bar.finish_and_clear();
    let during = |before: Option<Duration>, after: Option<Duration>| Some(after? - before?);
    let server_cpu = if target.pids.is_empty() {
        None
    } else {
        during(server_before, clock.processes(&target.pids))
    };
    let bench_cpu = during(bench_before, clock.process(None));
    Ok(Measured::merge(results, elapsed, server_cpu, bench_cpu))
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
                let latency = Instant::now().duration_since(scheduled.unwrap_or(sent));
                result.latencies.push(latency);
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
        server_cpu: Option<Duration>,
        bench_cpu: Option<Duration>,
    ) -> Self {
        let (mut latencies, mut reads, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        let mut failed = 0;
        let mut first_error = None;
        for result in results {
            latencies.extend(result.latencies);
            reads.extend(result.reads);
            writes.extend(result.writes);
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
            server_cpu,
            bench_cpu,
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
            server_cpu_us_per_op: per_op(measured.server_cpu),
            bench_cpu_cores: measured
                .bench_cpu
                .map(|cpu| cpu.as_secs_f64() / elapsed_s.max(f64::MIN_POSITIVE)),
            bench_cpu_us_per_op: per_op(measured.bench_cpu),
            turn_max: None,
        }
    }

    /// Set when more than [`FAILED_SHARE_MAX`] of the requests failed.
    fn failed_message(&self) -> Option<String> {
        let share = self.failed as f64 / self.requests as f64;
        (share > FAILED_SHARE_MAX).then(|| {
            format!(
                "{} of {} requests failed ({:.1}%, more than {}%); the first: {}",
                self.failed,
                self.requests,
                share * 100.0,
                FAILED_SHARE_MAX * 100.0,
                self.first_error.as_deref().unwrap_or("?")
            )
        })
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
        if let Some(error) = &self.first_error {
            say(&format!("first error: {error}"));
        }
    }

    fn to_json(&self) -> String {
        let filesystem = self.filesystem.as_ref();
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
}
