//! Counters and gauges of one replica, and the HTTP endpoint that serves them.
//!
//! The event loop and the connection tasks update a [`Metrics`] of atomics shared through an
//! `Arc`; the HTTP endpoint ([`endpoint`]) renders it as Prometheus text on `GET /metrics`, and
//! answers `/healthz` and `/readyz` from it ([`Metrics::readiness`]). The same struct
//! rate-limits the warnings logged for dropped garbage: at most one line per second per kind.
//!
//! Updating a metric is an atomic operation, with no lock and no allocation: the event loop
//! does it on every request. What costs a system call is read only when scraped
//! ([`Metrics::scrape`], run off the runtime's threads): the sizes of the data directory's
//! files (`storage.rs`) and the process metrics (`process.rs`). `histogram.rs` holds the
//! histogram type and the text format's lines; `operations.rs` the per-operation latencies.

mod endpoint;
mod histogram;
mod operations;
mod process;
mod storage;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vsr::StateSize;
use vsr::wire::DecodeError;

pub(crate) use endpoint::{bind, serve};
use histogram::{Histogram, header, metric};
pub(crate) use operations::OperationSlot;
use operations::Operations;
pub(crate) use storage::StorageMetrics;

/// Upper bounds of the request latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds, in seconds, of the event loop's turn-duration buckets: one turn handles a
/// batch of events and carries out the commands they caused, and nothing else runs meanwhile.
const TURN_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Bad input from the network, by kind: the label of `vsr_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    HeaderChecksum,
    BodyChecksum,
    TooLarge,
    TooShort,
    Truncated,
    Version,
    Malformed,
    WrongCluster,
    BadSender,
    /// A frame its connection's certificate (or first frame) does not allow.
    Unauthorized,
    /// A TLS handshake failed (no certificate, another cluster's, a plaintext peer...).
    Handshake,
}

impl ErrorKind {
    const ALL: [ErrorKind; 11] = [
        ErrorKind::HeaderChecksum,
        ErrorKind::BodyChecksum,
        ErrorKind::TooLarge,
        ErrorKind::TooShort,
        ErrorKind::Truncated,
        ErrorKind::Version,
        ErrorKind::Malformed,
        ErrorKind::WrongCluster,
        ErrorKind::BadSender,
        ErrorKind::Unauthorized,
        ErrorKind::Handshake,
    ];

    fn name(self) -> &'static str {
        match self {
            ErrorKind::HeaderChecksum => "header_checksum",
            ErrorKind::BodyChecksum => "body_checksum",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::TooShort => "too_short",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Version => "version",
            ErrorKind::Malformed => "malformed",
            ErrorKind::WrongCluster => "wrong_cluster",
            ErrorKind::BadSender => "bad_sender",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Handshake => "handshake",
        }
    }

    pub(crate) fn of(error: &DecodeError) -> Self {
        match error {
            DecodeError::HeaderChecksum => ErrorKind::HeaderChecksum,
            DecodeError::BodyChecksum | DecodeError::EntryChecksum { .. } => {
                ErrorKind::BodyChecksum
            }
            DecodeError::TooLarge { .. } | DecodeError::OperationTooLarge { .. } => {
                ErrorKind::TooLarge
            }
            DecodeError::WrongCluster { .. } => ErrorKind::WrongCluster,
            DecodeError::BadSender { .. }
            | DecodeError::NotFromPrimary { .. }
            | DecodeError::OutOfPlace { .. } => ErrorKind::BadSender,
            DecodeError::TooShort { .. } => ErrorKind::TooShort,
            DecodeError::Version { .. } => ErrorKind::Version,
            _ => ErrorKind::Malformed,
        }
    }
}

/// Why a message was dropped by this replica: the label of `vsr_messages_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A peer's outbound queue was full (the peer is slow, dead or unreachable).
    PeerQueueFull,
    /// A client's reply queue was full (the client does not read).
    ReplyQueueFull,
    /// A reply for a client with no open connection.
    ReplyNoConnection,
    /// The protocol core rejected a message (invalid, misdirected, stale).
    Rejected,
    /// The protocol core dropped a message (or a commit number in it) that would have moved
    /// the replica further ahead than the jump bounds allow: a faulty peer.
    TooFarAhead,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::PeerQueueFull,
        DropReason::ReplyQueueFull,
        DropReason::ReplyNoConnection,
        DropReason::Rejected,
        DropReason::TooFarAhead,
    ];

    fn name(self) -> &'static str {
        match self {
            DropReason::PeerQueueFull => "peer_queue_full",
            DropReason::ReplyQueueFull => "reply_queue_full",
            DropReason::ReplyNoConnection => "reply_no_connection",
            DropReason::Rejected => "rejected",
            DropReason::TooFarAhead => "too_far_ahead",
        }
    }
}

