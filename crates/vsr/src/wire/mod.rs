//! The wire format: an [`Envelope`] as checksummed bytes, and back.
//!
//! A frame is a fixed [`HEADER_SIZE`]-byte header (see [`header`] for its layout) followed by a
//! body of at most [`MESSAGE_BODY_SIZE_MAX`] bytes; integers are little-endian. Senders call
//! [`encode`] (or [`encode_into`]); receivers find frame boundaries in a byte stream with
//! [`frame_size`] and turn each frame into a [`Verified`] envelope with [`decode`], the only way
//! to build one. Decoding verifies both checksums before it reads a field, then decodes
//! strictly: a frame decodes only if it is exactly the frame [`encode`] would produce for the
//! decoded envelope, so every valid frame has one meaning and one encoding. It then checks the
//! envelope against its [`Receiver`]: the cluster, the sender, the numbers' bounds, and that a
//! primary's message comes from the view's primary. A replica or a client therefore only ever
//! sees messages it may act on, and nothing else validates them again.
//!
//! # One file per message
//!
//! Each message is a struct with named fields in its own file (`request.rs`, `prepare.rs`, ...)
//! that implements `WireMessage`: which header slots its fields fill ([`header`]), its body's
//! encoding and decoding over [`bytes::Buf`]/[`bytes::BufMut`], and all of its validation. The
//! `messages!` list below gives each message its kind byte and its name, and generates the
//! [`Message`] enum and every dispatch from that list. Adding a message is one new file and one
//! line in that list.
//!
//! | kind | message                 | file                      |
//! |-----:|-------------------------|---------------------------|
//! |    1 | `request`               | [`request`]               |
//! |    2 | `reply`                 | [`reply`]                 |
//! |    3 | `prepare`               | [`prepare`]               |
//! |    4 | `prepare_ok`            | [`prepare_ok`]            |
//! |    5 | `commit`                | [`commit`]                |
//! |    6 | `start_view_change`     | [`start_view_change`]     |
//! |    7 | `do_view_change`        | [`do_view_change`]        |
//! |    8 | `start_view`            | [`start_view`]            |
//! |    9 | `get_state`             | [`get_state`]             |
//! |   10 | `new_state`             | [`new_state`]             |
//! |   11 | `recovery`              | [`recovery`]              |
//! |   12 | `recovery_response`     | [`recovery_response`]     |
//! |   13 | `query`                 | [`query`]                 |
//! |   14 | `confirm`               | [`confirm`]               |
//!
//! Log entries have their own encoding ([`entry`]), which storage shares.

pub mod commit;
pub mod confirm;
pub mod do_view_change;
pub mod entry;
pub mod get_state;
pub mod header;
pub mod new_state;
pub mod prepare;
pub mod prepare_ok;
pub mod query;
pub mod recovery;
pub mod recovery_response;
pub mod reply;
pub mod request;
pub mod start_view;
pub mod start_view_change;
#[cfg(test)]
mod tests;

use bytes::{Buf, Bytes};
use thiserror::Error;

use crate::checksum::checksum;
use crate::config::Config;
use crate::message::{Envelope, ReplicaIndex, Sender};
use crate::numbers::{Op, View};

pub use crate::limits::{
    DELTA_CURSOR_SIZE, DELTA_END_SIZE, DELTA_HEADER_SIZE, ENTRIES_COUNT_SIZE, ENTRY_HEADER_SIZE,
    FRAME_SIZE_MAX, HEADER_SIZE, MESSAGE_BODY_SIZE_MAX,
};
pub use commit::Commit;
pub use confirm::Confirm;
pub use do_view_change::DoViewChange;
pub use entry::{Entry, Operation, decode_entry, encode_entry, entry_size};
pub use get_state::{DeltaCursor, GetState};
pub use new_state::{DeltaChunk, DeltaEnd, DeltaTarget, NewState, StatePayload};
pub use prepare::Prepare;
pub use prepare_ok::PrepareOk;
pub use query::Query;
pub use recovery::Recovery;
pub use recovery_response::RecoveryResponse;
pub use reply::{Reply, ReplyResult};
pub use request::Request;
pub use start_view::StartView;
pub use start_view_change::StartViewChange;

use header::{Fields, Header};

