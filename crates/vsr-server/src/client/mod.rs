//! An async client for library users: [`Client::request`] sends one operation to the cluster
//! and waits for its result, or says whether it may have executed; [`Client::query`] reads
//! without the log.
//!
//! A [`Client`] holds one [`vsr::Client`] session (the protocol: registration, request numbers,
//! primary discovery, retries) and speaks through the connections of a [`ClientPool`]
//! ([`connection`]), which many sessions share: replies carry their client id and are routed
//! to their session. Requests are serialized: VR allows one request in flight per client.
//! While a request is in flight a tick interval drives the session's retries and its replies
//! are fed to it. When a request's deadline passes the session is replaced by a fresh one (new
//! client id), so a late reply can never be mistaken for the answer to a later request.
//!
//! A replica of another cluster answers a request or query with a wrong-cluster reply (see
//! [`vsr::Receiver::wrong_cluster`]). Once every replica the request in flight went to has
//! answered so, none of them executed it, and no retry can change that: the call returns
//! [`RequestError::WrongCluster`] at once instead of waiting out its deadline.

mod connection;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use vsr::config::{OPERATION_SIZE_MAX, REPLICAS_MAX};
use vsr::{
    ClientEvent, ClientId, Envelope, Message, Operation, Query, Reply, ReplyResult, Request,
};

use crate::error::{ClientError, RequestError};
use crate::transport::{TcpTransport, Transport};
use connection::{Connections, Outbound, Routed, Router, SENT_CANCELLED, SENT_PENDING};

/// Replies waiting for the session.
const REPLIES_QUEUE_MAX: usize = 256;
/// The client's tick: its retry timeouts count these.
const TICK: Duration = Duration::from_millis(10);

/// Connections to every replica of a cluster, shared by any number of [`Client`] sessions
/// (cheap to clone). Each session keeps its own identity and its one request in flight; only
/// the sockets are shared, so thousands of sessions need a handful of connections.
pub struct ClientPool<T: Transport = TcpTransport> {
    inner: Arc<PoolInner<T>>,
}

struct PoolInner<T: Transport> {
    /// The connections' tasks own the transport; the pool only names its type.
    transport: PhantomData<fn() -> T>,
    cluster: u128,
    addresses: Arc<[String]>,
    connections: Connections,
}

impl<T: Transport> Clone for ClientPool<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl ClientPool<TcpTransport> {
    /// Connections to cluster `cluster` whose replica i is at `addresses[i]` (`host:port`).
    ///
    /// Connections open lazily, so no replica needs to be up yet.
    ///
    /// # Errors
    /// When the number of addresses is not a supported cluster size.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn connect(cluster: u128, addresses: Vec<String>) -> Result<Self, ClientError> {
        Self::connect_with(TcpTransport, cluster, addresses)
    }
}

impl<T: Transport> ClientPool<T> {
    /// [`ClientPool::connect`] over another [`Transport`].
    ///
    /// # Errors
    /// As [`ClientPool::connect`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn connect_with(
        transport: T,
        cluster: u128,
        addresses: Vec<String>,
    ) -> Result<Self, ClientError> {
        if addresses.len() > REPLICAS_MAX || addresses.len().is_multiple_of(2) {
            return Err(ClientError::AddressCount {
                addresses: addresses.len(),
            });
        }
        let addresses: Arc<[String]> = addresses.into();
        let replica_count = u8::try_from(addresses.len()).expect("checked above");
        let receiver = vsr::Receiver::client(cluster, replica_count);
        let connections = Connections::spawn(&transport, &addresses, receiver);
        Ok(Self {
            inner: Arc::new(PoolInner {
                transport: PhantomData,
                cluster,
                addresses,
                connections,
            }),
        })
    }

    /// A new session speaking through these connections.
    ///
    /// # Errors
    /// When OS entropy for the client id fails.
    pub fn client(&self) -> Result<Client<T>, ClientError> {
        let session = self.new_session()?;
        let id = std::sync::Mutex::new(session.core.id());
        Ok(Client {
            pool: self.clone(),
            session: Mutex::new(session),
            id,
        })
    }

    fn new_session(&self) -> Result<Session, ClientError> {
        let entropy = |error: getrandom::Error| ClientError::Entropy(error.to_string());
        let mut id: ClientId = 0;
        while id == 0 {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(entropy)?;
            id = u128::from_le_bytes(bytes);
        }
        let seed = getrandom::u64().map_err(entropy)?;
        let inner = &self.inner;
        let replica_count = u8::try_from(inner.addresses.len()).expect("checked by connect");
        let core = vsr::Client::new(inner.cluster, replica_count, id, seed);
        let (sender, replies) = mpsc::channel(REPLIES_QUEUE_MAX);
        let router = inner.connections.router().clone();
        router.register(id, sender);
        Ok(Session {
            core,
            replies,
            router,
        })
    }
}

