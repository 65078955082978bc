//! The administrative status request: what `vsr status` asks each replica.
//!
//! It travels as a client query whose body is [`STATUS_QUERY`]: the runtime answers it itself,
//! from the replica it drives, before the protocol sees it, so every replica answers (not only
//! the primary), at once, with no log entry and no round with its peers. Over TLS only an
//! operator's certificate may ask (a client's is refused and its connection closed); over plain
//! TCP anyone who reaches the port may, as for everything else there.
//!
//! The answer is a reply whose result is [`vsr::ReplyResult::Answered`] with a
//! [`ReplicaStatus`] in it:
//!
//! | field              | encoding                                            |
//! |--------------------|-----------------------------------------------------|
//! | format             | `u8`, [`STATUS_FORMAT`]                             |
//! | replica            | `u8`, the replica's index                           |
//! | status             | `u8`: 0 normal, 1 view change, 2 recovering         |
//! | primary            | `u8`: 1 when it is the primary of its view, in normal status |
//! | view, op, commit, checkpoint op, log bytes, checkpoint bytes, uptime seconds | `u64` each, little-endian |
//! | version            | `u8` length, then that many bytes of UTF-8          |

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tokio::io::AsyncWriteExt;
use vsr::{ClientId, Envelope, Message, Query, Receiver, ReplyResult, Sender};

use crate::frame::{FrameReader, ReadError};
use crate::transport::Transport;

/// The body of a status query. Its first byte is one no key-value query starts with; a state
/// machine whose queries may start with these bytes cannot receive that one query.
pub const STATUS_QUERY: &[u8] = b"\xffvsr-status";

/// The version of the answer's encoding.
pub const STATUS_FORMAT: u8 = 1;

/// Longest version string carried.
const VERSION_SIZE_MAX: usize = 64;

/// What a replica reports of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Its index in the cluster.
    pub replica: u8,
    /// `normal`, `view change` or `recovering`.
    pub status: StatusKind,
    /// Whether it is the primary of its view, in normal status.
    pub primary: bool,
    /// Its view.
    pub view: u64,
    /// Its last op.
    pub op: u64,
    /// Its commit number.
    pub commit: u64,
    /// The op of its newest durable checkpoint.
    pub checkpoint_op: u64,
    /// Bytes of its WAL files.
    pub log_bytes: u64,
    /// Bytes of its checkpoint files.
    pub checkpoint_bytes: u64,
    /// Seconds since the process started serving.
    pub uptime_seconds: u64,
    /// The version of the `vsr` build it runs.
    pub version: String,
}

/// A replica's status, as [`ReplicaStatus::status`] says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    /// Normal operation.
    Normal,
    /// A view change is under way.
    ViewChange,
    /// Recovering its state from its peers.
    Recovering,
}

impl StatusKind {
    /// How `vsr status` writes it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::ViewChange => "view change",
            Self::Recovering => "recovering",
        }
    }
}

impl From<&vsr::Status> for StatusKind {
    fn from(status: &vsr::Status) -> Self {
        match status {
            vsr::Status::Normal(_) => Self::Normal,
            vsr::Status::ViewChange(_) => Self::ViewChange,
            vsr::Status::Recovering(_) => Self::Recovering,
        }
    }
}

