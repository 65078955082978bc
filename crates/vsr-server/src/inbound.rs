//! Inbound connections, from peers and from clients alike.
//!
//! The accept loop owns one task per connection. A connection's reader turns frames into
//! verified envelopes and hands them to the event loop through one bounded channel: when the
//! loop is busy the reader waits (back-pressure on that connection only). Garbage — any frame
//! that fails [`vsr::wire::decode`] for this replica: corrupt, of another cluster, from a sender
//! out of range, with numbers out of bounds, an operation too large — is counted, logged
//! (rate-limited) and closes the connection. So does a frame the connection may not carry: on an
//! authenticated connection (TLS), replica-to-replica messages only as the replica its
//! certificate names, client requests only with a client's or operator's certificate; on any
//! connection, frames of one sender only. A client's replies flow back through the connection's
//! bounded reply queue; a client that stops reading has its replies dropped, and its connection
//! closed once a write stalls.
//!
//! One bad frame gets an answer: a client's request or query of another cluster, as the first
//! frame of a connection that may carry a client's frames, is answered with one wrong-cluster
//! reply ([`vsr::Receiver::wrong_cluster`]: a header, no larger than the frame it answers,
//! naming only the cluster this replica serves) before the connection closes, so a client with
//! a wrong cluster id learns it in one round trip. The answer's write and the wait for the
//! client to close are bounded by [`FAREWELL_TIMEOUT`]. Frames of other clusters from replicas,
//! and any later frame, get no answer.
//!
//! Every connection is bounded, and peers always get through ([`Registry`]):
//! * a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`], a frame begun must end within
//!   [`FRAME_TIMEOUT`], and a connection is closed after [`IDLE_TIMEOUT`] without a frame;
//! * connections not known to be a peer's (clients, and connections that have not yet said who
//!   they are) are bounded in all and per remote address. At a bound, the new connection is
//!   admitted and the least recently active of the others is closed, so an idle flood cannot
//!   keep anyone out: a peer's connection names its replica at once (its certificate, or its
//!   first frame) and leaves these bounds;
//! * each replica may hold a few connections; a newer one replaces the oldest (a restarted or
//!   reconnected peer's connection is the live one);
//! * when the process runs out of file descriptors, the least recently active client connection
//!   is closed to make room.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use vsr::{Receiver, Sender, Verified};

use crate::frame::{FrameReader, QueueReceiver, QueueSender, ReadError, queue};
use crate::metrics::{Closed, ErrorKind, Metrics};
use crate::tls::Identity;
use crate::transport::Transport;

/// Connections not known to be a peer's: clients, and connections not yet identified.
const CLIENT_CONNECTIONS_MAX: usize = 4096;
/// Connections not known to be a peer's, from one remote address.
const ADDRESS_CONNECTIONS_MAX: usize = 512;
/// Connections one peer replica may hold; a newer one replaces the oldest.
const PEER_CONNECTIONS_MAX: usize = 4;
/// A TLS handshake must complete within this.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame whose first byte arrived must be complete within this.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that completes no frame for this long is closed. Clients reconnect when they
/// next have something to send; a peer notices at once and reconnects.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Replies queued for one client connection.
const REPLY_QUEUE_FRAMES_MAX: usize = 1024;
/// Bytes of replies queued for one client connection: one largest frame, and then some.
const REPLY_QUEUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// A connection whose write makes no progress for this long is closed.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of received messages waiting for the event loop, across all connections, in KiB.
const INBOUND_KIBIBYTES_MAX: usize = 256 * 1024;
/// Time to write the answer to a client of another cluster and see the client close, at most.
pub(crate) const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read (and discarded) after that answer while waiting for the client to close: closing
/// with unread bytes would reset the connection, and a reset may discard the answer.
const FAREWELL_DRAIN_BYTES_MAX: u64 = 64 * 1024;
/// After failing to accept (for example out of file descriptors), wait this long.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// A verified message on its way to the event loop.
pub(crate) struct Inbound {
    pub(crate) envelope: Verified,
    /// For a client's message: where its replies go.
    pub(crate) route: Option<ReplyRoute>,
    /// Holds the message's share of the inbound byte budget until the loop has handled it.
    _budget: OwnedSemaphorePermit,
}

