//! Runs the built `vsr` binary as separate processes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

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

/// `vsr start --insecure` of a one-replica cluster at `path`: how it fails.
fn start_at(path: &std::path::Path) -> Output {
    vsr(&[
        "start",
        "--insecure",
        "--addresses",
        "127.0.0.1:1",
        path.to_str().unwrap(),
    ])
}

#[test]
fn a_missing_data_path_is_one_line() {
    let dir = temp_dir();
    let path = dir.path().join("missing");
    let output = start_at(&path);
    fails_in_one_line(&output, "does not exist");
    // A directory that holds no vsr data.
    let output = start_at(dir.path());
    fails_in_one_line(&output, "no vsr data");
}

/// The advice of a missing or unreadable superblock: `vsr format --recover`, when, and why not
/// plain `vsr format`.
fn names_format_recover(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "vsr format --recover",
        "data was lost (a new disk, a wiped directory)",
        "Never use plain `vsr format`",
        "writes the cluster acknowledged",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}

#[test]
fn a_missing_superblock_names_format_recover() {
    let dir = temp_dir();
    for path in [dir.path().to_owned(), dir.path().join("missing")] {
        let output = start_at(&path);
        fails_in_one_line(&output, "check the path");
        names_format_recover(&output);
    }
    // A superblock file that is not vsr's.
    std::fs::write(dir.path().join("superblock"), vec![0x5a; 64 * 1024]).unwrap();
    let output = start_at(dir.path());
    fails_in_one_line(&output, "no vsr data");
    names_format_recover(&output);
}

#[test]
fn format_refuses_a_file_with_a_clear_message() {
    let dir = temp_dir();
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let output = format(&file, "5");
    fails_in_one_line(&output, "data is a file, not a directory");
    fails_in_one_line(
        &output,
        "give format a directory path (it is created if missing)",
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("fix the disk"));
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn format_refuses_a_directory_holding_other_files() {
    let dir = temp_dir();
    for name in ["notes.txt", "b", "c", "d"] {
        std::fs::write(dir.path().join(name), name).unwrap();
    }
    std::fs::create_dir(dir.path().join("a")).unwrap();
    let output = format(dir.path(), "5");
    fails_in_one_line(
        &output,
        "is not empty: it holds \"a\", \"b\", \"c\", and 2 more",
    );
    fails_in_one_line(&output, "give format an empty or new directory");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["a", "b", "c", "d", "notes.txt"],
        "nothing was written"
    );
    // vsr data and another file: the existing refusal.
    let data = temp_dir();
    assert!(format(data.path(), "5").status.success());
    std::fs::write(data.path().join("notes.txt"), b"notes").unwrap();
    fails_in_one_line(&format(data.path(), "5"), "already holds vsr data");
}

#[test]
fn format_accepts_a_directory_holding_only_a_stale_lock() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("LOCK"), b"4000000000\n").unwrap();
    let output = format(dir.path(), "5");
    assert!(output.status.success(), "{output:?}");
}

/// `vsr start` on a formatted one-replica directory with these extra arguments, the data
/// directory last.
fn start_formatted(extra: &[&str]) -> Output {
    let dir = temp_dir();
    assert!(format(dir.path(), "5").status.success());
    let mut args = vec!["start", "--insecure", "--cluster", "5"];
    args.extend_from_slice(extra);
    args.push(dir.path().to_str().unwrap());
    vsr(&args)
}

#[test]
fn duplicate_addresses_are_refused() {
    let output = start_formatted(&["--addresses", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:1"]);
    fails_in_one_line(
        &output,
        "--addresses gives 127.0.0.1:1 for both replica 0 and replica 2",
    );
    fails_in_one_line(&output, "entries 1 and 3");
    // The same socket address, written two ways.
    let output = start_formatted(&["--addresses", "localhost:1,127.0.0.1:2,127.0.0.1:1"]);
    fails_in_one_line(
        &output,
        "--addresses gives localhost:1 for replica 0 and 127.0.0.1:1 for replica 2, which both \
         resolve to 127.0.0.1:1",
    );
    for command in [
        &["client", "--addresses", "h:1,h:2,h:2", "get", "k"][..],
        &["bench", "--addresses", "h:1,h:1,h:2"][..],
    ] {
        let output = vsr(command);
        fails_in_one_line(&output, "--addresses gives h:");
        fails_in_one_line(&output, "every replica needs its own host:port");
    }
    // A usage error of `vsr client` exits with 64.
    assert_eq!(
        vsr(&["client", "--addresses", "h:1,h:1", "get", "k"])
            .status
            .code(),
        Some(64)
    );
}

#[test]
fn metrics_takes_a_host_name_like_addresses() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = temp_dir();
    assert!(format(dir.path(), "5").status.success());
    let mut replica = Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args([
            "start",
            "--insecure",
            "--cluster",
            "5",
            "--addresses",
            &format!("localhost:{listen}"),
            "--metrics",
            &format!("localhost:{port}"),
            &format!("--exit-with-parent={}", std::process::id()),
            dir.path().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("vsr start runs");
    let served = scrape_within(&format!("localhost:{port}"), Duration::from_secs(20));
    let _ = replica.kill();
    let _ = replica.wait();
    assert!(
        served.as_deref().is_some_and(|page| page.contains("vsr_")),
        "metrics at localhost:{port}: {served:?}"
    );
    let output = start_formatted(&[
        "--addresses",
        "localhost:1",
        "--metrics",
        "no-such-host.invalid:9100",
    ]);
    fails_in_one_line(
        &output,
        "--metrics no-such-host.invalid:9100: cannot resolve the host name",
    );
    let output = start_formatted(&["--addresses", "localhost:1", "--metrics", "9100"]);
    fails_in_one_line(&output, "not an address of the form host:port");
}

/// The page at `http://ADDRESS/metrics`, polled until it answers or `timeout` passes.
fn scrape_within(address: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            let mut page = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut page).is_ok()
            {
                return Some(page);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
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
    let output = start_at(dir.path());
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
