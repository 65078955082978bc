//! In-process clusters over 127.0.0.1: client requests through failover and restart, and
//! garbage on the wire dropped, counted and survived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use vsr::wire::{self, HEADER_SIZE};
use vsr::{Codec, Envelope, Message, Operation, Request, Sender};
use vsr_kv::{KvOperation, KvQuery, KvResult, KvStore};
use vsr_server::tls::{self, Identity, TlsTransport};
use vsr_server::{
    Client, ClientPool, ReplicaOptions, RequestError, ServerError, Transport, run_replica,
};
use vsr_storage::layout::{self, WalRecordKind};

const CLUSTER_BASE: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0000;
const DEADLINE: Duration = Duration::from_secs(10);

/// A cluster id of its own for each cluster of this process (odd, so id + 1 belongs to none),
/// so that tests running at once can never accept each other's messages.
fn cluster_id() -> u128 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let index = NEXT.fetch_add(1, Ordering::Relaxed);
    CLUSTER_BASE | u128::from(std::process::id()) << 64 | u128::from(2 * index + 1)
}

/// A port nobody listens on now and that no other test of this process was given (tests run
/// at once and bind their ports a moment after choosing them), outside the ephemeral range so
/// that no connection takes it while its replica is down.
fn free_address() -> SocketAddr {
    vsr_server::loopback_ports(1).expect("a free loopback port")[0]
}

/// Replicas running as tasks of this test's runtime, each on its own formatted data directory.
struct TestCluster {
    cluster: u128,
    dirs: Vec<TempDir>,
    addresses: Vec<String>,
    metrics: Vec<SocketAddr>,
    tasks: Vec<Option<JoinHandle<Result<(), ServerError>>>>,
    /// The certificates (`None`: plain TCP): replicas, client `alice`, operator `root`.
    tls: Option<TempDir>,
}

impl TestCluster {
    async fn start(replica_count: u8) -> Self {
        Self::start_with(replica_count, false).await
    }

    /// A cluster over mutual TLS when `secure`.
    async fn start_with(replica_count: u8, secure: bool) -> Self {
        Self::start_prepared(replica_count, secure, |dir, identity| {
            vsr_storage::format(dir, identity, false).expect("format");
        })
        .await
    }

