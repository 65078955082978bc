//! Framing over byte streams, bounded frame queues and reconnect backoff: the pieces every
//! connection (inbound, peer, client) shares.
//!
//! A [`FrameReader`] turns a stream into verified envelopes: it reads the 128-byte header,
//! asks [`wire::frame_size`] for the frame's size (which checks the header checksum and bounds
//! the size before a byte of body is buffered), reads the body into a reused buffer and hands
//! the frame to [`wire::decode`]. Writers drain a [`QueueReceiver`] in batches: every frame
//! available at once goes out in one `write_all`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use vsr::wire::{self, DecodeError, HEADER_SIZE};
use vsr::{Receiver, Verified};

/// Buffer of a frame reader: many small frames per read system call.
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Frames at least this large are written directly rather than copied into the batch buffer.
const WRITE_DIRECT_SIZE: usize = 64 * 1024;
/// Bytes gathered into one batched write.
const WRITE_BATCH_SIZE_MAX: usize = 256 * 1024;

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The connection failed.
    Io(io::Error),
    /// The stream ended inside a frame.
    Truncated,
    /// The frame was rejected by the wire format.
    Decode(DecodeError),
    /// A whole, well-formed frame of another cluster (or epoch): rejected like any
    /// [`ReadError::Decode`], with the frame kept so that a replica can answer a client's.
    OtherCluster {
        /// The wire format's [`DecodeError::WrongCluster`].
        error: DecodeError,
        /// The frame, at most [`wire::FRAME_SIZE_MAX`] bytes.
        frame: Bytes,
    },
}

/// Reads verified envelopes from a byte stream. Frames are split off one shared read buffer
/// without copying, and the decoded bodies are slices of them ([`wire::decode_shared`]).
pub(crate) struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    /// When the first byte of the frame now in the buffer arrived; `None` between frames.
    started: Option<Instant>,
    /// Who the frames are for: decoding checks each against it.
    receiver: Receiver,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(reader: R, receiver: Receiver) -> Self {
        Self {
            reader,
            buffer: BytesMut::new(),
            started: None,
            receiver,
        }
    }

    /// When the first byte of a frame not yet complete arrived, if one has. Reading is cancel
    /// safe (bytes stay in the buffer), so a caller can race [`FrameReader::next`] against a
    /// deadline computed from this.
    pub(crate) fn frame_started(&self) -> Option<Instant> {
        self.started
    }

    /// The next envelope and its frame size, or `None` when the stream ended between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<(Verified, usize)>, ReadError> {
        if !self.fill(HEADER_SIZE).await? {
            return Ok(None);
        }
        let size = match wire::frame_size(&self.buffer) {
            Ok(Some(size)) => size,
            Ok(None) => unreachable!("a whole header was read"),
            Err(error) => return Err(ReadError::Decode(error)),
        };
        if !self.fill(size).await? {
            return Err(ReadError::Truncated);
        }
        let frame = self.buffer.split_to(size).freeze();
        if self.buffer.is_empty() {
            self.started = None;
            if self.buffer.capacity() > READ_BUFFER_SIZE {
                // Give back what a burst of large frames took.
                self.buffer = BytesMut::new();
            }
        } else {
            self.started = Some(Instant::now());
        }
        let verified =
            wire::decode_shared(&frame, &self.receiver).map_err(|error| match error {
                DecodeError::WrongCluster { .. } => ReadError::OtherCluster { error, frame },
                error => ReadError::Decode(error),
            })?;
        Ok(Some((verified, size)))
    }

    /// Reads until the buffer holds `size` bytes. `false`: the stream ended with the buffer
    /// empty (`size` a header) or short; a stream ending inside a header is truncated.
    async fn fill(&mut self, size: usize) -> Result<bool, ReadError> {
        while self.buffer.len() < size {
            if self.buffer.capacity() - self.buffer.len() < size - self.buffer.len() {
                // Room for this frame, and for the small ones likely behind it.
                self.buffer
                    .reserve(size.max(READ_BUFFER_SIZE) - self.buffer.len());
            }
            let read = self.reader.read_buf(&mut self.buffer).await;
            if self.started.is_none() && !self.buffer.is_empty() {
                self.started = Some(Instant::now());
            }
            match read {
                Ok(0) if self.buffer.is_empty() => return Ok(false),
                Ok(0) if size == HEADER_SIZE => return Err(ReadError::Truncated),
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
        Ok(true)
    }
}

/// Something a frame queue carries.
pub(crate) trait QueueItem: Send + 'static {
    /// The encoded frame.
    fn frame(&self) -> &Bytes;
    /// Called just before the frame is written; `false` skips it.
    fn claim(&self) -> bool {
        true
    }
}

