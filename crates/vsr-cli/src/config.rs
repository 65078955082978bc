//! `--config FILE`: a subcommand's options from a TOML file whose keys are the options' long
//! names (`addresses`, `checkpoint-interval`, `tls`, ...; a positional argument's key is its
//! name, `data` for `vsr start`'s data directory).
//!
//! [`apply`] reads the file before the command line is parsed and makes each of its values the
//! default of its option, so clap's own order decides: the command line, then the option's
//! environment variable, then the file, then the built-in default. Each value is checked first
//! with the option's value parser, so a bad one is reported with its key and its file rather
//! than as a flag the operator never typed. [`settings`] lists what was decided, and where it
//! came from, for `--check-config`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::{Table, Value};

/// The option naming the file, as the subcommands that take one spell it.
const CONFIG: &str = "config";

/// Options never read from the file: the file itself, and the dry run.
const NOT_IN_FILE: [&str; 2] = [CONFIG, "check-config"];

/// Help for the subcommands that take a config file: the order of precedence.
pub(crate) const PRECEDENCE: &str = "Each option comes from the first of: the command line, its \
    environment variable (shown as [env: ...]), the --config file (TOML; each key is an option's \
    long name without the dashes, `data` for PATH: `addresses = [\"10.0.0.1:3001\", ...]`, \
    `checkpoint-interval = 4096`, `insecure = true`), and the built-in default.";

/// The config file read, and the ids of the options it set.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    path: PathBuf,
    ids: BTreeSet<String>,
}

/// Reads the `--config` file (or `VSR_CONFIG`) of the subcommand on the command line `argv`, if
/// it takes one and one is named, and sets its values as that subcommand's defaults in
/// `command`. A value yields to an option that conflicts with it and was given on the command
/// line or in the environment (`--insecure` over the file's `tls`).
pub(crate) fn apply(command: &mut Command, argv: &[OsString]) -> Result<Loaded, clap::Error> {
    let Some((name, path, explicit)) = requested(command, argv) else {
        return Ok(Loaded::default());
    };
    let subcommand = command
        .find_subcommand_mut(&name)
        .expect("the pre-parse found this subcommand");
    let defaults = match read(&path).and_then(|table| defaults(subcommand, &table, &explicit)) {
        Ok(defaults) => defaults,
        Err(message) => {
            let message = format!("config file {}: {message}", path.display());
            return Err(subcommand.error(clap::error::ErrorKind::InvalidValue, message));
        }
    };
    let ids = defaults.keys().cloned().collect();
    *command = std::mem::take(command).mut_subcommand(&name, |subcommand| {
        subcommand.mut_args(|arg| match defaults.get(arg.get_id().as_str()) {
            Some(values) => arg.default_values(values.clone()).required(false),
            None => arg,
        })
    });
    Ok(Loaded { path, ids })
}

/// The subcommand on `argv`, its config file, and the ids of its options given on the command
/// line or in the environment; `None` without a config file. Parsing here forgives every
/// error: the real parse reports them.
fn requested(command: &Command, argv: &[OsString]) -> Option<(String, PathBuf, BTreeSet<String>)> {
    let matches = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok()?;
    let (name, matches) = matches.subcommand()?;
    let path = matches.try_get_one::<PathBuf>(CONFIG).ok()??.clone();
    let explicit = matches
        .ids()
        .filter(|id| {
            matches!(
                matches.value_source(id.as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(|id| id.as_str().to_owned())
        .collect();
    Some((name.to_owned(), path, explicit))
}

/// The file's TOML table, or a message saying why there is none.
fn read(path: &Path) -> Result<Table, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read it: {error}"))?;
    text.parse::<Table>().map_err(|error| {
        let line = error.span().map_or(1, |span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            before.iter().filter(|&&byte| byte == b'\n').count() + 1
        });
        format!(
            "line {line}: not valid TOML: {}",
            error.message().trim_end()
        )
    })
}

/// The defaults the file sets, by option id: every key an option of `command`, every value of
/// its option's type, no two conflicting options.
fn defaults(
    command: &Command,
    table: &Table,
    explicit: &BTreeSet<String>,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut defaults = BTreeMap::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|arg| key_of(arg) == Some(key.as_str()))
            .ok_or_else(|| unknown_key(command, key))?;
        let values = strings(arg, value).map_err(|expected| {
            format!(
                "key `{key}`: expected {expected}, found {}",
                describe(value)
            )
        })?;
        for text in values.iter().filter(|_| !is_flag(arg)) {
            check_value(command, arg, text).map_err(|error| format!("key `{key}`: {error}"))?;
        }
        let rivals: Vec<&Arg> = command
            .get_arguments()
            .filter(|other| conflict(command, arg, other))
            .collect();
        if let Some(rival) = rivals
            .iter()
            .find(|rival| table.contains_key(key_of(rival).unwrap_or_default()))
        {
            return Err(format!(
                "keys `{key}` and `{}` cannot be used together",
                key_of(rival).unwrap_or_default()
            ));
        }
        if rivals
            .iter()
            .any(|rival| explicit.contains(rival.get_id().as_str()))
        {
            continue;
        }
        defaults.insert(arg.get_id().as_str().to_owned(), values);
    }
    Ok(defaults)
}

