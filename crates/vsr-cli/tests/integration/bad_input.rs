//! Bad input on a real replica process's socket: each case is dropped and counted in
//! `/metrics`, closes the offending connection where it should, and leaves the replica alive
//! and serving `vsr client`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{CLUSTER, Cluster};
use bytes::Bytes;
use vsr::wire::{self, HEADER_SIZE};
use vsr::{
    Codec, Commit, Envelope, Message, Op, Operation, Query, Reply, ReplyResult, Request, Sender,
    View,
};
use vsr_kv::{KvOperation, KvQuery, KvResult};

/// A client id of the raw connections (any nonzero id).
const CLIENT: u128 = 0xbad_c0de;

/// A valid frame of a request from client `CLIENT` for `cluster`. Its session is unknown to
/// the replica, which answers every copy ("session evicted") without touching the log.
fn request_frame(cluster: u128) -> Vec<u8> {
    let operation = KvOperation::Get {
        key: Bytes::from_static(b"k"),
    };
    wire::encode(&Envelope {
        cluster,
        epoch: 0,
        sender: Sender::Client(CLIENT),
        message: Message::Request(Request {
            session: 1,
            request: 1,
            operation: Operation::StateMachine,
            body: Bytes::from(operation.to_bytes()),
        }),
    })
}

/// Rewrites the header's size field and re-seals the header checksum.
fn with_size(mut frame: Vec<u8>, size: u32) -> Vec<u8> {
    frame[64..68].copy_from_slice(&size.to_le_bytes());
    let checksum = vsr::checksum::checksum(&frame[16..HEADER_SIZE]);
    frame[..16].copy_from_slice(&checksum.to_le_bytes());
    frame
}

fn connect(cluster: &Cluster) -> TcpStream {
    let stream = TcpStream::connect(&cluster.addresses[0]).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// Sends `bytes` on a fresh connection, optionally ends the stream, and checks that the
/// replica counts `vsr_errors_total{kind}` and closes the connection; then that the replica
/// still serves clients.
fn rejects(bytes: &[u8], close_write: bool, kind: &str) {
    let mut cluster = Cluster::start_insecure(1);
    let name = format!("vsr_errors_total{{kind=\"{kind}\"}}");
    let before = cluster.metric(0, &name).expect("the error counter exists");
    let mut stream = connect(&cluster);
    stream.write_all(bytes).expect("write");
    if close_write {
        stream.shutdown(Shutdown::Write).expect("shutdown");
    }
    let mut buffer = [0u8; 256];
    let read = stream.read(&mut buffer);
    assert!(
        matches!(read, Ok(0) | Err(_))
            && !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the replica closes the connection: {read:?}"
    );
    wait_for(Duration::from_secs(5), || {
        cluster.metric(0, &name).is_some_and(|count| count > before)
    })
    .unwrap_or_else(|()| panic!("{kind} is counted"));
    still_serves(&mut cluster, kind);
}

/// The replica process is alive, has not panicked, and a `vsr client` put and get go through.
fn still_serves(cluster: &mut Cluster, tag: &str) {
    assert!(cluster.running(0), "the replica is alive");
    assert!(!cluster.log(0).contains("panicked"), "{}", cluster.log(0));
    let key = format!("after-{tag}");
    assert_eq!(cluster.run(&["put", &key, "survived"]), "OK");
    assert_eq!(cluster.run(&["get", &key]), "survived");
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(())
}

#[test]
fn garbage_bytes() {
    rejects(&[0xAB; 300], false, "header_checksum");
}

#[test]
fn truncated_frame() {
    let valid = request_frame(CLUSTER);
    rejects(&valid[..valid.len() - 3], true, "truncated");
}

#[test]
fn length_field_of_4_gib() {
    rejects(
        &with_size(request_frame(CLUSTER), u32::MAX),
        false,
        "too_large",
    );
}

#[test]
fn bad_body_checksum() {
    let mut frame = request_frame(CLUSTER);
    *frame.last_mut().expect("a body") ^= 1;
    rejects(&frame, false, "body_checksum");
}

#[test]
fn bad_header_checksum() {
    let mut frame = request_frame(CLUSTER);
    frame[90] ^= 1;
    rejects(&frame, false, "header_checksum");
}

#[test]
fn another_cluster() {
    // A replica's frame of another cluster: dropped and counted, no answer.
    let start_view_change = wire::encode(&Envelope {
        cluster: CLUSTER + 1,
        epoch: 0,
        sender: Sender::Replica(0),
        message: Message::StartViewChange(vsr::StartViewChange { view: View(1) }),
    });
    rejects(&start_view_change, false, "wrong_cluster");
}

#[test]
fn a_client_of_another_cluster_gets_one_wrong_cluster_reply() {
    let mut cluster = Cluster::start_insecure(1);
    let name = "vsr_errors_total{kind=\"wrong_cluster\"}";
    let before = cluster.metric(0, name).expect("the error counter exists");
    let mut stream = connect(&cluster);
    let twice = [request_frame(CLUSTER + 1), request_frame(CLUSTER + 1)].concat();
    stream.write_all(&twice).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the replica closes");
    assert_eq!(answer.len(), HEADER_SIZE, "one answer, one header long");
    let reply = wire::decode(&answer, &vsr::Receiver::client(CLUSTER + 1, 1))
        .expect("a reply the client admits")
        .into_envelope()
        .message;
    assert!(
        matches!(
            reply,
            Message::Reply(Reply {
                client: CLIENT,
                result: ReplyResult::WrongCluster { cluster: CLUSTER },
                ..
            })
        ),
        "{reply:?}"
    );
    wait_for(Duration::from_secs(5), || {
        cluster.metric(0, name).is_some_and(|count| count > before)
    })
    .unwrap_or_else(|()| panic!("wrong_cluster is counted"));
    still_serves(&mut cluster, "wrong-cluster-answer");
}

#[test]
fn replica_index_out_of_range() {
    // A one-replica cluster: replica 5 does not exist.
    let frame = wire::encode(&Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Replica(5),
        message: Message::Commit(Commit {
            view: View(0),
            commit: Op(0),
            round: 0,
        }),
    });
    rejects(&frame, false, "bad_sender");
}