impl QueueItem for Bytes {
    fn frame(&self) -> &Bytes {
        self
    }
}

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The queue holds its maximum of frames or bytes.
    Full,
    /// The receiving task is gone.
    Closed,
}

/// The sending side of a queue bounded both in frames and in bytes.
#[derive(Debug)]
pub(crate) struct QueueSender<T> {
    sender: mpsc::Sender<T>,
    bytes: Arc<AtomicUsize>,
    bytes_max: usize,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            bytes: Arc::clone(&self.bytes),
            bytes_max: self.bytes_max,
        }
    }
}

/// The receiving side of a bounded frame queue.
pub(crate) struct QueueReceiver<T> {
    receiver: mpsc::Receiver<T>,
    bytes: Arc<AtomicUsize>,
}

/// A queue of at most `frames_max` frames and `bytes_max` bytes.
pub(crate) fn queue<T: QueueItem>(
    frames_max: usize,
    bytes_max: usize,
) -> (QueueSender<T>, QueueReceiver<T>) {
    let (sender, receiver) = mpsc::channel(frames_max);
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            sender,
            bytes: Arc::clone(&bytes),
            bytes_max,
        },
        QueueReceiver { receiver, bytes },
    )
}

impl<T: QueueItem> QueueSender<T> {
    /// Queues `item` without waiting.
    pub(crate) fn try_send(&self, item: T) -> Result<(), QueueError> {
        let size = item.frame().len();
        // Count the bytes before the item becomes visible: the receiver subtracts them as soon
        // as it takes the item, so counting after the send could wrap the counter.
        let queued = self.bytes.fetch_add(size, Ordering::AcqRel);
        if queued + size > self.bytes_max {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(if self.sender.is_closed() {
                QueueError::Closed
            } else {
                QueueError::Full
            });
        }
        let result = match self.sender.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => QueueError::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => QueueError::Closed,
        };
        self.bytes.fetch_sub(size, Ordering::AcqRel);
        Err(result)
    }

    /// Whether the receiving task is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl<T: QueueItem> QueueReceiver<T> {
    /// Waits for the next item; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        let item = self.receiver.recv().await?;
        self.bytes.fetch_sub(item.frame().len(), Ordering::AcqRel);
        Some(item)
    }

    fn try_recv(&mut self) -> Option<T> {
        let item = self.receiver.try_recv().ok()?;
        self.bytes.fetch_sub(item.frame().len(), Ordering::AcqRel);
        Some(item)
    }

    /// Writes `first` and every item queued behind it, batched into few `write_all` calls.
    /// `buffer` is reused across calls.
    pub(crate) async fn write_batch<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        first: T,
        buffer: &mut Vec<u8>,
    ) -> io::Result<()> {
        buffer.clear();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if item.claim() {
                let frame = item.frame();
                if frame.len() >= WRITE_DIRECT_SIZE {
                    writer.write_all(buffer).await?;
                    buffer.clear();
                    writer.write_all(frame).await?;
                } else {
                    buffer.extend_from_slice(frame);
                }
            }
            if buffer.len() < WRITE_BATCH_SIZE_MAX {
                next = self.try_recv();
            }
        }
        writer.write_all(buffer).await?;
        buffer.clear();
        // Give back what a burst took beyond the usual batch.
        buffer.shrink_to(WRITE_DIRECT_SIZE);
        writer.flush().await
    }
}

/// Exponential backoff with jitter for reconnects: 10 ms doubling to a bound, each delay
/// lengthened by a random share of itself (up to double) so that reconnects spread out.
/// The schedule is `backon`'s; its jitter draws from a randomly seeded generator, which only
/// spreads reconnects and never reaches the replica.
#[derive(Debug)]
pub(crate) struct Backoff {
    delays: backon::ExponentialBackoff,
    max: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);