/// The wire protocol version this code speaks; frames of any other version are rejected.
pub const PROTOCOL_VERSION: u16 = 4;

/// One message's wire form: implemented by each message's struct, in its own file.
pub(crate) trait WireMessage: Sized {
    /// Whether only a client sends this message (every other message comes from a replica).
    const FROM_CLIENT: bool = false;
    /// Whether only a client receives this message (every other message goes to a replica).
    const TO_CLIENT: bool = false;

    /// The header slots this message fills; the others stay 0.
    fn fields(&self) -> Fields;

    /// The size of the body once encoded.
    fn body_size(&self) -> usize {
        0
    }

    /// Appends the body (exactly `body_size` bytes).
    fn encode_body(&self, _out: &mut Vec<u8>) {}

    /// Decodes the message from its header slots and body, and checks everything about it that
    /// needs no receiver (numbers within bounds, sizes, tags). The body's bytes left unread make
    /// the frame invalid.
    fn decode(fields: &Fields, body: &mut Bytes) -> Result<Self, DecodeError>;

    /// The view whose primary alone may send this message, if only a primary may.
    fn primary_of(&self) -> Option<View> {
        None
    }
}

/// Lists every message once: its kind byte, variant and name. Generates [`Message`],
/// [`MessageKind`] and the dispatch from a message to its file's `WireMessage` implementation.
macro_rules! messages {
    ($($kind:literal => $variant:ident $name:literal,)*) => {
        /// The protocol's messages (Viewstamped Replication Revisited, §4–§5, plus session
        /// registration and reads), one struct each.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Message {
            $(
                #[doc = concat!("`", $name, "`: see [`", stringify!($variant), "`].")]
                $variant($variant),
            )*
        }

        /// The kind byte of each message, in the header.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum MessageKind {
            $(
                #[doc = concat!("`", $name, "`.")]
                $variant = $kind,
            )*
        }

        impl MessageKind {
            /// The kind with this header byte.
            #[must_use]
            pub fn from_u8(byte: u8) -> Option<MessageKind> {
                match byte {
                    $($kind => Some(MessageKind::$variant),)*
                    _ => None,
                }
            }
        }

        $(
            impl From<$variant> for Message {
                fn from(message: $variant) -> Message {
                    Message::$variant(message)
                }
            }
        )*

        impl Message {
            /// The message's name in the paper's words, for logs and traces.
            #[must_use]
            pub fn name(&self) -> &'static str {
                match self {
                    $(Message::$variant(_) => $name,)*
                }
            }

            /// The message's kind.
            #[must_use]
            pub fn kind(&self) -> MessageKind {
                match self {
                    $(Message::$variant(_) => MessageKind::$variant,)*
                }
            }

            fn fields(&self) -> Fields {
                match self {
                    $(Message::$variant(message) => message.fields(),)*
                }
            }

            fn body_size(&self) -> usize {
                match self {
                    $(Message::$variant(message) => message.body_size(),)*
                }
            }

            fn encode_body(&self, out: &mut Vec<u8>) {
                match self {
                    $(Message::$variant(message) => message.encode_body(out),)*
                }
            }

            fn sent_by_client(&self) -> bool {
                match self {
                    $(Message::$variant(_) => <$variant as WireMessage>::FROM_CLIENT,)*
                }
            }

            fn to_client(&self) -> bool {
                match self {
                    $(Message::$variant(_) => <$variant as WireMessage>::TO_CLIENT,)*
                }
            }

            fn primary_of(&self) -> Option<View> {
                match self {
                    $(Message::$variant(message) => message.primary_of(),)*
                }
            }

            fn decode(
                kind: MessageKind,
                fields: &Fields,
                body: &mut Bytes,
            ) -> Result<Message, DecodeError> {
                match kind {
                    $(MessageKind::$variant => $variant::decode(fields, body).map(Message::$variant),)*
                }
            }
        }
    };
}

messages! {
    1 => Request "request",
    2 => Reply "reply",
    3 => Prepare "prepare",
    4 => PrepareOk "prepare_ok",
    5 => Commit "commit",
    6 => StartViewChange "start_view_change",
    7 => DoViewChange "do_view_change",
    8 => StartView "start_view",
    9 => GetState "get_state",
    10 => NewState "new_state",
    11 => Recovery "recovery",
    12 => RecoveryResponse "recovery_response",
    13 => Query "query",
    14 => Confirm "confirm",
}

