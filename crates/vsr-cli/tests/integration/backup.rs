//! `vsr backup` and `vsr restore` with real processes: a backup taken while a writer writes,
//! restored into a new cluster that serves every write acknowledged before it; a damaged or
//! truncated file refused with nothing written; only an operator may take one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vsr::Codec;
use vsr_kv::{KvOperation, KvResult};
use vsr_server::{Client, Network};

use crate::common::{CLUSTER, Cluster, stderr, stdout, vsr};

const DEADLINE: Duration = Duration::from_secs(5);

fn key(index: u64) -> Bytes {
    Bytes::from(format!("key-{index:06}"))
}

fn value(index: u64) -> Bytes {
    Bytes::from(format!("value-{index}"))
}

/// Writes key 0, 1, 2, ... one at a time (retrying one until it is acknowledged, so a key is
/// never written before the one before it is in), until `stop`; `acked` is how many are.
async fn write_in_order(client: Client<Network>, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    for index in 0..1_000_000 {
        let put = KvOperation::Put {
            key: key(index),
            value: value(index),
        };
        let body = Bytes::from(put.to_bytes());
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if client.request(body.clone(), DEADLINE).await.is_ok() {
                break;
            }
        }
        acked.store(index + 1, Ordering::Relaxed);
    }
}

async fn get(client: &Client<Network>, index: u64) -> Option<Bytes> {
    let body = Bytes::from(KvOperation::Get { key: key(index) }.to_bytes());
    let result = client.request(body, DEADLINE).await.expect("a get");
    match KvResult::decode(&result).expect("a result") {
        KvResult::Value(value) => value,
        other => panic!("get: {other:?}"),
    }
}

fn backup(cluster: &Cluster, identity: &str, file: &Path) -> std::process::Output {
    vsr(&[
        "backup",
        &format!("--cluster={CLUSTER}"),
        &format!("--addresses={}", cluster.address_list()),
        &cluster.security_flag(),
        &format!("--tls-identity={identity}"),
        file.to_str().expect("utf-8 path"),
    ])
}

/// The op `vsr backup` says it captured.
fn captured_op(output: &str) -> u64 {
    let after = output
        .split(" at op ")
        .nth(1)
        .expect("`at op N` in the output");
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .expect("an op")
}

#[test]
fn a_backup_under_load_restores_every_write_acknowledged_before_it() {
    let cluster = Cluster::start(3);
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("cluster.backup");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Clients spawn their connection tasks on the runtime they are made in.
    let _runtime = runtime.enter();
    let (acked, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let client = Client::connect_with(cluster.network(), CLUSTER, cluster.addresses.clone())
        .expect("client");
    let writer = runtime.spawn(write_in_order(
        client,
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));
    let started = Instant::now();
    while acked.load(Ordering::Relaxed) < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the writer is stuck"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // A client's certificate may not take a backup; nothing is left behind.
    let refused = backup(&cluster, "client-test", &file);
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("operator"),
        "{}",
        stderr(&refused)
    );
    assert!(!file.exists());
    assert!(!scratch.path().join("cluster.backup.partial").exists());

    let acked_before = acked.load(Ordering::Relaxed);
    let output = backup(&cluster, "operator-ops", &file);
    assert!(output.status.success(), "backup: {}", stderr(&output));
    let op = captured_op(&stdout(&output));
    // Go on writing a little after it, then stop: those writes must not be in it.
    let after = acked.load(Ordering::Relaxed) + 50;
    while acked.load(Ordering::Relaxed) < after {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer is stuck"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(writer).expect("the writer");
    let acked_end = acked.load(Ordering::Relaxed);
    drop(cluster);

    let restored = Cluster::start_restored(3, &file);
    for index in 0..3 {
        assert_eq!(
            restored.metric(index, "vsr_commit"),
            Some(op),
            "replica {index}"
        );
    }
    let client = Client::connect_with(restored.network(), CLUSTER, restored.addresses.clone())
        .expect("client");
    runtime.block_on(async {
        for index in 0..acked_before {
            assert_eq!(get(&client, index).await, Some(value(index)), "key {index}");
        }
        // Of the writes that raced the backup, a prefix is in it; none after that.
        let mut present = acked_before;
        while present < acked_end && get(&client, present).await == Some(value(present)) {
            present += 1;
        }
        for index in present..acked_end {
            assert_eq!(get(&client, index).await, None, "key {index} after a gap");
        }
        assert!(present < acked_end, "writes after the backup are not in it");
    });
    let put = Bytes::from(
        KvOperation::Put {
            key: Bytes::from_static(b"after-restore"),
            value: Bytes::from_static(b"yes"),
        }
        .to_bytes(),
    );
    runtime
        .block_on(client.request(put, DEADLINE))
        .expect("the restored cluster takes writes");
}

/// Runs `vsr restore` of `file` into three directories under `scratch`; they must not exist
/// afterwards when it fails.
fn restore(file: &Path, scratch: &Path) -> std::process::Output {
    let dirs: Vec<String> = (0..3)
        .map(|index| scratch.join(format!("r{index}")).display().to_string())
        .collect();
    let mut args = vec![
        "restore".to_owned(),
        file.display().to_string(),
        format!("--cluster={CLUSTER}"),
        "--replica-count=3".to_owned(),
    ];
    args.extend(dirs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vsr(&args)
}

fn holds_vsr_data(scratch: &Path) -> bool {
    (0..3).any(|index| {
        std::fs::read_dir(scratch.join(format!("r{index}"))).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.file_name() != "LOCK")
        })
    })
}

#[test]
fn a_damaged_or_truncated_backup_is_refused_and_nothing_is_written() {
    let cluster = Cluster::start(3);
    for index in 0..20 {
        cluster.run(&["put", &format!("k{index}"), &format!("v{index}")]);
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("backup");
    let output = backup(&cluster, "operator-ops", &file);
    assert!(output.status.success(), "backup: {}", stderr(&output));
    let again = backup(&cluster, "operator-ops", &file);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    drop(cluster);
    let whole = std::fs::read(&file).expect("read");
    let damaged = scratch.path().join("damaged");
    for (name, bytes, expected) in [
        ("bit flip", flip(&whole, whole.len() / 2), "damaged"),
        ("bit flip in the header", flip(&whole, 20), "damaged"),
        (
            "truncated",
            whole[..whole.len() - 100].to_vec(),
            "truncated",
        ),
        ("empty", Vec::new(), "not a vsr backup"),
    ] {
        std::fs::write(&damaged, &bytes).expect("write");
        let target = tempfile::tempdir().expect("temp dir");
        let output = restore(&damaged, target.path());
        assert_eq!(output.status.code(), Some(2), "{name}");
        let message = stderr(&output);
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.contains("nothing was written"), "{name}: {message}");
        assert!(
            !holds_vsr_data(target.path()),
            "{name}: something was written"
        );
    }
    let target = tempfile::tempdir().expect("temp dir");
    let output = restore(&file, target.path());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 3, "{}", stdout(&output));
    // Into directories that now hold vsr data: refused, and they are left as they were.
    let output = restore(&file, target.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("already holds vsr data"),
        "{}",
        stderr(&output)
    );
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[at] ^= 0x10;
    flipped
}
