//! The administrative backup request: what `vsr backup` asks a replica (the primary).
//!
//! It travels as a client query whose body is [`BACKUP_QUERY`], which only an operator's
//! certificate may send over TLS (as a status request). The runtime answers it itself: it
//! takes the replica's whole state at its commit number, frozen at once
//! ([`vsr::Replica::snapshot_at_commit`]; a persistent state machine shares it, nothing is
//! copied), and streams it on the connection from a blocking thread that encodes it piece by
//! piece, while the replica goes on serving. The stream is a run of replies to that query, each
//! [`vsr::ReplyResult::Answered`] with a body that starts with its kind:
//!
//! | kind | body after the kind byte                                       |
//! |------|----------------------------------------------------------------|
//! | 0 begin   | view `u64`, op `u64`, op checksum `u128`               |
//! | 1 chunk   | up to [`CHUNK_SIZE_MAX`] bytes of the state            |
//! | 2 end     | the state's size `u64` and checksum `u128`             |
//! | 3 refused | why, UTF-8                                             |
//!
//! The reader checks the size and checksum it computed against the end's, so the state is
//! checked from the replica's memory to the file ([`vsr_storage::backup`] seals the file
//! itself). The stream waits for the connection: a reader that stops reading holds the encoder
//! back (the reply queue is bounded), and one that goes away ends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use vsr::checksum::Checksum;
use vsr::{
    Checkpoint, ClientId, Envelope, Message, Op, Query, Receiver, Reply, ReplyResult, Sender, View,
};
use vsr_storage::backup::{BackupHeader, BackupSummary, BackupWriter};

use crate::frame::{FrameReader, QueueError, QueueSender};
use crate::status::{AnswerError, next_reply, send_admin_query};
use crate::transport::Transport;

/// The body of a backup query (see [`crate::status::STATUS_QUERY`] for why its first byte).
pub const BACKUP_QUERY: &[u8] = b"\xffvsr-backup";

/// Largest piece of the state one reply carries.
pub const CHUNK_SIZE_MAX: usize = 256 * 1024;

/// Backups one replica streams at once; more are refused (each holds a frozen state and a
/// thread).
pub(crate) const BACKUPS_MAX: usize = 2;

/// How long a stream waits for room on a connection whose reader takes nothing.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

const KIND_BEGIN: u8 = 0;
const KIND_CHUNK: u8 = 1;
const KIND_END: u8 = 2;
const KIND_REFUSED: u8 = 3;

/// Whether `message` is a backup query.
pub(crate) fn is_backup_query(message: &Message) -> bool {
    matches!(message, Message::Query(Query { body, .. }) if body.as_ref() == BACKUP_QUERY)
}

/// Who asked, and where the stream goes.
pub(crate) struct Asker {
    pub(crate) cluster: u128,
    pub(crate) replica: u8,
    pub(crate) client: ClientId,
    pub(crate) request: u64,
    pub(crate) queue: QueueSender<Bytes>,
}

impl Asker {
    fn frame(&self, view: View, op: Op, body: Vec<u8>) -> Bytes {
        let envelope = Envelope {
            cluster: self.cluster,
            epoch: 0,
            sender: Sender::Replica(self.replica),
            message: Message::Reply(Reply {
                client: self.client,
                view,
                op,
                request: self.request,
                result: ReplyResult::Answered(Bytes::from(body)),
            }),
        };
        Bytes::from(vsr::wire::encode(&envelope))
    }

    /// Answers that no backup is served, and why.
    pub(crate) fn refuse(&self, view: View, reason: &str) {
        let mut body = vec![KIND_REFUSED];
        body.extend_from_slice(reason.as_bytes());
        let _ = self.queue.try_send(self.frame(view, Op(0), body));
    }
}

