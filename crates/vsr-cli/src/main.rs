//! `vsr`: the command line of the vsr replication library.
//!
//! One subcommand per module:
//!
//! * `certs` ([`certs`]) writes a cluster's TLS certificates;
//! * `format` ([`format`]) creates a replica's data directory;
//! * `start` ([`start`]) runs one replica of the key-value service until SIGTERM or SIGINT;
//! * `client` ([`client`]) runs one key-value command, or an interactive shell;
//! * `demo` ([`demo`]) runs a local 3-replica cluster of child processes through a primary
//!   failure and checks that no acknowledged write was lost;
//! * `sim` ([`sim`]) runs the deterministic cluster simulator;
//! * `bench` ([`bench`]) measures throughput, latency and CPU per operation, on a local durable
//!   cluster or an existing one;
//! * `chaos` ([`chaos`]) runs a local cluster under kills, pauses, partitions and data damage
//!   with concurrent clients, and checks the history they recorded;
//! * `completions` and `man` ([`manual`]) print shell completions and manual pages.
//!
//! Every failure an operator can cause (a bad flag, a missing data directory, another cluster's
//! data) prints one `error: ...` line on stderr and exits non-zero; nothing here panics on bad
//! input. [`args`] holds the value parsers the subcommands share; [`config`] reads `vsr start
//! --config FILE` into the options' defaults before the command line is parsed; [`logging`]
//! installs the log subscriber (`--log-format`, `RUST_LOG`); [`scrape`] reads a replica's
//! metrics endpoint; [`local_cluster`] runs the replica processes of `demo`, `bench` and
//! `chaos`.

mod args;
mod backup;
mod bench;
mod certs;
mod chaos;
mod client;
mod config;
mod demo;
mod format;
mod local_cluster;
mod logging;
mod manual;
mod scrape;
mod sim;
mod start;
mod status;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc: the replicas allocate and free many small buffers per operation, across threads;
/// it does that with fewer instructions and page faults than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Viewstamped Replication: a replicated key-value store and its tools.
#[derive(Debug, Parser)]
#[command(name = "vsr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Create a replica's data directory (use --recover to replace a lost one).
    #[command(long_about = format::LONG_ABOUT)]
    Format(format::FormatArgs),
    /// Write a cluster's TLS certificates: its authority, replicas, clients and operators.
    Certs(certs::CertsArgs),
    /// Run one replica of the key-value service until SIGTERM or SIGINT.
    #[command(after_help = config::PRECEDENCE)]
    Start(start::StartArgs),
    /// Run one key-value command against a cluster, or an interactive shell without one.
    Client(client::ClientArgs),
    /// Show every replica's status: view, primary, op, commit, lag, checkpoint, disk, uptime.
    Status(status::StatusArgs),
    /// Write a consistent backup of a live cluster's state to a file; print the op it holds.
    Backup(backup::BackupArgs),
    /// Create a new cluster's data directories from a backup file.
    Restore(backup::RestoreArgs),
    /// Run a local 3-replica cluster through a primary failure and check no write is lost.
    Demo(demo::DemoArgs),
    /// Run the deterministic cluster simulator: one seed, or a swarm of seeds.
    Sim(sim::SimArgs),
    /// Measure throughput, latency and CPU per operation (starts a local cluster by default).
    Bench(bench::BenchArgs),
    /// Run a local cluster under kills, pauses, partitions and data damage; check the history.
    Chaos(chaos::ChaosArgs),
    /// Print a shell's completion script for vsr.
    Completions(manual::CompletionsArgs),
    /// Print vsr's manual page in roff, or write every page with --out.
    Man(manual::ManArgs),
}

fn main() -> ExitCode {
    let (cli, settings) = match parse() {
        Ok(parsed) => parsed,
        Err(error) => return usage_error(&error),
    };
    let result = match cli.command {
        Commands::Format(args) => format::run(&args),
        Commands::Certs(args) => certs::run(&args),
        Commands::Start(args) if args.check_config => start::check(&args, &settings),
        Commands::Start(args) => start::run(args),
        Commands::Client(args) => client::run(args),
        Commands::Status(args) => status::run(&args),
        Commands::Backup(args) => backup::run_backup(&args),
        Commands::Restore(args) => backup::run_restore(&args),
        Commands::Demo(args) => demo::run(&args),
        Commands::Sim(args) => sim::run(&args),
        Commands::Bench(args) => bench::run(&args),
        Commands::Chaos(args) => chaos::run(&args),
        Commands::Completions(args) => manual::completions(&args, Cli::command()),
        Commands::Man(args) => manual::man(&args, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` joins the error's causes with ": " on one line.
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Parses the command line as [`Cli::try_parse`] does, with the defaults of a `--config` file
/// ([`config::apply`]), and refuses a cluster's `--addresses` that lists one address twice,
/// whichever subcommand takes it (a replica given its own address for a peer would send that
/// peer's messages to itself). Also returns each setting and its origin ([`config::settings`]).
fn parse() -> Result<(Cli, String), clap::Error> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    let loaded = config::apply(&mut command, &argv)?;
    let matches = command.try_get_matches_from_mut(argv)?;
    if let Some((_, subcommand)) = matches.subcommand()
        && let Ok(Some(addresses)) = subcommand.try_get_many::<String>("addresses")
    {
        let addresses: Vec<String> = addresses.cloned().collect();
        if let Some((first, second)) = args::duplicate_address(&addresses) {
            let message = args::duplicate_message(&addresses[first], first, second);
            return Err(command.error(ErrorKind::ValueValidation, message));
        }
    }
    let settings = config::settings(&command, &matches, &loaded);
    Ok((Cli::from_arg_matches(&matches)?, settings))
}

/// Help and version go to stdout with status 0. A usage error prints its first line only (one
/// `error: ...` line, with a pointer to --help) and exits with 2; `vsr client`'s with 64, as 2
/// means "no answer" there.
fn usage_error(error: &clap::Error) -> ExitCode {
    let client = std::env::args_os()
        .nth(1)
        .is_some_and(|command| command == "client");
    let code = match error.exit_code() {
        2 if client => ExitCode::from(client::EXIT_USAGE),
        code => ExitCode::from(u8::try_from(code).unwrap_or(2)),
    };
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return code;
    }
    // The first paragraph: the message and, for missing arguments, the indented list of them.
    let rendered = error.render().to_string();
    let first: Vec<&str> = rendered
        .lines()
        .skip_while(|line| line.trim().is_empty())
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    let first = if first.starts_with("error:") {
        first
    } else {
        format!("error: {first}")
    };
    let _ = writeln!(std::io::stderr(), "{first} (run with --help for usage)");
    code
}
