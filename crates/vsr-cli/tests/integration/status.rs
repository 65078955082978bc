//! `vsr status` against real replicas: every row, the exit statuses, and the operator check.

use std::time::{Duration, Instant};

use crate::common::{CLUSTER, Cluster, stderr, stdout, vsr};

/// `vsr status` of `cluster` with `extra` flags.
fn status(cluster: &Cluster, extra: &[&str]) -> std::process::Output {
    let cluster_flag = format!("--cluster={CLUSTER}");
    let addresses = format!("--addresses={}", cluster.address_list());
    let security = cluster.security_flag();
    let mut args = vec![
        "status",
        &cluster_flag,
        &addresses,
        &security,
        "--timeout=1s",
    ];
    args.extend_from_slice(extra);
    vsr(&args)
}

/// The JSON of `vsr status --json`, once its exit status is `code` (within 20 s).
fn status_json(cluster: &Cluster, code: i32) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = status(cluster, &["--json"]);
        if output.status.code() == Some(code) {
            return serde_json::from_str(&stdout(&output)).expect("one JSON object");
        }
        assert!(
            Instant::now() < deadline,
            "status never exited {code}: {:?} {} {}",
            output.status.code(),
            stdout(&output),
            stderr(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn status_shows_every_replica_and_exits_by_the_health_of_the_quorum() {
    let mut cluster = Cluster::start(3);
    cluster.run(&["put", "k", "v"]);
    let json = status_json(&cluster, 0);
    let replicas = json["replicas"].as_array().expect("a replicas array");
    assert_eq!(replicas.len(), 3);
    let primaries: Vec<&serde_json::Value> = replicas
        .iter()
        .filter(|replica| replica["primary"] == true)
        .collect();
    assert_eq!(primaries.len(), 1, "{json}");
    for (index, replica) in replicas.iter().enumerate() {
        assert_eq!(replica["index"], index, "{json}");
        assert_eq!(replica["reachable"], true);
        assert_eq!(replica["status"], "normal");
        assert_eq!(replica["version"], env!("CARGO_PKG_VERSION"));
        assert!(replica["log_bytes"].as_u64().is_some_and(|bytes| bytes > 0));
        for name in [
            "view",
            "op",
            "commit",
            "lag",
            "checkpoint_op",
            "checkpoint_bytes",
            "uptime_seconds",
        ] {
            assert!(replica[name].is_u64(), "{name} in {replica}");
        }
    }
    // The table: a header and one row per replica.
    let output = status(&cluster, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.starts_with("INDEX"), "{table}");
    // A client's certificate is refused: nothing answers.
    let output = status(&cluster, &["--tls-identity=client-test"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stderr(&output).contains("operator"), "{}", stderr(&output));
    // Two of three gone: the one left answers, but no quorum is healthy.
    let primary = primaries[0]["index"].as_u64().expect("an index") as usize;
    let backups: Vec<usize> = (0..3).filter(|index| *index != primary).collect();
    cluster.kill(backups[0]);
    cluster.kill(backups[1]);
    let json = status_json(&cluster, 1);
    let reachable = json["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter(|replica| replica["reachable"] == true)
        .count();
    assert_eq!(reachable, 1, "{json}");
    cluster.kill(primary);
    let json = status_json(&cluster, 2);
    assert!(json["replicas"][0]["error"].is_string(), "{json}");
}
