//! `vsr client`: one key-value command against a cluster, or an interactive shell.
//!
//! A command becomes a [`KvOperation`], goes to the cluster through one
//! [`vsr_server::Client`] session and its [`KvResult`] is printed as one line: `OK`, the value,
//! `(nil)`, or `FAILED` for a compare-and-swap that found another value. When no result comes
//! back the error says whether the request may have executed (outcome unknown) or certainly
//! did not, and the exit status is 2. Without a command, a shell (rustyline, history in memory)
//! reads the same commands line by line, one session for all of them; when stdin is not a
//! terminal it reads plain lines, so scripts can pipe commands in.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use rustyline::error::ReadlineError;
use tracing_subscriber::EnvFilter;
use vsr::Codec;
use vsr_kv::{KEY_SIZE_MAX, KvOperation, KvQuery, KvResult, VALUE_SIZE_MAX};
use vsr_server::{Client, Network, RequestError};

use crate::args::{ClientIdentity, ClusterAddresses, Security, client_network, parse_duration};

/// How a missing value is written, in output and as the `<old>` of `cas`.
const NIL: &str = "(nil)";

/// The shell's `help` text.
const HELP: &str = "\
commands:
  put <key> <value>        set key to value; prints OK
  get <key>                print key's value, or (nil) if it has none
  del <key>                delete key; prints OK
  cas <key> <old> <new>    set key to new if its value is old ((nil): if it has none);
                           prints OK if it swapped, FAILED otherwise
  help                     this text
  exit                     leave (also quit, or Ctrl-D)
quote keys or values that hold spaces: put greeting \"hello world\"";

/// Options of `vsr client`.
#[derive(Debug, Args)]
#[command(after_help = "Without a command, opens an interactive shell with the same commands.")]
pub(crate) struct ClientArgs {
    #[command(flatten)]
    cluster: ClusterAddresses,
    #[command(flatten)]
    security: Security,
    #[command(flatten)]
    identity: ClientIdentity,
    /// How long to wait for each command's result (for example 500ms, 5s, 1m).
    #[arg(long, env = "VSR_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// The command to run; none opens an interactive shell.
    #[command(subcommand)]
    command: Option<KvCommand>,
}

/// A key-value command, on the command line or in the shell.
#[derive(Clone, Debug, Subcommand)]
enum KvCommand {
    /// Set KEY to VALUE; prints OK.
    Put {
        /// The key (1 to 1024 bytes).
        key: String,
        /// The value (at most 8192 bytes).
        value: String,
    },
    /// Print KEY's value, or (nil) if it has none.
    Get {
        /// The key.
        key: String,
    },
    /// Delete KEY; prints OK.
    Del {
        /// The key.
        key: String,
    },
    /// Set KEY to NEW if its value is OLD; prints OK if it swapped, FAILED if not.
    Cas {
        /// The key.
        key: String,
        /// The value KEY must hold now; (nil) means KEY must have none.
        old: String,
        /// The value to set.
        new: String,
    },
}

/// One line of the shell, parsed with the same commands.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
struct ShellLine {
    #[command(subcommand)]
    command: KvCommand,
}

impl KvCommand {
    /// The operation, with its sizes checked before anything is sent.
    fn operation(&self) -> anyhow::Result<KvOperation> {
        let key = |key: &str| -> anyhow::Result<Bytes> {
            if key.is_empty() || key.len() > KEY_SIZE_MAX {
                bail!("a key must be 1 to {KEY_SIZE_MAX} bytes, not {}", key.len());
            }
            Ok(Bytes::copy_from_slice(key.as_bytes()))
        };
        let value = |value: &str| -> anyhow::Result<Bytes> {
            if value.len() > VALUE_SIZE_MAX {
                bail!(
                    "a value must be at most {VALUE_SIZE_MAX} bytes, not {}",
                    value.len()
                );
            }
            Ok(Bytes::copy_from_slice(value.as_bytes()))
        };
        Ok(match self {
            Self::Put { key: k, value: v } => KvOperation::Put {
                key: key(k)?,
                value: value(v)?,
            },
            Self::Get { key: k } => KvOperation::Get { key: key(k)? },
            Self::Del { key: k } => KvOperation::Delete { key: key(k)? },
            Self::Cas { key: k, old, new } => KvOperation::CompareAndSwap {
                key: key(k)?,
                expected: if old == NIL { None } else { Some(value(old)?) },
                new: value(new)?,
            },
        })
    }
}

