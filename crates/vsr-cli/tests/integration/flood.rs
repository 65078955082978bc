//! A flood of idle and byte-at-a-time connections, from many loopback addresses, against
//! every replica while a workload runs: no request fails, a replica restarted during the flood
//! rejoins, and the replicas' memory stays bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::common::{CLUSTER, Cluster, stderr};

/// Connections the flood holds open across the cluster.
const FLOOD: usize = 10_000;
/// Source addresses the flood comes from: 127.0.0.1 and up.
const SOURCES: u8 = 32;
/// Longest the test may run the flood.
const FLOOD_MAX: Duration = Duration::from_secs(180);
/// Replicas' resident memory must stay below this.
const RESIDENT_MAX_KIB: u64 = 512 * 1024;

/// Raises this process's open file limit to its hard limit; returns the limit.
fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

/// A connection from `127.0.0.<source>` to `target`, non-blocking.
fn open(source: u8, target: SocketAddr) -> Option<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    let from = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, source), 0);
    socket.bind(&from.into()).ok()?;
    socket
        .connect_timeout(&target.into(), Duration::from_secs(1))
        .ok()?;
    let stream: TcpStream = socket.into();
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// Holds `FLOOD` connections open until `stop`: the even ones idle, the odd ones sending one
/// byte every half second; any the replicas close are opened again. Counts reopenings.
fn flood(
    targets: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    reopened: Arc<AtomicU64>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let place = |index: usize| {
            let source = 1 + u8::try_from(index % usize::from(SOURCES)).expect("small");
            (source, targets[index % targets.len()])
        };
        let mut streams: Vec<Option<TcpStream>> = (0..FLOOD)
            .map(|index| {
                let (source, target) = place(index);
                open(source, target)
            })
            .collect();
        let started = Instant::now();
        let mut buffer = [0u8; 256];
        while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_MAX {
            for (index, slot) in streams.iter_mut().enumerate() {
                let alive = slot.as_mut().is_some_and(|stream| {
                    let open = match stream.read(&mut buffer) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(error) => error.kind() == ErrorKind::WouldBlock,
                    };
                    open && (index % 2 == 0 || stream.write(&[0x16]).is_ok())
                });
                if !alive {
                    let (source, target) = place(index);
                    *slot = open(source, target);
                    reopened.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// `vsr bench` against the cluster; its JSON result.
fn bench(cluster: &Cluster, requests: u32) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args([
            "bench",
            &format!("--cluster={CLUSTER}"),
            &format!("--addresses={}", cluster.address_list()),
            &cluster.security_flag(),
            "--tls-identity=client-test",
            &format!("--requests={requests}"),
            "--clients=16",
            "--timeout=10s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vsr bench runs")
}

/// The bench's throughput, after checking no request failed.
fn finished(child: Child) -> f64 {
    let output = child.wait_with_output().expect("bench");
    assert!(output.status.success(), "{}", stderr(&output));
    let result: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(result["failed"], 0, "no request fails: {result}");
    result["ops_per_sec"].as_f64().expect("ops_per_sec")
}

/// Resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_connection_flood_fails_no_request_and_a_restarted_replica_rejoins() {
    let limit = raise_file_limit();
    assert!(
        limit as usize > FLOOD + 1024,
        "the hard file limit {limit} is too low for the flood"
    );
    let mut cluster = Cluster::start(3);
    let (primary, _) = cluster.wait_primary(None, Duration::from_secs(10));
    let before = finished(bench(&cluster, 2_000));

    let targets: Vec<SocketAddr> = cluster
        .address_list()
        .split(',')
        .map(|address| address.parse().expect("an address"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicU64::new(0));
    let flooding = flood(targets, Arc::clone(&stop), Arc::clone(&reopened));
    std::thread::sleep(Duration::from_secs(3));

    let during = bench(&cluster, 6_000);
    let backup = (primary + 1) % 3;
    cluster.kill(backup);
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart(backup);
    let started = Instant::now();
    loop {
        let caught_up = cluster.metric(backup, "vsr_status") == Some(0)
            && cluster.metric(backup, "vsr_commit") > Some(0);
        if caught_up {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            cluster.log(backup)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = finished(during);
    for index in 0..3 {
        let kib = resident_kib(cluster.pid(index));
        assert!(kib < RESIDENT_MAX_KIB, "replica {index} holds {kib} KiB");
        eprintln!("replica {index}: {kib} KiB resident under the flood");
    }
    stop.store(true, Ordering::Relaxed);
    flooding.join().expect("the flood thread");
    eprintln!(
        "throughput before the flood {before:.0} ops/s, during {during:.0} ops/s ({:.2}); \
         connections reopened after the replicas closed them: {}",
        during / before,
        reopened.load(Ordering::Relaxed)
    );
    let commit = cluster.metric(backup, "vsr_commit").expect("commit");
    assert!(commit > 0);
}
