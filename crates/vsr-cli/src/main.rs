//! `vsr`: the command line of the vsr replication library.
//!
//! One subcommand per module: `sim` (the deterministic cluster simulator) for now; `format`,
//! `start`, `client` and `demo` come later. Usage errors print one `error: ...` line and exit
//! with status 2.

mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Viewstamped Replication: a replicated key-value store and its tools.
#[derive(Debug, Parser)]
#[command(name = "vsr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the deterministic cluster simulator: one seed, or a swarm of seeds.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with status 0; usage errors exit with 2.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        Commands::Sim(args) => sim::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