/// `count` copies of a valid request, back to back.
fn batch(count: usize) -> Vec<u8> {
    request_frame(CLUSTER).repeat(count)
}

#[test]
fn a_client_that_floods_and_never_reads_is_dropped() {
    let mut cluster = Cluster::start_insecure(1);
    let name = "vsr_messages_dropped_total{reason=\"reply_queue_full\"}";
    let mut stream = connect(&cluster);
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let batch = batch(1024);
    // Flood until the replica's queue of replies for this connection overflows.
    let overflowed = wait_for(Duration::from_secs(30), || {
        let _ = stream.write_all(&batch);
        cluster.metric(0, name).is_some_and(|dropped| dropped > 0)
    });
    assert!(
        overflowed.is_ok(),
        "the replies it does not read are dropped"
    );
    // Everyone else is still served while the connection sits there.
    still_serves(&mut cluster, "unread-flood");
    // Its writes stalled: the replica closes the connection, when the kernel gives up on a
    // zero window (TCP_USER_TIMEOUT) or after 10 s without progress, whichever comes first.
    let closed = wait_for(Duration::from_secs(20), || {
        cluster
            .metric(0, "vsr_connections_closed_total{reason=\"stalled\"}")
            .is_some_and(|closed| closed > 0)
    });
    assert!(
        closed.is_ok(),
        "the connection is closed:\n{}",
        cluster.log(0)
    );
    still_serves(&mut cluster, "after-unread-flood");
    assert!(cluster.running(0));
}

