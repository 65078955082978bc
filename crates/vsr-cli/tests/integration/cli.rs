//! Runs the built `vsr` binary as separate processes.

use std::process::{Command, Output};

fn vsr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(args)
        .output()
        .expect("the vsr binary runs")
}

fn trace_line(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find(|line| line.starts_with("trace "))
        .unwrap_or_else(|| panic!("no trace line in:\n{stdout}"))
        .to_owned()
}

#[test]
fn sim_seed_is_deterministic_across_processes() {
    let first = vsr(&["sim", "--seed", "7"]);
    let second = vsr(&["sim", "--seed", "7"]);
    let trace = trace_line(&first);
    assert_eq!(trace, trace_line(&second));
    assert_eq!(trace.len(), "trace ".len() + 32, "{trace}");
    assert_eq!(first.status.code(), second.status.code());
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn sim_swarm_ends_with_the_totals_line() {
    let output = vsr(&[
        "sim",
        "--seeds",
        "5",
        "--start",
        "100",
        "--no-faults",
        "--threads",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("output");
    let (passed, failed) = last.split_once(" passed, ").expect("`P passed, F failed`");
    let failed = failed
        .strip_suffix(" failed")
        .expect("`P passed, F failed`");
    let (passed, failed): (u64, u64) = (passed.parse().unwrap(), failed.parse().unwrap());
    assert_eq!(passed + failed, 5, "{stdout}");
    assert_eq!(output.status.success(), failed == 0, "{stdout}");
}

#[test]
fn sim_swarm_prints_coverage_before_the_totals_line() {
    let output = vsr(&["sim", "--seeds", "4", "--threads", "2", "--coverage"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let (last, rest) = lines.split_last().expect("output");
    assert!(last.ends_with(" failed"), "{stdout}");
    let coverage: Vec<&str> = rest
        .iter()
        .copied()
        .filter(|line| line.starts_with("coverage "))
        .collect();
    assert_eq!(coverage.len(), vsr::coverage::Mark::ALL.len(), "{stdout}");
    assert_eq!(
        rest[rest.len() - coverage.len()..],
        coverage[..],
        "the coverage lines come last but one"
    );
    for (line, mark) in coverage.iter().zip(vsr::coverage::Mark::ALL) {
        let seeds = line
            .strip_prefix(&format!("coverage {} ", mark.name()))
            .unwrap_or_else(|| panic!("{line} is not the line of {}", mark.name()));
        assert!(seeds.parse::<u64>().expect("a seed count") <= 4, "{line}");
    }
    let without = vsr(&["sim", "--seeds", "4", "--threads", "2"]);
    let kept: Vec<&str> = rest
        .iter()
        .copied()
        .filter(|line| !line.starts_with("coverage ") && !line.starts_with("speed:"))
        .chain([*last])
        .collect();
    let plain = String::from_utf8_lossy(&without.stdout);
    let plain: Vec<&str> = plain
        .lines()
        .filter(|line| !line.starts_with("speed:"))
        .collect();
    assert_eq!(kept, plain, "--coverage only adds lines");
}

#[test]
fn sim_rejects_a_bad_replica_count_in_one_line() {
    let output = vsr(&["sim", "--seed", "1", "--replicas", "4"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --replicas must be 1, 3, 5 or 7"),
        "{stderr}"
    );
}

#[test]
fn sim_writes_the_history_as_json_lines() {
    let path = std::env::temp_dir().join(format!("vsr-cli-history-{}.jsonl", std::process::id()));
    let output = vsr(&[
        "sim",
        "--seed",
        "3",
        "--no-faults",
        "--history",
        path.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("history written");
    std::fs::remove_file(&path).ok();
    let history = vsr_sim::history::History::from_json_lines(&text).expect("valid history");
    assert!(!history.ops.is_empty());
    assert!(text.lines().all(|line| line.starts_with("{\"process\":")));
}

/// Asserts a run failed with exactly one `error: ...` line and no panic.
fn fails_in_one_line(output: &Output, contains: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(contains), "{contains:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vsr-cli-test-")
        .tempdir()
        .expect("temp dir")
}

fn format(dir: &std::path::Path, cluster: &str) -> Output {
    vsr(&[
        "format",
        "--cluster",
        cluster,
        "--replica",
        "0",
        "--replica-count",
        "1",
        dir.to_str().unwrap(),
    ])
}

#[test]
fn an_unknown_flag_is_one_line() {
    fails_in_one_line(&vsr(&["start", "--bogus"]), "--bogus");
    fails_in_one_line(&vsr(&["frobnicate"]), "frobnicate");
}

#[test]
fn a_bad_flag_value_is_one_line() {
    fails_in_one_line(
        &vsr(&["client", "--addresses", "nowhere", "get", "k"]),
        "host:port",
    );
    fails_in_one_line(
        &vsr(&[
            "client",
            "--addresses",
            "127.0.0.1:1",
            "--timeout",
            "soon",
            "get",
            "k",
        ]),
        "duration",
    );
    fails_in_one_line(
        &vsr(&["format", "--replica", "0", "/tmp/x"]),
        "--replica-count",
    );
    for pid in ["0", "-1", "me", ""] {
        fails_in_one_line(
            &vsr(&["start", &format!("--exit-with-parent={pid}"), "/tmp/x"]),
            "--exit-with-parent",
        );
    }
    for interval in ["0", "-1", "lots", "4294967297"] {
        fails_in_one_line(
            &vsr(&[
                "start",
                &format!("--checkpoint-interval={interval}"),
                "/tmp/x",
            ]),
            "--checkpoint-interval",
        );
    }
    let dir = temp_dir();
    let path = dir.path().join("data");
    let output = vsr(&[
        "format",
        "--replica",
        "3",
        "--replica-count",
        "3",
        path.to_str().unwrap(),
    ]);
    fails_in_one_line(&output, "--replica must be below");
    let output = vsr(&[
        "format",
        "--replica",
        "0",
        "--replica-count",
        "2",
        path.to_str().unwrap(),
    ]);
    fails_in_one_line(&output, "1, 3, 5 or 7");
    assert!(!path.exists(), "nothing was created");
}

#[test]
fn a_missing_data_path_is_one_line() {
    let dir = temp_dir();
    let path = dir.path().join("missing");
    let output = vsr(&[
        "start",
        "--insecure",
        "--addresses",
        "127.0.0.1:1",
        path.to_str().unwrap(),
    ]);
    fails_in_one_line(&output, "does not exist");
    // A directory that holds no vsr data.
    let output = vsr(&[
        "start",
        "--insecure",
        "--addresses",
        "127.0.0.1:1",
        dir.path().to_str().unwrap(),
    ]);
    fails_in_one_line(&output, "no vsr data");
}

#[test]
fn another_clusters_data_is_one_line() {
    let dir = temp_dir();
    let output = format(dir.path(), "0x11");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("formatted replica 0 of 1 for cluster 17"),
        "{stdout}"
    );
    let output = vsr(&[
        "start",
        "--insecure",
        "--cluster",
        "0x12",
        "--addresses",
        "127.0.0.1:1",
        dir.path().to_str().unwrap(),
    ]);
    fails_in_one_line(&output, "belongs to cluster 0x11");
    // Without --cluster, the default cluster 0 is another cluster too.
    let output = vsr(&[
        "start",
        "--insecure",
        "--addresses",
        "127.0.0.1:1",
        dir.path().to_str().unwrap(),
    ]);
    fails_in_one_line(&output, "not 0x0");
    // The wrong number of addresses for the data.
    let output = vsr(&[
        "start",
        "--insecure",
        "--cluster",
        "17",
        "--addresses",
        "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
        dir.path().to_str().unwrap(),
    ]);
    fails_in_one_line(&output, "formatted for 1 replicas");
}

#[test]
fn format_refuses_existing_data() {
    let dir = temp_dir();
    assert!(format(dir.path(), "5").status.success());
    fails_in_one_line(&format(dir.path(), "5"), "already holds vsr data");
    fails_in_one_line(&format(dir.path(), "6"), "already holds vsr data");
}

#[test]
fn format_help_warns_against_replacing_a_lost_replica_without_recover() {
    let output = vsr(&["format", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--recover",
        "Never use plain `vsr format`",
        "acknowledged are lost",
    ] {
        assert!(help.contains(expected), "{expected:?} in:\n{help}");
    }
    for command in ["start", "client", "demo"] {
        let output = vsr(&[command, "--help"]);
        assert!(output.status.success(), "{command} --help");
    }
}

#[test]
fn a_recovering_replica_is_formatted() {
    let dir = temp_dir();
    let output = vsr(&[
        "format",
        "--replica",
        "1",
        "--replica-count",
        "3",
        "--recover",
        dir.path().to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("recovering"));
}
