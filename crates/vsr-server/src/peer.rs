//! Outbound connections to the other replicas: one task per peer.
//!
//! The event loop queues encoded frames without waiting (a full queue drops the frame and
//! counts it), so a dead or unreachable replica never delays messages to the others. The task
//! connects with exponential backoff, writes queued frames in batches and reconnects after any
//! error. Peers never answer on this connection: their messages arrive on connections they
//! open to us, and identify their sender by the replica index in the checksummed header.

use std::time::Duration;

use bytes::Bytes;

use crate::frame::{Backoff, QueueReceiver};
use crate::transport::Transport;

/// Frames queued for one peer.
pub(crate) const PEER_QUEUE_FRAMES_MAX: usize = 4096;
/// Bytes queued for one peer.
pub(crate) const PEER_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest wait for a connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A write that makes no progress for this long means the peer is gone: reconnect.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers `queue` to replica `index` at `address` until the queue's sender is dropped.
pub(crate) async fn peer_task<T: Transport>(
    transport: T,
    index: u8,
    address: String,
    mut queue: QueueReceiver<Bytes>,
) {
    let mut backoff = Backoff::new();
    let mut buffer = Vec::new();
    let mut failures: u64 = 0;
    loop {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, transport.connect(&address));
        let mut stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                failures += 1;
                log_failure(index, &address, failures, &error);
                backoff.wait().await;
                continue;
            }
            Err(_) => {
                failures += 1;
                log_failure(index, &address, failures, &"connect timed out");
                backoff.wait().await;
                continue;
            }
        };
        tracing::info!(replica = index, %address, "connected to replica {index}");
        failures = 0;
        loop {
            let Some(first) = queue.recv().await else {
                return;
            };
            let write = queue.write_batch(&mut stream, first, &mut buffer);
            match tokio::time::timeout(WRITE_STALL_TIMEOUT, write).await {
                Ok(Ok(())) => backoff.reset(),
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
        backoff.wait().await;
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