/// Why this replica closed a connection that was not at fault (bad frames count as errors):
/// the label of `vsr_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// No frame for the idle timeout.
    Idle,
    /// A frame begun did not end within the frame timeout.
    FrameTimeout,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// Closed to keep a connection bound (the least recently active one goes).
    Evicted,
    /// Accepting failed (usually: out of file descriptors); an idle connection was closed.
    AcceptFailed,
    /// The other end stopped acknowledging: a reply write made no progress, or the kernel gave
    /// up on unacknowledged data or unanswered keepalive probes (`TCP_USER_TIMEOUT`).
    Stalled,
}

impl Closed {
    const ALL: [Closed; 6] = [
        Closed::Idle,
        Closed::FrameTimeout,
        Closed::HandshakeTimeout,
        Closed::Evicted,
        Closed::AcceptFailed,
        Closed::Stalled,
    ];

    fn name(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::FrameTimeout => "frame_timeout",
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::Evicted => "evicted",
            Closed::AcceptFailed => "accept_failed",
            Closed::Stalled => "stalled",
        }
    }
}

/// The replica's metrics, as atomics shared by the event loop, connections and HTTP task.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) view: AtomicU64,
    pub(crate) status: AtomicU64,
    pub(crate) op: AtomicU64,
    pub(crate) commit: AtomicU64,
    /// The highest op the replica knows committed in its view (`Replica::commit_max`).
    pub(crate) commit_max: AtomicU64,
    /// `commit_max - commit`: ops known committed in this view, not yet executed here.
    pub(crate) commit_lag: AtomicU64,
    /// 1 when the replica is the primary of its view in normal status, else 0.
    pub(crate) primary: AtomicU64,
    /// Whether the event loop has published the replica's state at least once.
    pub(crate) observed: AtomicBool,
    /// The largest [`Metrics::commit_lag`] of a ready replica: the pipeline's depth in ops.
    commit_lag_ready_max: u64,
    pub(crate) requests: AtomicU64,
    pub(crate) queries: AtomicU64,
    pub(crate) reads_answered: AtomicU64,
    pub(crate) read_rounds: AtomicU64,
    pub(crate) replies: AtomicU64,
    pub(crate) view_changes: AtomicU64,
    pub(crate) state_transfers: AtomicU64,
    /// Checkpoints written in the background and made live.
    pub(crate) checkpoints: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    closed: [AtomicU64; Closed::ALL.len()],
    /// Open inbound connections: clients (and not yet identified), peers.
    connections: [AtomicU64; 2],
    /// Outbound links to peers that are connected now.
    peers_connected: AtomicU64,
    /// The state machine's size: live keys and their bytes, once it reported one.
    state_keys: AtomicU64,
    state_bytes: AtomicU64,
    state_size_known: AtomicBool,
    latency: Histogram<{ LATENCY_BUCKETS.len() }>,
    operations: Operations,
    storage: Arc<StorageMetrics>,
    turns: Histogram<{ TURN_BUCKETS.len() }>,
    /// Per error kind, then per drop reason: milliseconds since `start` of the last log line.
    logged_at_millis: [AtomicU64; ErrorKind::ALL.len() + DropReason::ALL.len() + Closed::ALL.len()],
    start: Instant,
}

