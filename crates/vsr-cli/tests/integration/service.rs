//! Running vsr as a service: shell completions and manual pages, `vsr start --config` and its
//! precedence, `--log-format json`, and the systemd unit and example config in `deploy/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{CLUSTER, Cluster, stderr, stdout};

/// Removes every `VSR_*` and `RUST_LOG` variable from `command`'s environment.
fn clear_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VSR_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `vsr` with `env` as its only `VSR_*` and `RUST_LOG` variables.
fn vsr_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    clear_env(&mut Command::new(env!("CARGO_BIN_EXE_vsr")))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the vsr binary runs")
}

fn vsr(args: &[&str]) -> Output {
    vsr_env(args, &[])
}

/// The subcommands `vsr --help` lists (but `help`).
fn subcommands() -> Vec<String> {
    let output = vsr(&["--help"]);
    let help = stdout(&output);
    let names: Vec<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        // A description too long for its line goes on under itself, indented further.
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "the subcommands in:\n{help}");
    names
}

#[test]
fn completions_name_every_subcommand() {
    let bash = vsr(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", stderr(&bash));
    let script = stdout(&bash);
    assert!(script.contains("complete -F _vsr"), "{script}");
    // The words offered after `vsr`, and a case for each subcommand's own flags.
    let words = script
        .lines()
        .find(|line| line.trim_start().starts_with("opts=\"-h -V --help"))
        .unwrap_or_else(|| panic!("the top-level words in:\n{script}"));
    for name in subcommands() {
        assert!(words.contains(&format!(" {name} ")), "{name} in {words}");
        assert!(
            script.contains(&format!("vsr,{name})")),
            "{name} in:\n{script}"
        );
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let output = vsr(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        assert!(stdout(&output).contains("checkpoint-interval"), "{shell}");
    }
    let output = vsr(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("possible values"),
        "{}",
        stderr(&output)
    );
}

/// Asserts `page` is a roff manual page titled `title`.
fn is_man_page(page: &str, title: &str) {
    assert!(page.starts_with('.'), "roff requests: {page}");
    assert!(
        page.lines()
            .any(|line| line.starts_with(&format!(".TH {title} 1"))),
        "a .TH {title} line in:\n{page}"
    );
    assert!(page.contains(".SH NAME"), "{page}");
}

#[test]
fn man_prints_the_top_page_and_writes_one_per_subcommand() {
    let output = vsr(&["man"]);
    assert!(output.status.success(), "{}", stderr(&output));
    is_man_page(&stdout(&output), "vsr");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("man1");
    let output = vsr(&["man", "--out", out.to_str().expect("utf-8 path")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let read = |name: &str| {
        std::fs::read_to_string(out.join(format!("{name}.1")))
            .unwrap_or_else(|error| panic!("{name}.1: {error}"))
    };
    is_man_page(&read("vsr"), "vsr");
    for name in subcommands() {
        is_man_page(&read(&format!("vsr-{name}")), &format!("vsr-{name}"));
    }
    assert!(
        read("vsr-start").contains("config"),
        "--config in vsr-start.1"
    );
}

/// A config file in a temporary directory.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vsr.toml");
    std::fs::write(&path, text).expect("write the config file");
    (dir, path)
}

/// `vsr start --check-config` with `args` and `env`: its `key = value  (origin)` lines.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let mut all = vec!["start", "--check-config"];
    all.extend_from_slice(args);
    let output = vsr_env(&all, env);
    let text = stdout(&output);
    assert!(output.status.success(), "{}{}", text, stderr(&output));
    assert!(text.ends_with("configuration OK\n"), "{text}");
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(" = ")?;
            let (value, origin) = rest.split_once("  (")?;
            let origin = origin.strip_suffix(')')?;
            Some((key.to_owned(), value.to_owned(), origin.to_owned()))
        })
        .collect()
}

/// The value and origin of `key` among `settings`.
fn setting<'a>(settings: &'a [(String, String, String)], key: &str) -> (&'a str, &'a str) {
    settings
        .iter()
        .find(|(name, ..)| name == key)
        .map(|(_, value, origin)| (value.as_str(), origin.as_str()))
        .unwrap_or_else(|| panic!("no {key} in {settings:?}"))
}