/// A client of a vsr cluster; see the module docs. Cheap to share (`&self` methods; wrap it in
/// an `Arc` to share it between tasks).
pub struct Client<T: Transport = TcpTransport> {
    pool: ClientPool<T>,
    session: Mutex<Session>,
    /// The current session's client id, readable without waiting for a request.
    id: std::sync::Mutex<ClientId>,
}

impl<T: Transport> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cluster", &format_args!("{:x}", self.pool.inner.cluster))
            .field("addresses", &self.pool.inner.addresses)
            .field("client_id", &format_args!("{:x}", self.client_id()))
            .finish_non_exhaustive()
    }
}

/// One protocol session and the queue its replies arrive on.
struct Session {
    core: vsr::Client,
    replies: mpsc::Receiver<Routed>,
    router: Router,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.router.unregister(self.core.id());
    }
}

impl Client<TcpTransport> {
    /// A client of cluster `cluster` whose replica i is at `addresses[i]` (`host:port`), with
    /// connections of its own (see [`ClientPool`] to share them).
    ///
    /// Connections open lazily, so no replica needs to be up yet.
    ///
    /// # Errors
    /// When the number of addresses is not a supported cluster size, or OS entropy fails.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn connect(cluster: u128, addresses: Vec<String>) -> Result<Self, ClientError> {
        ClientPool::connect(cluster, addresses)?.client()
    }
}