/// Streams `checkpoint` (the state at the commit number, in `view`) to `asker` on a blocking
/// thread; `running` counts the streams under way and is released when this one ends.
pub(crate) fn spawn(asker: Asker, view: View, checkpoint: Checkpoint, running: Arc<AtomicUsize>) {
    let previous = running.fetch_add(1, Ordering::AcqRel);
    if previous >= BACKUPS_MAX {
        running.fetch_sub(1, Ordering::AcqRel);
        asker.refuse(
            view,
            "too many backups under way on this replica: try again later",
        );
        return;
    }
    tokio::task::spawn_blocking(move || {
        let outcome = stream(&asker, view, &checkpoint);
        running.fetch_sub(1, Ordering::AcqRel);
        match outcome {
            Ok(size) => tracing::info!(op = checkpoint.op.get(), bytes = size, "backup streamed"),
            Err(why) => tracing::warn!(op = checkpoint.op.get(), "backup ended early: {why}"),
        }
    });
}

fn stream(asker: &Asker, view: View, checkpoint: &Checkpoint) -> Result<u64, &'static str> {
    let op = checkpoint.op;
    let mut begin = vec![KIND_BEGIN];
    begin.put_u64_le(view.get());
    begin.put_u64_le(op.get());
    begin.put_u128_le(checkpoint.op_checksum.0);
    send(&asker.queue, asker.frame(view, op, begin))?;
    let mut hasher = Checksum::default();
    let mut size = 0u64;
    for piece in checkpoint.snapshot.pieces() {
        for chunk in piece.chunks(CHUNK_SIZE_MAX) {
            hasher.update(chunk);
            size += chunk.len() as u64;
            let mut body = Vec::with_capacity(1 + chunk.len());
            body.push(KIND_CHUNK);
            body.extend_from_slice(chunk);
            send(&asker.queue, asker.frame(view, op, body))?;
        }
    }
    let mut end = vec![KIND_END];
    end.put_u64_le(size);
    end.put_u128_le(hasher.finalize());
    send(&asker.queue, asker.frame(view, op, end))?;
    Ok(size)
}

/// Queues `frame`, waiting while the connection's queue is full.
fn send(queue: &QueueSender<Bytes>, frame: Bytes) -> Result<(), &'static str> {
    let started = std::time::Instant::now();
    let mut wait = Duration::from_micros(100);
    loop {
        match queue.try_send(frame.clone()) {
            Ok(()) => return Ok(()),
            Err(QueueError::Closed) => return Err("the connection closed"),
            Err(QueueError::Full) if started.elapsed() > STALL_TIMEOUT => {
                return Err("the reader took nothing for too long");
            }
            Err(QueueError::Full) => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// Why a backup could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupFetchError {
    /// No connection could be made, or it broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Nothing arrived for too long.
    #[error("nothing arrived for {0:?}")]
    Stalled(Duration),
    /// The replica closed the connection without a backup: over TLS, most likely because the
    /// certificate used is not an operator's.
    #[error(
        "the replica closed the connection before the backup ended (a backup needs an \
         operator's certificate: pass --tls-identity operator-NAME)"
    )]
    Closed,
    /// The replica would not serve one.
    #[error("the replica refused: {0}")]
    Refused(String),
    /// The stream broke its own rules or failed its checksum.
    #[error("bad backup stream: {0}")]
    Bad(String),
    /// The replica serves another cluster.
    #[error("the replica serves cluster {found:#x}, not {expected:#x}")]
    WrongCluster {
        /// The cluster asked for.
        expected: u128,
        /// The cluster the replica serves.
        found: u128,
    },
    /// Writing the file failed.
    #[error("cannot write the backup: {0}")]
    Write(#[from] std::io::Error),
}

/// Where a backup is asked for: replica `replica` at `address` of cluster `cluster` (of
/// `replica_count` replicas).
#[derive(Clone, Copy, Debug)]
pub struct BackupSource<'a> {
    /// The cluster.
    pub cluster: u128,
    /// Its number of replicas.
    pub replica_count: u8,
    /// The replica asked.
    pub replica: u8,
    /// Its address.
    pub address: &'a str,
}

