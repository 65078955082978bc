//! The endpoint on 127.0.0.1 against raw TCP clients: what it answers, and that hostile
//! connections neither block a scrape nor stay open past the limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{Limits, serve_with};
use crate::metrics::{
    DropReason, ErrorKind, Metrics, STATUS_NORMAL, STATUS_RECOVERING, STATUS_VIEW_CHANGE,
    StorageMetrics,
};

/// Longest wait for one response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read.
const RESPONSE_SIZE_MAX: u64 = 1 << 20;
/// Short limits, so that the tests that wait for them finish quickly.
const SHORT: Limits = Limits {
    header_read_timeout: Duration::from_secs(1),
    lifetime: Duration::from_secs(2),
    shutdown_grace: Duration::from_secs(1),
    connections_max: 64,
};

/// The largest lag of a ready replica in these tests.
const LAG_READY_MAX: u64 = 8;

/// An endpoint serving on an ephemeral port; dropping it stops the server and its connections.
struct Endpoint {
    address: SocketAddr,
    metrics: Arc<Metrics>,
    server: JoinHandle<()>,
}

impl Endpoint {
    async fn start(limits: Limits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let metrics = Arc::new(Metrics::new(
            LAG_READY_MAX,
            Arc::new(StorageMetrics::new(None)),
        ));
        metrics.error(ErrorKind::Truncated);
        metrics.dropped(DropReason::PeerQueueFull, 3);
        metrics.observe_operation(metrics.operation_slot("put"), Duration::from_millis(3));
        let server = tokio::spawn(serve_with(listener, Arc::clone(&metrics), limits));
        Self {
            address,
            metrics,
            server,
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    /// The value of header `name` (in lower case).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.eq_ignore_ascii_case(name)).then(|| value.trim())
        })
    }
}

/// Sends the raw `request` on a new connection and reads the response until the server closes.
async fn exchange(address: SocketAddr, request: &[u8]) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(request).await.expect("send");
        let mut response = Vec::new();
        // The server may reset a connection whose request it did not read: keep what arrived.
        let _ = (&mut stream)
            .take(RESPONSE_SIZE_MAX)
            .read_to_end(&mut response)
            .await;
        response
    };
    let response = tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .expect("the endpoint answers and closes in time");
    let response = String::from_utf8(response).expect("a text response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole head");
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET /metrics` with `Connection: close`.
async fn scrape(address: SocketAddr) -> Response {
    exchange(
        address,
        b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// Reads (and discards) until the server closes `stream`; the time that took, or `None` if it
/// is still open after `timeout`.
async fn closed_within(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    let until_closed = async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, until_closed)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// Whether the server has closed `stream`, without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    match stream.try_read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Checks that `text` is Prometheus text exposition: `# HELP`/`# TYPE` comments and
/// `name{label="value",...} value` samples, each sample of a metric whose `# HELP` and
/// `# TYPE` came before it (a histogram's `_bucket`, `_sum` and `_count` under its name).
pub(crate) fn check_exposition(text: &str) -> Result<(), String> {
    let mut helped = std::collections::BTreeSet::new();
    let mut typed = std::collections::BTreeMap::new();
    let is_name = |name: &str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".to_owned());
    }
    for line in text.lines() {
        let bad = || format!("not exposition: {line:?}");
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (keyword, name, rest) = (words.next(), words.next(), words.next());
            let valid = match (keyword, name, rest) {
                (Some("HELP"), Some(name), Some(_)) => is_name(name) && helped.insert(name),
                (Some("TYPE"), Some(name), Some(kind)) => {
                    is_name(name)
                        && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        && typed.insert(name, kind).is_none()
                }
                _ => false,
            };
            if !valid {
                return Err(bad());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
        value.parse::<f64>().map_err(|_| bad())?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').ok_or_else(bad)?),
            None => (series, ""),
        };
        if !is_name(name) {
            return Err(bad());
        }
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|family| typed.get(family) == Some(&"histogram"));
        let family = histogram.unwrap_or(name);
        if !typed.contains_key(family) || !helped.contains(family) {
            return Err(format!("no HELP or TYPE before {line:?}"));
        }
        for label in labels.split(',').filter(|label| !label.is_empty()) {
            let (key, quoted) = label.split_once('=').ok_or_else(bad)?;
            let value = quoted
                .strip_prefix('"')
                .and_then(|quoted| quoted.strip_suffix('"'))
                .ok_or_else(bad)?;
            if !is_name(key) || key.contains(':') || value.contains(['"', '\\', '\n']) {
                return Err(bad());
            }
        }
    }
    Ok(())
}