impl Default for Metrics {
    /// Metrics whose replica is ready only with no lag, with no data directory to measure.
    fn default() -> Self {
        Self::new(0, Arc::new(StorageMetrics::new(None)))
    }
}

/// Why a replica is not ready: the one-line reason `/readyz` gives with its 503.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// The event loop has not published the replica's state yet.
    Starting,
    /// The replica is in a view change.
    ViewChange,
    /// The replica is recovering.
    Recovering,
    /// The replica is this many ops behind the commits it knows of, more than the bound.
    Lagging { ops: u64, ops_max: u64 },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Starting => write!(f, "starting"),
            NotReady::ViewChange => write!(f, "view change"),
            NotReady::Recovering => write!(f, "recovering"),
            NotReady::Lagging { ops, ops_max } => {
                write!(f, "lagging {ops} ops (ready at {ops_max} or fewer)")
            }
        }
    }
}

/// An outbound link to a peer counted in `vsr_peers_connected` while it lives.
#[derive(Debug)]
pub(crate) struct PeerConnected<'a>(&'a AtomicU64);

impl Drop for PeerConnected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `vsr_status` of a replica in normal status.
pub(crate) const STATUS_NORMAL: u64 = 0;
/// `vsr_status` of a replica in a view change.
pub(crate) const STATUS_VIEW_CHANGE: u64 = 1;
/// `vsr_status` of a recovering replica.
pub(crate) const STATUS_RECOVERING: u64 = 2;

impl Metrics {
    /// Metrics of a replica that is ready while at most `commit_lag_ready_max` ops behind
    /// (the pipeline's depth in ops, [`vsr::Config::pipeline_ops_max`]), whose storage reports
    /// to `storage`.
    pub(crate) fn new(commit_lag_ready_max: u64, storage: Arc<StorageMetrics>) -> Self {
        Self {
            view: AtomicU64::new(0),
            status: AtomicU64::new(STATUS_NORMAL),
            op: AtomicU64::new(0),
            commit: AtomicU64::new(0),
            commit_max: AtomicU64::new(0),
            commit_lag: AtomicU64::new(0),
            primary: AtomicU64::new(0),
            observed: AtomicBool::new(false),
            commit_lag_ready_max,
            requests: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            reads_answered: AtomicU64::new(0),
            read_rounds: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            view_changes: AtomicU64::new(0),
            state_transfers: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            errors: Default::default(),
            dropped: Default::default(),
            closed: Default::default(),
            connections: Default::default(),
            peers_connected: AtomicU64::new(0),
            state_keys: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            state_size_known: AtomicBool::new(false),
            latency: Histogram::new(&LATENCY_BUCKETS),
            operations: Operations::new(),
            storage,
            turns: Histogram::new(&TURN_BUCKETS),
            logged_at_millis: Default::default(),
            start: Instant::now(),
        }
    }

    /// Whether the replica is ready to serve: published at least once, in normal status, and
    /// at most the pipeline's depth in ops behind the commits it knows of in its view.
    pub(crate) fn readiness(&self) -> Result<(), NotReady> {
        if !self.observed.load(Ordering::Acquire) {
            return Err(NotReady::Starting);
        }
        match self.status.load(Ordering::Relaxed) {
            STATUS_NORMAL => {}
            STATUS_VIEW_CHANGE => return Err(NotReady::ViewChange),
            _ => return Err(NotReady::Recovering),
        }
        let ops = self.commit_lag.load(Ordering::Relaxed);
        if ops > self.commit_lag_ready_max {
            return Err(NotReady::Lagging {
                ops,
                ops_max: self.commit_lag_ready_max,
            });
        }
        Ok(())
    }

    /// Counts a bad frame; returns whether to log it (at most once a second per kind).
    pub(crate) fn error(&self, kind: ErrorKind) -> bool {
        let index = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("listed");
        self.errors[index].fetch_add(1, Ordering::Relaxed);
        self.may_log(index)
    }

    /// Counts `count` dropped messages; returns whether to log it (at most once a second per
    /// reason).
    pub(crate) fn dropped(&self, reason: DropReason, count: u64) -> bool {
        let index = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("listed");
        self.dropped[index].fetch_add(count, Ordering::Relaxed);
        self.may_log(ErrorKind::ALL.len() + index)
    }