const CONFIG: &str = r#"
cluster = 7
addresses = ["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"]
insecure = true
data = "/var/lib/vsr/data"
checkpoint-interval = 100
checkpoint-disk-share = 30
"#;

#[test]
fn config_values_yield_to_the_environment_and_the_command_line() {
    let (_dir, path) = config_file(CONFIG);
    let file = path.to_str().expect("utf-8 path");
    let from_file = format!("config file {file}");
    let settings = check_config(
        &[
            "--config",
            file,
            "--checkpoint-interval=200",
            "--cluster=11",
        ],
        &[("VSR_CLUSTER", "9")],
    );
    assert_eq!(setting(&settings, "cluster"), ("11", "command line"));
    assert_eq!(
        setting(&settings, "checkpoint-interval"),
        ("200", "command line")
    );
    assert_eq!(
        setting(&settings, "checkpoint-disk-share"),
        ("30", from_file.as_str())
    );
    assert_eq!(setting(&settings, "checkpoint-log-bytes").1, "default");
    assert_eq!(
        setting(&settings, "addresses"),
        (
            "127.0.0.1:3001,127.0.0.1:3002,127.0.0.1:3003",
            from_file.as_str()
        )
    );
    assert_eq!(
        setting(&settings, "data"),
        ("/var/lib/vsr/data", from_file.as_str())
    );
    // The environment over the file, and VSR_CONFIG for the file.
    let settings = check_config(&[], &[("VSR_CONFIG", file), ("VSR_CLUSTER", "9")]);
    assert_eq!(
        setting(&settings, "cluster"),
        ("9", "environment VSR_CLUSTER")
    );
    assert_eq!(
        setting(&settings, "checkpoint-interval"),
        ("100", from_file.as_str())
    );
    // A flag given elsewhere beats the file's conflicting one: --tls over `insecure = true`.
    let settings = check_config(&["--config", file, "--tls=/etc/vsr/tls"], &[]);
    assert_eq!(setting(&settings, "tls"), ("/etc/vsr/tls", "command line"));
    assert_eq!(setting(&settings, "insecure"), ("false", "default"));
}

/// Asserts `vsr start --config` of a file holding `text` fails with one line holding every
/// one of `contains`.
fn config_refused(text: &str, contains: &[&str]) {
    let (_dir, path) = config_file(text);
    let file = path.to_str().expect("utf-8 path");
    let output = vsr(&["start", "--config", file]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(&format!("error: config file {file}: ")),
        "{message}"
    );
    for part in contains {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert!(!message.contains("panicked"), "{message}");
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    config_refused(
        &format!("{CONFIG}metrics-address = \"127.0.0.1:9100\"\n"),
        &["unknown key `metrics-address`", "metrics, "],
    );
    config_refused(
        "checkpoint-interval = \"often\"\n",
        &["key `checkpoint-interval`", "often"],
    );
    config_refused(
        "addresses = 3001\n",
        &["key `addresses`: expected an array of strings, found integer 3001"],
    );
    config_refused(
        "insecure = \"yes\"\n",
        &["key `insecure`: expected true or false"],
    );
    config_refused("metrics = 9100\n", &["key `metrics`", "host:port"]);
    config_refused(
        "log-format = \"xml\"\n",
        &["key `log-format`", "text, json"],
    );
    config_refused(
        "tls = \"/t\"\ninsecure = true\n",
        &["keys `insecure` and `tls` cannot be used together"],
    );
    config_refused("cluster = 7\naddresses = [\n", &["line 2: not valid TOML"]);
    let output = vsr(&["start", "--config", "/nonexistent/vsr.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output)
            .starts_with("error: config file /nonexistent/vsr.toml: cannot read it: No such file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_replica_runs_from_its_config_file() {
    let mut cluster = Cluster::format(1);
    let (_dir, path) = config_file(&format!(
        "cluster = {CLUSTER}\naddresses = [\"{}\"]\nmetrics = \"{}\"\ntls = \"{}\"\n\
         data = \"{}\"\ncheckpoint-interval = 4096\n",
        cluster.addresses[0],
        cluster.metrics[0],
        cluster.tls_dir().display(),
        cluster.data_dir(0).display(),
    ));
    cluster.restart_with(0, |command| {
        *command = Command::new(env!("CARGO_BIN_EXE_vsr"));
        clear_env(command)
            .args([
                "start",
                "--exit-with-parent",
                &std::process::id().to_string(),
            ])
            .env("VSR_CONFIG", &path);
    });
    assert_eq!(cluster.run(&["put", "k", "from-config"]), "OK");
    assert_eq!(cluster.run(&["get", "k"]), "from-config");
}

/// Starts a formatted one-replica cluster with `--log-format json` and `rust_log`, writes,
/// stops it with SIGTERM and returns its log lines, each parsed as JSON.
fn json_log(rust_log: Option<&str>) -> Vec<serde_json::Value> {
    let mut cluster = Cluster::format(1);
    cluster.restart_with(0, |command| {
        command.arg("--log-format=json").env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
    });
    assert_eq!(cluster.run(&["put", "k", "v"]), "OK");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(cluster.pid(0)).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let exit = cluster.wait_exit(0, Duration::from_secs(10));
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");
    let log = cluster.log(0);
    log.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}\n{log}"))
        })
        .collect()
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a str {
    line[name].as_str().unwrap_or_default()
}

#[test]
fn json_logs_are_one_object_a_line_and_rust_log_filters_them() {
    let lines = json_log(None);
    assert!(
        lines.iter().all(|line| !field(line, "timestamp").is_empty()
            && !field(line, "level").is_empty()
            && !field(line, "target").is_empty()),
        "{lines:?}"
    );
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"listening"), "{messages:?}");
    assert!(messages.contains(&"SIGTERM: shutting down"), "{messages:?}");
    assert!(messages.contains(&"stopped"), "{messages:?}");
    let lines = json_log(Some("vsr::start=info"));
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|line| field(line, "target") == "vsr::start"),
        "{lines:?}"
    );
}

