//! The client's connections: one task per replica, connected lazily (on the first frame queued
//! for it), reconnected with backoff after errors, decoupled from the sessions that use them.
//! Many sessions share one set of connections: a reply names its client in the header, and
//! the read side routes it to that session's queue (a reply for a session that is gone, or for
//! none registered, is dropped).
//!
//! A connection whose replica has answered nothing for a second since a frame went out is not
//! trusted with the next frame: that one goes out on a fresh connection. Across a healed
//! partition the old connection may hold its frames behind TCP's retransmission backoff for
//! many seconds, while a new one gets through at once.
//!
//! Frames of a state machine operation carry a shared "sent" state so the session can tell,
//! after its deadline, whether any copy of the operation reached a socket: the connection task
//! claims the state before it writes, and the session cancels it when it gives up, so a frame
//! that was never written stays unwritten and the session can report the request definitely
//! not executed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use vsr::{ClientId, Message, Receiver, Reply, Verified};

use crate::frame::{Backoff, FrameReader, QueueItem, QueueReceiver, QueueSender, ReadError, queue};
use crate::transport::Transport;

/// Frames queued for one replica (shared by every session of the connections).
const QUEUE_FRAMES_MAX: usize = 8192;
/// Bytes queued for one replica.
const QUEUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest wait between reconnect attempts (before jitter).
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A frame due on a connection whose replica answered nothing for this long since an earlier
/// write goes out on a fresh connection instead.
const SILENCE: Duration = Duration::from_secs(1);
/// Longest wait for a connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A write that makes no progress for this long means the replica is gone: reconnect.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Nothing written yet; the frame may still be written.
pub(crate) const SENT_PENDING: u8 = 0;
/// At least one copy was (or is being) written.
pub(crate) const SENT_WRITTEN: u8 = 1;
/// The session gave up before any copy was written: write none.
pub(crate) const SENT_CANCELLED: u8 = 2;

/// A frame for a replica, with the sent state of the operation it carries, if any.
pub(crate) struct Outbound {
    pub(crate) frame: Bytes,
    pub(crate) sent: Option<Arc<AtomicU8>>,
}

impl QueueItem for Outbound {
    fn frame(&self) -> &Bytes {
        &self.frame
    }

    fn claim(&self) -> bool {
        let Some(sent) = &self.sent else { return true };
        match sent.compare_exchange(
            SENT_PENDING,
            SENT_WRITTEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(state) => state == SENT_WRITTEN,
        }
    }
}

/// A reply, and the replica (the index of its address) whose connection it came on.
pub(crate) type Routed = (u8, Verified);

/// Where replies go: each live session's queue, by client id.
#[derive(Clone)]
pub(crate) struct Router {
    sessions: Arc<Mutex<HashMap<ClientId, mpsc::Sender<Routed>>>>,
    /// What replies are decoded for: any client of the cluster.
    receiver: Receiver,
}

impl Router {
    fn new(receiver: Receiver) -> Self {
        Self {
            sessions: Arc::default(),
            receiver,
        }
    }

    pub(crate) fn register(&self, client: ClientId, replies: mpsc::Sender<Routed>) {
        self.lock().insert(client, replies);
    }

    pub(crate) fn unregister(&self, client: ClientId) {
        self.lock().remove(&client);
    }

