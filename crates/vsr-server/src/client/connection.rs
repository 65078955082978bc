//! The client's connections: one task per replica, connected lazily (on the first frame queued
//! for it), reconnected with backoff after errors, decoupled from the session that uses them.
//!
//! Frames of a state machine operation carry a shared "sent" state so the session can tell,
//! after its deadline, whether any copy of the operation reached a socket: the connection task
//! claims the state before it writes, and the session cancels it when it gives up, so a frame
//! that was never written stays unwritten and the session can report the request definitely
//! not executed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use vsr::Envelope;

use crate::frame::{Backoff, FrameReader, QueueItem, QueueReceiver, QueueSender, ReadError, queue};
use crate::transport::Transport;

/// Frames queued for one replica.
const QUEUE_FRAMES_MAX: usize = 256;
/// Bytes queued for one replica.
const QUEUE_BYTES_MAX: usize = 8 * 1024 * 1024;
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

/// One connection task per replica; dropping this stops them all.
pub(crate) struct Connections {
    queues: Vec<QueueSender<Outbound>>,
    _tasks: JoinSet<()>,
}

impl Connections {
    /// Starts a task per address; decoded messages from any replica go to `replies`.
    pub(crate) fn spawn<T: Transport>(
        transport: &T,
        addresses: &[String],
        replies: &mpsc::Sender<Envelope>,
    ) -> Self {
        let mut tasks = JoinSet::new();
        let queues = addresses
            .iter()
            .map(|address| {
                let (sender, receiver) = queue(QUEUE_FRAMES_MAX, QUEUE_BYTES_MAX);
                let task = connection(
                    transport.clone(),
                    address.clone(),
                    receiver,
                    replies.clone(),
                );
                tasks.spawn(task);
                sender
            })
            .collect();
        Self {
            queues,
            _tasks: tasks,
        }
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
    mut queue: QueueReceiver<Outbound>,
    replies: mpsc::Sender<Envelope>,
) {
    let mut backoff = Backoff::new();
    // Lazy: connect only once there is something to send.
    let Some(mut first) = queue.recv().await else {
        return;
    };
    loop {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, transport.connect(&address)).await;
        let Ok(Ok(stream)) = connect else {
            tracing::debug!(%address, "cannot connect to a replica; retrying");
            backoff.wait().await;
            continue;
        };
        backoff.reset();
        let (reader, mut writer) = tokio::io::split(stream);
        tokio::select! {
            () = read_loop(reader, &replies, &address) => {}
            () = write_loop(&mut writer, &mut queue, first) => {}
        }
        backoff.wait().await;
        let Some(next) = queue.recv().await else {
            return;
        };
        first = next;
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: R,
    replies: &mpsc::Sender<Envelope>,
    address: &str,
) {
    let mut reader = FrameReader::new(reader);
    loop {
        match reader.next().await {
            Ok(Some((envelope, _))) => {
                // The session keeps up with one request at a time; if it does not, drop.
                let _ = replies.try_send(envelope);
            }
            Ok(None) => return,
            Err(ReadError::Io(error)) => {
                return tracing::debug!(%address, %error, "lost the connection to a replica");
            }
            Err(ReadError::Truncated) => {
                tracing::warn!(%address, "a replica's stream ended inside a frame");
                return;
            }
            Err(ReadError::Decode(error)) => {
                tracing::warn!(%address, %error, "dropped a bad frame from a replica; reconnecting");
                return;
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queue: &mut QueueReceiver<Outbound>,
    first: Outbound,
) {
    let mut buffer = Vec::new();
    let mut next = Some(first);
    loop {
        let Some(item) = next.take() else { return };
        let write = queue.write_batch(writer, item, &mut buffer);
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        next = queue.recv().await;
    }
}
