//! Outbound connections to the other replicas: one task per peer.
//!
//! The event loop queues encoded frames without waiting (a full queue drops the frame and
//! counts it), so a dead or unreachable replica never delays messages to the others. The task
//! connects, writes queued frames in batches and reconnects after any error. Peers never
//! answer on this connection: their messages arrive on connections they open to us.
//!
//! A dead path is found in about a second, and a healed one is used at once:
//! * the socket's `TCP_USER_TIMEOUT` ([`crate::transport`]) fails the connection when data
//!   stays unacknowledged for [`PATH_TIMEOUT`](crate::transport::PATH_TIMEOUT), and keepalive
//!   probes an idle one, so a partition never leaves the link in TCP's retransmission backoff;
//! * a write that makes no progress for [`WRITE_STALL_TIMEOUT`] replaces the connection;
//! * the task watches the connection's reading side, so a peer that closes it (restarted, or
//!   closing an idle connection) is reconnected to before the next frame, not after it is lost;
//! * whenever the event loop hears from the peer ([`Heard`]), a reconnect waiting out its
//!   backoff, or a connection attempt hanging for longer than [`ATTEMPT_PATIENCE`], starts over
//!   at once: the peer is reachable again;
//! * when the peer is heard from after [`SILENCE`] without a word, the connection in use is
//!   replaced at once, even if it looks healthy: a partition may have just healed, and frames
//!   written into the old connection during it may sit behind TCP's retransmission backoff
//!   (or a path that drops without a trace) for many seconds. Peers that are merely quiet pay
//!   one reconnect when they speak again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Notify, watch};

use crate::frame::{Backoff, QueueReceiver};
use crate::metrics::Metrics;
use crate::transport::Transport;

/// Frames queued for one peer.
pub(crate) const PEER_QUEUE_FRAMES_MAX: usize = 4096;
/// Bytes queued for one peer.
pub(crate) const PEER_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest wait for a connection (and its TLS handshake) to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A write that makes no progress for this long means the path is gone: reconnect.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// A connection attempt running this long is restarted when the peer is heard from.
const ATTEMPT_PATIENCE: Duration = Duration::from_millis(200);

/// A peer silent this long and then heard from gets a fresh connection.
const SILENCE: Duration = Duration::from_secs(1);

/// What the event loop tells a peer's task about messages from the peer.
#[derive(Debug)]
pub(crate) struct Heard {
    /// Signalled on every message from the peer.
    any: Notify,
    /// Counts messages that came after [`SILENCE`] without one.
    renewals: watch::Sender<u64>,
    /// When the last message came, in milliseconds since `start`.
    last_millis: AtomicU64,
    start: Instant,
}

impl Heard {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            any: Notify::new(),
            renewals: watch::Sender::new(0),
            last_millis: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// A message from the peer arrived.
    pub(crate) fn heard(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_millis.swap(now, Ordering::Relaxed);
        self.any.notify_one();
        if now.saturating_sub(last) >= SILENCE.as_millis() as u64 {
            self.renewals.send_modify(|renewals| *renewals += 1);
        }
    }
}

/// Delivers `queue` to replica `index` at `address` until the queue's sender is dropped;
/// counted in `vsr_peers_connected` while connected.
pub(crate) async fn peer_task<T: Transport>(
    transport: T,
    index: u8,
    address: String,
    mut queue: QueueReceiver<Bytes>,
    heard: Arc<Heard>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Backoff::new(BACKOFF_MAX);
    let mut renewals = heard.renewals.subscribe();
    let mut buffer = Vec::new();
    let mut failures: u64 = 0;
    loop {
        let stream = match connect(&transport, &address, index, &heard).await {
            Ok(stream) => stream,
            Err(error) => {
                failures += 1;
                log_failure(index, &address, failures, &error);
                tokio::select! {
                    () = backoff.wait() => {}
                    () = heard.any.notified() => {}
                }
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(replica = index, %address, "connected to replica {index}");
        } else {
            tracing::debug!(replica = index, %address, "connected to replica {index}");
        }
        failures = 0;
        backoff.reset();
        // Until this connection is given up (or the task is dropped).
        let _connected = metrics.peer_connected();
        // A silence that ended before this connection existed is no reason to replace it.
        renewals.borrow_and_update();
        let (mut reader, mut writer) = tokio::io::split(stream);
        loop {
            let first = tokio::select! {
                first = queue.recv() => {
                    let Some(first) = first else { return };
                    first
                }
                () = closed(&mut reader) => {
                    tracing::debug!(replica = index, %address, "the peer closed the connection; reconnecting");
                    break;
                }
                Ok(()) = renewals.changed() => {
                    tracing::debug!(replica = index, %address, "heard from the peer after a silence; reconnecting");
                    break;
                }
            };
            let write = queue.write_batch(&mut writer, first, &mut buffer);
            match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::info!(replica = index, %address, %error, "lost the connection; reconnecting");
                    break;
                }
                Err(_) => {
                    tracing::warn!(replica = index, %address, "writes stalled; reconnecting");
                    break;
                }
            }
        }
    }
}

/// One connection attempt, bounded by [`CONNECT_TIMEOUT`], abandoned early when the peer is
/// heard from after [`ATTEMPT_PATIENCE`] (the path works: a fresh attempt will get through).
async fn connect<T: Transport>(
    transport: &T,
    address: &str,
    index: u8,
    heard: &Heard,
) -> Result<T::Stream, String> {
    let attempt = tokio::time::timeout(CONNECT_TIMEOUT, transport.connect(address, index));
    let heard_again = async {
        tokio::time::sleep(ATTEMPT_PATIENCE).await;
        heard.any.notified().await;
    };
    tokio::select! {
        attempt = attempt => match attempt {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("connect timed out".to_owned()),
        },
        () = heard_again => Err("the peer was heard from: trying again".to_owned()),
    }
}

/// Completes when the peer closes the connection or it fails. Peers send nothing on it, so
/// anything read is discarded.
async fn closed<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut discard = [0; 256];
    while let Ok(read) = reader.read(&mut discard).await {
        if read == 0 {
            return;
        }
    }
}

/// Warns on the first failure in a row, then every hundredth; the rest go to debug.
fn log_failure(index: u8, address: &str, failures: u64, error: &dyn std::fmt::Display) {
    if failures == 1 || failures.is_multiple_of(100) {
        tracing::warn!(replica = index, %address, %error, failures, "cannot connect to replica {index}; retrying");
    } else {
        tracing::debug!(replica = index, %address, %error, failures, "cannot connect");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_heard_after_a_silence_renews_the_connection_and_a_chatty_one_does_not() {
        let heard = Heard::new();
        let renewals = heard.renewals.subscribe();
        heard.heard();
        heard.heard();
        assert_eq!(*renewals.borrow(), 0, "messages within the silence bound");
        std::thread::sleep(SILENCE + Duration::from_millis(50));
        heard.heard();
        assert_eq!(*renewals.borrow(), 1, "heard again after a silence");
        heard.heard();
        assert_eq!(*renewals.borrow(), 1);
    }
}