impl Backoff {
    /// Delays from 10 ms doubling up to `max` (before jitter).
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            delays: Self::schedule(max),
            max,
        }
    }

    fn schedule(max: Duration) -> backon::ExponentialBackoff {
        let builder = backon::ExponentialBuilder::new()
            .with_min_delay(BACKOFF_MIN)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        backon::BackoffBuilder::build(builder)
    }

    /// Back to the shortest delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.delays = Self::schedule(self.max);
    }

    /// Sleeps for the current delay (with jitter), then doubles it.
    pub(crate) async fn wait(&mut self) {
        let delay = self.delays.next().expect("the schedule has no end");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsr::{Commit, Envelope, Message, Op, Sender, View};

    /// A commit from view `view`'s primary in a cluster of three.
    fn frame(view: u64) -> Vec<u8> {
        let message = Message::Commit(Commit {
            view: View(view),
            commit: Op(3),
            round: 0,
        });
        wire::encode(&Envelope {
            cluster: 9,
            epoch: 0,
            sender: Sender::Replica((view % 3) as u8),
            message,
        })
    }

    /// Replica 0 of that cluster.
    fn receiver() -> Receiver {
        Receiver::replica(&vsr::Config::new(9, 3), 0)
    }

    /// Senders on several threads race the receiver: the byte count never wraps (it did when
    /// bytes were counted after the send) and returns to zero once the queue is drained.
    #[test]
    fn queue_byte_count_survives_racing_senders_and_receiver() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (sender, mut receiver) = queue::<Bytes>(64, 64 * 1024);
            let mut senders = tokio::task::JoinSet::new();
            for _ in 0..4 {
                let sender = sender.clone();
                senders.spawn(async move {
                    let mut sent = 0;
                    for _ in 0..20_000 {
                        if sender.try_send(Bytes::from_static(&[0; 100])).is_ok() {
                            sent += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    sent
                });
            }
            drop(sender);
            let mut received = 0u64;
            while receiver.recv().await.is_some() {
                received += 1;
            }
            let mut sent = 0u64;
            while let Some(joined) = senders.join_next().await {
                sent += joined.expect("sender");
            }
            assert_eq!(received, sent);
            assert_eq!(receiver.bytes.load(Ordering::Acquire), 0);
        });
    }

    #[tokio::test]
    async fn reader_splits_a_stream_into_frames() {
        let mut bytes = frame(1);
        bytes.extend_from_slice(&frame(2));
        let mut reader = FrameReader::new(&bytes[..], receiver());
        for view in [1, 2] {
            let (verified, size) = reader.next().await.expect("valid").expect("a frame");
            assert_eq!(
                verified.envelope().message,
                Message::Commit(Commit {
                    view: View(view),
                    commit: Op(3),
                    round: 0,
                })
            );
            assert_eq!(size, HEADER_SIZE);
        }
        assert!(matches!(reader.next().await, Ok(None)));
    }

    #[tokio::test]
    async fn reader_rejects_truncation_and_corruption() {
        let bytes = frame(1);
        let mut reader = FrameReader::new(&bytes[..HEADER_SIZE - 1], receiver());
        assert!(matches!(reader.next().await, Err(ReadError::Truncated)));
        let mut corrupt = bytes.clone();
        corrupt[100] ^= 1;
        let mut reader = FrameReader::new(&corrupt[..], receiver());
        assert!(matches!(
            reader.next().await,
            Err(ReadError::Decode(DecodeError::HeaderChecksum))
        ));
    }

    #[tokio::test]
    async fn reader_keeps_a_frame_of_another_cluster() {
        let bytes = frame(1);
        let other = Receiver::replica(&vsr::Config::new(10, 3), 0);
        let mut reader = FrameReader::new(&bytes[..], other);
        match reader.next().await {
            Err(ReadError::OtherCluster { error, frame }) => {
                assert_eq!(error, DecodeError::WrongCluster { cluster: 9 });
                assert_eq!(frame[..], bytes[..]);
            }
            other => panic!("expected a frame of another cluster, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn queue_bounds_bytes_and_batches_writes() {
        let (sender, mut receiver) = queue::<Bytes>(8, 2 * HEADER_SIZE);
        for view in [1, 2] {
            sender.try_send(Bytes::from(frame(view))).expect("room");
        }
        assert_eq!(
            sender.try_send(Bytes::from(frame(3))),
            Err(QueueError::Full)
        );
        let first = receiver.recv().await.expect("queued");
        let (mut written, mut buffer) = (Vec::new(), Vec::new());
        receiver
            .write_batch(&mut written, first, &mut buffer)
            .await
            .expect("write");
        assert_eq!(written, [frame(1), frame(2)].concat());
        sender.try_send(Bytes::from(frame(3))).expect("room again");
    }
}
