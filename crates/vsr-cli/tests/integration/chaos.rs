//! `vsr chaos` end to end: a short run on real processes passes with a verdict, leaves no
//! process or file behind, and writes a history the simulator's schema reads; bad flags are
//! refused with one clear line before anything starts.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vsr_sim::history::History;

fn chaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vsr"))
        .arg("chaos")
        .args(args)
        .output()
        .expect("vsr chaos runs")
}

/// The directory the run names in its "data and logs in" line.
fn data_dir(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("data and logs in "))
        .expect("the run names its directory")
        .to_owned()
}

/// The pids of the replicas the run started.
fn pids(stdout: &str) -> Vec<u32> {
    stdout
        .lines()
        .filter_map(|line| line.split(": pid ").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse().ok())
        .collect()
}

#[test]
fn a_short_run_passes_cleans_up_and_writes_its_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history_path = dir.path().join("history.jsonl");
    let started = Instant::now();
    let output = chaos(&[
        "--duration",
        "15",
        "--seed",
        "11",
        "--history",
        history_path.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(120), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[lines.len() - 2], "linearizable: yes", "{stdout}");
    assert_eq!(
        lines[lines.len() - 1],
        "lost acknowledged writes: 0",
        "{stdout}"
    );
    for expected in [
        "seed 11",
        "faults injected: ",
        "definite outcome: ",
        "replicas converged: yes",
        "progress: a write acknowledged",
        "partition mode: mixed",
        "result: PASS",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    // The unavailability line comes before the verdict, with two decimals.
    let unavailable = lines
        .iter()
        .position(|line| line.starts_with("longest unavailability after a heal: "))
        .expect("the unavailability line");
    let verdict = lines
        .iter()
        .position(|line| line.starts_with("result: "))
        .expect("the result line");
    assert!(unavailable < verdict, "{stdout}");
    let seconds = lines[unavailable]
        .strip_prefix("longest unavailability after a heal: ")
        .and_then(|rest| rest.strip_suffix(" s"))
        .and_then(|number| number.parse::<f64>().ok())
        .expect("a number of seconds");
    assert!(seconds <= 5.0, "{stdout}");
    let history = std::fs::read_to_string(&history_path).expect("the history file");
    let history = History::from_json_lines(&history).expect("the simulator's schema");
    assert!(history.ops.len() > 100, "{} operations", history.ops.len());
    assert!(history.ops.iter().any(|op| op.key == "progress"));
    // Nothing is left behind: the directory and the replica processes are gone.
    let directory = data_dir(&stdout);
    assert!(!Path::new(&directory).exists(), "{directory} removed");
    let pids = pids(&stdout);
    assert_eq!(pids.len(), 3, "{stdout}");
    for pid in pids {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !cmdline.contains(&directory),
            "replica process {pid} is gone"
        );
    }
}

#[test]
fn bad_flags_are_refused_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--replicas", "4"], "use 3, 5 or 7"),
        (&["--replicas", "1"], "use 3, 5 or 7"),
        (&["--replicas", "many"], "use 3, 5 or 7"),
        (&["--duration", "0"], "at least 5 s"),
        (&["--duration", "soon"], "is not a duration"),
        (&["--duration", "48h"], "is not a duration"),
        (&["--seed=-1"], "--seed"),
        (&["--seed", "abc"], "--seed"),
        (&["--clients", "0"], "--clients"),
        (&["--clients", "33"], "--clients"),
        (&["--partition-mode", "sideways"], "--partition-mode"),
        (&["--max-unavailable", "0"], "at least 100ms"),
        (&["--max-unavailable", "1h"], "is not a duration"),
        (&["--max-unavailable", "11m"], "at most 10m"),
        (&["--frobnicate"], "unexpected argument"),
        (
            &["--history", "/nonexistent-directory/history.jsonl"],
            "cannot create the history file",
        ),
    ];
    for (args, expected) in cases {
        let started = Instant::now();
        let output = chaos(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: {expected:?} in {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}: nothing runs");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
    }
}

/// A `vsr chaos` run in progress, its output read line by line.
struct Running {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    seen: String,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_vsr"))
            .arg("chaos")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vsr chaos starts");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdout,
            seen: String::new(),
        }
    }

    /// Reads lines until one contains `marker` (or the output ends).
    fn read_until(&mut self, marker: &str) {
        use std::io::BufRead;
        while !self.seen.contains(marker) {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).expect("read") == 0 {
                break;
            }
            self.seen.push_str(&line);
        }
    }

    /// Waits for the exit; returns the exit code, all of stdout and all of stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        use std::io::Read;
        let status = self.child.wait().expect("vsr chaos exits");
        self.stdout
            .read_to_string(&mut self.seen)
            .expect("read the rest");
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        (status.code(), self.seen, stderr)
    }
}

#[test]
fn an_interrupted_run_stops_every_replica_and_removes_its_files() {
    let mut run = Running::start(&["--duration", "120", "--seed", "5"]);
    // Up to the first fault, so processes may be paused or partitioned when the signal comes.
    run.read_until("] ");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(run.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let started = Instant::now();
    let (code, seen, stderr) = run.finish();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(code, Some(2), "{seen}\n{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let directory = data_dir(&seen);
    assert!(!Path::new(&directory).exists(), "{directory} removed");
    for pid in pids(&seen) {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !cmdline.contains(&directory),
            "replica process {pid} is gone"
        );
    }
}

#[test]
fn a_replica_that_dies_unasked_fails_the_run() {
    let mut run = Running::start(&["--duration", "10", "--seed", "3"]);
    // The first fault comes at least 2 s after the primary line: kill replica 0 before it, so
    // the nemesis has not stopped or replaced it.
    run.read_until(" is primary of view ");
    let victim = pids(&run.seen)[0];
    let pid = nix::unistd::Pid::from_raw(i32::try_from(victim).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let (code, seen, stderr) = run.finish();
    assert_eq!(code, Some(1), "{seen}\n{stderr}");
    assert!(seen.contains("CRASH: replica 0 exited by itself"), "{seen}");
    assert!(seen.contains("result: FAIL"), "{seen}");
    assert!(stderr.contains("replica 0 exited by itself"), "{stderr}");
    // The rest of the verdict still comes: the crash is the only failure.
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[lines.len() - 2], "linearizable: yes", "{seen}");
    assert_eq!(
        lines[lines.len() - 1],
        "lost acknowledged writes: 0",
        "{seen}"
    );
    assert!(!Path::new(&data_dir(&seen)).exists());
}
