//! `vsr sim`: runs the deterministic simulator for one seed, or for many on every core.
//!
//! One seed prints its trace hash and a summary, and can save the client history. A swarm runs
//! seeds `start..start+seeds` on a pool of threads that take the next seed from a shared
//! counter; results are gathered and printed in seed order, so the output does not depend on
//! the number of threads. With `--coverage`, one line per coverage mark says in how many seeds
//! it was hit. The last line is `P passed, F failed`.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vsr::coverage::{Counts, Mark};
use vsr_sim::{SimOptions, SimReport, SimStats};

/// Prints a line to stdout; a closed pipe (`vsr sim ... | head`) is not an error.
macro_rules! say {
    ($($argument:tt)*) => {
        let _ = writeln!(std::io::stdout(), $($argument)*);
    };
}

/// Options of `vsr sim`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Run this one seed and print its trace hash and a summary (exit 1 if a check fails).
    #[arg(long, conflicts_with = "seeds", required_unless_present = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --start, on every core (exit 1 if any fails).
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0, requires = "seeds")]
    start: u64,
    /// Number of replicas: 1, 3, 5 or 7.
    #[arg(long, default_value_t = 3)]
    replicas: u8,
    /// Number of clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Requests per client [default: drawn per seed, 10 to 30].
    #[arg(long)]
    requests: Option<u32>,
    /// Inject no faults (a clean network, no crashes).
    #[arg(long)]
    no_faults: bool,
    /// Write the client history of --seed to FILE as JSON lines.
    #[arg(long, value_name = "FILE", requires = "seed")]
    history: Option<PathBuf>,
    /// Worker threads for --seeds [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// After the results of --seeds, print `coverage NAME SEEDS` for every coverage mark
    /// (`vsr::coverage::Mark`): the number of seeds that hit it at least once.
    #[arg(long, requires = "seeds")]
    coverage: bool,
    /// Switch on the deliberate slip NAME (one of `vsr::bugs::Bug`) in every replica and its
    /// storage, to see the checkers catch it.
    #[cfg(feature = "bugs")]
    #[arg(long, value_name = "NAME", value_parser = parse_bug)]
    bug: Option<vsr::bugs::Bug>,
}

/// Parses a `--bug` name, listing the names on a mistake.
#[cfg(feature = "bugs")]
fn parse_bug(name: &str) -> Result<vsr::bugs::Bug, String> {
    vsr::bugs::Bug::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = vsr::bugs::Bug::ALL.iter().map(|bug| bug.name()).collect();
        format!("no bug named {name:?}; the bugs are: {}", names.join(", "))
    })
}

impl SimArgs {
    fn options(&self, seed: u64) -> SimOptions {
        SimOptions {
            seed,
            replicas: self.replicas,
            clients: self.clients,
            requests_per_client: self.requests,
            faults: !self.no_faults,
            #[cfg(feature = "bugs")]
            bug: self.bug,
            ..SimOptions::default()
        }
    }

    /// The command that replays `seed` with these options.
    fn replay_command(&self, seed: u64) -> String {
        let mut command = format!(
            "vsr sim --seed {seed} --replicas {} --clients {}",
            self.replicas, self.clients
        );
        if let Some(requests) = self.requests {
            command.push_str(&format!(" --requests {requests}"));
        }
        if self.no_faults {
            command.push_str(" --no-faults");
        }
        #[cfg(feature = "bugs")]
        if let Some(bug) = self.bug {
            command.push_str(&format!(" --bug {}", bug.name()));
        }
        command
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !matches!(self.replicas, 1 | 3 | 5 | 7) {
            bail!("--replicas must be 1, 3, 5 or 7 (got {})", self.replicas);
        }
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        Ok(())
    }
}

/// Runs `vsr sim`.
pub(crate) fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    args.validate()?;
    match (args.seed, args.seeds) {
        (Some(seed), _) => run_one(args, seed),
        (None, Some(seeds)) => Ok(run_swarm(args, seeds)),
        (None, None) => bail!("give --seed S or --seeds N"),
    }
}