/// Runs `vsr client`.
pub(crate) fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let network = client_network(
        &args.security,
        &args.identity,
        args.cluster.cluster,
        "client",
    )?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let client = {
        let _guard = runtime.enter();
        Client::connect_with(
            network,
            args.cluster.cluster,
            args.cluster.addresses.clone(),
        )?
    };
    match &args.command {
        Some(command) => {
            let line = runtime.block_on(execute(&client, command, args.timeout))?;
            print_line(&line);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            shell(&runtime, &client, &args);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Executes `command` and renders its result as the line to print.
async fn execute(
    client: &Client<Network>,
    command: &KvCommand,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let operation = command.operation()?;
    // A get is a query: answered by the primary without a log entry or a disk write.
    let result = match operation {
        KvOperation::Get { key } => {
            let query = KvQuery::Get { key };
            client.query(Bytes::from(query.to_bytes()), timeout).await
        }
        operation => {
            client
                .request(Bytes::from(operation.to_bytes()), timeout)
                .await
        }
    };
    let result = result.map_err(|error| match error {
        RequestError::NotExecuted { reason } => {
            anyhow!("not executed: the request did not run ({reason})")
        }
        RequestError::Unknown { reason } => {
            anyhow!("outcome unknown: the request may or may not have executed ({reason})")
        }
        other => anyhow!(other),
    })?;
    let result = KvResult::decode(&result)
        .map_err(|error| anyhow!("the cluster answered an unreadable result: {error:?}"))?;
    Ok(match (command, result) {
        (KvCommand::Put { .. } | KvCommand::Del { .. }, KvResult::Ok)
        | (KvCommand::Cas { .. }, KvResult::Swapped(true)) => b"OK".to_vec(),
        (KvCommand::Cas { .. }, KvResult::Swapped(false)) => b"FAILED".to_vec(),
        (KvCommand::Get { .. }, KvResult::Value(Some(value))) => value.to_vec(),
        (KvCommand::Get { .. }, KvResult::Value(None)) => NIL.as_bytes().to_vec(),
        (_, result) => bail!("the cluster answered an unexpected result: {result:?}"),
    })
}

/// Prints `line` and a newline to stdout; a closed pipe is not an error.
fn print_line(line: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(line);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
}

/// The interactive shell: reads commands until `exit`, Ctrl-D or the end of stdin.
fn shell(runtime: &tokio::runtime::Runtime, client: &Client<Network>, args: &ClientArgs) {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("error: cannot open the line editor: {error}");
            return;
        }
    };
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "cluster {} at {}; type help for the commands, exit to leave",
            args.cluster.cluster,
            args.cluster.addresses.join(",")
        );
    }
    loop {
        let line = match editor.readline("vsr> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return,
            Err(error) => {
                eprintln!("error: cannot read a command: {error}");
                return;
            }
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        match line {
            "help" | "?" => {
                print_line(HELP.as_bytes());
                continue;
            }
            "exit" | "quit" => return,
            _ => {}
        }
        match parse_line(line) {
            Ok(command) => match runtime.block_on(execute(client, &command, args.timeout)) {
                Ok(output) => print_line(&output),
                Err(error) => eprintln!("error: {error:#}"),
            },
            Err(error) => eprintln!("error: {error} (type help for the commands)"),
        }
    }
}

/// Parses one shell line into a command.
fn parse_line(line: &str) -> Result<KvCommand, String> {
    let words = split_words(line)?;
    match ShellLine::try_parse_from(&words) {
        Ok(parsed) => Ok(parsed.command),
        Err(error) => {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid command");
            Err(first.trim_start_matches("error: ").to_owned())
        }
    }
}

/// Splits a line into words at whitespace; '...' and "..." quote, `\` escapes in "...".
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut characters = line.chars();
    while let Some(c) = characters.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' | '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match characters.next() {
                        None => return Err(format!("unterminated {c} quote")),
                        Some(end) if end == c => break,
                        Some('\\') if c == '"' => match characters.next() {
                            Some(escaped) => current.push(escaped),
                            None => return Err("unterminated \" quote".to_owned()),
                        },
                        Some(other) => current.push(other),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_split_and_parse() {
        assert_eq!(
            split_words(r#"put "a key" 'x y' "q\"z""#).unwrap(),
            ["put", "a key", "x y", "q\"z"]
        );
        assert_eq!(split_words("  get   k ").unwrap(), ["get", "k"]);
        assert!(split_words("put 'k v").is_err());
        assert!(matches!(parse_line("get k"), Ok(KvCommand::Get { key }) if key == "k"));
        assert!(matches!(
            parse_line("cas k (nil) v"),
            Ok(KvCommand::Cas { old, .. }) if old == NIL
        ));
        assert!(parse_line("frobnicate").is_err());
        assert!(parse_line("put k").is_err());
    }

    #[test]
    fn cas_from_nil_expects_absence() {
        let command = KvCommand::Cas {
            key: "k".into(),
            old: NIL.into(),
            new: "v".into(),
        };
        assert!(matches!(
            command.operation(),
            Ok(KvOperation::CompareAndSwap { expected: None, .. })
        ));
        let empty = KvCommand::Get { key: String::new() };
        assert!(empty.operation().is_err());
    }
}