/// Asks `source` for a backup over `network` and writes it to `out` as a backup file
/// ([`vsr_storage::backup`]); `progress` hears the state's bytes received so far. Gives up when
/// nothing arrives for `idle`.
///
/// # Errors
/// [`BackupFetchError`].
pub async fn fetch_backup<T: Transport, W: std::io::Write>(
    network: &T,
    source: BackupSource<'_>,
    out: W,
    idle: Duration,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, BackupSummary), BackupFetchError> {
    let unreachable = |error: std::io::Error| BackupFetchError::Unreachable(error.to_string());
    let connect = network.connect(source.address, source.replica);
    let stream = tokio::time::timeout(idle, connect)
        .await
        .map_err(|_| BackupFetchError::Stalled(idle))?
        .map_err(unreachable)?;
    let (reader, mut writer) = tokio::io::split(stream);
    let client = send_admin_query(&mut writer, source.cluster, BACKUP_QUERY)
        .await
        .map_err(unreachable)?;
    let frames = FrameReader::new(
        reader,
        Receiver::client(source.cluster, source.replica_count),
    );
    let mut stream = Stream {
        frames,
        client,
        cluster: source.cluster,
        idle,
    };
    let begin = stream.next().await?;
    let header = decode_begin(&begin, source.cluster)?;
    let mut file = BackupWriter::new(out, header)?;
    loop {
        let body = stream.next().await?;
        match body.first() {
            Some(&KIND_CHUNK) => {
                file.write_snapshot(&body[1..])?;
                progress(file.snapshot_size());
            }
            Some(&KIND_END) => return finish(file, &body[1..]),
            _ => return Err(bad("a reply that is neither a chunk nor the end")),
        }
    }
}

fn bad(what: &str) -> BackupFetchError {
    BackupFetchError::Bad(what.to_owned())
}

fn decode_begin(body: &[u8], cluster: u128) -> Result<BackupHeader, BackupFetchError> {
    match body.first() {
        Some(&KIND_BEGIN) if body.len() == 1 + 8 + 8 + 16 => {}
        Some(&KIND_REFUSED) => {
            let reason = String::from_utf8_lossy(&body[1..]).into_owned();
            return Err(BackupFetchError::Refused(reason));
        }
        _ => {
            return Err(bad(
                "the first reply does not begin a backup (an older build?)",
            ));
        }
    }
    let mut fields = &body[1..];
    let created_unix_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    Ok(BackupHeader {
        cluster,
        view: fields.get_u64_le(),
        op: fields.get_u64_le(),
        op_checksum: fields.get_u128_le(),
        created_unix_seconds,
    })
}

fn finish<W: std::io::Write>(
    file: BackupWriter<W>,
    mut end: &[u8],
) -> Result<(W, BackupSummary), BackupFetchError> {
    if end.len() != 8 + 16 {
        return Err(bad("a malformed end"));
    }
    let (size, checksum) = (end.get_u64_le(), end.get_u128_le());
    let (out, summary) = file.finish()?;
    if summary.snapshot_size != size || summary.snapshot_checksum != checksum {
        return Err(bad(
            "the state received does not match the size and checksum the replica sent",
        ));
    }
    Ok((out, summary))
}

/// The replies to one backup query, in order.
struct Stream<R> {
    frames: FrameReader<R>,
    client: ClientId,
    cluster: u128,
    idle: Duration,
}

impl<R: tokio::io::AsyncRead + Unpin> Stream<R> {
    /// The next reply's answer.
    async fn next(&mut self) -> Result<Bytes, BackupFetchError> {
        let next = tokio::time::timeout(self.idle, next_reply(&mut self.frames, self.client))
            .await
            .map_err(|_| BackupFetchError::Stalled(self.idle))?;
        let reply = next.map_err(|error| match error {
            AnswerError::Closed => BackupFetchError::Closed,
            AnswerError::Io(error) => BackupFetchError::Unreachable(error),
            AnswerError::Unreadable(error) => BackupFetchError::Bad(error),
        })?;
        match reply.result {
            ReplyResult::Answered(body) => Ok(body),
            ReplyResult::WrongCluster { cluster: found } => Err(BackupFetchError::WrongCluster {
                expected: self.cluster,
                found,
            }),
            other => Err(BackupFetchError::Bad(format!(
                "answered {other:?} (a build without backups?)"
            ))),
        }
    }
}
