//! `vsr client`: one key-value command against a cluster, or an interactive shell.
//!
//! A command becomes a [`KvOperation`] (or a [`KvQuery`] for reads: `get` and `scan`), goes to
//! the cluster through one [`vsr_server::Client`] session and its [`KvResult`] is printed: `OK`,
//! the value, `(nil)`, or `FAILED` for a compare-and-swap that found another value; `scan`
//! prints one line per key. With `--json` every command prints one JSON object instead. When
//! no result comes back the error says whether the request may have executed (outcome
//! unknown) or certainly did not. Without a command, a shell (rustyline, history in memory)
//! reads the same commands line by line, one session for all of them; when stdin is not a
//! terminal it reads plain lines, so scripts can pipe commands in.
//!
//! Exit status: 0 when the command did what it asked (a `get` of a missing key included), 1 for
//! a `cas` that did not swap, 2 when no answer came (not executed, or outcome unknown), 64 for a
//! usage error. The shell prints one line per command (one object with `--json`) and exits with
//! the worst status of its commands: 2, then 64, then 1.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rustyline::error::ReadlineError;
use serde_json::{Map, Value, json};
use vsr::Codec;
use vsr_kv::{KEY_SIZE_MAX, KvOperation, KvQuery, KvResult, SCAN_LIMIT_MAX, VALUE_SIZE_MAX};
use vsr_server::{Client, Network, RequestError};

use crate::args::{ClientIdentity, ClusterAddresses, Security, client_network, parse_duration};
use crate::logging::Logging;

/// How a missing value is written, in output and as the `<old>` of `cas`.
const NIL: &str = "(nil)";

/// The exit status of a usage error (EX_USAGE): 2 keeps meaning "no answer".
pub(crate) const EXIT_USAGE: u8 = 64;

/// The shell's `help` text.
const HELP: &str = "\
commands:
  put <key> <value>            set key to value; prints OK
  get <key>                    print key's value, or (nil) if it has none
  del <key>                    delete key; prints OK
  cas <key> <old> <new>        set key to new if its value is old ((nil): if it has none);
                               prints OK if it swapped, FAILED otherwise
  cas --expect-absent <key> <new>
                               set key to new if it has no value
  scan [prefix] [--start <key>] [--limit <n>] [--keys-only]
                               list keys (and values) in order, one per line
  help                         this text
  exit                         leave (also quit, or Ctrl-D)
quote keys or values that hold spaces: put greeting \"hello world\"";

/// How keys and values are written on the command line and in the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Encoding {
    /// As they are (UTF-8 on the command line; raw bytes on stdout).
    #[default]
    Text,
    /// Hexadecimal.
    Hex,
    /// Base64 (standard alphabet, padded).
    Base64,
}

impl Encoding {
    /// The bytes `text` stands for.
    fn decode(self, what: &str, text: &str) -> Result<Bytes, Failure> {
        let decoded = match self {
            Self::Text => return Ok(Bytes::copy_from_slice(text.as_bytes())),
            Self::Hex => hex::decode(text.trim()).map_err(|error| error.to_string()),
            Self::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|error| error.to_string()),
        };
        decoded.map(Bytes::from).map_err(|error| {
            Failure::Usage(format!("{what} is not valid {self:?}: {error}").to_lowercase())
        })
    }

    /// `bytes` as this encoding writes them; raw for text.
    fn encode(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::Text => bytes.to_vec(),
            Self::Hex => hex::encode(bytes).into_bytes(),
            Self::Base64 => base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into_bytes(),
        }
    }

    /// `bytes` as a JSON field `name`: a string in this encoding, or, for text that is not
    /// UTF-8, base64 under `<name>_base64` (never lossy).
    fn json_field(self, object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
        match (self, std::str::from_utf8(bytes)) {
            (Self::Text, Ok(text)) => {
                object.insert(name.to_owned(), json!(text));
            }
            (Self::Text, Err(_)) => {
                let encoded = Self::Base64.encode(bytes);
                object.insert(
                    format!("{name}_base64"),
                    json!(String::from_utf8_lossy(&encoded)),
                );
            }
            (encoding, _) => {
                let encoded = encoding.encode(bytes);
                object.insert(name.to_owned(), json!(String::from_utf8_lossy(&encoded)));
            }
        }
    }
}

/// Options of `vsr client`.
#[derive(Debug, Args)]
#[command(after_help = "\
Without a command, opens an interactive shell with the same commands.