    /// Counts a closed connection; returns whether to log it (at most once a second per
    /// reason).
    pub(crate) fn closed(&self, reason: Closed) -> bool {
        let index = Closed::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("listed");
        self.closed[index].fetch_add(1, Ordering::Relaxed);
        self.may_log(ErrorKind::ALL.len() + DropReason::ALL.len() + index)
    }

    /// Sets the open inbound connection gauges.
    pub(crate) fn connections(&self, clients: usize, peers: usize) {
        self.connections[0].store(clients as u64, Ordering::Relaxed);
        self.connections[1].store(peers as u64, Ordering::Relaxed);
    }

    fn may_log(&self, slot: usize) -> bool {
        // +1000 so that the very first event logs.
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1000;
        let last = self.logged_at_millis[slot].load(Ordering::Relaxed);
        now >= last + 1000
            && self.logged_at_millis[slot]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The slot of operations named `name` ([`vsr::StateMachine::operation_name`]).
    pub(crate) fn operation_slot(&self, name: &'static str) -> OperationSlot {
        self.operations.slot(name)
    }

    /// Records the latency of one request or query of the operation in `slot`, in
    /// `vsr_request_latency_seconds` and in its operation's histogram.
    pub(crate) fn observe_operation(&self, slot: OperationSlot, latency: Duration) {
        self.latency.observe(latency);
        self.operations.observe(slot, latency);
    }

    /// Counts an outbound link to a peer as connected until the guard is dropped.
    pub(crate) fn peer_connected(&self) -> PeerConnected<'_> {
        self.peers_connected.fetch_add(1, Ordering::Relaxed);
        PeerConnected(&self.peers_connected)
    }

    /// Publishes the state machine's size, if it reports one.
    pub(crate) fn state_size(&self, size: Option<StateSize>) {
        if let Some(StateSize { keys, bytes }) = size {
            self.state_keys.store(keys, Ordering::Relaxed);
            self.state_bytes.store(bytes, Ordering::Relaxed);
            self.state_size_known.store(true, Ordering::Relaxed);
        }
    }

    /// The metrics a scrape serves: [`Self::render`], then what is read from the system when
    /// asked (the data directory's file sizes, the process metrics). Blocking: call it where
    /// blocking is allowed (`spawn_blocking`).
    pub(crate) fn scrape(&self) -> String {
        let mut out = self.render();
        self.storage.render_sizes(&mut out);
        process::render(&mut out);
        out
    }

    /// Records how long one turn of the event loop took.
    pub(crate) fn observe_turn(&self, turn: Duration) {
        self.turns.observe(turn);
    }

