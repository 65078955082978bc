//! Mutual TLS from the command line: secure by default, `vsr certs`, and certificates rotated
//! on SIGHUP without a restart.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{CLUSTER, Cluster, stderr, vsr};

#[test]
fn start_and_client_need_tls_or_insecure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_str().expect("utf-8");
    for args in [
        vec!["start", "--addresses", "127.0.0.1:1", path],
        vec!["client", "--addresses", "127.0.0.1:1", "get", "k"],
    ] {
        let output = vsr(&args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = stderr(&output);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ")
                && stderr.contains("--tls DIR")
                && stderr.contains("--insecure"),
            "{stderr}"
        );
    }
    // Both at once is a usage error.
    let output = vsr(&[
        "start",
        "--insecure",
        "--tls",
        path,
        "--addresses",
        "127.0.0.1:1",
        path,
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--insecure"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn certs_refuses_bad_names_and_counts_and_another_clusters_authority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tls");
    let path = path.to_str().expect("utf-8");
    let certs = |extra: &[&str]| {
        let mut args = vec!["certs", "--cluster", "7", "--replica-count", "3"];
        args.extend_from_slice(extra);
        args.push(path);
        vsr(&args)
    };
    let output = certs(&["--client", "Bad Name"]);
    assert!(
        stderr(&output).contains("bad holder name"),
        "{}",
        stderr(&output)
    );
    let output = vsr(&["certs", "--cluster", "7", "--replica-count", "4", path]);
    assert!(
        stderr(&output).contains("odd number"),
        "{}",
        stderr(&output)
    );
    let output = certs(&["--client", "alice", "--operator", "root"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listed = String::from_utf8_lossy(&output.stdout);
    for file in [
        "ca.pem",
        "ca.key",
        "replica-2.key",
        "client-alice.pem",
        "operator-root.key",
    ] {
        assert!(listed.contains(file), "{listed}");
    }
    let output = vsr(&["certs", "--cluster", "8", "--replica-count", "3", path]);
    assert!(
        stderr(&output).contains("another cluster"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn certificates_rotate_on_sighup_without_a_restart() {
    let mut cluster = Cluster::start(1);
    assert_eq!(cluster.run(&["put", "k", "v1"]), "OK");
    // A new authority and certificates, written elsewhere: the replica does not trust them yet.
    let fresh = tempfile::tempdir().expect("temp dir");
    let output = vsr(&[
        "certs",
        &format!("--cluster={CLUSTER}"),
        "--replica-count=1",
        "--client=test",
        fresh.path().to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let fresh_flag = [format!("--tls={}", fresh.path().display())];
    let fresh_client = |args: &[&str]| {
        let mut all = vec!["--timeout=1s"];
        all.extend_from_slice(args);
        cluster.client_with(&fresh_flag, &all)
    };
    let refused = fresh_client(&["get", "k"]);
    assert!(
        !refused.status.success(),
        "the old authority refuses the new client"
    );
    // Rotate: the new files replace the old, then SIGHUP.
    for entry in std::fs::read_dir(fresh.path()).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), cluster.tls_dir().join(entry.file_name())).expect("copy");
    }
    let pid = i32::try_from(cluster.pid(0)).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGHUP).expect("SIGHUP");
    let started = Instant::now();
    while !cluster.log(0).contains("reloaded the TLS certificates") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            cluster.log(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = fresh_client(&["get", "k"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "v1");
    assert!(cluster.running(0), "the replica was not restarted");
    // A bad reload keeps the certificates in use.
    std::fs::write(cluster.tls_dir().join("replica-0.pem"), b"garbage").expect("write");
    kill(Pid::from_raw(pid), Signal::SIGHUP).expect("SIGHUP");
    let started = Instant::now();
    while !cluster
        .log(0)
        .contains("cannot reload the TLS certificates")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            cluster.log(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cluster.run(&["put", "k", "v2"]), "OK");
}