Exit status: 0 done (a get of a missing key prints (nil) and exits 0); 1 a cas that did not \
swap; 2 no answer (the request did not run, or its outcome is unknown); 64 a usage error. A \
shell script exits with the worst status of its commands.

--hex and --base64 apply to every key, prefix and value given and printed; (nil) keeps meaning \
\"no value\", so a value that is literally (nil) goes through them. With --json and neither, \
a key or value that is not UTF-8 is written base64 under key_base64 or value_base64.")]
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
    /// Print one JSON object per command: {"ok":true}, {"value":...}, {"value":null},
    /// {"swapped":false}, {"entries":[...],"next":...}, {"error":...,"executed":"no|unknown"}.
    #[arg(long)]
    json: bool,
    /// Keys, prefixes and values are hexadecimal, given and printed.
    #[arg(long, conflicts_with = "base64")]
    hex: bool,
    /// Keys, prefixes and values are base64, given and printed.
    #[arg(long)]
    base64: bool,
    #[command(flatten)]
    logging: Logging,
    /// The command to run; none opens an interactive shell.
    #[command(subcommand)]
    command: Option<KvCommand>,
}

impl ClientArgs {
    fn output(&self) -> Output {
        Output {
            json: self.json,
            encoding: if self.hex {
                Encoding::Hex
            } else if self.base64 {
                Encoding::Base64
            } else {
                Encoding::Text
            },
        }
    }
}

/// A key-value command, on the command line or in the shell.
#[derive(Clone, Debug, Subcommand)]
enum KvCommand {
    /// Set KEY to VALUE; prints OK. A VALUE of - reads the value from stdin (its bytes as they
    /// are, a trailing newline included; decoded with --hex or --base64).
    Put {
        /// The key (1 to 1024 bytes).
        key: String,
        /// The value (at most 8192 bytes), or - for stdin.
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
    /// Set KEY to NEW if its value is OLD: `cas KEY OLD NEW`, or `cas --expect-absent KEY NEW`
    /// to set it only if it has no value. Prints OK if it swapped, FAILED (exit 1) if not.
    Cas {
        /// Swap only if KEY has no value; then give KEY and NEW only.
        #[arg(long)]
        expect_absent: bool,
        /// The key.
        key: String,
        /// OLD NEW: the value KEY must hold now ((nil): none), then the value to set; NEW only
        /// with --expect-absent.
        #[arg(num_args = 1..=2, required = true, value_name = "OLD NEW")]
        values: Vec<String>,
    },
    /// List keys in order, with their values (one `KEY<TAB>VALUE` line each), through the
    /// read path. Each page (at most 1000 keys) is read at one state, linearizably; a scan of
    /// several pages is not a snapshot: writes between pages may show in later ones.
    Scan {
        /// Only keys that start with PREFIX.
        prefix: Option<String>,
        /// Start at KEY (inclusive) rather than at the first key.
        #[arg(long, value_name = "KEY")]
        start: Option<String>,
        /// List at most N keys (default: all).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
    },
}

/// One line of the shell, parsed with the same commands.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
struct ShellLine {
    #[command(subcommand)]
    command: KvCommand,
}

/// What goes to the cluster for a command.
#[derive(Clone, Debug)]
enum Call {
    /// A logged operation.
    Request(KvOperation),
    /// A get, through the read path.
    Get(Bytes),
    /// A scan, page by page through the read path.
    Scan {
        prefix: Bytes,
        start: Option<Bytes>,
        limit: Option<u64>,
        keys_only: bool,
    },
}

/// Why a command produced no result.
#[derive(Debug)]
enum Failure {
    /// The command is malformed: nothing was sent.
    Usage(String),
    /// The cluster did not run it.
    NotExecuted(String),
    /// It may or may not have run.
    Unknown(String),
}

impl Failure {
    fn status(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::NotExecuted(_) | Self::Unknown(_) => 2,
        }
    }
}

/// What a command produced.
#[derive(Debug)]
enum Outcome {
    Ok,
    Value(Option<Bytes>),
    Swapped(bool),
    Entries {
        entries: Vec<(Bytes, Option<Bytes>)>,
        next: Option<Bytes>,
    },
}

impl Outcome {
    fn status(&self) -> u8 {
        match self {
            Self::Swapped(false) => 1,
            _ => 0,
        }
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug)]
struct Output {
    json: bool,
    encoding: Encoding,
}

