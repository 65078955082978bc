//! Operations: the Prometheus configuration and alert rules in `deploy/` pass promtool's checks
//! and their own unit tests (which fail when a rule is broken), and the metrics that the rules
//! and docs/operations.md name are the ones a real replica exports, each documented with its
//! type, so neither can drift from the code; promtool also lints what the replica exports.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Cluster, stderr, stdout};

/// A file of the repository, by its path from the root.
fn repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// `promtool ARGS` in `dir`; fails the test, saying how to install it, if it is missing.
fn promtool_command(dir: &Path, args: &[&str]) -> Command {
    let version = Command::new("promtool").arg("--version").output();
    assert!(
        version.is_ok_and(|output| output.status.success()),
        "promtool is missing: install Prometheus (apt-get install prometheus) to check \
         deploy/prometheus.yml and deploy/alerts.yml"
    );
    let mut command = Command::new("promtool");
    command.args(args).current_dir(dir);
    command
}

/// Runs `promtool ARGS` in `dir`.
fn promtool(dir: &Path, args: &[&str]) -> Output {
    promtool_command(dir, args).output().expect("promtool runs")
}

/// Runs `promtool ARGS` with `input` on its standard input.
fn promtool_stdin(args: &[&str], input: &str) -> Output {
    let mut child = promtool_command(Path::new("."), args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .expect("write to promtool");
    drop(stdin);
    child.wait_with_output().expect("promtool's output")
}

#[test]
fn the_prometheus_config_and_alert_rules_pass_promtool() {
    let deploy = repository("deploy");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let output = promtool(&deploy, &args);
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            stdout(&output),
            stderr(&output)
        );
    }
}

#[test]
fn the_alert_tests_catch_a_broken_rule() {
    let rules = read(&repository("deploy/alerts.yml"));
    let tests = read(&repository("deploy/alerts.test.yml"));
    // Each slip makes one alert miss what it must catch, or fire on a healthy cluster.
    let slips = [
        (
            "VsrReplicaDown",
            "up{job=~\"vsr.*\"} == 0",
            "up{job=~\"vsr.*\"} == 2",
        ),
        ("VsrNoQuorum", "/ 2) + 1", "/ 2)"),
        (
            "VsrReplicaLagging",
            "vsr_commit_lag{job=~\"vsr.*\"} > 2048",
            "vsr_commit_lag{job=~\"vsr.*\"} > 8192",
        ),
        (
            "VsrReplicaLagging",
            "group_right vsr_commit{job=~\"vsr.*\"}\n          ) > 0",
            "group_right vsr_commit{job=~\"vsr.*\"}\n          ) >= 0",
        ),
        (
            "VsrStorageFaults",
            "kind!=\"wal_torn_tail\"}[15m]) > 0",
            "kind!=\"wal_torn_tail\"}[15m]) > 5",
        ),
        ("VsrFsyncSlow", "[5m])) > 0.1", "[5m])) > 0.5"),
    ];
    for (alert, from, to) in slips {
        assert_eq!(rules.matches(from).count(), 1, "{from:?} in alerts.yml");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("alerts.yml"), rules.replace(from, to)).expect("write");
        std::fs::write(dir.path().join("alerts.test.yml"), &tests).expect("write");
        let output = promtool(dir.path(), &["test", "rules", "alerts.test.yml"]);
        let report = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!output.status.success(), "{alert} with {to:?} passed");
        assert!(report.contains(alert), "{alert} in:\n{report}");
    }
}

/// The metric families of a scrape, by their `# TYPE` lines: name → type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The names of a scrape's samples (`vsr_fsync_seconds_bucket`, `vsr_view`, ...).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names `text` uses: words that start with `vsr_` or `process_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("vsr_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The rows of the metric table in the "## Metrics" section of docs/operations.md: name →
/// type. A row's first cell is the name in backticks, its second the type.
fn documented(markdown: &str) -> BTreeMap<String, String> {
    markdown
        .lines()
        .skip_while(|line| *line != "## Metrics")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| {
            let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// What differs between the families a replica exports and the documented ones.
fn drift(
    exported: &BTreeMap<String, String>,
    documented: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, kind) in exported {
        match documented.get(name) {
            None => problems.push(format!("{name} ({kind}) is exported but not documented")),
            Some(listed) if listed != kind => {
                problems.push(format!("{name} is a {kind}, documented as a {listed}"));
            }
            Some(_) => {}
        }
    }
    for name in documented
        .keys()
        .filter(|name| !exported.contains_key(*name))
    {
        problems.push(format!("{name} is documented but not exported"));
    }
    problems
}

#[test]
fn the_drift_check_reports_each_kind_of_difference() {
    let exported: BTreeMap<String, String> = [("vsr_view", "gauge"), ("vsr_x_total", "counter")]
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .into();
    assert_eq!(drift(&exported, &exported), Vec::<String>::new());
    let table = "# Ops\n\n## Metrics\n\n| metric | type |\n|---|---|\n\
                 | `vsr_view` | counter | ... |\n| `vsr_gone` | gauge |\n\n## Next\n\
                 | `vsr_x_total` | counter |\n";
    let documented = documented(table);
    assert_eq!(documented.len(), 2, "{documented:?}");
    assert_eq!(
        drift(&exported, &documented),
        [
            "vsr_view is a gauge, documented as a counter",
            "vsr_x_total (counter) is exported but not documented",
            "vsr_gone is documented but not exported",
        ]
    );
    let used = metric_names("rate(vsr_fsync_seconds_bucket{job=~\"vsr.*\"}[5m]) / process_max_fds");
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["process_max_fds", "vsr_fsync_seconds_bucket"]
    );
}

#[test]
fn alerts_and_docs_name_exactly_the_metrics_a_replica_exports() {
    let cluster = Cluster::start(1);
    // Every kind of operation, so each has its latency series.
    for args in [
        &["put", "ops", "1"][..],
        &["get", "ops"],
        &["scan", "o"],
        &["cas", "ops", "1", "2"],
        &["del", "ops"],
    ] {
        cluster.run(args);
    }
    // The state's size is published by the event loop's next turn.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = cluster.scrape(0).expect("the replica's metrics");
        if text.contains("vsr_state_keys") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let exported = families(&text);
    let samples = sample_names(&text);
    let lint = promtool_stdin(&["check", "metrics"], &text);
    assert!(
        lint.status.success(),
        "promtool check metrics:\n{}{}",
        stdout(&lint),
        stderr(&lint)
    );
    assert!(
        samples.contains("vsr_fsync_seconds_bucket") && samples.contains("vsr_state_keys"),
        "{text}"
    );

    let rules = read(&repository("deploy/alerts.yml"));
    let used = metric_names(&rules);
    assert!(used.len() >= 10, "{used:?}");
    let unknown: Vec<&String> = used
        .iter()
        .filter(|name| !samples.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "alerts.yml uses {unknown:?}, which no replica exports"
    );

    let mut documented = documented(&read(&repository("docs/operations.md")));
    assert!(
        documented.len() >= 30,
        "the table in docs/operations.md: {documented:?}"
    );
    if !cfg!(target_os = "linux") {
        // The process metrics are read from Linux's /proc.
        documented.retain(|name, _| !name.starts_with("process_"));
    }
    assert_eq!(drift(&exported, &documented), Vec::<String>::new());
}
