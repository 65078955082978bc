//! `run_replica`: opens storage, starts the network tasks and runs the replica's event loop.
//!
//! One task owns the [`Replica`]; no lock surrounds it. It waits on four sources — shutdown,
//! storage completions, the tick interval and inbound messages — feeds the event to the
//! replica, then carries out the commands the replica emitted:
//!
//! ```text
//! connection tasks ─(bounded mpsc)─▶ ┌────────────┐ ─ Send ────▶ peer queue ─▶ peer task
//! tick interval ───────────────────▶ │ event loop │ ─ Reply ───▶ client's connection queue
//! storage thread ─(on_durable seq)─▶ └────────────┘ ─ Persist ─▶ storage thread (group commit)
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use vsr::{
    Checkpoint, ClientId, Command, Config, Envelope, Message, Operation, Query, Replica, Reply,
    ReplyResult, Request, Sender, StateMachine, Status, View,
};

use crate::backup;
use crate::error::ServerError;
use crate::frame::{QueueError, QueueSender, queue};
use crate::inbound::{Inbound, InboundContext, ReplyRoute, accept_loop};
use crate::metrics::{
    self, DropReason, Metrics, OperationSlot, STATUS_NORMAL, STATUS_RECOVERING, STATUS_VIEW_CHANGE,
    StorageMetrics,
};
use crate::peer::{Heard, PEER_QUEUE_BYTES_MAX, PEER_QUEUE_FRAMES_MAX, peer_task};
use crate::status::{self, ReplicaStatus, StatusKind};
use crate::storage::{FileStorage, Opened, StorageError, StorageEvent, StorageThread};
use crate::tls::{Identity, TlsTransport};
use crate::transport::{TcpTransport, Transport};

/// Messages waiting for the event loop, from all connections together.
const INBOUND_QUEUE_MAX: usize = 1024;
/// Messages handled before the loop carries out the commands they caused.
const INBOUND_BATCH_MAX: usize = 256;
/// Clients whose reply connection the loop remembers.
const ROUTES_MAX: usize = 64 * 1024;
/// Requests whose arrival time the primary remembers, for the latency histogram.
const ARRIVALS_MAX: usize = 64 * 1024;
/// A request unanswered for this long is forgotten by the latency histogram.
const ARRIVAL_AGE_MAX: Duration = Duration::from_secs(60);

/// How to run one replica.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// The cluster's identity; the data directory must have been formatted for it.
    pub cluster: u128,
    /// `host:port` of every replica, the i-th for replica i. This replica listens on its own;
    /// each process may be given its own list (for example with peers behind proxies).
    pub addresses: Vec<String>,
    /// The data directory, formatted with `vsr_storage::format`.
    pub data_dir: PathBuf,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Duration of one protocol tick; the protocol's timeouts count ticks.
    pub tick: Duration,
    /// Protocol configuration; `None` for [`Config::new`]'s defaults. Its cluster and replica
    /// count must match the data directory's.
    pub config: Option<Config>,
    /// Overrides the configuration's `checkpoint_interval` (ops between checkpoints; at least
    /// 1, else [`ServerError::CheckpointInterval`]), as `vsr start --checkpoint-interval` does.
    /// Checkpoints are local: replicas of one cluster may checkpoint at different intervals.
    pub checkpoint_interval: Option<u64>,
    /// Overrides the configuration's `checkpoint_log_size_max` (bytes of executed log entries
    /// after which a checkpoint is taken even before `checkpoint_interval` ops; at least 1).
    pub checkpoint_log_bytes: Option<usize>,
    /// The share of the disk's time, in percent (1 to 100), a checkpoint written in the
    /// background may take (`vsr_storage::Tuning::checkpoint_disk_share_percent`); `None` for
    /// the default.
    pub checkpoint_disk_share: Option<u32>,
    /// Mutual TLS with the certificates in this directory (see [`crate::tls`]): `ca.pem` and
    /// this replica's `replica-I.pem` / `replica-I.key`. `None`: plain TCP, where anyone who
    /// reaches the port can send anything; for a trusted network only.
    pub tls: Option<PathBuf>,
    /// Each notification re-reads the TLS files (rotation without a restart; `vsr start` does
    /// it on SIGHUP). A failed reload is logged and the certificates in use stay.
    pub tls_reload: Option<Arc<Notify>>,
}

