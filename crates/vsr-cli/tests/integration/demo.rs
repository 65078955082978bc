//! `vsr demo` end to end: a local cluster of child processes through a SIGKILLed primary,
//! no acknowledged write lost, nothing left behind.

use std::process::Command;
use std::time::{Duration, Instant};

/// The demo's directory, from its first line (`starting 3 replicas in DIR (cluster ...)`).
fn directory_in(first_line: &str) -> Option<&str> {
    first_line
        .strip_prefix("starting 3 replicas in ")
        .and_then(|rest| rest.split(" (cluster").next())
}

/// The pid in a replica's line (`  replica i: pid N, ...`), if it has one.
fn pid_in(line: &str) -> Option<&str> {
    line.split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
}

#[test]
fn demo_loses_no_write_and_cleans_up() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .arg("demo")
        .output()
        .expect("vsr demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "{stdout}");
    for expected in [
        "killed primary replica ",
        "view change: replica ",
        "restarted replica ",
        " caught up",
        "  writes lost:         0",
        "OK: every acknowledged write survived",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    // The processes and the directory are gone.
    let directory = stdout
        .lines()
        .next()
        .and_then(directory_in)
        .expect("the first line names the directory");
    assert!(
        !std::path::Path::new(directory).exists(),
        "{directory} removed"
    );
    for line in stdout.lines().filter(|line| line.contains("pid ")) {
        let pid = pid_in(line).expect("a pid");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| !cmdline.contains(directory)),
            "replica process {pid} is gone"
        );
    }
}

/// Whether process `pid` still runs as a replica of `directory` (a zombie or a reused pid
/// does not).
fn runs_in(pid: &str, directory: &str) -> bool {
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    });
    running
        && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.contains(directory))
}

#[test]
fn a_killed_demo_leaves_no_replica_running() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    /// Kills the demo if the test fails before it does.
    struct Demo(std::process::Child);
    impl Drop for Demo {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_vsr"))
            .arg("demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("vsr demo runs"),
    );
    let mut lines = BufReader::new(demo.0.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first line").expect("utf-8");
    let directory = directory_in(&first)
        .expect("the first line names the directory")
        .to_owned();
    let mut pids = Vec::new();
    while pids.len() < 3 {
        let line = lines.next().expect("a line per replica").expect("utf-8");
        if let Some(pid) = pid_in(&line) {
            pids.push(pid.to_owned());
        }
    }
    demo.0.kill().expect("SIGKILL the demo");
    demo.0.wait().expect("reap the demo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|pid| runs_in(pid, &directory)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<&String> = pids.iter().filter(|pid| runs_in(pid, &directory)).collect();
    // Clean up whatever the killed demo could not, before judging.
    for pid in &left {
        if let Ok(pid) = pid.parse() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&directory);
    assert!(left.is_empty(), "replicas {left:?} outlived their demo");
}