/// Why a frame was rejected. A faulty peer or a corrupt network causes these: the driver drops
/// the frame and counts it; none of them is a reason to stop.
#[non_exhaustive]
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is shorter than a header, or its header claims it is.
    #[error("frame of {size} bytes is shorter than the {HEADER_SIZE}-byte header")]
    TooShort {
        /// The size received or claimed.
        size: usize,
    },
    /// The header's checksum does not match: the header is corrupt.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The body's checksum does not match: the body is corrupt.
    #[error("body checksum mismatch")]
    BodyChecksum,
    /// The header's size differs from the number of bytes received.
    #[error("header claims {size} bytes but the frame has {received}")]
    SizeMismatch {
        /// The size in the header.
        size: u32,
        /// The bytes received.
        received: usize,
    },
    /// The header claims a frame larger than [`FRAME_SIZE_MAX`].
    #[error("header claims {size} bytes, more than the maximum {FRAME_SIZE_MAX}")]
    TooLarge {
        /// The size in the header.
        size: u32,
    },
    /// A request carries an operation larger than [`crate::limits::OPERATION_SIZE_MAX`].
    #[error("request operation of {size} bytes exceeds the maximum")]
    OperationTooLarge {
        /// The operation's size.
        size: usize,
    },
    /// The frame speaks another protocol version.
    #[error("protocol version {version}, expected {PROTOCOL_VERSION}")]
    Version {
        /// The version in the header.
        version: u16,
    },
    /// The kind byte names no message.
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// The checksums passed but the contents are not a valid encoding.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A log entry's checksum does not match its fields.
    #[error("checksum mismatch in the entry at op {op}")]
    EntryChecksum {
        /// The op of the corrupt entry.
        op: Op,
    },
    /// A view, op or commit number no cluster reaches ([`crate::limits::NUMBER_MAX`]).
    #[error("a number is out of bounds")]
    OutOfBounds,
    /// The message belongs to another cluster (or epoch).
    #[error("message of cluster {cluster:x}")]
    WrongCluster {
        /// The cluster in the header.
        cluster: u128,
    },
    /// The sender cannot have sent this: an index out of range, the receiver itself, a client
    /// sending a replica's message or a replica a client's.
    #[error("sender {sender:?} cannot send this {name}")]
    BadSender {
        /// The claimed sender.
        sender: Sender,
        /// The message's name.
        name: &'static str,
    },
    /// A message only the view's primary sends, from another replica.
    #[error("{name} of view {view} from replica {sender}, not that view's primary")]
    NotFromPrimary {
        /// The claimed sender.
        sender: ReplicaIndex,
        /// The message's view.
        view: View,
        /// The message's name.
        name: &'static str,
    },
    /// A message this kind of receiver never gets (a reply sent to a replica, a replica's
    /// message sent to a client).
    #[error("{name} is not for this receiver")]
    OutOfPlace {
        /// The message's name.
        name: &'static str,
    },
}

/// Who decodes: a replica of a cluster, or a client of it. [`decode`] checks every envelope
/// against it, so a [`Verified`] envelope is one its receiver may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receiver {
    cluster: u128,
    replica_count: u8,
    /// The receiving replica, or `None` for a client.
    replica: Option<ReplicaIndex>,
}

impl Receiver {
    /// Replica `index` of the cluster `config` describes.
    #[must_use]
    pub fn replica(config: &Config, index: ReplicaIndex) -> Self {
        assert!(index < config.replica_count);
        Self {
            cluster: config.cluster,
            replica_count: config.replica_count,
            replica: Some(index),
        }
    }

    /// A client of a cluster of `replica_count` replicas.
    #[must_use]
    pub fn client(cluster: u128, replica_count: u8) -> Self {
        Self {
            cluster,
            replica_count,
            replica: None,
        }
    }