#[test]
fn a_client_flooding_requests_does_not_starve_others() {
    let mut cluster = Cluster::start_insecure(1);
    let requests_before = cluster.metric(0, "vsr_requests_total").expect("metric");
    let stream = connect(&cluster);
    let mut reader = stream.try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(AtomicU64::new(0));
    let read_thread = {
        let (stop, replies) = (Arc::clone(&stop), Arc::clone(&replies));
        std::thread::spawn(move || {
            reader
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let mut buffer = vec![0u8; 1 << 16];
            while !stop.load(Ordering::Relaxed) {
                match reader.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(read) => {
                        replies.fetch_add(read as u64, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        })
    };
    let write_thread = {
        let stop = Arc::clone(&stop);
        let mut writer = stream;
        std::thread::spawn(move || {
            let batch = batch(256);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && writer.write_all(&batch).is_ok() {
                sent += 256;
            }
            sent
        })
    };
    // While the flood runs, other clients are served.
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        still_serves(&mut cluster, &format!("flood-{round}"));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = write_thread.join().expect("writer");
    read_thread.join().expect("reader");
    assert!(sent > 1000, "the flood sent {sent} requests");
    assert!(
        replies.load(Ordering::Relaxed) > 0,
        "the flooder got replies"
    );
    let counted = wait_for(Duration::from_secs(5), || {
        cluster
            .metric(0, "vsr_requests_total")
            .is_some_and(|requests| requests >= requests_before + 1000)
    });
    assert!(counted.is_ok(), "the flood's requests are counted");
    assert!(cluster.running(0));
}

/// A frame of a query from client `CLIENT` with `body`.
fn query_frame(request: u64, body: Bytes) -> Vec<u8> {
    wire::encode(&Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Client(CLIENT),
        message: Message::Query(Query { request, body }),
    })
}

#[test]
fn a_query_that_does_not_decode_is_dropped_and_counted() {
    let mut cluster = Cluster::start_insecure(1);
    assert_eq!(cluster.run(&["put", "k", "v"]), "OK");
    let rejected = "vsr_messages_dropped_total{reason=\"rejected\"}";
    let before = cluster.metric(0, rejected).unwrap_or(0);
    let mut stream = connect(&cluster);
    // A well-formed frame whose body is no query of the store: dropped, and the connection
    // stays usable.
    stream
        .write_all(&query_frame(1, Bytes::from_static(b"\x07not a query")))
        .expect("write");
    let counted = wait_for(Duration::from_secs(5), || {
        cluster
            .metric(0, rejected)
            .is_some_and(|count| count > before)
    });
    assert!(
        counted.is_ok(),
        "the bad query is counted:\n{}",
        cluster.log(0)
    );
    let get = KvQuery::Get {
        key: Bytes::from_static(b"k"),
    };
    stream
        .write_all(&query_frame(2, Bytes::from(get.to_bytes())))
        .expect("write");
    let mut header = [0u8; HEADER_SIZE];
    stream.read_exact(&mut header).expect("a reply header");
    let size = wire::frame_size(&header).expect("valid").expect("whole");
    let mut frame = header.to_vec();
    frame.resize(size, 0);
    stream
        .read_exact(&mut frame[HEADER_SIZE..])
        .expect("a reply body");
    let verified = wire::decode(&frame, &vsr::Receiver::client(CLUSTER, 1)).expect("decodes");
    let Message::Reply(Reply {
        request: 2,
        result: ReplyResult::Answered(answer),
        ..
    }) = verified.into_envelope().message
    else {
        panic!("the answer to the good query");
    };
    assert_eq!(
        KvResult::decode(&answer),
        Ok(KvResult::Value(Some(Bytes::from_static(b"v"))))
    );
    still_serves(&mut cluster, "bad-query");
}

#[test]
fn garbage_on_a_tls_port_fails_the_handshake_and_is_counted() {
    let mut cluster = Cluster::start(1);
    let name = "vsr_errors_total{kind=\"handshake\"}";
    let before = cluster.metric(0, name).expect("the error counter exists");
    for bytes in [vec![0xAB; 300], request_frame(CLUSTER)] {
        let mut stream = connect(&cluster);
        stream.write_all(&bytes).expect("write");
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        assert!(read.is_ok(), "the replica closes the connection: {read:?}");
        assert!(
            answer.len() < 64,
            "at most a TLS alert comes back: {answer:?}"
        );
    }
    wait_for(Duration::from_secs(5), || {
        cluster
            .metric(0, name)
            .is_some_and(|count| count >= before + 2)
    })
    .unwrap_or_else(|()| panic!("both handshakes are counted"));
    still_serves(&mut cluster, "tls-garbage");
}
