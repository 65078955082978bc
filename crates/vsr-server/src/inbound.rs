//! Inbound connections, from peers and from clients alike.
//!
//! The accept loop owns one task per connection. A connection's reader turns frames into
//! verified envelopes and hands them to the event loop through one bounded channel: when the
//! loop is busy the reader waits (back-pressure on that connection only). Garbage — any frame
//! that fails [`vsr::wire::decode`] for this replica: corrupt, of another cluster, from a sender
//! out of range, with numbers out of bounds, an operation too large — is counted, logged (rate-limited) and closes the connection. A client's replies flow back
//! through the connection's bounded reply queue; a client that stops reading has its replies
//! dropped, and its connection closed once a write stalls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use vsr::{Receiver, Sender, Verified};

use crate::frame::{FrameReader, QueueReceiver, QueueSender, ReadError, queue};
use crate::metrics::{ErrorKind, Metrics};
use crate::transport::Transport;

/// Open inbound connections; more are closed on accept.
const CONNECTIONS_MAX: usize = 4096;
/// Replies queued for one client connection.
const REPLY_QUEUE_FRAMES_MAX: usize = 1024;
/// Bytes of replies queued for one client connection.
const REPLY_QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A connection whose write makes no progress for this long is closed.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of received messages waiting for the event loop, across all connections, in KiB.
const INBOUND_KIBIBYTES_MAX: usize = 256 * 1024;

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
                Ok((incoming, peer)) if connections.len() < CONNECTIONS_MAX => {
                    connection_next += 1;
                    let connection =
                        connection(transport.clone(), incoming, peer, connection_next, Arc::clone(&context));
                    connections.spawn(connection);
                }
                Ok((_, peer)) => tracing::warn!(%peer, "too many connections: closed a new one"),
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
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
    context: Arc<InboundContext>,
) {
    let stream = match transport.handshake(incoming).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%peer, %error, "handshake failed");
            return;
        }
    };
    let (reader, mut writer) = tokio::io::split(stream);
    let (queue, mut replies) = queue(REPLY_QUEUE_FRAMES_MAX, REPLY_QUEUE_BYTES_MAX);
    let route = ReplyRoute {
        connection: id,
        queue,
    };
    tokio::select! {
        () = read_loop(reader, route, &context, peer) => {}
        () = write_loop(&mut writer, &mut replies, peer) => {}
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: R,
    route: ReplyRoute,
    context: &InboundContext,
    peer: SocketAddr,
) {
    let mut reader = FrameReader::new(reader, context.receiver);
    loop {
        let (envelope, size) = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(ReadError::Io(error)) => {
                return tracing::debug!(%peer, %error, "connection failed");
            }
            Err(ReadError::Truncated) => {
                return context.reject(ErrorKind::Truncated, peer, &"stream ended inside a frame");
            }
            Err(ReadError::Decode(error)) => {
                return context.reject(ErrorKind::of(&error), peer, &error);
            }
        };
        let kibibytes = u32::try_from(size.div_ceil(1024)).expect("frames are bounded");
        let Ok(budget) = Arc::clone(&context.budget)
            .acquire_many_owned(kibibytes)
            .await
        else {
            return;
        };
        let route = matches!(envelope.envelope().sender, Sender::Client(_)).then(|| route.clone());
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
            return; // The event loop stopped.
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut W,
    replies: &mut QueueReceiver<Bytes>,
    peer: SocketAddr,
) {
    let mut buffer = Vec::new();
    while let Some(first) = replies.recv().await {
        let write = replies.write_batch(writer, first, &mut buffer);
        match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(%peer, "a client does not read its replies: closed its connection");
                return;
            }
        }
    }
}