impl ReplicaStatus {
    /// The answer's bytes.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(80);
        out.put_u8(STATUS_FORMAT);
        out.put_u8(self.replica);
        out.put_u8(match self.status {
            StatusKind::Normal => 0,
            StatusKind::ViewChange => 1,
            StatusKind::Recovering => 2,
        });
        out.put_u8(u8::from(self.primary));
        for number in [
            self.view,
            self.op,
            self.commit,
            self.checkpoint_op,
            self.log_bytes,
            self.checkpoint_bytes,
            self.uptime_seconds,
        ] {
            out.put_u64_le(number);
        }
        let version = &self.version.as_bytes()[..self.version.len().min(VERSION_SIZE_MAX)];
        out.put_u8(u8::try_from(version.len()).expect("bounded"));
        out.put_slice(version);
        Bytes::from(out)
    }

    /// Reads an answer; `None` for anything but one [`Self::encode`] wrote.
    #[must_use]
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        if bytes.remaining() < 4 + 7 * 8 + 1 || bytes.get_u8() != STATUS_FORMAT {
            return None;
        }
        let replica = bytes.get_u8();
        let status = match bytes.get_u8() {
            0 => StatusKind::Normal,
            1 => StatusKind::ViewChange,
            2 => StatusKind::Recovering,
            _ => return None,
        };
        let primary = match bytes.get_u8() {
            0 => false,
            1 => true,
            _ => return None,
        };
        let mut numbers = [0u64; 7];
        for number in &mut numbers {
            *number = bytes.get_u64_le();
        }
        let size = usize::from(bytes.get_u8());
        if bytes.remaining() != size || size > VERSION_SIZE_MAX {
            return None;
        }
        let version = String::from_utf8(bytes.to_vec()).ok()?;
        let [
            view,
            op,
            commit,
            checkpoint_op,
            log_bytes,
            checkpoint_bytes,
            uptime_seconds,
        ] = numbers;
        Some(Self {
            replica,
            status,
            primary,
            view,
            op,
            commit,
            checkpoint_op,
            log_bytes,
            checkpoint_bytes,
            uptime_seconds,
            version,
        })
    }
}

/// Bytes of the WAL files (with their header copies) and of the checkpoint files in `directory`
/// (0 for what cannot be listed: a status or a scrape answers anyway), as `vsr status` and the
/// metrics report them. Blocking: it lists the directory and reads each file's metadata.
pub(crate) fn data_file_bytes(directory: &std::path::Path) -> (u64, u64) {
    let (mut log, mut checkpoint) = (0, 0);
    let Ok(entries) = std::fs::read_dir(directory) else {
        return (0, 0);
    };
    for entry in entries.flatten().take(DATA_FILES_LISTED_MAX) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let size = entry.metadata().map_or(0, |metadata| metadata.len());
        if name.starts_with("wal-") {
            log += size;
        } else if name.starts_with("checkpoint-") {
            checkpoint += size;
        }
    }
    (log, checkpoint)
}

/// Most directory entries a status request looks at (a replica keeps a few dozen files).
const DATA_FILES_LISTED_MAX: usize = 4096;

/// Whether `message` is a status query.
pub(crate) fn is_status_query(message: &Message) -> bool {
    matches!(message, Message::Query(Query { body, .. }) if body.as_ref() == STATUS_QUERY)
}

/// Whether `message` is an administrative query the runtime answers itself (a status or a
/// backup request): only an operator may send one over TLS.
pub(crate) fn is_admin_query(message: &Message) -> bool {
    is_status_query(message) || crate::backup::is_backup_query(message)
}

/// Why a replica's status could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No connection could be made, or it broke before the answer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The replica closed the connection without answering: over TLS, most likely because the
    /// certificate used is not an operator's.
    #[error(
        "the replica closed the connection without answering (a status needs an operator's \
         certificate: pass --tls-identity operator-NAME)"
    )]
    Refused,
    /// The answer could not be read.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
    /// The replica serves another cluster: a wrong `--cluster` (or address).
    #[error("the replica serves cluster {found:#x}, not {expected:#x}")]
    WrongCluster {
        /// The cluster asked for.
        expected: u128,
        /// The cluster the replica serves.
        found: u128,
    },
}

