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