    /// Why `envelope` must not reach this receiver, if it must not.
    fn admit(&self, envelope: &Envelope) -> Result<(), DecodeError> {
        let message = &envelope.message;
        let name = message.name();
        if envelope.cluster != self.cluster || envelope.epoch != 0 {
            crate::mark!(DropWrongCluster);
            return Err(DecodeError::WrongCluster {
                cluster: envelope.cluster,
            });
        }
        if message.to_client() != self.replica.is_none() {
            crate::mark!(DropOutOfPlace);
            return Err(DecodeError::OutOfPlace { name });
        }
        let bad_sender = match envelope.sender {
            Sender::Client(_) => !message.sent_by_client(),
            Sender::Replica(from) => {
                message.sent_by_client() || from >= self.replica_count || Some(from) == self.replica
            }
        };
        if bad_sender {
            crate::mark!(DropBadSender);
            return Err(DecodeError::BadSender {
                sender: envelope.sender,
                name,
            });
        }
        if let (Some(view), Sender::Replica(from)) = (message.primary_of(), envelope.sender)
            && view.primary(self.replica_count) != from
        {
            crate::mark!(DropNotFromPrimary);
            return Err(DecodeError::NotFromPrimary {
                sender: from,
                view,
                name,
            });
        }
        Ok(())
    }
}

impl Receiver {
    /// The answer of this replica to `frame`, a client's request or query of another cluster:
    /// a wrong-cluster [`Reply`] in that cluster's name, naming the cluster this replica
    /// serves, for the client to report its mistake at once. `None` for anything else: a frame
    /// that does not decode, one of this cluster (or of another epoch), one from a replica, a
    /// client's frame that is not a request or a query, or a receiver that is a client.
    ///
    /// The answer reveals the cluster and this replica's index, nothing of its state (view and
    /// op are 0), and is one header long: no larger than the frame it answers.
    #[must_use]
    pub fn wrong_cluster(&self, frame: &Bytes) -> Option<Vec<u8>> {
        let replica = self.replica?;
        let envelope = decode_envelope(frame).ok()?;
        if envelope.cluster == self.cluster || envelope.epoch != 0 {
            return None;
        }
        let Sender::Client(client) = envelope.sender else {
            return None;
        };
        let request = match envelope.message {
            Message::Request(Request { request, .. }) | Message::Query(Query { request, .. }) => {
                request
            }
            _ => return None,
        };
        let answer = Envelope {
            cluster: envelope.cluster,
            epoch: 0,
            sender: Sender::Replica(replica),
            message: Message::Reply(Reply {
                client,
                view: View(0),
                op: Op(0),
                request,
                result: ReplyResult::WrongCluster {
                    cluster: self.cluster,
                },
            }),
        };
        let frame = encode(&answer);
        assert_eq!(
            frame.len(),
            HEADER_SIZE,
            "a wrong-cluster reply has no body"
        );
        Some(frame)
    }
}

/// An envelope that passed [`decode`]: its checksums, its encoding and its [`Receiver`]'s
/// checks. Nothing else builds one, so a replica or client that takes a `Verified` never sees
/// unchecked bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    envelope: Envelope,
}

impl Verified {
    /// The envelope.
    #[must_use]
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The envelope, by value.
    #[must_use]
    pub fn into_envelope(self) -> Envelope {
        self.envelope
    }
}

const SENDER_KIND_REPLICA: u8 = 0;
const SENDER_KIND_CLIENT: u8 = 1;

/// The encoding of `envelope` as a fresh vector.
///
/// # Panics
/// When the body would exceed [`MESSAGE_BODY_SIZE_MAX`]: callers bound what they put in a
/// message (see [`body_size`]).
#[must_use]
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + body_size(&envelope.message));
    encode_into(envelope, &mut out);
    out
}

/// Appends the encoding of `envelope` to `out`.
///
/// # Panics
/// When the body would exceed [`MESSAGE_BODY_SIZE_MAX`].
pub fn encode_into(envelope: &Envelope, out: &mut Vec<u8>) {
    let size_body = body_size(&envelope.message);
    assert!(
        size_body <= MESSAGE_BODY_SIZE_MAX,
        "{} body of {size_body} bytes exceeds MESSAGE_BODY_SIZE_MAX",
        envelope.message.name()
    );
    let start = out.len();
    out.resize(start + HEADER_SIZE, 0);
    envelope.message.encode_body(out);
    assert_eq!(out.len() - start, HEADER_SIZE + size_body);

    let mut header = header_of(envelope);
    header.size = u32::try_from(HEADER_SIZE + size_body).expect("bounded by FRAME_SIZE_MAX");
    header.checksum_body = checksum(&out[start + HEADER_SIZE..]);
    let mut bytes = header.to_bytes();
    header.checksum = Header::compute_checksum(&bytes);
    bytes[..16].copy_from_slice(&header.checksum.to_le_bytes());
    out[start..start + HEADER_SIZE].copy_from_slice(&bytes);
}