/// The reply queue of the connection a client's requests came from.
#[derive(Clone, Debug)]
pub(crate) struct ReplyRoute {
    pub(crate) connection: u64,
    pub(crate) queue: QueueSender<Bytes>,
}

/// What every connection task needs.
pub(crate) struct InboundContext {
    /// What frames are decoded for: this replica (the cluster, the sender, the message's
    /// bounds are all checked there).
    pub(crate) receiver: Receiver,
    pub(crate) sender: mpsc::Sender<Inbound>,
    pub(crate) metrics: Arc<Metrics>,
    budget: Arc<Semaphore>,
    registry: Mutex<Registry>,
    /// When this replica started: activity times are milliseconds since.
    start: Instant,
}

impl InboundContext {
    pub(crate) fn new(
        config: &vsr::Config,
        index: u8,
        sender: mpsc::Sender<Inbound>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            receiver: Receiver::replica(config, index),
            sender,
            metrics,
            budget: Arc::new(Semaphore::new(INBOUND_KIBIBYTES_MAX)),
            registry: Mutex::new(Registry::default()),
            start: Instant::now(),
        }
    }

    fn reject(&self, kind: ErrorKind, peer: SocketAddr, detail: &dyn std::fmt::Display) {
        if self.metrics.error(kind) {
            tracing::warn!(
                %peer, ?kind, %detail,
                "dropped a bad frame and closed the connection (at most one line per second per kind)"
            );
        }
    }

    fn closed(&self, reason: Closed, peer: &dyn std::fmt::Display) {
        if self.metrics.closed(reason) {
            tracing::info!(
                %peer, ?reason,
                "closed a connection (at most one line per second per reason)"
            );
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_millis(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// What a connection is known to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A client's, or not yet identified: counted against the client and address bounds.
    Client,
    /// Replica `i`'s.
    Peer(u8),
}

struct Entry {
    address: IpAddr,
    class: Class,
    /// Milliseconds since the context's start at the last complete frame (or the accept).
    active: Arc<AtomicU64>,
    abort: Option<AbortHandle>,
}

/// Every open inbound connection, by id (ids grow, so the oldest comes first).
#[derive(Default)]
struct Registry {
    entries: BTreeMap<u64, Entry>,
    clients: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Registry {
    /// Registers a new connection; returns the connections to close to keep the bounds, with
    /// their remote addresses.
    fn admit(
        &mut self,
        id: u64,
        address: IpAddr,
        active: Arc<AtomicU64>,
    ) -> Vec<(IpAddr, AbortHandle)> {
        let mut evict = Vec::new();
        if self.by_address.get(&address).copied().unwrap_or(0) >= ADDRESS_CONNECTIONS_MAX {
            evict.extend(self.evict_idlest(Some(address)));
        }
        if self.clients >= CLIENT_CONNECTIONS_MAX {
            evict.extend(self.evict_idlest(None));
        }
        self.entries.insert(
            id,
            Entry {
                address,
                class: Class::Client,
                active,
                abort: None,
            },
        );
        self.clients += 1;
        *self.by_address.entry(address).or_default() += 1;
        evict
    }

    fn set_abort(&mut self, id: u64, abort: AbortHandle) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.abort = Some(abort);
        }
    }

    /// Marks connection `id` as replica `replica`'s; returns the older connections of that
    /// replica to close.
    fn identify_peer(&mut self, id: u64, replica: u8) -> Vec<AbortHandle> {
        let Some(entry) = self.entries.get_mut(&id) else {
            return Vec::new();
        };
        if entry.class == Class::Client {
            let address = entry.address;
            entry.class = Class::Peer(replica);
            self.uncount_client(address);
        }
        let same: Vec<u64> = self
            .entries
            .iter()
            .filter(|(other, entry)| **other != id && entry.class == Class::Peer(replica))
            .map(|(other, _)| *other)
            .collect();
        let excess = (same.len() + 1).saturating_sub(PEER_CONNECTIONS_MAX);
        same.into_iter()
            .take(excess)
            .filter_map(|other| self.remove(other))
            .collect()
    }

    /// Forgets the least recently active client connection (of `address`, if given); returns
    /// its address and its task's handle to abort.
    fn evict_idlest(&mut self, address: Option<IpAddr>) -> Option<(IpAddr, AbortHandle)> {
        let idlest = self
            .entries
            .iter()
            .filter(|(_, entry)| {
                entry.class == Class::Client && address.is_none_or(|a| a == entry.address)
            })
            .min_by_key(|(id, entry)| (entry.active.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id)?;
        let address = self.entries[&idlest].address;
        self.remove(idlest).map(|abort| (address, abort))
    }

    /// Forgets connection `id`; returns its task's handle (if it still runs) to abort.
    fn remove(&mut self, id: u64) -> Option<AbortHandle> {
        let entry = self.entries.remove(&id)?;
        if entry.class == Class::Client {
            self.uncount_client(entry.address);
        }
        entry.abort
    }

    fn uncount_client(&mut self, address: IpAddr) {
        self.clients -= 1;
        if let Some(count) = self.by_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.by_address.remove(&address);
            }
        }
    }

    fn peers(&self) -> usize {
        self.entries.len() - self.clients
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Registered<'a> {
    context: &'a InboundContext,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut registry = self.context.registry();
        registry.remove(self.id);
        self.context
            .metrics
            .connections(registry.clients, registry.peers());
    }
}