#[test]
fn the_exposition_check_rejects_what_is_not_exposition() {
    assert_eq!(
        check_exposition(
            "# HELP a A.\n# TYPE a counter\na 1\n# HELP b B.\n# TYPE b gauge\nb{c=\"d\"} 2\n\
             # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 2\nh_count 1\n"
        ),
        Ok(())
    );
    for bad in [
        "# TYPE a counter\na 1\n",
        "# HELP a A.\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na_count 1\n",
        "# HELP a A.\n# TYPE a gauge\n# HELP a A.\n# TYPE a gauge\na 1\n",
        "# TYPE a thing\n",
        "# NOTE a b\n",
    ] {
        assert!(check_exposition(bad).is_err(), "accepted {bad:?}");
    }
    // Samples of a declared metric that are not well formed.
    for bad in [
        "a 1",
        "a\n",
        "a one\n",
        "1a 1\n",
        "a{c=d} 1\n",
        "a{c=\"d\" 1\n",
    ] {
        let text = format!("# HELP a A.\n# TYPE a gauge\n{bad}");
        assert!(check_exposition(&text).is_err(), "accepted {text:?}");
    }
}

#[tokio::test]
async fn serves_the_rendered_metrics_as_prometheus_text() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    let response = scrape(endpoint.address).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    // The atomics, then what is read when scraped (here: the process metrics).
    assert!(response.body.starts_with(&endpoint.metrics.render()));
    assert_eq!(check_exposition(&response.body), Ok(()));
    for sample in [
        "vsr_view 0\n",
        "vsr_errors_total{kind=\"truncated\"} 1\n",
        "vsr_messages_dropped_total{reason=\"peer_queue_full\"} 3\n",
        "vsr_request_latency_seconds_bucket{le=\"+Inf\"} 1\n",
    ] {
        assert!(response.body.contains(sample), "{sample:?} missing");
    }
}

#[tokio::test]
async fn another_path_is_not_found() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    for request in [
        "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        "GET /metrics/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        "POST /other HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    ] {
        let response = exchange(endpoint.address, request.as_bytes()).await;
        assert_eq!(response.status, 404, "{request:?}: {response:?}");
    }
}