/// The size of `message`'s body once encoded, so callers can bound what they put in it: a
/// frame is `HEADER_SIZE + body_size(message)` bytes.
#[must_use]
pub fn body_size(message: &Message) -> usize {
    message.body_size()
}

/// Every header field but the checksums and the size, as [`encode`] sets them.
fn header_of(envelope: &Envelope) -> Header {
    let mut fields = envelope.message.fields();
    let (sender_kind, replica) = match envelope.sender {
        Sender::Replica(replica) => (SENDER_KIND_REPLICA, replica),
        Sender::Client(client) => {
            fields.client = client;
            (SENDER_KIND_CLIENT, 0)
        }
    };
    Header {
        cluster: envelope.cluster,
        epoch: envelope.epoch,
        version: PROTOCOL_VERSION,
        kind: envelope.message.kind() as u8,
        sender_kind,
        replica,
        fields,
        ..Header::default()
    }
}

/// The size of the frame that starts with `header_prefix`, once a whole header has arrived.
///
/// Returns `Ok(None)` while fewer than [`HEADER_SIZE`] bytes are available. Otherwise verifies
/// the header checksum and returns the frame's total size, between [`HEADER_SIZE`] and
/// [`FRAME_SIZE_MAX`]. A stream reader calls this on its buffer, waits for that many bytes and
/// hands them to [`decode`]; an error means the stream is corrupt and should be closed.
///
/// # Errors
/// [`DecodeError::HeaderChecksum`], [`DecodeError::TooShort`] or [`DecodeError::TooLarge`].
pub fn frame_size(header_prefix: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(bytes) = header_prefix.first_chunk::<HEADER_SIZE>() else {
        return Ok(None);
    };
    let header = verified_header(bytes)?;
    Ok(Some(header.size as usize))
}

/// Parses a header after checking its checksum and that its size is within bounds.
fn verified_header(bytes: &[u8; HEADER_SIZE]) -> Result<Header, DecodeError> {
    let header = Header::from_bytes(bytes);
    if header.checksum != Header::compute_checksum(bytes) {
        return Err(DecodeError::HeaderChecksum);
    }
    if (header.size as usize) < HEADER_SIZE {
        return Err(DecodeError::TooShort {
            size: header.size as usize,
        });
    }
    if header.size as usize > FRAME_SIZE_MAX {
        return Err(DecodeError::TooLarge { size: header.size });
    }
    Ok(header)
}

/// Decodes one whole frame for `receiver`: the only way from bytes to a [`Verified`] envelope.
///
/// # Errors
/// When the frame is corrupt, truncated, of another version, not exactly what [`encode`]
/// produces for the envelope it describes, or not for `receiver` (see [`Receiver`]).
pub fn decode(bytes: &[u8], receiver: &Receiver) -> Result<Verified, DecodeError> {
    decode_shared(&Bytes::copy_from_slice(bytes), receiver)
}

/// [`decode`] of a frame held in shared [`Bytes`]: the bodies of the decoded message (request
/// and reply bodies, entry bodies, delta chunks) are slices of `frame`, not copies.
///
/// # Errors
/// As [`decode`].
pub fn decode_shared(frame: &Bytes, receiver: &Receiver) -> Result<Verified, DecodeError> {
    let envelope = decode_envelope(frame)?;
    receiver.admit(&envelope)?;
    Ok(Verified { envelope })
}