impl<T: Transport> Client<T> {
    /// [`Client::connect`] over another [`Transport`].
    ///
    /// # Errors
    /// As [`Client::connect`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn connect_with(
        transport: T,
        cluster: u128,
        addresses: Vec<String>,
    ) -> Result<Self, ClientError> {
        ClientPool::connect_with(transport, cluster, addresses)?.client()
    }

    /// The current session's client id. It changes when a request's deadline passes (the
    /// client then starts a fresh session).
    #[must_use]
    pub fn client_id(&self) -> u128 {
        *self
            .id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Executes the encoded operation `body` on the cluster and returns the encoded result.
    ///
    /// Waits at most `deadline`, including the wait for this client's earlier requests (one
    /// request is in flight at a time).
    ///
    /// # Errors
    /// [`RequestError::NotExecuted`] when the operation was certainly not executed (it is too
    /// large, or was never sent because no replica could be reached in time);
    /// [`RequestError::Unknown`] when it was sent but no result arrived before the deadline,
    /// or the session was evicted: it may or may not have executed;
    /// [`RequestError::WrongCluster`] as soon as the replicas it went to answered that they
    /// serve another cluster (it did not execute).
    pub async fn request(&self, body: Bytes, deadline: Duration) -> Result<Bytes, RequestError> {
        self.ask(body, deadline, false).await
    }

    /// Answers the encoded query `body` (a [`vsr::StateMachine::Query`]) and returns the
    /// encoded result: a linearizable read the primary answers without a log entry or a disk
    /// write. It needs no session, and may be retried freely.
    ///
    /// Waits at most `deadline`, including the wait for this client's earlier requests.
    ///
    /// # Errors
    /// [`RequestError::NotExecuted`] when no answer arrived before the deadline or the query is
    /// too large; [`RequestError::WrongCluster`] as soon as the replicas it went to answered
    /// that they serve another cluster. A query changes nothing, so its outcome is never
    /// unknown.
    pub async fn query(&self, body: Bytes, deadline: Duration) -> Result<Bytes, RequestError> {
        self.ask(body, deadline, true).await
    }

    async fn ask(
        &self,
        body: Bytes,
        deadline: Duration,
        query: bool,
    ) -> Result<Bytes, RequestError> {
        let deadline_at = Instant::now() + deadline;
        if body.len() > OPERATION_SIZE_MAX {
            let reason = format!(
                "{} bytes is more than the maximum {OPERATION_SIZE_MAX}",
                body.len()
            );
            return Err(RequestError::NotExecuted { reason });
        }
        let Ok(mut session) = tokio::time::timeout_at(deadline_at, self.session.lock()).await
        else {
            let reason = "the deadline passed while another request of this client was in flight";
            return Err(RequestError::NotExecuted {
                reason: reason.to_owned(),
            });
        };
        // An earlier caller gave up (dropped its future) mid-request: a query is simply
        // abandoned, a request's session replaced.
        session.core.abandon_query();
        if session.core.is_busy() {
            self.replace(&mut session)?;
        }
        let sent = Arc::new(AtomicU8::new(SENT_PENDING));
        if query {
            session.core.query(body);
        } else {
            session.core.submit(body);
        }
        let connections = &self.pool.inner.connections;
        let inner = &self.pool.inner;
        let event = match drive(&mut session, connections, &sent, deadline_at, inner.cluster).await
        {
            Ended::Event(event) => Some(event),
            Ended::Deadline => None,
            Ended::WrongCluster { replica, cluster } => {
                // Every copy went to a replica that dropped it; write none of those still queued.
                let _ = sent.compare_exchange(
                    SENT_PENDING,
                    SENT_CANCELLED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                self.replace(&mut session)?;
                let address = inner
                    .addresses
                    .get(usize::from(replica))
                    .cloned()
                    .unwrap_or_default();
                return Err(RequestError::WrongCluster {
                    expected: inner.cluster,
                    found: cluster,
                    replica,
                    address,
                });
            }
        };
        match event {
            Some(ClientEvent::Completed { result, .. } | ClientEvent::Answered { result, .. }) => {
                Ok(result)
            }
            Some(_) => Err(RequestError::Unknown {
                reason: "the cluster evicted this client's session; the next request registers \
                         a new one"
                    .to_owned(),
            }),
            None if query => {
                session.core.abandon_query();
                Err(RequestError::NotExecuted {
                    reason: "no answer arrived before the deadline".to_owned(),
                })
            }
            None => {
                let cancelled = sent
                    .compare_exchange(
                        SENT_PENDING,
                        SENT_CANCELLED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
                self.replace(&mut session)?;
                Err(if cancelled {
                    RequestError::NotExecuted {
                        reason: "no replica could be reached before the deadline".to_owned(),
                    }
                } else {
                    RequestError::Unknown {
                        reason: "the deadline passed before a reply arrived".to_owned(),
                    }
                })
            }
        }
    }

    /// Starts a fresh session: new client id; replies to the old one are dropped.
    fn replace(&self, session: &mut Session) -> Result<(), RequestError> {
        *session = self
            .pool
            .new_session()
            .map_err(|error| RequestError::NotExecuted {
                reason: format!("cannot start a new session: {error}"),
            })?;
        *self
            .id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = session.core.id();
        Ok(())
    }
}

/// How [`drive`] ended.
enum Ended {
    /// The session's request completed (`Completed`, `Answered` or `Evicted`).
    Event(ClientEvent),
    /// The deadline passed.
    Deadline,
    /// Every replica the request in flight went to serves another cluster; `replica` (an
    /// address index) answered last, naming `cluster`.
    WrongCluster { replica: u8, cluster: u128 },
}

/// The replicas the request in flight went to, and those of them that answered that they serve
/// another cluster: one bit per replica.
#[derive(Default)]
struct WrongClusters {
    /// The request number in flight: the last one sent.
    request: Option<u64>,
    sent_to: u8,
    answered: u8,
}

const _: () = assert!(REPLICAS_MAX <= u8::BITS as usize);

impl WrongClusters {
    /// Notes that `envelope` goes to replica `to`.
    fn sent(&mut self, to: u8, envelope: &Envelope) {
        let request = match envelope.message {
            Message::Request(Request { request, .. }) | Message::Query(Query { request, .. }) => {
                request
            }
            _ => return,
        };
        if self.request != Some(request) {
            *self = WrongClusters {
                request: Some(request),
                ..WrongClusters::default()
            };
        }
        self.sent_to |= 1 << to;
    }

    /// Notes a reply from replica `from`; returns the cluster it serves once every replica the
    /// request went to answered that it serves another cluster than `cluster`.
    fn answered(&mut self, from: u8, reply: &Reply, cluster: u128) -> Option<u128> {
        let ReplyResult::WrongCluster { cluster: found } = reply.result else {
            return None;
        };
        if Some(reply.request) != self.request
            || found == cluster
            || self.sent_to & (1 << from) == 0
        {
            return None; // Late, nonsense, or from a replica this request never went to.
        }
        self.answered |= 1 << from;
        (self.answered == self.sent_to).then_some(found)
    }
}

/// Runs the session until its request completes, every replica it went to serves another
/// cluster than `cluster`, or the deadline passes.
async fn drive(
    session: &mut Session,
    connections: &Connections,
    sent: &Arc<AtomicU8>,
    deadline_at: Instant,
    cluster: u128,
) -> Ended {
    let mut ticks = tokio::time::interval_at(Instant::now() + TICK, TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_encoded: Option<(Envelope, Bytes)> = None;
    let mut wrong = WrongClusters::default();
    loop {
        while let Some(event) = session.core.poll() {
            let ClientEvent::Send { to, envelope } = event else {
                return Ended::Event(event);
            };
            wrong.sent(to, &envelope);
            let operation = matches!(
                envelope.message,
                Message::Request(Request {
                    operation: Operation::StateMachine,
                    ..
                })
            );
            let frame = match &last_encoded {
                Some((previous, frame)) if *previous == envelope => frame.clone(),
                _ => {
                    let frame = Bytes::from(vsr::wire::encode(&envelope));
                    last_encoded = Some((envelope, frame.clone()));
                    frame
                }
            };
            let sent = operation.then(|| Arc::clone(sent));
            connections.send(to, Outbound { frame, sent });
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline_at) => return Ended::Deadline,
            _ = ticks.tick() => session.core.on_tick(),
            Some((from, verified)) = session.replies.recv() => {
                if let Message::Reply(reply) = &verified.envelope().message
                    && let Some(found) = wrong.answered(from, reply, cluster)
                {
                    return Ended::WrongCluster { replica: from, cluster: found };
                }
                session.core.on_message(verified);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u128 = 0xc1;

    fn query(request: u64) -> Envelope {
        Envelope {
            cluster: CLUSTER,
            epoch: 0,
            sender: vsr::Sender::Client(7),
            message: Message::Query(Query {
                request,
                body: Bytes::new(),
            }),
        }
    }

    fn wrong(request: u64, cluster: u128) -> Reply {
        Reply {
            client: 7,
            view: vsr::View(0),
            op: vsr::Op(0),
            request,
            result: ReplyResult::WrongCluster { cluster },
        }
    }

    #[test]
    fn wrong_cluster_once_every_replica_sent_to_said_so() {
        let mut wrong_clusters = WrongClusters::default();
        wrong_clusters.sent(0, &query(1));
        assert_eq!(wrong_clusters.answered(0, &wrong(1, 9), CLUSTER), Some(9));
        // A retry to every replica: each must answer so.
        let mut wrong_clusters = WrongClusters::default();
        for to in 0..3 {
            wrong_clusters.sent(to, &query(1));
        }
        assert_eq!(wrong_clusters.answered(0, &wrong(1, 9), CLUSTER), None);
        assert_eq!(wrong_clusters.answered(2, &wrong(1, 9), CLUSTER), None);
        assert_eq!(wrong_clusters.answered(1, &wrong(1, 9), CLUSTER), Some(9));
    }

    #[test]
    fn late_nonsense_and_unasked_wrong_cluster_replies_are_ignored() {
        let mut wrong_clusters = WrongClusters::default();
        assert_eq!(
            wrong_clusters.answered(0, &wrong(1, 9), CLUSTER),
            None,
            "nothing sent"
        );
        wrong_clusters.sent(0, &query(1));
        wrong_clusters.sent(0, &query(2));
        assert_eq!(
            wrong_clusters.answered(0, &wrong(1, 9), CLUSTER),
            None,
            "an earlier request's"
        );
        assert_eq!(
            wrong_clusters.answered(1, &wrong(2, 9), CLUSTER),
            None,
            "from a replica the request never went to"
        );
        assert_eq!(
            wrong_clusters.answered(0, &wrong(2, CLUSTER), CLUSTER),
            None,
            "naming the client's own cluster"
        );
        let mut answered = wrong(2, 9);
        answered.result = ReplyResult::NotPrimary;
        assert_eq!(wrong_clusters.answered(0, &answered, CLUSTER), None);
        assert_eq!(wrong_clusters.answered(0, &wrong(2, 9), CLUSTER), Some(9));
    }
}
