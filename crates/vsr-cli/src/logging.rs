//! `--log-format`: how `vsr start` and `vsr client` write their log lines to stderr, through
//! `tracing-subscriber`. `RUST_LOG` filters them in either format (for example
//! `RUST_LOG=vsr_server=debug`); without it, each subcommand keeps its own default level.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The shape of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event, for people (colored on a terminal).
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for a log collector.
    Json,
}

/// The logging options a subcommand flattens into its own.
#[derive(Debug, Args)]
pub(crate) struct Logging {
    /// How log lines on stderr are written: `text` for people, `json` (one object per line)
    /// for a log collector. RUST_LOG chooses which lines, in either format (for example
    /// RUST_LOG=vsr_server=debug).
    #[arg(long, env = "VSR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl Logging {
    /// Installs the process's log subscriber: `RUST_LOG`'s filter, else `default_filter`.
    pub(crate) fn init(&self, default_filter: &str) {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init(),
            LogFormat::Json => builder.json().with_ansi(false).init(),
        }
    }
}