    /// The metrics in the Prometheus text format, version 0.0.4.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        self.render_gauges(&mut out);
        self.render_counters(&mut out);
        self.render_state(&mut out);
        self.render_labelled(&mut out);
        self.render_latency(&mut out);
        self.operations.render(&mut out);
        self.storage.render(&mut out);
        out
    }

    fn render_gauges(&self, out: &mut String) {
        let gauges = [
            ("vsr_view", "The replica's current view.", &self.view),
            (
                "vsr_status",
                "0 normal, 1 view_change, 2 recovering.",
                &self.status,
            ),
            ("vsr_op", "The last op in the replica's log.", &self.op),
            (
                "vsr_commit",
                "The last op the replica executed.",
                &self.commit,
            ),
            (
                "vsr_commit_max",
                "The highest op the replica knows committed in its view (its log may not reach \
                 it yet).",
                &self.commit_max,
            ),
            (
                "vsr_commit_lag",
                "vsr_commit_max minus vsr_commit: ops known committed, not yet executed here.",
                &self.commit_lag,
            ),
            (
                "vsr_primary",
                "1 when this replica is the primary of its view in normal status, else 0.",
                &self.primary,
            ),
            (
                "vsr_peers_connected",
                "Outbound links to the other replicas that are connected now (inbound ones: \
                 vsr_connections{class=\"peer\"}).",
                &self.peers_connected,
            ),
        ];
        for (name, help, value) in gauges {
            metric(out, name, help, "gauge", value.load(Ordering::Relaxed));
        }
    }

    fn render_counters(&self, out: &mut String) {
        let counters = [
            (
                "vsr_requests_total",
                "Client requests received.",
                &self.requests,
            ),
            (
                "vsr_queries_total",
                "Client queries received (reads answered without the log).",
                &self.queries,
            ),
            (
                "vsr_reads_answered_total",
                "Queries answered as primary, each after a quorum confirmed its view.",
                &self.reads_answered,
            ),
            (
                "vsr_read_rounds_total",
                "Read rounds started as primary (one round covers every read waiting for it).",
                &self.read_rounds,
            ),
            (
                "vsr_replies_total",
                "Replies queued to clients.",
                &self.replies,
            ),
            (
                "vsr_view_changes_total",
                "Views this replica entered.",
                &self.view_changes,
            ),
            (
                "vsr_state_transfers_total",
                "State transfers installed.",
                &self.state_transfers,
            ),
            (
                "vsr_checkpoints_total",
                "Checkpoints written in the background and made live.",
                &self.checkpoints,
            ),
        ];
        for (name, help, value) in counters {
            metric(out, name, help, "counter", value.load(Ordering::Relaxed));
        }
    }

    /// The state machine's size, once it reported one.
    fn render_state(&self, out: &mut String) {
        if !self.state_size_known.load(Ordering::Relaxed) {
            return;
        }
        let keys = self.state_keys.load(Ordering::Relaxed);
        let help = "Live keys in the state machine.";
        metric(out, "vsr_state_keys", help, "gauge", keys);
        let bytes = self.state_bytes.load(Ordering::Relaxed);
        let help = "Bytes of the live keys and values in the state machine (not its memory).";
        metric(out, "vsr_state_bytes", help, "gauge", bytes);
    }

    fn render_labelled(&self, out: &mut String) {
        header(
            out,
            "vsr_errors_total",
            "Bad frames received, by kind.",
            "counter",
        );
        for (kind, value) in ErrorKind::ALL.iter().zip(&self.errors) {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "vsr_errors_total{{kind=\"{}\"}} {value}", kind.name());
        }
        let help = "Messages dropped, by reason.";
        header(out, "vsr_messages_dropped_total", help, "counter");
        for (reason, value) in DropReason::ALL.iter().zip(&self.dropped) {
            let value = value.load(Ordering::Relaxed);
            let name = reason.name();
            let _ = writeln!(
                out,
                "vsr_messages_dropped_total{{reason=\"{name}\"}} {value}"
            );
        }
        let help = "Connections closed though not at fault of a bad frame, by reason.";
        header(out, "vsr_connections_closed_total", help, "counter");
        for (reason, value) in Closed::ALL.iter().zip(&self.closed) {
            let value = value.load(Ordering::Relaxed);
            let name = reason.name();
            let _ = writeln!(
                out,
                "vsr_connections_closed_total{{reason=\"{name}\"}} {value}"
            );
        }
        let help = "Open inbound connections: clients (and not yet identified) and peers.";
        header(out, "vsr_connections", help, "gauge");
        for (class, value) in ["client", "peer"].iter().zip(&self.connections) {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "vsr_connections{{class=\"{class}\"}} {value}");
        }
    }

    fn render_latency(&self, out: &mut String) {
        self.latency.render(
            out,
            "vsr_request_latency_seconds",
            "Request or query arrival at the primary to reply sent.",
        );
        self.turns.render(
            out,
            "vsr_event_loop_turn_seconds",
            "One turn of the replica's event loop: a batch of events handled and the commands \
             they caused carried out; nothing else runs on the loop meanwhile.",
        );
        let name = "vsr_event_loop_turn_max_seconds";
        header(
            out,
            name,
            "The longest turn of the event loop since start.",
            "gauge",
        );
        let _ = writeln!(out, "{name} {}", self.turns.max_seconds());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_most_once_a_second_per_kind_but_counts_everything() {
        let metrics = Metrics::default();
        assert!(metrics.error(ErrorKind::Truncated));
        assert!(!metrics.error(ErrorKind::Truncated));
        assert!(metrics.error(ErrorKind::WrongCluster));
        assert!(metrics.dropped(DropReason::PeerQueueFull, 3));
        assert!(metrics.dropped(DropReason::TooFarAhead, 2));
        metrics.observe_operation(metrics.operation_slot("put"), Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains("vsr_errors_total{kind=\"truncated\"} 2\n"));
        assert!(text.contains("vsr_messages_dropped_total{reason=\"peer_queue_full\"} 3\n"));
        assert!(text.contains("vsr_messages_dropped_total{reason=\"too_far_ahead\"} 2\n"));
        assert!(text.contains("vsr_messages_dropped_total{reason=\"rejected\"} 0\n"));
        assert!(text.contains("vsr_request_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("vsr_request_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("vsr_request_latency_seconds_count 1\n"));
    }

    #[test]
    fn the_new_gauges_render_with_their_help_and_type() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("wal-1-0.log"), [0u8; 64]).expect("write");
        let storage = Arc::new(StorageMetrics::new(Some(dir.path().to_owned())));
        let metrics = Metrics::new(0, storage);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE vsr_primary gauge\nvsr_primary 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE vsr_peers_connected gauge\nvsr_peers_connected 0\n"));
        assert!(!text.contains("vsr_state_keys"), "no size reported yet");
        metrics.primary.store(1, Ordering::Relaxed);
        let first = metrics.peer_connected();
        let second = metrics.peer_connected();
        metrics.state_size(Some(StateSize { keys: 3, bytes: 40 }));
        metrics.state_size(None);
        let text = metrics.render();
        assert!(text.contains("vsr_primary 1\n"));
        assert!(text.contains("vsr_peers_connected 2\n"));
        assert!(
            text.contains("# TYPE vsr_state_keys gauge\nvsr_state_keys 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE vsr_state_bytes gauge\nvsr_state_bytes 40\n"));
        drop((first, second));
        assert!(metrics.render().contains("vsr_peers_connected 0\n"));
        let scraped = metrics.scrape();
        assert!(scraped.contains("# TYPE vsr_log_bytes gauge\nvsr_log_bytes 64\n"));
        assert!(scraped.contains("# TYPE vsr_checkpoint_bytes gauge\nvsr_checkpoint_bytes 0\n"));
        if cfg!(target_os = "linux") {
            assert!(scraped.contains("# TYPE process_cpu_seconds_total counter\n"));
        }
        assert_eq!(endpoint::tests::check_exposition(&scraped), Ok(()));
    }

    #[test]
    fn an_operation_counts_in_its_own_histogram_and_in_the_request_latency() {
        let metrics = Metrics::default();
        let (put, get) = (metrics.operation_slot("put"), metrics.operation_slot("get"));
        metrics.observe_operation(put, Duration::from_millis(1));
        metrics.observe_operation(put, Duration::from_millis(1));
        metrics.observe_operation(get, Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains("vsr_operation_latency_seconds_count{operation=\"put\"} 2\n"));
        assert!(text.contains("vsr_operation_latency_seconds_count{operation=\"get\"} 1\n"));
        assert!(text.contains("vsr_request_latency_seconds_count 3\n"));
        assert_eq!(endpoint::tests::check_exposition(&text), Ok(()));
    }

    #[test]
    fn turns_are_a_histogram_with_their_maximum() {
        let metrics = Metrics::default();
        metrics.observe_turn(Duration::from_micros(80));
        metrics.observe_turn(Duration::from_millis(3));
        metrics.observe_turn(Duration::from_secs(2));
        let text = metrics.render();
        assert!(text.contains("vsr_event_loop_turn_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("vsr_event_loop_turn_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("vsr_event_loop_turn_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("vsr_event_loop_turn_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("vsr_event_loop_turn_seconds_count 3\n"));
        assert!(text.contains("vsr_event_loop_turn_max_seconds 2\n"));
    }
}
