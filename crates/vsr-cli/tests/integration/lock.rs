//! The data directory lock: a second `vsr start` or a `vsr format` on the directory of a
//! running replica exits at once with an error naming that replica's process id, and the
//! replica and its data are untouched.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{CLUSTER, Cluster, stderr, vsr};

/// How long a refused process may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Asserts that `output` is a failure whose stderr has an `error:` line naming the lock held
/// by process `pid`.
fn refused_by(output: &Output, pid: u32) {
    assert!(!output.status.success(), "{}", stderr(output));
    let text = stderr(output);
    let line = text
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert!(line.contains(&format!("in use by process {pid}")), "{line}");
}

#[test]
fn a_second_start_on_a_running_replicas_directory_exits_naming_its_pid() {
    let mut cluster = Cluster::start(1);
    assert_eq!(cluster.run(&["put", "a", "1"]), "OK");
    let pid = cluster.pid(0);

    let started = Instant::now();
    let mut second = cluster
        .start_command(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vsr start runs");
    loop {
        if second.try_wait().expect("try_wait").is_some() {
            break;
        }
        if started.elapsed() > REFUSAL_TIMEOUT {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second vsr start on a held directory kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // It exited: this collects its stderr and the status already reaped.
    let output = second.wait_with_output().expect("output");
    refused_by(&output, pid);

    assert!(cluster.running(0), "the first replica still runs");
    assert_eq!(cluster.run(&["put", "b", "2"]), "OK");
    assert_eq!(cluster.run(&["get", "a"]), "1");
}

#[test]
fn format_on_a_running_replicas_directory_fails_and_leaves_its_data() {
    let mut cluster = Cluster::start(1);
    assert_eq!(cluster.run(&["put", "a", "1"]), "OK");
    let pid = cluster.pid(0);
    let path = cluster.data_dir(0);
    let path = path.to_str().expect("utf-8 path");

    for recover in [false, true] {
        let mut args = vec![
            "format".to_owned(),
            format!("--cluster={CLUSTER}"),
            "--replica=0".to_owned(),
            "--replica-count=1".to_owned(),
        ];
        if recover {
            args.push("--recover".to_owned());
        }
        args.push(path.to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let output = vsr(&args);
        assert!(started.elapsed() < REFUSAL_TIMEOUT);
        refused_by(&output, pid);
    }

    assert!(cluster.running(0), "the replica still runs");
    assert_eq!(cluster.run(&["put", "b", "2"]), "OK");
    // What it acknowledged is on disk: a restart from the directory has it all.
    cluster.kill(0);
    cluster.restart(0);
    assert_eq!(cluster.run(&["get", "a"]), "1");
    assert_eq!(cluster.run(&["get", "b"]), "2");
}
