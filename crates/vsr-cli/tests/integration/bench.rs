//! `vsr bench` end to end: a short run on its own local cluster and one against an existing
//! cluster print the JSON keys the performance issue names; a run that wipes a backup midway
//! reports its rejoin and the replicas' memory; bad flags give one error line. No timing is
//! asserted: these machines are shared.

use std::process::{Command, Output, Stdio};

use crate::common::{CLUSTER, Cluster, stderr, stdout, vsr};

/// Keys every `--json` result carries.
const KEYS: [&str; 6] = [
    "ops_per_sec",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "server_cpu_us_per_op",
];

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vsr"))
        .arg("bench")
        .args(args)
        .env_remove("VSR_CLUSTER")
        .env_remove("VSR_ADDRESSES")
        .stdin(Stdio::null())
        .output()
        .expect("vsr bench runs")
}

/// The one JSON object on stdout.
fn result(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(output),
        stderr(output)
    );
    let text = stdout(output);
    assert_eq!(text.lines().count(), 1, "one line of JSON: {text}");
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for key in KEYS {
        assert!(value.get(key).is_some(), "{key} in {text}");
    }
    assert!(
        value["ops_per_sec"].as_f64().is_some_and(|ops| ops > 0.0),
        "{text}"
    );
    assert_eq!(value["failed"].as_u64(), Some(0), "{text}");
    assert_eq!(value["succeeded"].as_u64(), Some(200), "{text}");
    value
}

#[test]
fn bench_on_a_local_cluster_reports_json_and_cleans_up() {
    let parent = tempfile::tempdir().expect("temp dir");
    let data_dir = parent.path().to_str().expect("utf-8 path");
    let output = bench(&[
        "--clients",
        "4",
        "--requests",
        "200",
        "--get-ratio",
        "0.5",
        "--keys",
        "300",
        "--fill",
        "--checkpoint-interval",
        "100",
        "--data-dir",
        data_dir,
        "--json",
    ]);
    let value = result(&output);
    assert!(
        value["server_cpu_us_per_op"].as_f64().is_some(),
        "the replicas are ours: {value}"
    );
    assert!(
        stderr(&output).contains("filled 300 keys"),
        "{}",
        stderr(&output)
    );
    // Reads and writes are reported apart; with half of 200 requests each, both have figures.
    let (reads, writes) = (value["reads"].as_u64(), value["writes"].as_u64());
    assert_eq!(reads.zip(writes).map(|(r, w)| r + w), Some(200), "{value}");
    for key in ["read_p50_ms", "read_p99_ms", "write_p50_ms", "write_p99_ms"] {
        assert!(
            value[key].as_f64().is_some_and(|ms| ms > 0.0),
            "{key}: {value}"
        );
    }
    assert!(value["filesystem"].is_string(), "{value}");
    for key in ["peak_rss_mib", "end_rss_mib"] {
        let sizes = value[key].as_array().expect("one size per replica");
        assert_eq!(sizes.len(), 3, "{key}: {value}");
        assert!(
            sizes
                .iter()
                .all(|mib| mib.as_f64().is_some_and(|mib| mib > 0.0)),
            "{key}: {value}"
        );
    }
    for key in ["rejoin_seconds", "rejoin_p99_ms", "before_p99_ms"] {
        assert!(
            value[key].is_null(),
            "{key} without --rejoin-after: {value}"
        );
    }
    assert_removed(parent.path());
}

#[test]
fn bench_wipes_a_backup_and_reports_its_rejoin() {
    let parent = tempfile::tempdir().expect("temp dir");
    let data_dir = parent.path().to_str().expect("utf-8 path");
    // Open loop, so the load lasts 3 s whatever the machine's speed: the kill comes at 1 s.
    let output = bench(&[
        "--insecure",
        "--clients",
        "8",
        "--rate",
        "1000",
        "--requests",
        "3000",
        "--keys",
        "500",
        "--fill",
        "--checkpoint-interval",
        "500",
        "--rejoin-after",
        "1",
        "--data-dir",
        data_dir,
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", stderr(&output));
    let line = |prefix: &str| {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("a {prefix} line in {text}"))
            .to_owned()
    };
    let rejoin = line("rejoin:      replica ");
    assert!(
        rejoin.contains(" back in ") && rejoin.contains(" ms before ("),
        "{rejoin}"
    );
    // The first backup: replica 0 unless it is the primary.
    assert!(
        rejoin.starts_with("rejoin:      replica 0 ")
            || rejoin.starts_with("rejoin:      replica 1 "),
        "{rejoin}"
    );
    let memory = line("memory:      peak RSS r0 ");
    assert!(
        memory.contains(", r2 ") && memory.contains("; at end r0 "),
        "{memory}"
    );
    assert!(
        stderr(&output).contains("wiped its data"),
        "{}",
        stderr(&output)
    );
    assert_removed(parent.path());
}

#[test]
fn bench_on_an_existing_cluster_does_not_measure_its_cpu() {
    let cluster = Cluster::start(3);
    let output = bench(&[
        "--clients",
        "4",
        "--requests",
        "200",
        "--addresses",
        &cluster.address_list(),
        "--cluster",
        &CLUSTER.to_string(),
        &cluster.security_flag(),
        "--json",
    ]);
    let value = result(&output);
    assert!(value["server_cpu_us_per_op"].is_null(), "{value}");
    assert!(
        value["peak_rss_mib"].is_null(),
        "not our processes: {value}"
    );
}

#[test]
fn bad_flags_give_one_error_line() {
    for args in [
        &["--clients", "0"][..],
        &["--requests", "many"],
        &["--get-ratio", "1.5"],
        &["--value-size", "100000"],
        &["--keys", "100000", "--key-size", "4"],
        &["--addresses", "127.0.0.1"],
        &["--cluster", "7"],
        &[
            "--addresses",
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
            "--data-dir",
            ".",
        ],
        &["--timeout", "soon"],
        &["--checkpoint-interval", "0"],
        &[
            "--addresses",
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
            "--checkpoint-interval",
            "100",
        ],
        &["--rejoin-after", "soon"],
        &[
            "--addresses",
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
            "--insecure",
            "--rejoin-after",
            "1",
        ],
    ] {
        let mut full = vec!["bench"];
        full.extend_from_slice(args);
        let output = vsr(&full);
        let error = stderr(&output);
        assert!(!output.status.success(), "{args:?} must fail");
        assert!(stdout(&output).is_empty(), "{args:?}: {}", stdout(&output));
        assert_eq!(error.lines().count(), 1, "{args:?}: one line, got {error}");
        assert!(error.starts_with("error: "), "{args:?}: {error}");
    }
}

/// The bench removed the cluster's directory from `parent`.
fn assert_removed(parent: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(parent)
        .expect("read the data dir")
        .collect();
    assert!(
        left.is_empty(),
        "the cluster's directory is removed: {left:?}"
    );
}
