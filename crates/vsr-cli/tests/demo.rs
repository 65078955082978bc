//! `vsr demo` end to end: a local cluster of child processes through a SIGKILLed primary,
//! no acknowledged write lost, nothing left behind.

use std::process::Command;
use std::time::{Duration, Instant};

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
        .and_then(|line| line.strip_prefix("starting 3 replicas in "))
        .and_then(|rest| rest.split(" (cluster").next())
        .expect("the first line names the directory");
    assert!(
        !std::path::Path::new(directory).exists(),
        "{directory} removed"
    );
    for line in stdout.lines().filter(|line| line.contains("pid ")) {
        let pid = line
            .split("pid ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .expect("a pid");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| !cmdline.contains(directory)),
            "replica process {pid} is gone"
        );
    }
}