/// Asks replica `replica` at `address` of cluster `cluster` (of `replica_count` replicas) for
/// its status, over `network`, within `timeout`.
///
/// # Errors
/// [`StatusError`]: unreachable, no answer in time, refused, or an unreadable answer.
pub async fn fetch_status<T: Transport>(
    network: &T,
    cluster: u128,
    replica_count: u8,
    replica: u8,
    address: &str,
    timeout: Duration,
) -> Result<ReplicaStatus, StatusError> {
    let ask = async {
        let stream = network
            .connect(address, replica)
            .await
            .map_err(|error| StatusError::Unreachable(error.to_string()))?;
        let (reader, mut writer) = tokio::io::split(stream);
        let client = send_admin_query(&mut writer, cluster, STATUS_QUERY)
            .await
            .map_err(|error| StatusError::Unreachable(error.to_string()))?;
        let mut frames = FrameReader::new(reader, Receiver::client(cluster, replica_count));
        let reply = next_reply(&mut frames, client)
            .await
            .map_err(|error| match error {
                AnswerError::Closed => StatusError::Refused,
                AnswerError::Io(error) => StatusError::Unreachable(error),
                AnswerError::Unreadable(error) => StatusError::Unreadable(error),
            })?;
        match &reply.result {
            ReplyResult::WrongCluster { cluster: found } => Err(StatusError::WrongCluster {
                expected: cluster,
                found: *found,
            }),
            ReplyResult::Answered(body) => ReplicaStatus::decode(body).ok_or_else(|| {
                StatusError::Unreadable("not a status answer (an older build?)".to_owned())
            }),
            other => Err(StatusError::Unreadable(format!(
                "answered {other:?} (a build without status?)"
            ))),
        }
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| StatusError::Timeout(timeout))?
}

/// Why the answer to an administrative query could not be read.
#[derive(Debug)]
pub(crate) enum AnswerError {
    /// The connection ended before an answer (over TLS, most likely a refused certificate).
    Closed,
    /// The connection failed.
    Io(String),
    /// A frame could not be decoded.
    Unreadable(String),
}

/// Sends administrative query `body` as a new random client of `cluster` on `writer`; returns
/// that client's id, which its answers name.
pub(crate) async fn send_admin_query<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    cluster: u128,
    body: &'static [u8],
) -> std::io::Result<ClientId> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|error| std::io::Error::other(error.to_string()))?;
    let client: ClientId = u128::from_le_bytes(id) | 1;
    let envelope = Envelope {
        cluster,
        epoch: 0,
        sender: Sender::Client(client),
        message: Message::Query(Query {
            request: 1,
            body: Bytes::from_static(body),
        }),
    };
    writer.write_all(&vsr::wire::encode(&envelope)).await?;
    Ok(client)
}

/// The next reply to `client` on `frames`; anything else is skipped.
pub(crate) async fn next_reply<R: tokio::io::AsyncRead + Unpin>(
    frames: &mut FrameReader<R>,
    client: ClientId,
) -> Result<vsr::Reply, AnswerError> {
    loop {
        let verified = match frames.next().await {
            Ok(Some((verified, _))) => verified,
            Ok(None) | Err(ReadError::Truncated) => return Err(AnswerError::Closed),
            // Closed after the request went out (over TLS, without a close_notify).
            Err(ReadError::Io(error))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Err(AnswerError::Closed);
            }
            Err(ReadError::Io(error)) => return Err(AnswerError::Io(error.to_string())),
            Err(ReadError::Decode(error) | ReadError::OtherCluster { error, .. }) => {
                return Err(AnswerError::Unreadable(error.to_string()));
            }
        };
        if let Message::Reply(reply) = &verified.envelope().message
            && reply.client == client
        {
            return Ok(reply.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_and_garbage_is_refused() {
        let status = ReplicaStatus {
            replica: 2,
            status: StatusKind::ViewChange,
            primary: false,
            view: 7,
            op: 100,
            commit: 98,
            checkpoint_op: 64,
            log_bytes: 1 << 26,
            checkpoint_bytes: 12_345,
            uptime_seconds: 3600,
            version: "0.1.0".to_owned(),
        };
        let encoded = status.encode();
        assert_eq!(ReplicaStatus::decode(&encoded), Some(status));
        for cut in 0..encoded.len() {
            assert_eq!(ReplicaStatus::decode(&encoded[..cut]), None, "cut at {cut}");
        }
        let mut longer = encoded.to_vec();
        longer.push(0);
        assert_eq!(ReplicaStatus::decode(&longer), None);
        let mut bad_status = encoded.to_vec();
        bad_status[2] = 9;
        assert_eq!(ReplicaStatus::decode(&bad_status), None);
        let mut other_format = encoded.to_vec();
        other_format[0] = 2;
        assert_eq!(ReplicaStatus::decode(&other_format), None);
    }
}