/// The repository's `deploy/` directory.
fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name)
}

/// `systemd-analyze verify` of the unit `text` (as `vsr.service`, its ExecStart binary the
/// built `vsr`): its combined output if it found anything, or `None`.
fn verify_unit(text: &str) -> Option<String> {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|output| output.status.success()),
        "systemd-analyze is missing: install systemd (apt-get install -y systemd) to check \
         deploy/vsr.service"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("vsr.service");
    let text = text.replace(
        "ExecStart=/usr/bin/vsr ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_vsr")),
    );
    std::fs::write(&unit, text).expect("write the unit");
    // --man=no: the Documentation= pages are installed with the binary, not here.
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let report = format!("{}{}", stdout(&output), stderr(&output));
    (!output.status.success() || !report.trim().is_empty()).then_some(report)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(deploy("vsr.service")).expect("deploy/vsr.service");
    assert_eq!(verify_unit(&unit), None);
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for directive in [
        "ExecStart=/usr/bin/vsr start --config /etc/vsr/vsr.toml",
        "User=vsr",
        "StateDirectory=vsr",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
    ] {
        assert!(
            lines.contains(&directive),
            "{directive} in deploy/vsr.service"
        );
    }
    assert!(lines.iter().any(|line| line.starts_with("LimitNOFILE=")));
    // The check can fail: a misspelled directive and a missing binary are both reported.
    let misspelled = unit.replace("ProtectSystem=", "ProtectSystm=");
    let report = verify_unit(&misspelled).expect("a misspelled directive is reported");
    assert!(report.contains("ProtectSystm"), "{report}");
    let missing = unit.replace("ExecStart=/usr/bin/vsr ", "ExecStart=/nonexistent/vsr ");
    assert!(
        verify_unit(&missing).is_some(),
        "a missing binary is reported"
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = deploy("vsr.toml.example");
    let settings = check_config(&["--config", example.to_str().expect("utf-8 path")], &[]);
    let from_file = format!("config file {}", example.display());
    for key in [
        "cluster",
        "addresses",
        "tls",
        "metrics",
        "data",
        "checkpoint-interval",
    ] {
        assert_eq!(setting(&settings, key).1, from_file, "{key}");
    }
    assert_eq!(setting(&settings, "tls").0, "/etc/vsr/tls");
    let unit = std::fs::read_to_string(deploy("vsr.service")).expect("deploy/vsr.service");
    assert!(
        unit.contains("vsr.toml.example"),
        "the unit points to the example"
    );
}