fn decode_envelope(frame: &Bytes) -> Result<Envelope, DecodeError> {
    let Some(header_bytes) = frame.first_chunk::<HEADER_SIZE>() else {
        return Err(DecodeError::TooShort { size: frame.len() });
    };
    let header = verified_header(header_bytes)?;
    if header.size as usize != frame.len() {
        return Err(DecodeError::SizeMismatch {
            size: header.size,
            received: frame.len(),
        });
    }
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::Version {
            version: header.version,
        });
    }
    let Some(kind) = MessageKind::from_u8(header.kind) else {
        return Err(DecodeError::UnknownKind { kind: header.kind });
    };
    if header.reserved != 0 {
        return Err(DecodeError::Malformed("reserved header byte is not zero"));
    }
    let mut body = frame.slice(HEADER_SIZE..);
    if header.checksum_body != checksum(&body) {
        return Err(DecodeError::BodyChecksum);
    }
    let sender = match header.sender_kind {
        SENDER_KIND_REPLICA => Sender::Replica(header.replica),
        SENDER_KIND_CLIENT => Sender::Client(header.fields.client),
        _ => return Err(DecodeError::Malformed("unknown sender kind")),
    };
    let mut fields = header.fields;
    if matches!(sender, Sender::Client(_)) {
        // The slot held the sender's id; a message from a client does not use it otherwise.
        fields.client = 0;
    }
    let message = Message::decode(kind, &fields, &mut body)?;
    if !body.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after the body"));
    }
    let envelope = Envelope {
        cluster: header.cluster,
        epoch: header.epoch,
        sender,
        message,
    };
    // Unused slots must be zero and duplicated fields must agree: compare with the header
    // encode would write.
    let expected = Header {
        checksum: header.checksum,
        checksum_body: header.checksum_body,
        size: header.size,
        ..header_of(&envelope)
    };
    if expected != header {
        return Err(DecodeError::Malformed(
            "header field unused by the message is not zero",
        ));
    }
    Ok(envelope)
}

/// Reads a body front to back over [`bytes::Buf`]; every read fails cleanly at the end of the
/// body instead of panicking, and byte fields are slices of the frame, not copies.
pub(crate) trait Read {
    fn u8(&mut self) -> Result<u8, DecodeError>;
    fn u32(&mut self) -> Result<u32, DecodeError>;
    fn u64(&mut self) -> Result<u64, DecodeError>;
    fn u128(&mut self) -> Result<u128, DecodeError>;
    /// The next `size` bytes.
    fn take(&mut self, size: usize) -> Result<Bytes, DecodeError>;
    /// Every byte left.
    fn rest(&mut self) -> Bytes;
}

const ENDS_EARLY: DecodeError = DecodeError::Malformed("body ends inside a field");

impl Read for Bytes {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.try_get_u8().map_err(|_| ENDS_EARLY)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.try_get_u32_le().map_err(|_| ENDS_EARLY)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.try_get_u64_le().map_err(|_| ENDS_EARLY)
    }

    fn u128(&mut self) -> Result<u128, DecodeError> {
        self.try_get_u128_le().map_err(|_| ENDS_EARLY)
    }

    fn take(&mut self, size: usize) -> Result<Bytes, DecodeError> {
        if size > self.remaining() {
            return Err(ENDS_EARLY);
        }
        Ok(self.split_to(size))
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(self)
    }
}

/// Checks that every number is one a cluster can reach.
pub(crate) fn in_bounds(numbers: &[u64]) -> Result<(), DecodeError> {
    if numbers
        .iter()
        .all(|number| *number < crate::limits::NUMBER_MAX)
    {
        Ok(())
    } else {
        Err(out_of_bounds())
    }
}

/// The error for a number no cluster reaches.
pub(crate) fn out_of_bounds() -> DecodeError {
    crate::mark!(DropNumbersOutOfBounds);
    DecodeError::OutOfBounds
}

/// The body of a client's request or query: the operation's bytes, at most
/// [`crate::limits::OPERATION_SIZE_MAX`].
pub(crate) fn client_body(body: &mut Bytes) -> Result<Bytes, DecodeError> {
    if body.len() > crate::limits::OPERATION_SIZE_MAX {
        return Err(DecodeError::OperationTooLarge { size: body.len() });
    }
    Ok(body.rest())
}

/// A boolean header slot: 0 or 1.
pub(crate) fn decode_bool(flag: u8) -> Result<bool, DecodeError> {
    match flag {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Malformed("flag is neither 0 nor 1")),
    }
}

/// A length inside a body; bodies are bounded far below 4 GiB.
pub(crate) fn length_u32(length: usize) -> u32 {
    u32::try_from(length).expect("lengths are bounded by MESSAGE_BODY_SIZE_MAX")
}