fn run_one(args: &SimArgs, seed: u64) -> anyhow::Result<ExitCode> {
    let report = vsr_sim::run(&args.options(seed));
    if let Some(path) = &args.history {
        let file = File::create(path)
            .with_context(|| format!("cannot create the history file {}", path.display()))?;
        let mut writer = BufWriter::new(file);
        report
            .history
            .write_json_lines(&mut writer)
            .and_then(|()| writer.flush())
            .with_context(|| format!("cannot write the history file {}", path.display()))?;
    }
    say!("trace {:032x}", report.trace);
    print_summary(args, &report);
    if let Some(failure) = &report.failure {
        eprintln!("seed {seed} failed: {failure}");
        eprintln!("replay: {}", args.replay_command(seed));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(args: &SimArgs, report: &SimReport) {
    let stats = &report.stats;
    say!(
        "seed {}: {} replicas, {} clients",
        report.seed,
        args.replicas,
        args.clients
    );
    say!(
        "ops completed {} (indeterminate {}), committed {}",
        stats.ops_completed,
        stats.ops_indeterminate,
        stats.ops_committed
    );
    say!("simulated time {:.3} s", report.simulated_ns as f64 / 1e9);
    say!("{}", batching(stats));
    say!(
        "view changes {}, state transfers {} (by delta {}), recoveries {}, evictions {}",
        stats.view_changes,
        stats.state_transfers,
        stats.state_transfers_delta,
        stats.recoveries,
        stats.evictions
    );
    say!(
        "faults injected {}: crashes {} (whole cluster {}), wipes {}, partitions {}, slow links {}, \
         messages lost {}, partitioned {}, duplicated {}, corrupted {}",
        stats.faults_injected(),
        stats.crashes,
        stats.cluster_crashes,
        stats.wipes,
        stats.partitions,
        stats.slow_links,
        stats.messages_lost,
        stats.messages_partitioned,
        stats.messages_duplicated,
        stats.messages_corrupted
    );
    say!("{}", disk_faults(stats));
    say!("{}", schedules(stats));
    say!(
        "verdict: {}",
        if report.passed { "passed" } else { "FAILED" }
    );
}

/// What a swarm keeps of each seed.
struct Outcome {
    seed: u64,
    failure: Option<String>,
    stats: SimStats,
    simulated_ns: u64,
    coverage: Counts,
}

fn run_swarm(args: &SimArgs, seeds: u64) -> ExitCode {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .min(usize::try_from(seeds).unwrap_or(usize::MAX).max(1));
    say!(
        "seeds {}..{} ({seeds} seeds), {} replicas, {} clients, {threads} threads",
        args.start,
        args.start.saturating_add(seeds).saturating_sub(1),
        args.replicas,
        args.clients
    );
    let progress = progress_bar(seeds);
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= seeds {
                        break;
                    }
                    let seed = args.start.wrapping_add(index);
                    let report = vsr_sim::run(&args.options(seed));
                    let outcome = Outcome {
                        seed,
                        failure: report.failure,
                        stats: report.stats,
                        simulated_ns: report.simulated_ns,
                        coverage: report.coverage,
                    };
                    outcomes
                        .lock()
                        .expect("no worker panics holding the lock")
                        .push(outcome);
                    progress.inc(1);
                }
            });
        }
    });
    progress.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    let mut outcomes = outcomes.into_inner().expect("no worker panicked");
    outcomes.sort_by_key(|outcome| outcome.seed);
    print_swarm_results(args, &outcomes, wall)
}