    /// Hands a reply that came from replica `replica` to its session.
    fn route(&self, replica: u8, verified: Verified) {
        let Message::Reply(Reply { client, .. }) = verified.envelope().message else {
            unreachable!("decoding for a client admits only replies");
        };
        if let Some(session) = self.lock().get(&client) {
            // A session keeps up with one request at a time; if it does not, drop.
            let _ = session.try_send((replica, verified));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, mpsc::Sender<Routed>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection task per replica; dropping this stops them all.
pub(crate) struct Connections {
    queues: Vec<QueueSender<Outbound>>,
    router: Router,
    _tasks: JoinSet<()>,
}

impl Connections {
    /// Starts a task per address; replies from any replica go to their session.
    pub(crate) fn spawn<T: Transport>(
        transport: &T,
        addresses: &[String],
        receiver: Receiver,
    ) -> Self {
        let router = Router::new(receiver);
        let mut tasks = JoinSet::new();
        let queues = addresses
            .iter()
            .enumerate()
            .map(|(replica, address)| {
                let (sender, receiver) = queue(QUEUE_FRAMES_MAX, QUEUE_BYTES_MAX);
                let replica = u8::try_from(replica).expect("bounded by REPLICAS_MAX");
                let task = connection(
                    transport.clone(),
                    address.clone(),
                    replica,
                    receiver,
                    router.clone(),
                );
                tasks.spawn(task);
                sender
            })
            .collect();
        Self {
            queues,
            router,
            _tasks: tasks,
        }
    }

    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    /// Queues a frame for replica `to`; a full queue drops it (the session retries).
    pub(crate) fn send(&self, to: u8, outbound: Outbound) {
        if let Some(queue) = self.queues.get(usize::from(to)) {
            let _ = queue.try_send(outbound);
        }
    }
}

async fn connection<T: Transport>(
    transport: T,
    address: String,
    replica: u8,
    mut queue: QueueReceiver<Outbound>,
    router: Router,
) {
    let mut backoff = Backoff::new(RECONNECT_BACKOFF_MAX);
    // Lazy: connect only once there is something to send.
    let Some(mut first) = queue.recv().await else {
        return;
    };
    loop {
        let connect =
            tokio::time::timeout(CONNECT_TIMEOUT, transport.connect(&address, replica)).await;
        let Ok(Ok(stream)) = connect else {
            tracing::debug!(%address, "cannot connect to a replica; retrying");
            backoff.wait().await;
            continue;
        };
        backoff.reset();
        let (reader, mut writer) = tokio::io::split(stream);
        let heard = Heard::new();
        let unanswered = tokio::select! {
            () = read_loop(reader, &router, replica, &address, &heard) => None,
            unanswered = write_loop(&mut writer, &mut queue, first, &heard) => unanswered,
        };
        if let Some(unanswered) = unanswered {
            // The replica answered nothing for a while: this connection may be stuck where a
            // fresh one would get through (a healed partition). Reconnect at once.
            tracing::debug!(%address, "a replica has not answered for {SILENCE:?}; reconnecting");
            first = unanswered;
            continue;
        }
        backoff.wait().await;
        let Some(next) = queue.recv().await else {
            return;
        };
        first = next;
    }
}

/// When a connection last delivered a frame: milliseconds since it opened, plus one (zero:
/// never).
struct Heard {
    opened: Instant,
    last_millis: AtomicU64,
}

impl Heard {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_millis: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: R,
    router: &Router,
    replica: u8,
    address: &str,
    heard: &Heard,
) {
    let mut reader = FrameReader::new(reader, router.receiver);
    loop {
        match reader.next().await {
            Ok(Some((verified, _))) => {
                heard.last_millis.store(heard.now() + 1, Ordering::Relaxed);
                router.route(replica, verified);
            }
            Ok(None) => return,
            Err(ReadError::Io(error)) => {
                return tracing::debug!(%address, %error, "lost the connection to a replica");
            }
            Err(ReadError::Truncated) => {
                tracing::warn!(%address, "a replica's stream ended inside a frame");
                return;
            }
            Err(ReadError::Decode(error) | ReadError::OtherCluster { error, .. }) => {
                tracing::warn!(%address, %error, "dropped a bad frame from a replica; reconnecting");
                return;
            }
        }
    }
}

/// Writes queued frames until the connection fails (`None`), or until a frame is due while the
/// replica has answered nothing for [`SILENCE`] since an earlier write: that frame is handed
/// back for a fresh connection.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queue: &mut QueueReceiver<Outbound>,
    first: Outbound,
    heard: &Heard,
) -> Option<Outbound> {
    let mut buffer = Vec::new();
    let mut next = Some(first);
    // When the first write not followed by any frame from the replica went out.
    let mut unanswered_since: Option<u64> = None;
    loop {
        let item = next.take()?;
        let now = heard.now();
        if let Some(since) = unanswered_since {
            if heard.last_millis.load(Ordering::Relaxed) > since {
                unanswered_since = None;
            } else if now - since >= SILENCE.as_millis() as u64 {
                return Some(item);
            }
        }
        let write = queue.write_batch(writer, item, &mut buffer);
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
        unanswered_since.get_or_insert(now);
        next = queue.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(byte: u8) -> Outbound {
        Outbound {
            frame: Bytes::from(vec![byte; 8]),
            sent: Some(Arc::new(AtomicU8::new(SENT_PENDING))),
        }
    }

    #[tokio::test]
    async fn a_frame_due_after_a_silence_is_handed_back_unwritten() {
        let (mut writer, _replica) = tokio::io::duplex(1 << 16);
        let (sender, mut queue) = queue(16, 1 << 16);
        let heard = Heard::new();
        let late = outbound(2);
        let late_sent = Arc::clone(late.sent.as_ref().expect("tracked"));
        let writing = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                heard.last_millis.load(Ordering::Relaxed) == 0,
                "nothing answered"
            );
            tokio::time::sleep(SILENCE).await;
            sender.try_send(late).expect("room");
        };
        let (handed_back, ()) = tokio::join!(
            write_loop(&mut writer, &mut queue, outbound(1), &heard),
            writing
        );
        let handed_back = handed_back.expect("the late frame comes back");
        assert_eq!(handed_back.frame[0], 2);
        assert_eq!(
            late_sent.load(Ordering::Acquire),
            SENT_PENDING,
            "not written"
        );
    }

    #[tokio::test]
    async fn an_answered_connection_keeps_its_frames() {
        let (mut writer, _replica) = tokio::io::duplex(1 << 16);
        let (sender, mut queue) = queue(16, 1 << 16);
        let heard = Heard::new();
        let writing = async {
            tokio::time::sleep(SILENCE + Duration::from_millis(100)).await;
            // An answer came after the first write: the next frame uses this connection.
            heard.last_millis.store(heard.now() + 1, Ordering::Relaxed);
            sender.try_send(outbound(2)).expect("room");
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(sender);
        };
        let (handed_back, ()) = tokio::join!(
            write_loop(&mut writer, &mut queue, outbound(1), &heard),
            writing
        );
        assert!(
            handed_back.is_none(),
            "both frames written, then the queue closed"
        );
    }
}