    /// A cluster whose data directories `prepare` makes (formats, or restores a backup into).
    async fn start_prepared(
        replica_count: u8,
        secure: bool,
        prepare: impl Fn(&std::path::Path, vsr_storage::Identity),
    ) -> Self {
        let cluster = cluster_id();
        let tls = secure.then(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            generate(dir.path(), cluster, replica_count);
            dir
        });
        let mut cluster = TestCluster {
            cluster,
            dirs: Vec::new(),
            addresses: Vec::new(),
            metrics: Vec::new(),
            tasks: Vec::new(),
            tls,
        };
        for replica in 0..replica_count {
            let dir = tempfile::tempdir().expect("temp dir");
            let identity = vsr_storage::Identity {
                cluster: cluster.cluster,
                replica,
                replica_count,
            };
            prepare(dir.path(), identity);
            cluster.dirs.push(dir);
            cluster.addresses.push(free_address().to_string());
            cluster.metrics.push(free_address());
            cluster.tasks.push(None);
        }
        for replica in 0..usize::from(replica_count) {
            cluster.restart(replica).await;
        }
        cluster
    }

    /// Starts replica `index` from its data directory and waits until it serves (its metrics
    /// endpoint, bound after its listener, answers); retries while its port is still held by a
    /// task that was just aborted. A replica that stops while starting fails the test here,
    /// not later as a mysterious timeout.
    async fn restart(&mut self, index: usize) {
        for _ in 0..100 {
            let mut options = ReplicaOptions::new(
                self.cluster,
                self.addresses.clone(),
                self.dirs[index].path().to_owned(),
            );
            options.metrics = Some(self.metrics[index]);
            options.tls = self.tls.as_ref().map(|dir| dir.path().to_owned());
            let task = tokio::spawn(run_replica::<KvStore>(options, std::future::pending()));
            let started = tokio::time::Instant::now();
            while !task.is_finished() {
                if scrape(self.metrics[index], "/metrics").await.is_some() {
                    self.tasks[index] = Some(task);
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "replica {index} did not start serving"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            match task.await.expect("the replica task does not panic") {
                Err(ServerError::Listen { .. }) => continue,
                other => panic!("replica {index} stopped: {other:?}"),
            }
        }
        panic!("replica {index} could not listen");
    }

    async fn kill(&mut self, index: usize) {
        for (other, task) in self.tasks.iter().enumerate() {
            if let Some(task) = task {
                assert!(!task.is_finished(), "replica {other} stopped by itself");
            }
        }
        let task = self.tasks[index].take().expect("running");
        task.abort();
        let _ = task.await;
    }

    async fn shutdown(mut self) {
        for index in 0..self.tasks.len() {
            if self.tasks[index].is_some() {
                self.kill(index).await;
            }
        }
    }

    /// The value of an unlabelled metric (or a labelled one, written with its labels).
    async fn metric(&self, index: usize, name: &str) -> Option<u64> {
        let text = scrape(self.metrics[index], "/metrics").await?;
        text.lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
    }

    /// The replica that is primary of its view in normal status, once one is.
    async fn primary(&self) -> usize {
        for _ in 0..200 {
            for index in 0..self.tasks.len() {
                if self.tasks[index].is_none() {
                    continue;
                }
                let view = self.metric(index, "vsr_view").await;
                let status = self.metric(index, "vsr_status").await;
                if let (Some(view), Some(0)) = (view, status)
                    && view % self.tasks.len() as u64 == index as u64
                {
                    return index;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no primary emerged");
    }

    fn client(&self) -> Client {
        Client::connect(self.cluster, self.addresses.clone()).expect("client")
    }
}

/// Writes certificates for `replica_count` replicas, client `alice` and operator `root`.
fn generate(dir: &std::path::Path, cluster: u128, replica_count: u8) {
    let issue = tls::Issue {
        cluster,
        replica_count,
        clients: vec!["alice".to_owned()],
        operators: vec!["root".to_owned()],
        validity: Duration::from_secs(3600),
    };
    tls::generate(dir, &issue).expect("certificates");
}

/// Answers of `GET path`, or `None` if the endpoint is not up. The request asks for the
/// connection to be closed after the response, which is read until it is.
async fn scrape(address: SocketAddr, path: &str) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        Some(response)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

async fn execute<T: Transport>(
    client: &Client<T>,
    operation: KvOperation,
) -> Result<KvResult, RequestError> {
    let result = client
        .request(Bytes::from(operation.to_bytes()), DEADLINE)
        .await?;
    Ok(KvResult::decode(&result).expect("a valid result"))
}

async fn put<T: Transport>(client: &Client<T>, key: &str, value: &str) {
    let operation = KvOperation::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    };
    assert_eq!(
        execute(client, operation).await,
        Ok(KvResult::Ok),
        "put {key}"
    );
}

async fn get<T: Transport>(client: &Client<T>, key: &str) -> Option<Bytes> {
    let operation = KvOperation::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
    };
    match execute(client, operation).await {
        Ok(KvResult::Value(value)) => value,
        other => panic!("get {key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_and_restart_lose_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client();
    for i in 0..20 {
        put(&client, &format!("key{i}"), &format!("value{i}")).await;
    }
    let primary = cluster.primary().await;
    cluster.kill(primary).await;

    // A new primary serves within the client's deadline.
    for i in 20..40 {
        put(&client, &format!("key{i}"), &format!("value{i}")).await;
    }
    let new_primary = cluster.primary().await;
    assert_ne!(new_primary, primary);
    for i in 0..40 {
        assert_eq!(
            get(&client, &format!("key{i}")).await.as_deref(),
            Some(format!("value{i}").as_bytes())
        );
    }

    // The old primary restarts from its data directory and catches up.
    cluster.restart(primary).await;
    put(&client, "after-restart", "yes").await;
    let mut caught_up = false;
    for _ in 0..200 {
        let commits = [
            cluster.metric(primary, "vsr_commit").await,
            cluster.metric(new_primary, "vsr_commit").await,
        ];
        if commits[0].is_some() && commits[0] == commits[1] {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        caught_up,
        "the restarted replica caught up with the primary's commit number"
    );
    assert_eq!(
        get(&client, "after-restart").await.as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(get(&client, "key0").await.as_deref(), Some(&b"value0"[..]));

    // The metrics endpoint answers other paths with 404 and counts requests.
    let not_found = scrape(cluster.metrics[new_primary], "/other")
        .await
        .expect("answer");
    assert!(not_found.starts_with("HTTP/1.1 404"));
    let requests = cluster
        .metric(new_primary, "vsr_requests_total")
        .await
        .expect("metric");
    assert!(requests > 0);
    let latency = cluster
        .metric(new_primary, "vsr_request_latency_seconds_count")
        .await;
    assert!(latency.expect("metric") > 0);
    cluster.shutdown().await;
}

/// Many sessions over one pool's connections: each gets its own answers (replies are routed
/// by client id), their requests are batched by the primary, and a session replaced after a
/// deadline never sees its predecessor's late replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_sharing_connections_each_get_their_own_answers() {
    let cluster = TestCluster::start(3).await;
    let pool = ClientPool::connect(cluster.cluster, cluster.addresses.clone()).expect("pool");
    let mut sessions = tokio::task::JoinSet::new();
    for session in 0..32 {
        let client = pool.client().expect("a session");
        sessions.spawn(async move {
            for i in 0..20 {
                let key = format!("s{session}-k{}", i % 3);
                let value = format!("s{session}-v{i}");
                put(&client, &key, &value).await;
                assert_eq!(
                    get(&client, &key).await.as_deref(),
                    Some(value.as_bytes()),
                    "session {session} reads its own write"
                );
            }
        });
    }
    while let Some(joined) = sessions.join_next().await {
        joined.expect("a session");
    }
    let primary = cluster.primary().await;
    let requests = cluster.metric(primary, "vsr_requests_total").await;
    assert!(requests.expect("metric") >= 32 * 40);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_reports_not_executed() {
    let addresses = vec![free_address().to_string()];
    let client = Client::connect(cluster_id(), addresses).expect("client");
    let operation = KvOperation::Get {
        key: Bytes::from_static(b"k"),
    };
    let result = client
        .request(
            Bytes::from(operation.to_bytes()),
            Duration::from_millis(300),
        )
        .await;
    assert!(
        matches!(result, Err(RequestError::NotExecuted { .. })),
        "{result:?}"
    );
}

/// A valid frame of a client's request for `cluster`.
fn request_frame(cluster: u128) -> Vec<u8> {
    let operation = KvOperation::Get {
        key: Bytes::from_static(b"k"),
    };
    let envelope = Envelope {
        cluster,
        epoch: 0,
        sender: Sender::Client(7),
        message: Message::Request(Request {
            session: 0,
            request: 1,
            operation: Operation::StateMachine,
            body: Bytes::from(operation.to_bytes()),
        }),
    };
    wire::encode(&envelope)
}

/// Rewrites the header's size field and re-seals its checksum.
fn with_size(mut frame: Vec<u8>, size: u32) -> Vec<u8> {
    frame[64..68].copy_from_slice(&size.to_le_bytes());
    let checksum = vsr::checksum::checksum(&frame[16..HEADER_SIZE]);
    frame[..16].copy_from_slice(&checksum.to_le_bytes());
    frame
}

/// Sends `bytes` on a fresh connection, checks the server closes it, and returns what the
/// server wrote before closing.
async fn send_garbage(address: &str, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    if close_write {
        stream.shutdown().await.expect("shutdown");
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut stream).take(64 * 1024).read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the server closes the connection");
    answer
}

/// The wrong-cluster reply a replica of `serves` answers a client of `cluster` with, as
/// `answer` decodes for that client.
fn wrong_cluster_reply(answer: &[u8], cluster: u128, serves: u128) -> Result<(), String> {
    let verified = wire::decode(answer, &vsr::Receiver::client(cluster, 1))
        .map_err(|error| format!("{error}"))?;
    match verified.into_envelope().message {
        Message::Reply(vsr::Reply {
            result: vsr::ReplyResult::WrongCluster { cluster },
            view,
            op,
            ..
        }) if cluster == serves && view == vsr::View(0) && op == vsr::Op(0) => Ok(()),
        other => Err(format!("not a wrong-cluster reply: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dropped_counted_and_survived() {
    let cluster = TestCluster::start(1).await;
    let client = cluster.client();
    put(&client, "before", "garbage").await;
    let address = cluster.addresses[0].clone();

    let valid = request_frame(cluster.cluster);
    let mut body_corrupt = valid.clone();
    *body_corrupt.last_mut().expect("a body") ^= 1;
    let mut header_corrupt = valid.clone();
    header_corrupt[90] ^= 1;
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("header_checksum", vec![0xAB; 300], false),
        ("header_checksum", header_corrupt, false),
        ("truncated", valid[..valid.len() - 3].to_vec(), true),
        ("too_large", with_size(valid.clone(), u32::MAX), false),
        ("too_short", with_size(valid.clone(), 5), false),
        ("body_checksum", body_corrupt, false),
        // Another cluster's replica: dropped without an answer, as before.
        (
            "wrong_cluster",
            start_view_change(cluster.cluster + 1, 0, 1),
            false,
        ),
    ];
    for (kind, bytes, close_write) in cases {
        let name = format!("vsr_errors_total{{kind=\"{kind}\"}}");
        let before = cluster.metric(0, &name).await.expect("metric");
        let answer = send_garbage(&address, &bytes, close_write).await;
        assert!(
            answer.is_empty(),
            "{kind}: no answer, got {} bytes",
            answer.len()
        );
        let mut counted = false;
        for _ in 0..100 {
            if cluster.metric(0, &name).await.expect("metric") > before {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(counted, "{kind} is counted");
        // The server keeps serving.
        put(&client, kind, "survived").await;
    }
    assert_eq!(
        get(&client, "before").await.as_deref(),
        Some(&b"garbage"[..])
    );
    cluster.shutdown().await;
}

/// A client's request of another cluster is answered once with a wrong-cluster reply, then
/// the connection closes: two such frames in one write get one answer, a frame of another
/// cluster after a valid one gets none, and every one read is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_cluster_gets_one_answer_per_connection() {
    let cluster = TestCluster::start(1).await;
    let address = cluster.addresses[0].clone();
    let other = cluster.cluster + 1;
    let name = "vsr_errors_total{kind=\"wrong_cluster\"}";
    let before = cluster.metric(0, name).await.expect("metric");

    let answer = send_garbage(&address, &request_frame(other), false).await;
    assert_eq!(answer.len(), HEADER_SIZE, "one header-sized answer");
    assert_eq!(wrong_cluster_reply(&answer, other, cluster.cluster), Ok(()));

    let twice = [request_frame(other), request_frame(other)].concat();
    let answer = send_garbage(&address, &twice, false).await;
    assert_eq!(answer.len(), HEADER_SIZE, "one answer for two frames");
    assert_eq!(wrong_cluster_reply(&answer, other, cluster.cluster), Ok(()));

    // The answer goes out even when the client has already closed its side.
    let answer = send_garbage(&address, &request_frame(other), true).await;
    assert_eq!(wrong_cluster_reply(&answer, other, cluster.cluster), Ok(()));

    // A client that keeps its side open sees the replica end its side right after the answer
    // (the replica then waits at most 1 s for the client to close).
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream
        .write_all(&request_frame(other))
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut stream).take(64 * 1024).read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the replica closes the connection");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(wrong_cluster_reply(&answer, other, cluster.cluster), Ok(()));
    let open = "vsr_connections{class=\"client\"}";
    let mut released = None;
    for _ in 0..150 {
        if cluster.metric(0, open).await == Some(0) {
            released = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("connection of a client that stays open released after {released:?}");
    let released = released.expect("the replica releases the connection");
    assert!(released < Duration::from_millis(2500), "{released:?}");
    drop(stream);

    // After a frame of this cluster, a frame of another gets no answer.
    let mixed = [request_frame(cluster.cluster), request_frame(other)].concat();
    let mut answer = &send_garbage(&address, &mixed, false).await[..];
    while let Ok(Some(size)) = wire::frame_size(answer) {
        // Only this cluster's reply to the valid frame, if it went out before the close.
        let reply = wire::decode(&answer[..size], &vsr::Receiver::client(cluster.cluster, 1));
        assert!(reply.is_ok(), "{reply:?}");
        answer = &answer[size..];
    }
    assert!(
        answer.is_empty(),
        "no wrong-cluster answer after a valid frame"
    );

    let mut counted = 0;
    for _ in 0..100 {
        counted = cluster.metric(0, name).await.expect("metric") - before;
        if counted >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The second of two frames in one write is never read: the first closed the connection.
    assert_eq!(counted, 5, "every frame of another cluster read is counted");
    put(&cluster.client(), "after", "answers").await;
    cluster.shutdown().await;
}

/// A client with another cluster's id gets RequestError::WrongCluster from a real replica in
/// well under a second (a connect and one round trip), for a request and a query alike, at one
/// replica and at three; the replicas keep serving the right clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_id_is_reported_at_once() {
    for replica_count in [1, 3] {
        let cluster = TestCluster::start(replica_count).await;
        let wrong = cluster.cluster + 1;
        let client = Client::connect(wrong, cluster.addresses.clone()).expect("client");
        let read = KvOperation::Get {
            key: Bytes::from_static(b"k"),
        };
        let body = Bytes::from(read.to_bytes());
        for query in [false, true] {
            let started = std::time::Instant::now();
            let result = if query {
                client.query(body.clone(), DEADLINE).await
            } else {
                client.request(body.clone(), DEADLINE).await
            };
            let elapsed = started.elapsed();
            eprintln!("{replica_count} replicas, query {query}: {result:?} after {elapsed:?}");
            match result {
                Err(RequestError::WrongCluster {
                    expected,
                    found,
                    replica,
                    address,
                }) => {
                    assert_eq!((expected, found), (wrong, cluster.cluster));
                    assert_eq!(address, cluster.addresses[usize::from(replica)]);
                }
                other => panic!("expected WrongCluster, got {other:?}"),
            }
            assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
        }
        let error = client.request(body.clone(), DEADLINE).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "serves cluster {:#x}, not {wrong:#x}",
                cluster.cluster
            )),
            "{message}"
        );
        let right = cluster.client();
        put(&right, "right", "cluster").await;
        assert_eq!(get(&right, "right").await.as_deref(), Some(&b"cluster"[..]));
        cluster.shutdown().await;
    }
}

/// Answers of `path` as (status code, body), or `None` if the endpoint is not up.
async fn probe(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let response = scrape(address, path).await?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.get(9..12)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Polls `path` every 50 ms until its answer satisfies `wanted`, for at most 30 s.
async fn probe_until(address: SocketAddr, path: &str, wanted: impl Fn(u16, &str) -> bool) {
    let mut last = None;
    for _ in 0..600 {
        last = probe(address, path).await;
        if let Some((status, body)) = &last
            && wanted(*status, body)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never answered as expected; last: {last:?}");
}

/// `/healthz` answers 200 while the process runs; `/readyz` 200 in normal status, 503 with
/// "view change" once a backup lost its primary and every other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_replica_status() {
    let mut cluster = TestCluster::start(3).await;
    let primary = cluster.primary().await;
    put(&cluster.client(), "k", "v").await;
    for index in 0..3 {
        let address = cluster.metrics[index];
        assert_eq!(
            probe(address, "/healthz").await,
            Some((200, "ok\n".to_owned()))
        );
        probe_until(address, "/readyz", |status, body| {
            status == 200 && body == "ready\n"
        })
        .await;
        let lag = cluster.metric(index, "vsr_commit_lag").await;
        assert_eq!(lag, Some(0), "replica {index}");
    }
    let survivor = (primary + 1) % 3;
    cluster.kill(primary).await;
    cluster.kill((primary + 2) % 3).await;
    let address = cluster.metrics[survivor];
    probe_until(address, "/readyz", |status, body| {
        status == 503 && body == "not ready: view change\n"
    })
    .await;
    assert_eq!(
        probe(address, "/healthz").await,
        Some((200, "ok\n".to_owned()))
    );
    cluster.shutdown().await;
}

/// A replica formatted to recover, alone: `/readyz` answers 503 "recovering" until it hears
/// from a quorum, `/healthz` 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_replica_is_not_ready() {
    let cluster = cluster_id();
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = vsr_storage::Identity {
        cluster,
        replica: 1,
        replica_count: 3,
    };
    vsr_storage::format(dir.path(), identity, true).expect("format");
    let addresses: Vec<String> = (0..3).map(|_| free_address().to_string()).collect();
    let metrics = free_address();
    let mut options = ReplicaOptions::new(cluster, addresses, dir.path().to_owned());
    options.metrics = Some(metrics);
    let task = tokio::spawn(run_replica::<KvStore>(options, std::future::pending()));
    probe_until(metrics, "/readyz", |status, body| {
        status == 503 && body == "not ready: recovering\n"
    })
    .await;
    assert_eq!(
        probe(metrics, "/healthz").await,
        Some((200, "ok\n".to_owned()))
    );
    assert!(!task.is_finished(), "the replica runs");
    task.abort();
    let _ = task.await;
}

/// Options that no replica can run with are an error, not a panic: a zero checkpoint interval,
/// a configuration made for another cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_options_are_errors() {
    let cluster = cluster_id();
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = vsr_storage::Identity {
        cluster,
        replica: 0,
        replica_count: 1,
    };
    vsr_storage::format(dir.path(), identity, false).expect("format");
    let options = || {
        ReplicaOptions::new(
            cluster,
            vec![free_address().to_string()],
            dir.path().to_owned(),
        )
    };
    let mut zero = options();
    zero.checkpoint_interval = Some(0);
    let result = run_replica::<KvStore>(zero, std::future::pending()).await;
    assert!(
        matches!(result, Err(ServerError::CheckpointInterval)),
        "{result:?}"
    );
    let mut other = options();
    other.config = Some(vsr::Config::new(cluster + 1, 1));
    let result = run_replica::<KvStore>(other, std::future::pending()).await;
    assert!(
        matches!(result, Err(ServerError::ConfigMismatch { .. })),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_its_clients_and_refuses_strangers() {
    let cluster = TestCluster::start_with(3, true).await;
    let dir = cluster.tls.as_ref().expect("secure").path();
    for holder in [
        Identity::Client("alice".to_owned()),
        Identity::Operator("root".to_owned()),
    ] {
        let transport = TlsTransport::new(dir, cluster.cluster, holder).expect("certificates");
        let client = Client::connect_with(transport, cluster.cluster, cluster.addresses.clone())
            .expect("client");
        put(&client, "k", "over tls").await;
        assert_eq!(get(&client, "k").await.as_deref(), Some(&b"over tls"[..]));
    }
    let primary = cluster.primary().await;

    // Plaintext on a TLS port: the handshake fails (the replica answers with an alert and
    // closes), is counted, and the replica serves on.
    let mut plain = TcpStream::connect(&cluster.addresses[primary])
        .await
        .expect("connect");
    plain
        .write_all(&request_frame(cluster.cluster))
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(_) | Err(_))), "closed: {read:?}");
    assert!(answer.len() < 64, "no more than an alert: {answer:?}");
    // A client of another authority (a cluster with the same id, certificates of its own).
    let stranger = tempfile::tempdir().expect("temp dir");
    generate(stranger.path(), cluster.cluster, 3);
    let transport = TlsTransport::new(
        stranger.path(),
        cluster.cluster,
        Identity::Client("alice".to_owned()),
    )
    .expect("certificates");
    let client = Client::connect_with(transport, cluster.cluster, cluster.addresses.clone())
        .expect("client");
    let operation = KvOperation::Get {
        key: Bytes::from_static(b"k"),
    };
    let refused = client
        .request(
            Bytes::from(operation.to_bytes()),
            Duration::from_millis(500),
        )
        .await;
    assert!(
        matches!(refused, Err(RequestError::NotExecuted { .. })),
        "{refused:?}"
    );
    let handshakes = cluster
        .metric(primary, "vsr_errors_total{kind=\"handshake\"}")
        .await
        .expect("metric");
    assert!(
        handshakes >= 2,
        "plaintext and a stranger's certificate: {handshakes}"
    );
    cluster.shutdown().await;
}

/// A start_view_change for `view` from replica `from`: if admitted, it moves the receiver's
/// view change along.
fn start_view_change(cluster: u128, from: u8, view: u64) -> Vec<u8> {
    let envelope = Envelope {
        cluster,
        epoch: 0,
        sender: Sender::Replica(from),
        message: Message::StartViewChange(vsr::StartViewChange {
            view: vsr::View(view),
        }),
    };
    wire::encode(&envelope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_carries_only_its_holders_messages() {
    let cluster = TestCluster::start_with(3, true).await;
    let dir = cluster.tls.as_ref().expect("secure").path().to_owned();
    let primary = cluster.primary().await;
    let view = cluster.metric(primary, "vsr_view").await.expect("view");
    let others: Vec<u8> = (0..3u8)
        .filter(|index| usize::from(*index) != primary)
        .collect();
    // A client's certificate claiming to be a replica; replica `others[0]`'s certificate
    // claiming to be replica `others[1]`; neither is admitted.
    let cases = [
        (Identity::Client("alice".to_owned()), others[0]),
        (Identity::Replica(others[0]), others[1]),
    ];
    for (holder, claimed) in cases {
        let transport =
            TlsTransport::new(&dir, cluster.cluster, holder.clone()).expect("certificates");
        let mut stream = transport
            .connect(
                &cluster.addresses[primary],
                u8::try_from(primary).expect("small"),
            )
            .await
            .expect("the handshake succeeds: the certificate is the cluster's");
        for _ in 0..3 {
            let frame = start_view_change(cluster.cluster, claimed, view + 1_000);
            if stream.write_all(&frame).await.is_err() {
                break;
            }
        }
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "{holder}: closed, {read:?}"
        );
    }
    let refused = cluster
        .metric(primary, "vsr_errors_total{kind=\"unauthorized\"}")
        .await
        .expect("metric");
    assert_eq!(refused, 2);
    let after = cluster.metric(primary, "vsr_view").await.expect("view");
    assert!(
        after < view + 1_000,
        "no forged view change: {view} -> {after}"
    );
    let client = Client::connect_with(
        TlsTransport::new(&dir, cluster.cluster, Identity::Client("alice".to_owned()))
            .expect("certificates"),
        cluster.cluster,
        cluster.addresses.clone(),
    )
    .expect("client");
    put(&client, "still", "serving").await;
    cluster.shutdown().await;
}

/// A backup taken from the primary while a writer keeps writing holds every write acknowledged
/// before it was asked for, and of the writes during it a prefix; restored into a new cluster
/// (another id), that cluster serves them all and takes new writes. Only an operator may ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_live_cluster_restores_into_a_new_cluster() {
    use vsr_server::backup::{BackupFetchError, BackupSource, fetch_backup};

    let cluster = TestCluster::start_with(3, true).await;
    let dir = cluster.tls.as_ref().expect("secure").path().to_owned();
    let transport =
        |holder: Identity| TlsTransport::new(&dir, cluster.cluster, holder).expect("certificates");
    let client = Client::connect_with(
        transport(Identity::Client("alice".to_owned())),
        cluster.cluster,
        cluster.addresses.clone(),
    )
    .expect("client");
    for index in 0..200 {
        put(
            &client,
            &format!("before-{index}"),
            &format!("value-{index}"),
        )
        .await;
    }
    let writer = tokio::spawn(async move {
        // Aborted once the backup is in; bounded all the same.
        for written in 0..100_000 {
            put(&client, &format!("during-{written}"), "x").await;
        }
    });
    let primary = cluster.primary().await;
    let source = BackupSource {
        cluster: cluster.cluster,
        replica_count: 3,
        replica: u8::try_from(primary).expect("small"),
        address: &cluster.addresses[primary],
    };
    let refused = fetch_backup(
        &transport(Identity::Client("alice".to_owned())),
        source,
        Vec::new(),
        DEADLINE,
        &mut |_| {},
    )
    .await;
    assert!(
        matches!(refused, Err(BackupFetchError::Closed)),
        "a client may not ask: {refused:?}"
    );
    let scratch = tempfile::tempdir().expect("temp dir");
    let path = scratch.path().join("backup.vsr");
    let file = std::fs::File::create(&path).expect("create");
    let mut received = 0;
    let (_, summary) = fetch_backup(
        &transport(Identity::Operator("root".to_owned())),
        source,
        file,
        DEADLINE,
        &mut |bytes| received = bytes,
    )
    .await
    .expect("a backup");
    writer.abort();
    let _ = writer.await;
    assert_eq!(received, summary.snapshot_size);
    assert_eq!(summary.header.cluster, cluster.cluster);
    assert!(summary.header.op >= 201, "{summary:?}");
    let checked = vsr_storage::backup::verify(&path).expect("a whole backup");
    assert_eq!(checked, summary);
    cluster.shutdown().await;

    let restored = TestCluster::start_prepared(3, false, |dir, identity| {
        vsr_storage::backup::restore(&path, &checked, identity, dir).expect("restore");
    })
    .await;
    let client = restored.client();
    for index in 0..200 {
        let value = get(&client, &format!("before-{index}")).await;
        assert_eq!(value.as_deref(), Some(format!("value-{index}").as_bytes()));
    }
    // The writes during the backup: a prefix of them made it, in order.
    let mut present = 0;
    while get(&client, &format!("during-{present}")).await.is_some() {
        present += 1;
    }
    for later in present + 1..present + 20 {
        assert_eq!(get(&client, &format!("during-{later}")).await, None);
    }
    put(&client, "after", "restore").await;
    assert_eq!(
        get(&client, "after").await.as_deref(),
        Some(&b"restore"[..])
    );
    restored.shutdown().await;
}

impl TestCluster {
    /// Waits until `metric` of replica `index` satisfies `wanted`; its last value.
    async fn metric_until(&self, index: usize, name: &str, wanted: impl Fn(u64) -> bool) -> u64 {
        let mut last = None;
        for _ in 0..200 {
            last = self.metric(index, name).await;
            if last.is_some_and(&wanted) {
                return last.expect("checked");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("replica {index}: {name} never as expected; last: {last:?}");
    }
}

/// The metrics of running replicas move with what they do: the primary's histograms count
/// each kind of operation, the state size is what was written, every replica syncs its log
/// and is connected to its peers, and damage found when a replica restarts is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_follow_the_cluster() {
    let mut cluster = TestCluster::start(3).await;
    let client = cluster.client();
    for i in 0..30 {
        put(&client, &format!("key{i:02}"), "value").await;
    }
    assert_eq!(get(&client, "key00").await.as_deref(), Some(&b"value"[..]));
    let delete = KvOperation::Delete {
        key: Bytes::from_static(b"key29"),
    };
    assert_eq!(execute(&client, delete).await, Ok(KvResult::Ok));
    let scan = KvQuery::Scan {
        prefix: Bytes::new(),
        start: None,
        limit: 5,
        keys_only: true,
    };
    let page = client.query(Bytes::from(scan.to_bytes()), DEADLINE).await;
    assert!(page.is_ok(), "{page:?}");

    let primary = cluster.primary().await;
    let latency = |operation: &str| {
        format!("vsr_operation_latency_seconds_count{{operation=\"{operation}\"}}")
    };
    for (operation, count) in [
        ("put", 30),
        ("get", 1),
        ("delete", 1),
        ("scan", 1),
        ("register", 1),
    ] {
        let counted = cluster.metric(primary, &latency(operation)).await;
        assert!(counted >= Some(count), "{operation}: {counted:?}");
    }
    // 29 live keys of 5 bytes, each with a value of 5 bytes.
    for replica in 0..3 {
        cluster
            .metric_until(replica, "vsr_state_keys", |keys| keys == 29)
            .await;
        cluster
            .metric_until(replica, "vsr_state_bytes", |bytes| bytes == 29 * 10)
            .await;
        let primary_gauge = u64::from(replica == primary);
        assert_eq!(
            cluster.metric(replica, "vsr_primary").await,
            Some(primary_gauge)
        );
        cluster
            .metric_until(replica, "vsr_peers_connected", |peers| peers == 2)
            .await;
        assert!(cluster.metric(replica, "vsr_fsync_seconds_count").await > Some(0));
        assert!(cluster.metric(replica, "vsr_log_bytes").await > Some(0));
        let faults = "vsr_storage_faults_total{kind=\"wal_record\"}";
        assert_eq!(cluster.metric(replica, faults).await, Some(0));
        if cfg!(target_os = "linux") {
            assert!(cluster.metric(replica, "process_open_fds").await > Some(0));
        }
    }

    // A backup restarted with a record in the middle of its log damaged counts it, and
    // repairs it from its peers.
    let backup = (primary + 1) % 3;
    cluster.kill(backup).await;
    let wals = layout::wal_files(cluster.dirs[backup].path()).expect("WAL files");
    let wal = wals.last().expect("a WAL file");
    let entries: Vec<_> = wal
        .records()
        .expect("records")
        .into_iter()
        .filter(|record| record.kind == WalRecordKind::Entry && !record.payload.is_empty())
        .collect();
    assert!(entries.len() > 10, "the log holds the writes: {entries:?}");
    let record = &entries[entries.len() / 2];
    let middle = record.payload.start + (record.payload.end - record.payload.start) / 2;
    flip_byte(&wal.path, middle);
    cluster.restart(backup).await;
    let faults = "vsr_storage_faults_total{kind=\"wal_record\"}";
    assert!(cluster.metric(backup, faults).await >= Some(1));
    cluster
        .metric_until(backup, "vsr_status", |status| status == 0)
        .await;
    cluster
        .metric_until(backup, "vsr_state_keys", |keys| keys == 29)
        .await;
    cluster.shutdown().await;
}

/// Inverts the byte at `offset` of the file at `path`, durably.
fn flip_byte(path: &std::path::Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("the file opens");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read");
    file.write_all_at(&[!byte[0]], offset).expect("write");
    file.sync_all().expect("sync");
}