fn progress_bar(seeds: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let progress = ProgressBar::with_draw_target(Some(seeds), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {per_sec} eta {eta}")
        .expect("a valid template");
    progress.set_style(style);
    progress
}

fn print_swarm_results(args: &SimArgs, outcomes: &[Outcome], wall: f64) -> ExitCode {
    let mut totals = SimStats::default();
    let mut simulated_ns: u128 = 0;
    let mut failed = 0u64;
    for outcome in outcomes {
        totals.add(&outcome.stats);
        simulated_ns += u128::from(outcome.simulated_ns);
        if let Some(failure) = &outcome.failure {
            failed += 1;
            say!("FAILED seed {}: {failure}", outcome.seed);
            say!("  replay: {}", args.replay_command(outcome.seed));
        }
    }
    let passed = outcomes.len() as u64 - failed;
    let simulated = simulated_ns as f64 / 1e9;
    say!(
        "totals: view changes {}, state transfers {} (by delta {}), recoveries {}, evictions {}, \
         crashes {}, wipes {}, ops completed {}",
        totals.view_changes,
        totals.state_transfers,
        totals.state_transfers_delta,
        totals.recoveries,
        totals.evictions,
        totals.crashes,
        totals.wipes,
        totals.ops_completed
    );
    say!("totals: {}", disk_faults(&totals));
    say!("totals: {}", schedules(&totals));
    say!("totals: {}", batching(&totals));
    say!(
        "speed: {:.1} seeds/s, {:.0} simulated s per wall s ({simulated:.0} simulated s in {wall:.2} s)",
        outcomes.len() as f64 / wall.max(1e-9),
        simulated / wall.max(1e-9)
    );
    if args.coverage {
        print_coverage(outcomes);
    }
    say!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// One line per coverage mark, in declaration order: the number of seeds that hit it.
fn print_coverage(outcomes: &[Outcome]) {
    for &mark in Mark::ALL {
        let seeds = outcomes
            .iter()
            .filter(|outcome| outcome.coverage.get(mark) > 0)
            .count();
        say!("coverage {} {seeds}", mark.name());
    }
}

/// How ops were batched into prepares, in one line.
fn batching(stats: &SimStats) -> String {
    format!(
        "prepares {} carrying {} ops ({:.2} per prepare), {} batched",
        stats.prepares,
        stats.ops_prepared,
        stats.ops_prepared as f64 / stats.prepares.max(1) as f64,
        stats.prepares_batched
    )
}

/// The adversarial schedules and liveness windows of a run, in one line.
fn schedules(stats: &SimStats) -> String {
    format!(
        "schedules: messages held back {}, replayed {}, forged {}; primaries isolated {}, raced {}; wipes of \
         the longest log {}; partial heals {} leaving out {} replicas; stall windows {}, \
         view changes for a stalled primary {}; storage batches cut {}",
        stats.messages_held,
        stats.messages_replayed,
        stats.messages_forged,
        stats.primary_isolations,
        stats.races,
        stats.wipes_of_longest_log,
        stats.partial_heals,
        stats.replicas_left_out,
        stats.stall_windows,
        stats.primary_stalls,
        stats.storage_batches_cut,
    )
}

/// The disk faults a run injected, in one line.
fn disk_faults(stats: &SimStats) -> String {
    format!(
        "disk: process crashes (page cache kept) {}, unsynced writes lost {}, names lost {}, torn writes {}, reordered crashes {}, \
         misdirected writes {}, corruptions {}, read errors {}, header files lost {}, EIO {}, ENOSPC {}; \
         crashes before a sync {}, in a batch {}, in a checkpoint {}, in a rotation {}; \
         damaged restarts {}",
        stats.process_crashes,
        stats.disk_writes_lost,
        stats.disk_names_lost,
        stats.disk_writes_torn,
        stats.disk_reordered_crashes,
        stats.disk_misdirected_writes,
        stats.disk_corruptions,
        stats.disk_read_errors,
        stats.disk_headers_lost,
        stats.disk_write_eio,
        stats.disk_write_enospc,
        stats.crashes_before_sync,
        stats.crashes_in_batch,
        stats.crashes_in_checkpoint,
        stats.crashes_in_rotation,
        stats.damaged_restarts,
    )
}