/// Accepts connections until the task is dropped; dropping it closes every connection.
pub(crate) async fn accept_loop<T: Transport>(
    transport: T,
    listener: T::Listener,
    context: Arc<InboundContext>,
) {
    let mut connections = JoinSet::new();
    let mut connection_next: u64 = 0;
    loop {
        tokio::select! {
            accepted = transport.accept(&listener) => match accepted {
                Ok((incoming, peer)) => {
                    connection_next += 1;
                    let id = connection_next;
                    let active = Arc::new(AtomicU64::new(context.now_millis()));
                    let evicted = {
                        let mut registry = context.registry();
                        let evicted = registry.admit(id, peer.ip(), Arc::clone(&active));
                        context.metrics.connections(registry.clients, registry.peers());
                        evicted
                    };
                    for (address, abort) in evicted {
                        abort.abort();
                        context.closed(Closed::Evicted, &address);
                    }
                    let task = connection(
                        transport.clone(), incoming, peer, id, active, Arc::clone(&context),
                    );
                    let abort = connections.spawn(task);
                    context.registry().set_abort(id, abort);
                }
                Err(error) => {
                    // Out of file descriptors, most likely: make room by closing the least
                    // recently active client connection, so that peers still get in.
                    let evicted = context.registry().evict_idlest(None);
                    if let Some((_, abort)) = evicted {
                        abort.abort();
                    }
                    if context.metrics.closed(Closed::AcceptFailed) {
                        tracing::warn!(%error, "cannot accept a connection; closed an idle one and retrying");
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn connection<T: Transport>(
    transport: T,
    incoming: T::Incoming,
    peer: SocketAddr,
    id: u64,
    active: Arc<AtomicU64>,
    context: Arc<InboundContext>,
) {
    let registered = Registered {
        context: &context,
        id,
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, transport.handshake(incoming));
    let (stream, identity) = match handshake.await {
        Ok(Ok(handshaken)) => handshaken,
        Ok(Err(error)) => {
            return context.reject(ErrorKind::Handshake, peer, &error);
        }
        Err(_) => return context.closed(Closed::HandshakeTimeout, &peer),
    };
    if let Some(Identity::Replica(replica)) = identity {
        identified_peer(&context, id, replica);
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (queue, mut replies) = queue(REPLY_QUEUE_FRAMES_MAX, REPLY_QUEUE_BYTES_MAX);
    let route = ReplyRoute {
        connection: id,
        queue,
    };
    let connection = Connection {
        context: &context,
        peer,
        id,
        identity,
        active: &active,
    };
    let answer = tokio::select! {
        answer = connection.read_loop(&mut reader, route) => answer,
        () = write_loop(&mut writer, &mut replies, peer, &context) => None,
    };
    if let Some(answer) = answer {
        // The connection's first frame: no reply was queued, no write was cut short.
        let farewell = farewell(&mut reader, &mut writer, &answer);
        if tokio::time::timeout(FAREWELL_TIMEOUT, farewell)
            .await
            .is_err()
        {
            tracing::debug!(%peer, "a client of another cluster did not close in time");
        }
    }
    drop(registered);
}

/// Writes `answer`, closes the writing side, and reads until the other end closes (at most
/// [`FAREWELL_DRAIN_BYTES_MAX`]), so that the answer is not lost to a reset. The caller bounds
/// the time.
async fn farewell<R, W>(reader: &mut R, writer: &mut W, answer: &[u8])
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if writer.write_all(answer).await.is_err()
        || writer.flush().await.is_err()
        || writer.shutdown().await.is_err()
    {
        return;
    }
    let _ = tokio::io::copy(
        &mut reader.take(FAREWELL_DRAIN_BYTES_MAX),
        &mut tokio::io::sink(),
    )
    .await;
}

fn identified_peer(context: &InboundContext, id: u64, replica: u8) {
    let evicted = {
        let mut registry = context.registry();
        let evicted = registry.identify_peer(id, replica);
        context
            .metrics
            .connections(registry.clients, registry.peers());
        evicted
    };
    for abort in evicted {
        abort.abort();
    }
}

/// One inbound connection's reading side.
struct Connection<'a> {
    context: &'a InboundContext,
    peer: SocketAddr,
    id: u64,
    /// Who the transport proved is at the other end; `None` on plain TCP.
    identity: Option<Identity>,
    active: &'a AtomicU64,
}

impl Connection<'_> {
    /// Reads frames until the connection ends; returns the answer to write before closing, if
    /// the frame that ended it deserves one (a client's of another cluster, first on the
    /// connection).
    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        route: ReplyRoute,
    ) -> Option<Vec<u8>> {
        let context = self.context;
        let peer = self.peer;
        let mut reader = FrameReader::new(reader, context.receiver);
        // The sender every frame of this connection must come from, once the first has come.
        let mut speaker: Option<Sender> = None;
        let mut last_frame = Instant::now();
        loop {
            let deadline = match reader.frame_started() {
                Some(started) => started + FRAME_TIMEOUT,
                None => last_frame + IDLE_TIMEOUT,
            };
            let next = tokio::select! {
                next = reader.next() => next,
                () = tokio::time::sleep_until(deadline.into()) => {
                    if reader.frame_started().is_some_and(|started| started + FRAME_TIMEOUT > Instant::now()) {
                        continue; // A frame began since the deadline was set: give it its time.
                    }
                    let reason = if reader.frame_started().is_some() { Closed::FrameTimeout } else { Closed::Idle };
                    context.closed(reason, &peer);
                    return None;
                }
            };
            let (envelope, size) = match next {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(ReadError::Io(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
                    // The kernel gave up on data or keepalive probes the other end never
                    // acknowledged (for a client: often replies it does not read).
                    context.closed(Closed::Stalled, &peer);
                    return None;
                }
                Err(ReadError::Io(error)) => {
                    tracing::debug!(%peer, %error, "connection failed");
                    return None;
                }
                Err(ReadError::Truncated) => {
                    let detail = "stream ended inside a frame";
                    context.reject(ErrorKind::Truncated, peer, &detail);
                    return None;
                }
                Err(ReadError::Decode(error)) => {
                    context.reject(ErrorKind::of(&error), peer, &error);
                    return None;
                }
                Err(ReadError::OtherCluster { error, frame }) => {
                    context.reject(ErrorKind::WrongCluster, peer, &error);
                    return self
                        .answers_other_cluster(speaker)
                        .then(|| context.receiver.wrong_cluster(&frame))
                        .flatten();
                }
            };
            last_frame = Instant::now();
            self.active.store(context.now_millis(), Ordering::Relaxed);
            let sender = envelope.envelope().sender;
            let message = &envelope.envelope().message;
            if let Err(reason) = self
                .admits(speaker, sender)
                .and_then(|()| self.may_ask(message))
            {
                context.reject(ErrorKind::Unauthorized, peer, &reason);
                return None;
            }
            if speaker.is_none() {
                speaker = Some(sender);
                if let (Sender::Replica(replica), None) = (sender, &self.identity) {
                    identified_peer(context, self.id, replica);
                }
            }
            let kibibytes = u32::try_from(size.div_ceil(1024)).expect("frames are bounded");
            let Ok(budget) = Arc::clone(&context.budget)
                .acquire_many_owned(kibibytes)
                .await
            else {
                return None;
            };
            let route = matches!(sender, Sender::Client(_)).then(|| route.clone());
            if context
                .sender
                .send(Inbound {
                    envelope,
                    route,
                    _budget: budget,
                })
                .await
                .is_err()
            {
                return None; // The event loop stopped.
            }
        }
    }

    /// Whether a client's frame of another cluster gets an answer here: only as the
    /// connection's first frame (so at most one answer per connection, with no reply of this
    /// cluster queued on it), and only where a client may speak (not on a connection
    /// authenticated as a replica).
    fn answers_other_cluster(&self, speaker: Option<Sender>) -> bool {
        speaker.is_none() && self.identity.as_ref().is_none_or(Identity::is_client)
    }

    /// Whether this connection may carry `message`: a status or backup request only from an
    /// operator's certificate (or over plain TCP).
    fn may_ask(&self, message: &vsr::Message) -> Result<(), String> {
        if matches!(self.identity, Some(Identity::Client(_)))
            && crate::status::is_admin_query(message)
        {
            return Err(
                "a status or backup request on a client's connection: operators only".to_owned(),
            );
        }
        Ok(())
    }

    /// Whether this connection may carry a frame from `sender`, given the first frame's.
    fn admits(&self, speaker: Option<Sender>, sender: Sender) -> Result<(), String> {
        match (&self.identity, sender) {
            (Some(Identity::Replica(replica)), Sender::Replica(index)) if *replica != index => {
                return Err(format!(
                    "a frame from replica {index} on a connection authenticated as replica {replica}"
                ));
            }
            (Some(identity), Sender::Client(_)) if !identity.is_client() => {
                return Err(format!(
                    "a client request on a connection authenticated as {identity}"
                ));
            }
            (Some(identity), Sender::Replica(index)) if identity.is_client() => {
                return Err(format!(
                    "a frame from replica {index} on a connection authenticated as {identity}"
                ));
            }
            _ => {}
        }
        match (speaker, sender) {
            (Some(Sender::Replica(first)), Sender::Replica(index)) if first != index => Err(
                format!("a frame from replica {index} on replica {first}'s connection"),
            ),
            (Some(Sender::Replica(first)), Sender::Client(_)) => {
                Err(format!("a client request on replica {first}'s connection"))
            }
            (Some(Sender::Client(_)), Sender::Replica(index)) => Err(format!(
                "a frame from replica {index} on a client's connection"
            )),
            _ => Ok(()),
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut W,
    replies: &mut QueueReceiver<Bytes>,
    peer: SocketAddr,
    context: &InboundContext,
) {
    let mut buffer = Vec::new();
    while let Some(first) = replies.recv().await {
        let write = replies.write_batch(writer, first, &mut buffer);
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
                // The kernel gave up on data the client never acknowledged.
                return context.closed(Closed::Stalled, &peer);
            }
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(%peer, "a client does not read its replies: closed its connection");
                return context.closed(Closed::Stalled, &peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits a connection; returns how many others it closed.
    fn admit(registry: &mut Registry, id: u64, address: [u8; 4], active: u64) -> usize {
        let before = registry.entries.len();
        registry.admit(id, IpAddr::from(address), Arc::new(AtomicU64::new(active)));
        before + 1 - registry.entries.len()
    }

    #[test]
    fn only_a_first_frame_where_a_client_may_speak_gets_a_wrong_cluster_answer() {
        let (sender, _events) = mpsc::channel(1);
        let config = vsr::Config::new(9, 3);
        let context = InboundContext::new(&config, 0, sender, Arc::default());
        let active = AtomicU64::new(0);
        let connection = |identity| Connection {
            context: &context,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            id: 1,
            identity,
            active: &active,
        };
        let client = Identity::Client("alice".to_owned());
        let operator = Identity::Operator("root".to_owned());
        for identity in [None, Some(client), Some(operator)] {
            let connection = connection(identity);
            assert!(connection.answers_other_cluster(None));
            for speaker in [Sender::Client(5), Sender::Replica(1)] {
                assert!(
                    !connection.answers_other_cluster(Some(speaker)),
                    "not after a first frame"
                );
            }
        }
        assert!(
            !connection(Some(Identity::Replica(1))).answers_other_cluster(None),
            "not on a replica's connection"
        );
    }

    #[test]
    fn a_flood_evicts_the_idlest_client_connection_and_never_a_peer() {
        let mut registry = Registry::default();
        // A peer, then the client bound's worth of connections from many addresses.
        admit(&mut registry, 0, [127, 0, 0, 1], 0);
        assert!(registry.identify_peer(0, 1).is_empty());
        for id in 1..=CLIENT_CONNECTIONS_MAX as u64 {
            let address = [127, 1, (id / 256) as u8, (id % 256) as u8];
            assert_eq!(admit(&mut registry, id, address, 1000 + id), 0);
        }
        assert_eq!(registry.clients, CLIENT_CONNECTIONS_MAX);
        // The busiest was active last; make the first client the most recently active.
        registry.entries[&1]
            .active
            .store(u64::MAX, Ordering::Relaxed);
        let next = CLIENT_CONNECTIONS_MAX as u64 + 1;
        assert_eq!(admit(&mut registry, next, [10, 0, 0, 1], 5000), 1);
        assert_eq!(registry.clients, CLIENT_CONNECTIONS_MAX);
        assert!(registry.entries.contains_key(&0), "the peer stays");
        assert!(registry.entries.contains_key(&1), "the active client stays");
        assert!(!registry.entries.contains_key(&2), "the idlest client went");
        assert_eq!(registry.peers(), 1);
    }

    #[test]
    fn one_address_is_bounded_and_pays_for_its_own_flood() {
        let mut registry = Registry::default();
        for id in 0..ADDRESS_CONNECTIONS_MAX as u64 {
            assert_eq!(admit(&mut registry, id, [127, 0, 0, 9], id), 0);
        }
        admit(&mut registry, 10_000, [127, 0, 0, 1], 0);
        assert_eq!(
            admit(&mut registry, 10_001, [127, 0, 0, 9], 10_001),
            1,
            "the address's own idlest goes"
        );
        assert!(!registry.entries.contains_key(&0));
        assert!(
            registry.entries.contains_key(&10_000),
            "other addresses are untouched"
        );
        assert_eq!(
            registry.by_address[&IpAddr::from([127, 0, 0, 9])],
            ADDRESS_CONNECTIONS_MAX
        );
    }

    #[test]
    fn a_peer_keeps_its_newest_connections() {
        let mut registry = Registry::default();
        for id in 0..PEER_CONNECTIONS_MAX as u64 {
            admit(&mut registry, id, [127, 0, 0, 1], 0);
            assert!(registry.identify_peer(id, 2).is_empty());
        }
        let newest = PEER_CONNECTIONS_MAX as u64;
        admit(&mut registry, newest, [127, 0, 0, 1], 0);
        assert_eq!(
            registry.identify_peer(newest, 2).len(),
            0,
            "no task handles yet"
        );
        assert!(
            !registry.entries.contains_key(&0),
            "the oldest was replaced"
        );
        assert_eq!(registry.peers(), PEER_CONNECTIONS_MAX);
        assert_eq!(registry.clients, 0);
        assert!(registry.by_address.is_empty());
        for id in 1..=newest {
            registry.remove(id);
        }
        assert!(registry.entries.is_empty());
    }
}