#[tokio::test]
async fn another_method_is_not_allowed_and_its_body_is_not_read() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        let request =
            format!("{method} /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let response = exchange(endpoint.address, request.as_bytes()).await;
        assert_eq!(response.status, 405, "{method}: {response:?}");
        assert_eq!(response.header("allow"), Some("GET"));
    }
    // A body declared far larger than it is: answered at once, the connection closed, not
    // waited on for the rest of the body.
    let mut request =
        b"POST /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000\r\n\r\n".to_vec();
    request.resize(request.len() + 16 * 1024, b'x');
    let response = exchange(endpoint.address, &request).await;
    assert_eq!(response.status, 405, "{response:?}");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    let mut request = b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Padding: ".to_vec();
    request.resize(request.len() + 12 * 1024, b'x');
    request.extend_from_slice(b"\r\n\r\n");
    let response = exchange(endpoint.address, &request).await;
    assert_eq!(response.status, 431, "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_succeeds_while_many_idle_and_slow_connections_are_open() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    let mut idle = Vec::with_capacity(200);
    for _ in 0..200 {
        idle.push(TcpStream::connect(endpoint.address).await.expect("connect"));
    }
    // Slowloris: a request head one byte every 100 ms, never finished.
    let mut slow = JoinSet::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(endpoint.address).await.expect("connect");
        slow.spawn(async move {
            let head = b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Slow: ".iter();
            for byte in head.chain(std::iter::repeat(&b'x')).take(600) {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each within RESPONSE_TIMEOUT, well below the header timeout that would free a slot.
    for _ in 0..3 {
        let response = scrape(endpoint.address).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(check_exposition(&response.body), Ok(()));
    }
    // The bound held: all but the newest connections were closed to make room.
    let mut still_open = 0;
    for stream in &idle {
        if !is_closed(stream) {
            still_open += 1;
        }
    }
    assert!(
        still_open <= Limits::DEFAULT.connections_max,
        "{still_open} open"
    );
    slow.abort_all();
}

#[tokio::test]
async fn past_the_bound_a_new_connection_closes_the_oldest() {
    let limits = Limits {
        connections_max: 4,
        ..Limits::DEFAULT
    };
    let endpoint = Endpoint::start(limits).await;
    let mut idle = Vec::with_capacity(10);
    for _ in 0..10 {
        idle.push(TcpStream::connect(endpoint.address).await.expect("connect"));
    }
    // The endpoint accepts in order: once the scrape is answered, all ten were accepted, and
    // the scrape's own connection closed the seventh.
    assert_eq!(scrape(endpoint.address).await.status, 200);
    for (index, stream) in idle.iter_mut().enumerate().take(7) {
        let closed = closed_within(stream, Duration::from_secs(1)).await;
        assert!(closed.is_some(), "connection {index} is still open");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (index, stream) in idle.iter().enumerate().skip(7) {
        assert!(!is_closed(stream), "connection {index} was closed");
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_within_the_header_timeout() {
    let endpoint = Endpoint::start(SHORT).await;
    let timeout = SHORT.header_read_timeout;
    let idle = async {
        let connected = Instant::now();
        let mut stream = TcpStream::connect(endpoint.address).await.expect("connect");
        closed_within(&mut stream, timeout * 3).await?;
        Some(connected.elapsed())
    };
    // Slowloris: a request head one byte every 50 ms, never finished.
    let slow = async {
        let connected = Instant::now();
        let mut stream = TcpStream::connect(endpoint.address).await.expect("connect");
        let head = b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Slow: ".iter();
        for byte in head.chain(std::iter::repeat(&b'x')).take(60) {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed_within(&mut stream, timeout * 3).await?;
        Some(connected.elapsed())
    };
    let (idle, slow) = tokio::join!(idle, slow);
    for (name, closed) in [("idle", idle), ("slow", slow)] {
        let elapsed = closed.unwrap_or_else(|| panic!("the {name} connection is still open"));
        assert!(elapsed >= timeout, "{name}: closed after {elapsed:?}");
        assert!(
            elapsed <= timeout + Duration::from_secs(1),
            "{name}: closed after {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn a_busy_connection_is_closed_after_its_lifetime() {
    let endpoint = Endpoint::start(SHORT).await;
    let mut stream = TcpStream::connect(endpoint.address).await.expect("connect");
    let start = Instant::now();
    let mut answered = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    // Keep-alive requests every 200 ms: never idle, so only the lifetime closes it.
    let closed_after = loop {
        assert!(start.elapsed() < SHORT.lifetime * 3, "still open");
        let request = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
        if stream.write_all(request).await.is_err() {
            break start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        match stream.try_read(&mut buffer) {
            Ok(0) => break start.elapsed(),
            Ok(read) => answered += usize::from(buffer[..read].starts_with(b"HTTP/1.1 200")),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break start.elapsed(),
        }
    };
    assert!(answered >= 2, "{answered} answered");
    assert!(closed_after >= SHORT.lifetime, "{closed_after:?}");
    assert!(
        closed_after <= SHORT.lifetime + SHORT.shutdown_grace + Duration::from_secs(1),
        "{closed_after:?}"
    );
}

/// `method path` with `Connection: close`.
async fn ask(address: SocketAddr, method: &str, path: &str) -> Response {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    exchange(address, request.as_bytes()).await
}

/// Publishes a replica state the way the event loop does.
fn publish(metrics: &Metrics, status: u64, commit: u64, commit_max: u64) {
    use std::sync::atomic::Ordering;
    metrics.status.store(status, Ordering::Relaxed);
    metrics.commit.store(commit, Ordering::Relaxed);
    metrics.commit_max.store(commit_max, Ordering::Relaxed);
    metrics
        .commit_lag
        .store(commit_max - commit, Ordering::Relaxed);
    metrics.observed.store(true, Ordering::Release);
}

#[tokio::test]
async fn healthz_answers_while_the_process_runs() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    // Before the replica published anything, and in every status: the process runs.
    for status in [None, Some(STATUS_VIEW_CHANGE), Some(STATUS_RECOVERING)] {
        if let Some(status) = status {
            publish(&endpoint.metrics, status, 0, 100);
        }
        let response = ask(endpoint.address, "GET", "/healthz").await;
        assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    let response = ask(endpoint.address, "HEAD", "/healthz").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "", "no body for HEAD");
    assert_eq!(response.header("content-length"), Some("3"));
}

#[tokio::test]
async fn readyz_follows_status_and_lag() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    let ready = |expected: (u16, &'static str)| {
        let address = endpoint.address;
        async move {
            let response = ask(address, "GET", "/readyz").await;
            assert_eq!((response.status, response.body.as_str()), expected);
            let head = ask(address, "HEAD", "/readyz").await;
            assert_eq!((head.status, head.body.as_str()), (expected.0, ""));
        }
    };
    ready((503, "not ready: starting\n")).await;
    publish(&endpoint.metrics, STATUS_NORMAL, 40, 40);
    ready((200, "ready\n")).await;
    publish(&endpoint.metrics, STATUS_NORMAL, 40, 40 + LAG_READY_MAX);
    ready((200, "ready\n")).await;
    publish(&endpoint.metrics, STATUS_NORMAL, 40, 41 + LAG_READY_MAX);
    ready((503, "not ready: lagging 9 ops (ready at 8 or fewer)\n")).await;
    publish(&endpoint.metrics, STATUS_VIEW_CHANGE, 40, 40);
    ready((503, "not ready: view change\n")).await;
    publish(&endpoint.metrics, STATUS_RECOVERING, 40, 40);
    ready((503, "not ready: recovering\n")).await;
    publish(&endpoint.metrics, STATUS_NORMAL, 1000, 1000);
    ready((200, "ready\n")).await;
    let text = ask(endpoint.address, "GET", "/metrics").await.body;
    assert!(text.contains("vsr_commit_max 1000\n"), "{text}");
    assert!(text.contains("vsr_commit_lag 0\n"), "{text}");
}

#[tokio::test]
async fn health_paths_answer_get_and_head_only() {
    let endpoint = Endpoint::start(Limits::DEFAULT).await;
    for path in ["/healthz", "/readyz"] {
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let response = ask(endpoint.address, method, path).await;
            assert_eq!(response.status, 405, "{method} {path}: {response:?}");
            assert_eq!(response.header("allow"), Some("GET, HEAD"));
        }
    }
    for path in ["/healthz/", "/readyz/x", "/health", "/ready", "/HEALTHZ"] {
        let response = ask(endpoint.address, "GET", path).await;
        assert_eq!(response.status, 404, "{path}: {response:?}");
    }
    // A query string does not change the path.
    let response = ask(endpoint.address, "GET", "/healthz?verbose=1").await;
    assert_eq!(response.status, 200, "{response:?}");
}