/// The worse of two exit statuses: no answer, then a usage error, then a swap that failed.
fn worse(a: u8, b: u8) -> u8 {
    let rank = |status: u8| match status {
        2 => 3,
        EXIT_USAGE => 2,
        1 => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

impl KvCommand {
    /// What to send, with sizes and encodings checked before anything is sent. `stdin` gives
    /// a `put`'s value of `-` (the command line only).
    fn call(&self, encoding: Encoding, stdin: Option<&mut dyn Read>) -> Result<Call, Failure> {
        let key = |text: &str| -> Result<Bytes, Failure> {
            let key = encoding.decode("the key", text)?;
            if key.is_empty() || key.len() > KEY_SIZE_MAX {
                return Err(Failure::Usage(format!(
                    "a key must be 1 to {KEY_SIZE_MAX} bytes, not {}",
                    key.len()
                )));
            }
            Ok(key)
        };
        let checked_value = |value: Bytes| -> Result<Bytes, Failure> {
            if value.len() > VALUE_SIZE_MAX {
                return Err(Failure::Usage(format!(
                    "a value must be at most {VALUE_SIZE_MAX} bytes, not {}",
                    value.len()
                )));
            }
            Ok(value)
        };
        let value = |text: &str| checked_value(encoding.decode("the value", text)?);
        Ok(match self {
            Self::Put { key: k, value: v } if v == "-" => Call::Request(KvOperation::Put {
                key: key(k)?,
                value: checked_value(read_value(encoding, stdin)?)?,
            }),
            Self::Put { key: k, value: v } => Call::Request(KvOperation::Put {
                key: key(k)?,
                value: value(v)?,
            }),
            Self::Get { key: k } => Call::Get(key(k)?),
            Self::Del { key: k } => Call::Request(KvOperation::Delete { key: key(k)? }),
            Self::Cas {
                expect_absent,
                key: k,
                values,
            } => {
                let (expected, new) = match (expect_absent, values.as_slice()) {
                    (true, [new]) => (None, new),
                    (false, [old, new]) if old == NIL => (None, new),
                    (false, [old, new]) => (Some(value(old)?), new),
                    (true, _) => {
                        return Err(Failure::Usage(
                            "cas --expect-absent takes KEY NEW".to_owned(),
                        ));
                    }
                    (false, _) => {
                        return Err(Failure::Usage(
                            "cas takes KEY OLD NEW (or --expect-absent KEY NEW)".to_owned(),
                        ));
                    }
                };
                Call::Request(KvOperation::CompareAndSwap {
                    key: key(k)?,
                    expected,
                    new: value(new)?,
                })
            }
            Self::Scan {
                prefix,
                start,
                limit,
                keys_only,
            } => {
                let prefix = match prefix {
                    Some(prefix) => encoding.decode("the prefix", prefix)?,
                    None => Bytes::new(),
                };
                if prefix.len() > KEY_SIZE_MAX {
                    return Err(Failure::Usage(format!(
                        "a prefix must be at most {KEY_SIZE_MAX} bytes, not {}",
                        prefix.len()
                    )));
                }
                Call::Scan {
                    prefix,
                    start: start.as_deref().map(key).transpose()?,
                    limit: *limit,
                    keys_only: *keys_only,
                }
            }
        })
    }
}

/// A `put`'s value read from `stdin` (its bytes as they are, or decoded); `None` outside the
/// command line.
fn read_value(encoding: Encoding, stdin: Option<&mut dyn Read>) -> Result<Bytes, Failure> {
    let Some(stdin) = stdin else {
        return Err(Failure::Usage(
            "a value of - reads stdin, on the command line only".to_owned(),
        ));
    };
    let mut raw = Vec::new();
    // Enough for the largest value in any encoding; the size is checked after decoding.
    stdin
        .take(4 * VALUE_SIZE_MAX as u64 + 16)
        .read_to_end(&mut raw)
        .map_err(|error| Failure::Usage(format!("cannot read the value from stdin: {error}")))?;
    match encoding {
        Encoding::Text => Ok(Bytes::from(raw)),
        _ => encoding.decode("the value on stdin", &String::from_utf8_lossy(&raw)),
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
    args.logging.init("error");
    let output = args.output();
    // A malformed command is refused before any connection is made.
    let call = match &args.command {
        Some(command) => match command.call(output.encoding, Some(&mut std::io::stdin())) {
            Ok(call) => Some(call),
            Err(failure) => return Ok(ExitCode::from(print_failure(output, &failure))),
        },
        None => None,
    };
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
    let status = match call {
        Some(call) => runtime.block_on(run_call(&client, call, args.timeout, output)),
        None => shell(&runtime, &client, &args),
    };
    Ok(ExitCode::from(status))
}

/// Sends `call`, prints its result or failure, and returns the exit status.
async fn run_call(client: &Client<Network>, call: Call, timeout: Duration, output: Output) -> u8 {
    match execute(client, call, timeout).await {
        Ok(outcome) => {
            print_outcome(output, &outcome);
            outcome.status()
        }
        Err(failure) => print_failure(output, &failure),
    }
}

/// What a request error means for the command.
fn failure_of(error: RequestError) -> Failure {
    match error {
        RequestError::NotExecuted { reason } => {
            Failure::NotExecuted(format!("not executed: the request did not run ({reason})"))
        }
        RequestError::Unknown { reason } => Failure::Unknown(format!(
            "outcome unknown: the request may or may not have executed ({reason})"
        )),
        // Every replica asked answered that it serves another cluster: a wrong --cluster.
        error @ RequestError::WrongCluster { .. } => {
            Failure::NotExecuted(format!("not executed: wrong cluster: {error}"))
        }
        other => Failure::Unknown(format!("outcome unknown: {other}")),
    }
}

/// Decodes a result; an unreadable one leaves the outcome unknown.
fn decode(bytes: &[u8]) -> Result<KvResult, Failure> {
    KvResult::decode(bytes).map_err(|error| {
        Failure::Unknown(format!(
            "outcome unknown: the cluster answered an unreadable result: {error:?}"
        ))
    })
}

/// Executes `call` (every page of a scan) and returns what it produced.
async fn execute(
    client: &Client<Network>,
    call: Call,
    timeout: Duration,
) -> Result<Outcome, Failure> {
    let unexpected = |result: KvResult| {
        Failure::Unknown(format!(
            "outcome unknown: the cluster answered an unexpected result: {result:?}"
        ))
    };
    match call {
        Call::Request(operation) => {
            let cas = matches!(operation, KvOperation::CompareAndSwap { .. });
            let result = client
                .request(Bytes::from(operation.to_bytes()), timeout)
                .await
                .map_err(failure_of)?;
            match (cas, decode(&result)?) {
                (false, KvResult::Ok) => Ok(Outcome::Ok),
                (true, KvResult::Swapped(swapped)) => Ok(Outcome::Swapped(swapped)),
                (_, result) => Err(unexpected(result)),
            }
        }
        // A get is a query: answered by the primary without a log entry or a disk write.
        Call::Get(key) => {
            let query = KvQuery::Get { key };
            let result = client
                .query(Bytes::from(query.to_bytes()), timeout)
                .await
                .map_err(failure_of)?;
            match decode(&result)? {
                KvResult::Value(value) => Ok(Outcome::Value(value)),
                result => Err(unexpected(result)),
            }
        }
        Call::Scan {
            prefix,
            mut start,
            limit,
            keys_only,
        } => {
            let mut listed = Vec::new();
            loop {
                let left = limit.map_or(u64::MAX, |limit| limit - listed.len() as u64);
                let page_limit =
                    u32::try_from(left.min(u64::from(SCAN_LIMIT_MAX))).expect("bounded");
                let query = KvQuery::Scan {
                    prefix: prefix.clone(),
                    start: start.clone(),
                    limit: page_limit,
                    keys_only,
                };
                let result = client
                    .query(Bytes::from(query.to_bytes()), timeout)
                    .await
                    .map_err(failure_of)?;
                let (entries, next) = match decode(&result)? {
                    KvResult::Page { entries, next } => (entries, next),
                    result => return Err(unexpected(result)),
                };
                if entries.len() > page_limit as usize
                    || next
                        .as_ref()
                        .is_some_and(|next| start.as_ref() >= Some(next))
                {
                    return Err(Failure::Unknown(
                        "outcome unknown: the cluster answered a page that does not advance"
                            .to_owned(),
                    ));
                }
                listed.extend(entries);
                start = next;
                let full = limit.is_some_and(|limit| listed.len() as u64 >= limit);
                if start.is_none() || full {
                    return Ok(Outcome::Entries {
                        entries: listed,
                        next: start,
                    });
                }
            }
        }
    }
}

/// Prints what a command produced: one line (one JSON object), or one line per listed key.
fn print_outcome(output: Output, outcome: &Outcome) {
    let encoding = output.encoding;
    if output.json {
        let mut object = Map::new();
        match outcome {
            Outcome::Ok => {
                object.insert("ok".to_owned(), json!(true));
            }
            Outcome::Value(Some(value)) => encoding.json_field(&mut object, "value", value),
            Outcome::Value(None) => {
                object.insert("value".to_owned(), Value::Null);
            }
            Outcome::Swapped(true) => {
                object.insert("ok".to_owned(), json!(true));
                object.insert("swapped".to_owned(), json!(true));
            }
            Outcome::Swapped(false) => {
                object.insert("swapped".to_owned(), json!(false));
            }
            Outcome::Entries { entries, next } => {
                let entries: Vec<Value> = entries
                    .iter()
                    .map(|(key, value)| {
                        let mut entry = Map::new();
                        encoding.json_field(&mut entry, "key", key);
                        if let Some(value) = value {
                            encoding.json_field(&mut entry, "value", value);
                        }
                        Value::Object(entry)
                    })
                    .collect();
                object.insert("entries".to_owned(), Value::Array(entries));
                match next {
                    Some(next) => encoding.json_field(&mut object, "next", next),
                    None => {
                        object.insert("next".to_owned(), Value::Null);
                    }
                }
            }
        }
        print_line(Value::Object(object).to_string().as_bytes());
        return;
    }
    match outcome {
        Outcome::Ok | Outcome::Swapped(true) => print_line(b"OK"),
        Outcome::Swapped(false) => print_line(b"FAILED"),
        Outcome::Value(Some(value)) => print_line(&encoding.encode(value)),
        Outcome::Value(None) => print_line(NIL.as_bytes()),
        Outcome::Entries { entries, next } => {
            for (key, value) in entries {
                let mut line = encoding.encode(key);
                if let Some(value) = value {
                    line.push(b'\t');
                    line.extend(encoding.encode(value));
                }
                print_line(&line);
            }
            if let Some(next) = next {
                let next = String::from_utf8_lossy(&encoding.encode(next)).into_owned();
                eprintln!("(more keys follow: continue with --start {next})");
            }
        }
    }
}

/// Prints why a command produced nothing (an `error: ...` line on stderr, or a JSON object on
/// stdout) and returns its exit status.
fn print_failure(output: Output, failure: &Failure) -> u8 {
    let (message, executed) = match failure {
        Failure::Usage(message) | Failure::NotExecuted(message) => (message, "no"),
        Failure::Unknown(message) => (message, "unknown"),
    };
    if output.json {
        let object = json!({ "error": message, "executed": executed });
        print_line(object.to_string().as_bytes());
    } else {
        eprintln!("error: {message}");
    }
    failure.status()
}

/// Prints `line` and a newline to stdout; a closed pipe is not an error.
fn print_line(line: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(line);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
}

/// The interactive shell: reads commands until `exit`, Ctrl-D or the end of stdin, and returns
/// the worst exit status of its commands.
fn shell(runtime: &tokio::runtime::Runtime, client: &Client<Network>, args: &ClientArgs) -> u8 {
    let output = args.output();
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("error: cannot open the line editor: {error}");
            return 2;
        }
    };
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "cluster {} at {}; type help for the commands, exit to leave",
            args.cluster.cluster,
            args.cluster.addresses.join(",")
        );
    }
    let mut status = 0;
    loop {
        let line = match editor.readline("vsr> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return status,
            Err(error) => {
                eprintln!("error: cannot read a command: {error}");
                return worse(status, 2);
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
            "exit" | "quit" => return status,
            _ => {}
        }
        let call = parse_line(line)
            .map_err(|error| Failure::Usage(format!("{error} (type help for the commands)")))
            .and_then(|command| command.call(output.encoding, None));
        let done = match call {
            Ok(call) => runtime.block_on(run_call(client, call, args.timeout, output)),
            Err(failure) => print_failure(output, &failure),
        };
        status = worse(status, done);
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
            Ok(KvCommand::Cas { values, .. }) if values[0] == NIL
        ));
        assert!(parse_line("frobnicate").is_err());
        assert!(parse_line("put k").is_err());
    }

    #[test]
    fn cas_from_nil_expects_absence() {
        // "6b" is a key in text and in hex alike.
        let cas = |expect_absent, values: &[&str]| KvCommand::Cas {
            expect_absent,
            key: "6b".into(),
            values: values.iter().map(|value| (*value).to_owned()).collect(),
        };
        let expected = |call: Result<Call, Failure>| match call {
            Ok(Call::Request(KvOperation::CompareAndSwap { expected, .. })) => Ok(expected),
            Ok(other) => panic!("not a cas: {other:?}"),
            Err(failure) => Err(failure.status()),
        };
        assert_eq!(
            expected(cas(false, &[NIL, "v"]).call(Encoding::Text, None)),
            Ok(None)
        );
        assert_eq!(
            expected(cas(true, &["v"]).call(Encoding::Text, None)),
            Ok(None)
        );
        // A literal (nil) goes through an encoding: 286e696c29 is "(nil)" in hex.
        assert_eq!(
            expected(cas(false, &["286e696c29", "76"]).call(Encoding::Hex, None)),
            Ok(Some(Bytes::from_static(b"(nil)")))
        );
        assert_eq!(
            expected(cas(false, &[NIL, "76"]).call(Encoding::Hex, None)),
            Ok(None),
            "(nil) keeps meaning absent"
        );
        // Usage errors: the wrong number of values, a bad encoding, an empty key.
        assert_eq!(
            expected(cas(true, &["a", "b"]).call(Encoding::Text, None)),
            Err(EXIT_USAGE)
        );
        assert_eq!(
            expected(cas(false, &["a"]).call(Encoding::Text, None)),
            Err(EXIT_USAGE)
        );
        assert_eq!(
            expected(cas(false, &["zz", "76"]).call(Encoding::Hex, None)),
            Err(EXIT_USAGE)
        );
        let empty = KvCommand::Get { key: String::new() };
        assert!(matches!(
            empty.call(Encoding::Text, None),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn a_put_of_dash_reads_stdin_on_the_command_line_only() {
        let put = KvCommand::Put {
            key: "k".into(),
            value: "-".into(),
        };
        let mut stdin: &[u8] = b"line\n";
        assert!(matches!(
            put.call(Encoding::Text, Some(&mut stdin)),
            Ok(Call::Request(KvOperation::Put { value, .. })) if value == Bytes::from_static(b"line\n")
        ));
        let mut stdin: &[u8] = b"AAEC\n";
        let put_base64 = KvCommand::Put {
            key: "aw==".into(),
            value: "-".into(),
        };
        assert!(matches!(
            put_base64.call(Encoding::Base64, Some(&mut stdin)),
            Ok(Call::Request(KvOperation::Put { value, .. })) if value == Bytes::from_static(&[0, 1, 2])
        ));
        let mut too_long: &[u8] = &[b'x'; VALUE_SIZE_MAX + 1];
        assert!(matches!(
            put.call(Encoding::Text, Some(&mut too_long)),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            put.call(Encoding::Text, None),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn scans_parse_and_encodings_round_trip() {
        assert!(matches!(
            parse_line("scan user/ --start user/5 --limit 3 --keys-only"),
            Ok(KvCommand::Scan { prefix: Some(prefix), start: Some(start), limit: Some(3), keys_only: true })
                if prefix == "user/" && start == "user/5"
        ));
        assert!(parse_line("scan --limit 0").is_err());
        for encoding in [Encoding::Text, Encoding::Hex, Encoding::Base64] {
            let bytes = b"\x00(nil)\xff";
            let encoded = encoding.encode(bytes);
            if encoding != Encoding::Text {
                let text = String::from_utf8(encoded).unwrap();
                assert_eq!(
                    encoding.decode("x", &text).unwrap(),
                    Bytes::from_static(bytes)
                );
            }
        }
        let mut object = Map::new();
        Encoding::Text.json_field(&mut object, "value", b"\xff\x00");
        assert_eq!(
            Value::Object(object).to_string(),
            r#"{"value_base64":"/wA="}"#
        );
        assert_eq!(worse(0, 1), 1);
        assert_eq!(worse(1, EXIT_USAGE), EXIT_USAGE);
        assert_eq!(worse(2, EXIT_USAGE), 2);
        assert_eq!(worse(EXIT_USAGE, 0), EXIT_USAGE);
    }
}