impl ReplicaOptions {
    /// Options with a 10 ms tick, no metrics endpoint and the default configuration.
    #[must_use]
    pub fn new(cluster: u128, addresses: Vec<String>, data_dir: PathBuf) -> Self {
        Self {
            cluster,
            addresses,
            data_dir,
            metrics: None,
            tick: Duration::from_millis(10),
            config: None,
            checkpoint_interval: None,
            checkpoint_log_bytes: None,
            checkpoint_disk_share: None,
            tls: None,
            tls_reload: None,
        }
    }
}

/// Runs a replica of state machine `S` until `shutdown` completes: over mutual TLS when
/// `options.tls` names a certificate directory, else over plain TCP.
///
/// Opens the data directory, checks it against `options`, listens on this replica's address
/// and serves peers and clients. Dropping the future stops every task it started.
///
/// # Errors
/// When the data directory cannot be opened or does not match the options, the certificates
/// cannot be loaded, an address cannot be resolved or bound, or the storage thread fails (the
/// replica stops rather than acknowledge writes that may not be durable).
///
/// # Panics
/// When `options.config` is not a valid configuration ([`Config::validate`]).
pub async fn run_replica<S>(
    options: ReplicaOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError>
where
    S: StateMachine + Default + Send + 'static,
{
    let opened = open_storage(&options).await?;
    let identity = opened.0.identity;
    let Some(dir) = options.tls.clone() else {
        tracing::warn!("plain TCP without TLS (--insecure): for a trusted network only");
        return serve::<S, _>(TcpTransport, options, opened, shutdown).await;
    };
    let tls = TlsTransport::new(&dir, identity.cluster, Identity::Replica(identity.replica))?;
    let reloads = options.tls_reload.clone().map(|notify| {
        let tls = tls.clone();
        tokio::spawn(async move {
            loop {
                notify.notified().await;
                match tls.reload() {
                    Ok(()) => tracing::info!(dir = %dir.display(), "reloaded the TLS certificates"),
                    Err(error) => tracing::error!(%error, "cannot reload the TLS certificates: keeping those in use"),
                }
            }
        })
    });
    let result = serve::<S, _>(tls, options, opened, shutdown).await;
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    result
}

/// [`run_replica`] over another [`Transport`].
///
/// # Errors
/// As [`run_replica`].
///
/// # Panics
/// As [`run_replica`].
pub async fn run_replica_with<S, T>(
    transport: T,
    options: ReplicaOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError>
where
    S: StateMachine + Default + Send + 'static,
    T: Transport,
{
    let opened = open_storage(&options).await?;
    serve::<S, T>(transport, options, opened, shutdown).await
}

async fn serve<S, T>(
    transport: T,
    options: ReplicaOptions,
    (opened, storage_metrics): (Opened, Arc<StorageMetrics>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError>
where
    S: StateMachine + Default + Send + 'static,
    T: Transport,
{
    let config = config(&options, &opened)?;
    let index = opened.identity.replica;
    let replica = start_replica::<S>(config.clone(), index, &opened)?;
    let listen = resolve(&options.addresses[usize::from(index)]).await?;
    let listener = transport
        .bind(listen)
        .await
        .map_err(|source| ServerError::Listen {
            address: options.addresses[usize::from(index)].clone(),
            source,
        })?;
    let metrics = Arc::new(Metrics::new(config.pipeline_ops_max(), storage_metrics));
    let mut tasks = JoinSet::new();
    if let Some(address) = options.metrics {
        let http = metrics::bind(address)
            .await
            .map_err(|source| ServerError::Listen {
                address: address.to_string(),
                source,
            })?;
        tasks.spawn(metrics::serve(http, Arc::clone(&metrics)));
    }
    let (durable_sender, durable) = mpsc::unbounded_channel();
    let on_event = Box::new(move |event: StorageEvent| {
        let _ = durable_sender.send(event);
    });
    let storage = StorageThread::spawn(opened.storage, on_event);
    let mut peers = Vec::with_capacity(options.addresses.len());
    for (peer, address) in options.addresses.iter().enumerate() {
        if peer == usize::from(index) {
            peers.push(None);
            continue;
        }
        let (sender, receiver) = queue(PEER_QUEUE_FRAMES_MAX, PEER_QUEUE_BYTES_MAX);
        let heard = Heard::new();
        let peer = u8::try_from(peer).expect("bounded by the replica count");
        tasks.spawn(peer_task(
            transport.clone(),
            peer,
            address.clone(),
            receiver,
            Arc::clone(&heard),
            Arc::clone(&metrics),
        ));
        peers.push(Some(PeerLink { sender, heard }));
    }
    let (inbound_sender, inbound) = mpsc::channel(INBOUND_QUEUE_MAX);
    let context = InboundContext::new(&config, index, inbound_sender, Arc::clone(&metrics));
    tasks.spawn(accept_loop(transport, listener, Arc::new(context)));
    tracing::info!(replica = index, address = %listen, cluster = %format!("{:x}", config.cluster), "listening");

    let driver = Driver::new(replica, storage, peers, metrics, &options);
    let result = driver.run(inbound, durable, options.tick, shutdown).await;
    tasks.shutdown().await;
    result
}

/// Opens the data directory, its syncs and failed reads observed by the storage metrics
/// returned, which have counted the damage open found.
async fn open_storage(
    options: &ReplicaOptions,
) -> Result<(Opened, Arc<StorageMetrics>), ServerError> {
    let dir = options.data_dir.clone();
    let cluster = options.cluster;
    let mut tuning = vsr_storage::Tuning::default();
    if let Some(share) = options.checkpoint_disk_share {
        tuning.checkpoint_disk_share_percent = share.clamp(1, 100);
    }
    let storage_metrics = Arc::new(StorageMetrics::new(Some(dir.clone())));
    let observer = Arc::clone(&storage_metrics);
    let opened = tokio::task::spawn_blocking(move || {
        FileStorage::open_observed(&dir, Some(cluster), tuning, observer)
    })
    .await
    .expect("opening storage does not panic");
    let opened = opened.map_err(|source| match source {
        StorageError::Locked { .. } => ServerError::DataDirectoryInUse { source },
        source => ServerError::Storage {
            dir: options.data_dir.clone(),
            source,
        },
    })?;
    let replica_count = opened.identity.replica_count;
    if options.addresses.len() != usize::from(replica_count) {
        return Err(ServerError::AddressCount {
            replica_count,
            addresses: options.addresses.len(),
        });
    }
    let damage = &opened.damage;
    storage_metrics.damage_found(damage);
    if !damage.is_clean() {
        // The core repairs it: `durable.damaged` makes the replica recover before it votes.
        let checkpoint = if damage.checkpoint_corrupt {
            " and the checkpoint"
        } else {
            ""
        };
        tracing::warn!(
            "data damaged at ops {:?}{checkpoint}: repairing from peers through recovery",
            damage.corrupt_ops
        );
    }
    if damage.torn_tail_records > 0 {
        tracing::warn!(
            records = damage.torn_tail_records,
            "discarded a torn write at the log's tail"
        );
    }
    Ok((opened, storage_metrics))
}

fn config(options: &ReplicaOptions, opened: &Opened) -> Result<Config, ServerError> {
    let identity = opened.identity;
    let mut config = options
        .config
        .clone()
        .unwrap_or_else(|| Config::new(identity.cluster, identity.replica_count));
    if let Some(interval) = options.checkpoint_interval {
        if interval == 0 {
            return Err(ServerError::CheckpointInterval);
        }
        config.checkpoint_interval = interval;
    }
    if let Some(bytes) = options.checkpoint_log_bytes {
        if bytes == 0 {
            return Err(ServerError::CheckpointInterval);
        }
        config.checkpoint_log_size_max = bytes;
    }
    if config.cluster != identity.cluster || config.replica_count != identity.replica_count {
        return Err(ServerError::ConfigMismatch {
            cluster: identity.cluster,
            replica_count: identity.replica_count,
        });
    }
    config.validate();
    Ok(config)
}

fn start_replica<S: StateMachine + Default>(
    config: Config,
    index: u8,
    opened: &Opened,
) -> Result<Replica<S>, ServerError> {
    let seed = getrandom::u64().map_err(|error| ServerError::Entropy(error.to_string()))?;
    if opened.durable.view_state.recovering {
        tracing::warn!(
            replica = index,
            "this replica lost its state: recovering from its peers"
        );
    }
    // `open`, not `recover`, even when recovering: a replica that crashed during recovery (or
    // after a damaged open) may hold part of a log, and the core must continue from exactly
    // what storage holds. `open` resumes recovery from it.
    Ok(Replica::open(
        config,
        index,
        S::default(),
        seed,
        &opened.durable,
    ))
}

async fn resolve(address: &str) -> Result<SocketAddr, ServerError> {
    let error = |reason: String| ServerError::Resolve {
        address: address.to_owned(),
        reason,
    };
    let mut resolved = tokio::net::lookup_host(address)
        .await
        .map_err(|e| error(e.to_string()))?;
    resolved
        .next()
        .ok_or_else(|| error("no addresses".to_owned()))
}

/// Where messages to one peer go, and how the event loop tells its task the peer was heard.
struct PeerLink {
    sender: QueueSender<Bytes>,
    heard: Arc<Heard>,
}

/// The event loop's state: the replica and where its commands go.
struct Driver<S: StateMachine> {
    replica: Replica<S>,
    /// `None` once stopped.
    storage: Option<StorageThread>,
    /// Outbound link of each peer (`None` for this replica).
    peers: Vec<Option<PeerLink>>,
    /// Where each client's replies go: the connection its latest request came from.
    routes: HashMap<ClientId, ReplyRoute>,
    /// Arrival time of requests at the primary, and the slot of their operation's latency, by
    /// client and request number.
    arrivals: HashMap<(ClientId, u64), (Instant, OperationSlot)>,
    metrics: Arc<Metrics>,
    /// Reused between batches.
    commands: Vec<Command>,
    /// What the last observation saw: view, status, messages the core rejected, messages it
    /// dropped as too far ahead.
    observed: (u64, u64, u64, u64),
    /// The cluster, the data directory and when serving started: for status requests.
    cluster: u128,
    data_dir: PathBuf,
    started: Instant,
    /// Backups being streamed.
    backups: Arc<AtomicUsize>,
    /// Backup requests the replica holds until a quorum confirms its view, by client and
    /// request number.
    backups_waiting: HashMap<(ClientId, u64), backup::Asker>,
}

impl<S: StateMachine> Driver<S> {
    fn new(
        replica: Replica<S>,
        storage: StorageThread,
        peers: Vec<Option<PeerLink>>,
        metrics: Arc<Metrics>,
        options: &ReplicaOptions,
    ) -> Self {
        Self {
            replica,
            storage: Some(storage),
            peers,
            routes: HashMap::new(),
            arrivals: HashMap::new(),
            metrics,
            commands: Vec::new(),
            observed: (u64::MAX, u64::MAX, 0, 0),
            cluster: options.cluster,
            data_dir: options.data_dir.clone(),
            started: Instant::now(),
            backups: Arc::new(AtomicUsize::new(0)),
            backups_waiting: HashMap::new(),
        }
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut durable: mpsc::UnboundedReceiver<StorageEvent>,
        tick: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let mut shutdown = pin!(shutdown);
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.drain();
        self.observe();
        loop {
            // A turn runs from the event's wake-up to the end of its commands; measured from
            // after the select returns, so the time spent waiting for an event is not counted.
            let turn = tokio::select! {
                biased;
                () = &mut shutdown => return self.stop_storage().await,
                event = durable.recv() => {
                    // The storage thread drops its sender only when it stops on an error.
                    let Some(event) = event else { return self.stop_storage().await };
                    let turn = Instant::now();
                    let mut highest = None;
                    for event in std::iter::once(event).chain(std::iter::from_fn(|| durable.try_recv().ok())) {
                        match event {
                            StorageEvent::Durable(seq) => highest = highest.max(Some(seq)),
                            StorageEvent::Checkpoint(op) => {
                                self.replica.on_checkpoint_durable(op);
                            }
                        }
                    }
                    if let Some(highest) = highest {
                        self.replica.on_persisted(highest);
                    }
                    turn
                }
                _ = ticks.tick() => {
                    let turn = Instant::now();
                    self.replica.on_tick();
                    turn
                }
                Some(message) = inbound.recv() => {
                    let now = Instant::now();
                    self.on_inbound(message, now);
                    for _ in 1..INBOUND_BATCH_MAX {
                        let Ok(message) = inbound.try_recv() else { break };
                        self.on_inbound(message, now);
                    }
                    now
                }
            };
            self.drain();
            self.observe();
            self.metrics.observe_turn(turn.elapsed());
        }
    }

    /// Stops the storage thread after its queued writes; reports the error that stopped it.
    async fn stop_storage(&mut self) -> Result<(), ServerError> {
        let Some(storage) = self.storage.take() else {
            return Ok(());
        };
        let stopped = match tokio::task::spawn_blocking(move || storage.join()).await {
            Ok(stopped) => stopped,
            // The storage thread panicked: a bug, carried on as a panic.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(StorageError::Io(std::io::Error::other(
                "the storage thread could not be joined: the runtime is shutting down",
            ))),
        };
        stopped.map_err(|source| {
            tracing::error!(error = %source, "storage failed: stopping the replica");
            ServerError::StorageFailed { source }
        })
    }

    fn on_inbound(&mut self, inbound: Inbound, now: Instant) {
        let Inbound {
            envelope, route, ..
        } = inbound;
        if let Sender::Replica(from) = envelope.envelope().sender
            && let Some(Some(link)) = self.peers.get(usize::from(from))
        {
            // The path from the peer works: a reconnect to it need not wait.
            link.heard.heard();
        }
        if let Sender::Client(client) = envelope.envelope().sender
            && status::is_admin_query(&envelope.envelope().message)
        {
            // Answered here, without the protocol (inbound let only an operator's connection
            // carry it): a status by every replica, a backup by whoever is asked.
            if let (Some(route), Message::Query(Query { request, .. })) =
                (route, &envelope.envelope().message)
            {
                if backup::is_backup_query(&envelope.envelope().message) {
                    self.start_backup(client, *request, route);
                } else {
                    self.answer_status(client, *request, &route);
                }
            }
            return;
        }
        if let Sender::Client(client) = envelope.envelope().sender {
            let (request, name) = self.count_request(&envelope.envelope().message);
            if let Some(route) = route {
                self.remember_route(client, route);
            }
            if self.replica.is_primary() {
                let slot = self.metrics.operation_slot(name);
                self.remember_arrival(client, request, now, slot);
            }
        }
        self.replica.on_message(envelope);
    }

    /// Counts a client's request or query; its request number and the name of its operation.
    fn count_request(&self, message: &Message) -> (u64, &'static str) {
        match message {
            Message::Request(Request {
                request,
                operation,
                body,
                ..
            }) => {
                self.metrics.requests.fetch_add(1, Ordering::Relaxed);
                let name = match operation {
                    Operation::Register => "register",
                    Operation::StateMachine | Operation::Noop => S::operation_name(body),
                };
                (*request, name)
            }
            Message::Query(Query { request, body }) => {
                self.metrics.queries.fetch_add(1, Ordering::Relaxed);
                (*request, S::query_name(body))
            }
            _ => unreachable!("decoding admits only requests and queries from clients"),
        }
    }

    fn remember_route(&mut self, client: ClientId, route: ReplyRoute) {
        if self
            .routes
            .get(&client)
            .is_some_and(|known| known.connection == route.connection)
        {
            return;
        }
        if self.routes.len() >= ROUTES_MAX && !self.routes.contains_key(&client) {
            self.routes.retain(|_, route| !route.queue.is_closed());
            if self.routes.len() >= ROUTES_MAX {
                let evict = *self.routes.keys().next().expect("the map is full");
                self.routes.remove(&evict);
            }
        }
        self.routes.insert(client, route);
    }

    fn remember_arrival(
        &mut self,
        client: ClientId,
        request: u64,
        now: Instant,
        slot: OperationSlot,
    ) {
        if self.arrivals.len() >= ARRIVALS_MAX {
            self.arrivals
                .retain(|_, (arrival, _)| now.duration_since(*arrival) < ARRIVAL_AGE_MAX);
            if self.arrivals.len() >= ARRIVALS_MAX {
                return;
            }
        }
        self.arrivals
            .entry((client, request))
            .or_insert((now, slot));
    }

    /// Carries out every command the replica emitted.
    fn drain(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        commands.extend(self.replica.drain_commands());
        // Broadcasts emit the same envelope once per peer: encode it once.
        let mut last_encoded: Option<(Envelope, Bytes)> = None;
        let mut writes = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Send { to, envelope } => {
                    let frame = encode_cached(&mut last_encoded, envelope);
                    self.send(to, frame);
                }
                Command::Reply { client, envelope } => {
                    let frame = encode_cached(&mut last_encoded, envelope);
                    self.reply(
                        client,
                        frame,
                        last_encoded.as_ref().map(|(e, _)| &e.message),
                    );
                }
                Command::Persist { seq, write } => writes.push((seq, write)),
                Command::Snapshot {
                    client,
                    request,
                    view,
                    checkpoint,
                } => self.serve_backup(client, request, view, checkpoint),
                Command::Checkpoint { checkpoint } => {
                    // Earlier writes go first: the checkpoint waits for them to be durable.
                    let storage = self.storage.as_ref().expect("running");
                    storage.submit_all(std::mem::take(&mut writes));
                    storage.checkpoint(checkpoint);
                }
            }
        }
        self.storage.as_ref().expect("running").submit_all(writes);
        self.commands = commands;
        self.refuse_stale_backups();
    }

    fn send(&mut self, to: u8, frame: Bytes) {
        let Some(Some(peer)) = self.peers.get(usize::from(to)) else {
            unreachable!("the replica sends only to other replicas of its configuration");
        };
        if let Err(QueueError::Full | QueueError::Closed) = peer.sender.try_send(frame)
            && self.metrics.dropped(DropReason::PeerQueueFull, 1)
        {
            tracing::warn!(
                replica = to,
                "dropped messages to a slow or unreachable replica (at most one line per second)"
            );
        }
    }

    fn reply(&mut self, client: ClientId, frame: Bytes, message: Option<&Message>) {
        if let Some(Message::Reply(Reply { request, .. })) = message
            && let Some((arrival, slot)) = self.arrivals.remove(&(client, *request))
        {
            self.metrics.observe_operation(slot, arrival.elapsed());
        }
        let Some(route) = self.routes.get(&client) else {
            self.metrics.dropped(DropReason::ReplyNoConnection, 1);
            return;
        };
        match route.queue.try_send(frame) {
            Ok(()) => {
                self.metrics.replies.fetch_add(1, Ordering::Relaxed);
            }
            Err(QueueError::Full) => {
                if self.metrics.dropped(DropReason::ReplyQueueFull, 1) {
                    tracing::warn!(client = %format!("{client:x}"), "dropped replies to a client that does not read them (at most one line per second)");
                }
            }
            Err(QueueError::Closed) => {
                self.routes.remove(&client);
                self.metrics.dropped(DropReason::ReplyNoConnection, 1);
            }
        }
    }

    /// Streams the state at the commit number to the backup request's connection, off the
    /// event loop; refuses outside normal status.
    fn start_backup(&mut self, client: ClientId, request: u64, route: ReplyRoute) {
        let asker = backup::Asker {
            cluster: self.cluster,
            replica: self.replica.index(),
            client,
            request,
            queue: route.queue,
        };
        let view = self.replica.view();
        if self.backups_waiting.len() >= backup::BACKUPS_MAX {
            asker.refuse(
                view,
                "too many backups under way on this replica: try again later",
            );
        } else if self.replica.request_snapshot(client, request) {
            // Answered as a read: once a quorum confirmed this primary's view (`drain`).
            tracing::info!(commit = self.replica.commit().get(), "backup requested");
            self.backups_waiting.insert((client, request), asker);
        } else {
            asker.refuse(
                view,
                "this replica is not the primary of its view in normal status: ask the primary",
            );
        }
    }

    /// Streams the state the replica handed over for a backup request.
    fn serve_backup(&mut self, client: ClientId, request: u64, view: View, checkpoint: Checkpoint) {
        if let Some(asker) = self.backups_waiting.remove(&(client, request)) {
            backup::spawn(asker, view, checkpoint, Arc::clone(&self.backups));
        }
    }

    /// A replica that is no longer primary dropped the backup requests it held: say so rather
    /// than leave the askers waiting.
    fn refuse_stale_backups(&mut self) {
        if self.backups_waiting.is_empty() || self.replica.is_primary() {
            return;
        }
        let view = self.replica.view();
        for (_, asker) in self.backups_waiting.drain() {
            asker.refuse(
                view,
                "the primary changed before the backup began: try again",
            );
        }
    }

    /// Answers a status request on `route`.
    fn answer_status(&mut self, client: ClientId, request: u64, route: &ReplyRoute) {
        let replica = &self.replica;
        let (log_bytes, checkpoint_bytes) = status::data_file_bytes(&self.data_dir);
        let status = ReplicaStatus {
            replica: replica.index(),
            status: StatusKind::from(replica.status()),
            primary: replica.is_primary(),
            view: replica.view().get(),
            op: replica.op().get(),
            commit: replica.commit().get(),
            checkpoint_op: replica.checkpoint_op().get(),
            log_bytes,
            checkpoint_bytes,
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let envelope = Envelope {
            cluster: self.cluster,
            epoch: 0,
            sender: Sender::Replica(replica.index()),
            message: Message::Reply(Reply {
                client,
                view: replica.view(),
                op: replica.commit(),
                request,
                result: ReplyResult::Answered(status.encode()),
            }),
        };
        if route
            .queue
            .try_send(Bytes::from(vsr::wire::encode(&envelope)))
            .is_err()
        {
            self.metrics.dropped(DropReason::ReplyQueueFull, 1);
        }
    }

    /// Publishes the replica's state to the metrics and logs view and status changes.
    fn observe(&mut self) {
        let replica = &self.replica;
        // Metrics and logs carry plain numbers.
        let (view, status) = (replica.view().get(), status_code(replica.status()));
        let metrics = &self.metrics;
        metrics.view.store(view, Ordering::Relaxed);
        metrics.status.store(status, Ordering::Relaxed);
        metrics.op.store(replica.op().get(), Ordering::Relaxed);
        let (commit, commit_max) = (replica.commit().get(), replica.commit_max().get());
        metrics.commit.store(commit, Ordering::Relaxed);
        metrics.commit_max.store(commit_max, Ordering::Relaxed);
        metrics
            .commit_lag
            .store(commit_max.saturating_sub(commit), Ordering::Relaxed);
        metrics
            .primary
            .store(u64::from(replica.is_primary()), Ordering::Relaxed);
        metrics.state_size(replica.state_machine().size());
        metrics.observed.store(true, Ordering::Release);
        let stats = replica.stats();
        metrics
            .state_transfers
            .store(stats.state_transfers, Ordering::Relaxed);
        metrics
            .checkpoints
            .store(stats.checkpoints_durable, Ordering::Relaxed);
        metrics
            .reads_answered
            .store(stats.reads_answered, Ordering::Relaxed);
        metrics
            .read_rounds
            .store(stats.read_rounds, Ordering::Relaxed);
        let (view_seen, status_seen, rejected_seen, too_far_seen) = self.observed;
        let too_far = stats.messages_too_far_ahead;
        let rejected = stats.messages_dropped - too_far;
        if rejected > rejected_seen {
            metrics.dropped(DropReason::Rejected, rejected - rejected_seen);
        }
        if too_far > too_far_seen
            && metrics.dropped(DropReason::TooFarAhead, too_far - too_far_seen)
        {
            tracing::warn!(
                total = too_far,
                "dropped a message whose view, op or commit number is further ahead than any \
                 honest peer sends: a peer is faulty"
            );
        }
        if view != view_seen || status != status_seen {
            if view != view_seen && view_seen != u64::MAX {
                metrics.view_changes.fetch_add(1, Ordering::Relaxed);
            }
            let primary = view % self.peers.len() as u64;
            let name = replica.status_name();
            tracing::info!(
                replica = replica.index(),
                view,
                status = name,
                primary,
                "view {view} status {name} primary {primary}"
            );
        }
        self.observed = (view, status, rejected, too_far);
    }
}

fn status_code(status: &Status) -> u64 {
    match status {
        Status::Normal(_) => STATUS_NORMAL,
        Status::ViewChange(_) => STATUS_VIEW_CHANGE,
        Status::Recovering(_) => STATUS_RECOVERING,
    }
}

/// The frame of `envelope`, reusing the last encoding when the envelope is the same.
fn encode_cached(last: &mut Option<(Envelope, Bytes)>, envelope: Envelope) -> Bytes {
    if let Some((previous, frame)) = last.as_ref()
        && *previous == envelope
    {
        return frame.clone();
    }
    let frame = Bytes::from(vsr::wire::encode(&envelope));
    *last = Some((envelope, frame.clone()));
    frame
}
