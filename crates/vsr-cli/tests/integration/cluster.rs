//! Real `vsr start` processes on 127.0.0.1 driven by `vsr client`: the commands and their
//! output, a SIGKILLed primary, a restarted replica catching up, the interactive shell, and
//! the errors that say whether a request may have run.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{CLUSTER, Cluster, free_addresses, stderr, stdout, vsr};

#[test]
fn commands_failover_and_restart_lose_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    assert_eq!(cluster.run(&["put", "a", "1"]), "OK");
    assert_eq!(cluster.run(&["get", "a"]), "1");
    assert_eq!(cluster.run(&["get", "missing"]), "(nil)");
    assert_eq!(cluster.run(&["del", "a"]), "OK");
    assert_eq!(cluster.run(&["get", "a"]), "(nil)");
    assert_eq!(cluster.run(&["cas", "c", "(nil)", "x"]), "OK");
    // A cas that did not swap prints FAILED and exits 1.
    let failed = ("FAILED".to_owned(), Some(1));
    assert_eq!(cluster.run_status(&["cas", "c", "(nil)", "y"]), failed);
    assert_eq!(cluster.run_status(&["cas", "c", "wrong", "y"]), failed);
    assert_eq!(cluster.run(&["cas", "c", "x", "y"]), "OK");
    assert_eq!(cluster.run(&["get", "c"]), "y");
    let mut written = Vec::new();
    for i in 0..8 {
        let (key, value) = (format!("before-{i}"), format!("value-{i}"));
        assert_eq!(cluster.run(&["put", &key, &value]), "OK");
        written.push((key, value));
    }

    // SIGKILL the primary: a new one serves within a bounded time.
    let (primary, view) = cluster.wait_primary(None, Duration::from_secs(10));
    cluster.kill(primary);
    let killed = Instant::now();
    assert_eq!(
        cluster.run(&["--timeout=15s", "put", "after-kill", "yes"]),
        "OK"
    );
    written.push(("after-kill".to_owned(), "yes".to_owned()));
    assert!(killed.elapsed() < Duration::from_secs(15));
    let (new_primary, _) = cluster.wait_primary(Some(view), Duration::from_secs(10));
    assert_ne!(new_primary, primary);
    for (key, value) in &written {
        assert_eq!(&cluster.run(&["get", key]), value, "{key} survived");
    }

    // The killed replica restarts from its data directory and catches up.
    cluster.restart(primary);
    assert_eq!(cluster.run(&["put", "after-restart", "yes"]), "OK");
    written.push(("after-restart".to_owned(), "yes".to_owned()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = |index| {
            (
                cluster.metric(index, "vsr_op"),
                cluster.metric(index, "vsr_commit"),
                cluster.metric(index, "vsr_view"),
            )
        };
        let (restarted, reference) = (state(primary), state(new_primary));
        if restarted.1.is_some() && restarted == reference {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica {primary} caught up: {restarted:?} vs {reference:?}\n{}",
            cluster.log(primary)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A one-shot get starts at view 0's primary, replica 0: unless it leads again, it answers
    // with its view and the client goes straight to the new primary. No other replica hears of
    // the get (a retry after a timeout would ask every replica).
    let queries = |cluster: &Cluster| {
        (0..3)
            .map(|index| cluster.metric(index, "vsr_queries_total").unwrap_or(0))
            .collect::<Vec<u64>>()
    };
    let before = queries(&cluster);
    assert_eq!(cluster.run(&["get", "after-restart"]), "yes");
    let after = queries(&cluster);
    let asked: Vec<u64> = (0..3).map(|index| after[index] - before[index]).collect();
    let expected: Vec<u64> = (0..3)
        .map(|index| u64::from(index == 0 || index == new_primary))
        .collect();
    assert_eq!(
        asked, expected,
        "queries per replica, new primary {new_primary}"
    );
    for (key, value) in &written {
        assert_eq!(&cluster.run(&["get", key]), value, "{key} survived");
    }
    for index in 0..3 {
        assert!(cluster.running(index), "replica {index} is alive");
    }
}

#[test]
fn a_lost_replica_formatted_with_recover_rejoins() {
    let mut cluster = Cluster::start(3);
    for i in 0..5 {
        assert_eq!(
            cluster.run(&["put", &format!("k{i}"), &format!("v{i}")]),
            "OK"
        );
    }
    let (primary, _) = cluster.wait_primary(None, Duration::from_secs(10));
    let backups: Vec<usize> = (0..3).filter(|index| *index != primary).collect();
    let (lost, other) = (backups[0], backups[1]);
    // Replica `lost` loses its disk and is replaced the documented way.
    cluster.kill(lost);
    std::fs::remove_dir_all(cluster.data_dir(lost)).expect("wipe");
    assert_eq!(cluster.run(&["put", "while-lost", "yes"]), "OK");
    let path = cluster.data_dir(lost);
    let output = vsr(&[
        "format",
        &format!("--cluster={CLUSTER}"),
        &format!("--replica={lost}"),
        "--replica-count=3",
        "--recover",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    cluster.restart(lost);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster.metric(lost, "vsr_status");
        let commit = cluster.metric(lost, "vsr_commit");
        if status == Some(0) && commit.is_some() && commit == cluster.metric(primary, "vsr_commit")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica {lost} recovered\n{}",
            cluster.log(lost)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // With the other backup gone, the recovered replica is needed for every quorum.
    cluster.kill(other);
    assert_eq!(
        cluster.run(&["--timeout=15s", "put", "after", "recovery"]),
        "OK"
    );
    for i in 0..5 {
        assert_eq!(cluster.run(&["get", &format!("k{i}")]), format!("v{i}"));
    }
    assert_eq!(cluster.run(&["get", "while-lost"]), "yes");
}

#[test]
fn sigterm_stops_a_replica_cleanly_and_it_restarts_with_its_data() {
    let mut cluster = Cluster::start(1);
    assert_eq!(cluster.run(&["put", "k", "v"]), "OK");
    let status = Command::new("kill")
        .args(["-TERM", &cluster.pid(0).to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = cluster.wait_exit(0, Duration::from_secs(10));
    assert!(
        exit.is_some_and(|status| status.success()),
        "{exit:?}\n{}",
        cluster.log(0)
    );
    assert!(cluster.log(0).contains("SIGTERM: shutting down"));
    cluster.restart(0);
    assert_eq!(cluster.run(&["get", "k"]), "v");
}

#[test]
fn shell_reads_piped_commands() {
    let cluster = Cluster::start(1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args([
            "client",
            &format!("--cluster={CLUSTER}"),
            "--addresses",
            &cluster.address_list(),
            &cluster.security_flag(),
            "--tls-identity=client-test",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vsr client runs");
    let script = "put k v1\nget k\n\nput \"two words\" 'x y'\nget \"two words\"\n\
                  get nothing\ncas k v1 v2\ncas k v1 v3\nget k\ndel k\nget k\nbogus\nhelp\n\
                  exit\nget k\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write the script");
    let output = wait_with_timeout(child, Duration::from_secs(30));
    // The script had a usage error (bogus): it exits 64 at its end, after running the rest.
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    let stdout = stdout(&output);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        "OK", "v1", "OK", "x y", "(nil)", "OK", "FAILED", "v2", "OK", "(nil)",
    ];
    assert_eq!(lines[..expected.len()], expected, "{stdout}");
    // `help` lists the commands; nothing runs after `exit`.
    let help = lines[expected.len()..].join("\n");
    for command in [
        "put <key> <value>",
        "get <key>",
        "del <key>",
        "cas <key>",
        "exit",
    ] {
        assert!(help.contains(command), "{help}");
    }
    assert!(
        lines.last().is_some_and(|line| line.starts_with("quote")),
        "{stdout}"
    );
    let stderr = stderr(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "bogus is an error: {stderr}");
}

/// `vsr client --json ARGS` against `cluster`: its stdout and exit status.
fn json(cluster: &Cluster, args: &[&str]) -> (String, Option<i32>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    cluster.run_status(&all)
}

#[test]
fn the_client_exits_by_outcome_and_speaks_json() {
    let cluster = Cluster::start(1);
    // Exit statuses: 0 done (a missing key included), 1 a cas that did not swap, 64 usage.
    assert_eq!(
        cluster.run_status(&["get", "k"]),
        ("(nil)".to_owned(), Some(0))
    );
    assert_eq!(
        cluster.run_status(&["cas", "--expect-absent", "k", "v1"]),
        ("OK".to_owned(), Some(0))
    );
    assert_eq!(
        cluster.run_status(&["cas", "--expect-absent", "k", "v2"]),
        ("FAILED".to_owned(), Some(1))
    );
    for usage in [
        &["cas", "k", "v1"][..],
        &["frobnicate"],
        &["--hex", "get", "zz"],
        &["scan", "--limit", "0"],
        &["put", "k"],
    ] {
        let output = cluster.client(usage);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{usage:?}: {}",
            stderr(&output)
        );
        assert_eq!(stderr(&output).lines().count(), 1, "{usage:?}");
        assert!(stdout(&output).is_empty());
    }
    // --json: one object per command.
    let ok = |text: &str| (text.to_owned(), Some(0));
    assert_eq!(json(&cluster, &["put", "j", "x"]), ok(r#"{"ok":true}"#));
    assert_eq!(json(&cluster, &["get", "j"]), ok(r#"{"value":"x"}"#));
    assert_eq!(json(&cluster, &["get", "none"]), ok(r#"{"value":null}"#));
    assert_eq!(
        json(&cluster, &["cas", "j", "wrong", "y"]),
        (r#"{"swapped":false}"#.to_owned(), Some(1))
    );
    let (usage, status) = json(&cluster, &["cas", "j", "y"]);
    assert_eq!(status, Some(64));
    assert!(usage.contains(r#""executed":"no""#), "{usage}");
}

#[test]
fn the_client_takes_binary_values_in_hex_base64_and_from_stdin() {
    let cluster = Cluster::start(1);
    // A literal (nil) and binary bytes go through --hex; (nil) keeps meaning absent.
    assert_eq!(
        cluster.run_status(&["--hex", "put", "6e696c", "286e696c29"]),
        ("OK".to_owned(), Some(0))
    );
    assert_eq!(
        cluster.run(&["get", "nil"]),
        "(nil)",
        "the value is the text (nil)"
    );
    assert_eq!(cluster.run(&["--hex", "get", "6e696c"]), "286e696c29");
    assert_eq!(cluster.run(&["--hex", "get", "00"]), "(nil)");
    assert_eq!(
        cluster.run_status(&["--hex", "cas", "6e696c", "286e696c29", "00ff"]),
        ("OK".to_owned(), Some(0))
    );
    assert_eq!(cluster.run(&["--base64", "get", "bmls"]), "AP8=");
    assert_eq!(
        json(&cluster, &["get", "nil"]).0,
        r#"{"value_base64":"AP8="}"#,
        "bytes that are not UTF-8 are never mangled"
    );
    // put KEY - reads stdin, as it is.
    let output = cluster.client_fed(
        &["put", "from-stdin", "-"],
        b"two\nlines",
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(cluster.run(&["get", "from-stdin"]), "two\nlines");
}

#[test]
fn scans_list_keys_in_order_by_prefix_across_pages() {
    let cluster = Cluster::start(1);
    // More keys than one page holds (1000).
    let script: String = (0..1005)
        .map(|index| format!("put s/{index:04} {index}\n"))
        .collect();
    let output = cluster.client_fed(&[], script.as_bytes(), Duration::from_secs(120));
    assert!(output.status.success(), "{}", stderr(&output));
    cluster.run(&["put", "t/0", "other prefix"]);
    let listed = cluster.run(&["scan", "s/"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1005);
    assert_eq!(lines[0], "s/0000\t0");
    assert_eq!(lines[1004], "s/1004\t1004");
    assert_eq!(
        cluster.run(&[
            "scan",
            "s/",
            "--start",
            "s/0998",
            "--limit",
            "3",
            "--keys-only"
        ]),
        "s/0998\ns/0999\ns/1000"
    );
    assert_eq!(
        json(&cluster, &["scan", "s/100", "--limit", "2"]).0,
        r#"{"entries":[{"key":"s/1000","value":"1000"},{"key":"s/1001","value":"1001"}],"next":"s/1002"}"#
    );
    assert_eq!(cluster.run(&["scan", "s/1004"]), "s/1004\t1004");
    assert_eq!(cluster.run(&["scan", "nothing-here"]), "");
    assert_eq!(cluster.run(&["scan", "--start", "t/"]), "t/0\tother prefix");
}

#[test]
fn a_wrong_cluster_id_is_reported_as_such_at_once() {
    let cluster = Cluster::start_insecure(3);
    let started = Instant::now();
    let output = vsr(&[
        "client",
        "--cluster=0x4242",
        "--addresses",
        &cluster.address_list(),
        "--insecure",
        "--timeout=30s",
        "put",
        "k",
        "v",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with("error: not executed: wrong cluster"),
        "{stderr}"
    );
    assert!(stderr.contains("0x4242"), "{stderr}");
    assert!(stdout(&output).is_empty());
    // vsr status says so too, for every replica.
    let output = vsr(&[
        "status",
        "--cluster=0x4242",
        "--addresses",
        &cluster.address_list(),
        "--insecure",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = crate::common::stderr(&output);
    assert_eq!(stderr.matches("serves cluster").count(), 3, "{stderr}");
}

#[test]
fn unreachable_cluster_is_reported_as_not_executed() {
    let address = free_addresses(1)[0].to_string();
    let started = Instant::now();
    let output = vsr(&[
        "client",
        "--insecure",
        "--addresses",
        &address,
        "--timeout=300ms",
        "put",
        "k",
        "v",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = stderr(&output);
    assert!(stderr.starts_with("error: not executed"), "{stderr}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn a_cluster_without_quorum_reports_the_outcome_unknown() {
    // A shell registers its session while the cluster is whole; then both backups die, so
    // the next request reaches the primary but can never commit: it may or may not run.
    let mut cluster = Cluster::start(3);
    let (primary, _) = cluster.wait_primary(None, Duration::from_secs(10));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args([
            "client",
            &format!("--cluster={CLUSTER}"),
            "--addresses",
            &cluster.address_list(),
            &cluster.security_flag(),
            "--tls-identity=client-test",
            "--timeout=1s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vsr client runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    // The first put may need a retry while the cluster settles.
    let mut registered = false;
    for _ in 0..5 {
        stdin.write_all(b"put a 1\n").expect("write");
        if lines.recv_timeout(Duration::from_secs(3)).as_deref() == Ok("OK") {
            registered = true;
            break;
        }
    }
    assert!(registered, "the session registered");
    for index in (0..3).filter(|index| *index != primary) {
        cluster.kill(index);
    }
    stdin.write_all(b"put b 2\nexit\n").expect("write");
    drop(stdin);
    let output = wait_with_timeout(child, Duration::from_secs(30));
    let stderr = stderr(&output);
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("error: outcome unknown")),
        "{stderr}"
    );
}

/// Waits for `child` to exit, killing it after `timeout`.
fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}