/// An option's key in the file: its long name, or a positional argument's id; `None` for the
/// options the file cannot set.
fn key_of(arg: &Arg) -> Option<&str> {
    let key = if arg.is_positional() {
        arg.get_id().as_str()
    } else {
        arg.get_long()?
    };
    let settable = !NOT_IN_FILE.contains(&key)
        && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version);
    settable.then_some(key)
}

fn unknown_key(command: &Command, key: &str) -> String {
    let keys: Vec<&str> = command.get_arguments().filter_map(key_of).collect();
    format!(
        "unknown key `{key}`: vsr {} takes {}",
        command.get_name(),
        keys.join(", ")
    )
}

/// Whether `arg` and `other` cannot be given together, whichever of them declares it.
fn conflict(command: &Command, arg: &Arg, other: &Arg) -> bool {
    let declares = |one: &Arg, two: &Arg| {
        command
            .get_arg_conflicts_with(one)
            .iter()
            .any(|conflict| conflict.get_id() == two.get_id())
    };
    declares(arg, other) || declares(other, arg)
}

/// `value` as the strings `arg`'s value parser reads, or what was expected instead: true or
/// false for a flag, an array (or one delimited string) for a list, else a string or an integer.
fn strings(arg: &Arg, value: &Value) -> Result<Vec<String>, &'static str> {
    let flag = is_flag(arg);
    let delimiter = arg.get_value_delimiter();
    let list = delimiter.is_some() || matches!(arg.get_action(), ArgAction::Append);
    match value {
        Value::Boolean(flag_value) if flag => Ok(vec![flag_value.to_string()]),
        _ if flag => Err("true or false"),
        Value::Array(items) if list => items
            .iter()
            .map(scalar)
            .collect::<Option<_>>()
            .ok_or("an array of strings"),
        Value::String(text) if list => Ok(match delimiter {
            Some(delimiter) => text.split(delimiter).map(str::to_owned).collect(),
            None => vec![text.clone()],
        }),
        _ if list => Err("an array of strings"),
        value => scalar(value)
            .map(|text| vec![text])
            .ok_or("a string or an integer"),
    }
}

/// Whether `arg` is a flag, set by its presence (its value was checked as a TOML boolean).
fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Integer(number) => Some(number.to_string()),
        _ => None,
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Table(_) => "a table".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Datetime(_) => "a date".to_owned(),
        other => format!("{} {other}", other.type_str()),
    }
}

/// Whether `arg`'s value parser takes `text`: a trial parse of `command` given that one value
/// (no environment, nothing required), so the check is clap's own.
fn check_value(command: &Command, arg: &Arg, text: &str) -> Result<(), String> {
    let mut argv = vec![command.get_name().to_owned()];
    match arg.get_long() {
        Some(long) => argv.push(format!("--{long}={text}")),
        None => argv.extend(["--".to_owned(), text.to_owned()]),
    }
    let trial = command
        .clone()
        .mut_args(|arg| arg.env(None).required(false));
    trial
        .try_get_matches_from(argv)
        .map(drop)
        .map_err(|error| first_paragraph(&error))
}

/// A clap error's message on one line (its first paragraph, which names the possible values
/// if there are few), without its `error: ` prefix and its pointer to --help.
fn first_paragraph(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let lines: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = lines.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_owned()
}

/// Each option of the subcommand in `matches` that has a value, one line each: its key, its
/// value and where the value came from (the command line, the environment, the config file or
/// the default).
pub(crate) fn settings(command: &Command, matches: &ArgMatches, loaded: &Loaded) -> String {
    let Some((name, matches)) = matches.subcommand() else {
        return String::new();
    };
    let Some(command) = command.find_subcommand(name) else {
        return String::new();
    };
    let mut lines = String::new();
    for arg in command.get_arguments() {
        let (Some(key), Some(source)) = (key_of(arg), matches.value_source(arg.get_id().as_str()))
        else {
            continue;
        };
        let values: Vec<String> = matches
            .get_raw(arg.get_id().as_str())
            .into_iter()
            .flatten()
            .map(|value| value.to_string_lossy().into_owned())
            .collect();
        let origin = match source {
            ValueSource::CommandLine => "command line".to_owned(),
            ValueSource::EnvVariable => match arg.get_env() {
                Some(variable) => format!("environment {}", variable.to_string_lossy()),
                None => "environment".to_owned(),
            },
            _ if loaded.ids.contains(arg.get_id().as_str()) => {
                format!("config file {}", loaded.path.display())
            }
            _ => "default".to_owned(),
        };
        let _ = writeln!(lines, "{key} = {}  ({origin})", values.join(","));
    }
    lines
}
