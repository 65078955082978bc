//! The wire format: an [`Envelope`] as checksummed bytes, and back.
//!
//! A frame is a fixed 128-byte header followed by a body of at most
//! [`MESSAGE_BODY_SIZE_MAX`] bytes. Senders call [`encode`] (or [`encode_into`]); receivers find
//! frame boundaries in a byte stream with [`frame_size`] and turn each frame into an envelope
//! with [`decode`], the only way from bytes to an [`Envelope`]. Decoding verifies both checksums
//! before it reads a field, then decodes strictly: a frame decodes only if it is exactly the
//! frame [`encode`] would produce for the decoded envelope, so every valid frame has one
//! meaning and one encoding.
//!
//! # Header (all integers little-endian)
//!
//! | offset | size | field           | meaning                                                  |
//! |-------:|-----:|-----------------|----------------------------------------------------------|
//! |      0 |   16 | `checksum`      | [`checksum`] of header bytes 16..128                     |
//! |     16 |   16 | `checksum_body` | [`checksum`] of the body (also when empty)               |
//! |     32 |   16 | `cluster`       | [`Envelope::cluster`]                                    |
//! |     48 |   16 | `client`        | the sender's client id when `sender_kind` is 1, else 0   |
//! |     64 |    4 | `size`          | header + body, in bytes                                  |
//! |     68 |    4 | `epoch`         | [`Envelope::epoch`]                                      |
//! |     72 |    2 | `version`       | [`PROTOCOL_VERSION`]                                     |
//! |     74 |    1 | `command`       | which [`Message`] variant, see below                     |
//! |     75 |    1 | `sender_kind`   | 0: a replica, 1: a client                                |
//! |     76 |    1 | `replica`       | the sender's replica index when `sender_kind` is 0, else 0 |
//! |     77 |    1 | `kind`          | command-specific tag                                     |
//! |     78 |    1 | `flag`          | command-specific boolean, 0 or 1                         |
//! |     79 |    1 | `reserved`      | 0                                                        |
//! |     80 |    8 | `view`          |                                                          |
//! |     88 |    8 | `op`            |                                                          |
//! |     96 |    8 | `commit`        |                                                          |
//! |    104 |    8 | `context`       | command-specific u64                                     |
//! |    112 |   16 | `context_wide`  | command-specific u128                                    |
//!
//! # Commands
//!
//! A field a command does not list is 0, and decoding checks it.
//!
//! | command                 | header fields used                                         | body |
//! |-------------------------|------------------------------------------------------------|------|
//! | 1 `request`             | `context` = request, `context_wide` = session, `kind` = operation | operation bytes |
//! | 2 `reply`               | `view`, `op`, `client` = the client replied to, `context` = request, `kind` = result (0 executed, 1 registered, 2 session evicted) | result bytes (executed only) |
//! | 3 `prepare`             | `view`, `commit`, `op` = last entry's op, `context_wide` = last entry's checksum | entries (at least one) |
//! | 4 `prepare_ok`          | `view`, `op`, `context_wide` = checksum                    | empty |
//! | 5 `commit`              | `view`, `commit`                                           | empty |
//! | 6 `start_view_change`   | `view`                                                     | empty |
//! | 7 `do_view_change`      | `view`, `op`, `commit`, `context` = `last_normal_view`       | entries |
//! | 8 `start_view`          | `view`, `op`, `commit`                                     | entries |
//! | 9 `get_state`           | `view`, `op`, `commit`                                     | empty |
//! | 10 `new_state`          | `view`, `op`, `commit`, `flag` = normal, `kind` = payload (0 entries, 1 delta) | entries, or delta |
//! | 11 `recovery`           | `context` = nonce                                          | empty |
//! | 12 `recovery_response`  | `view`, `op`, `commit`, `context` = nonce, `flag` = primary | empty |
//!
//! Operations are tagged 0 register, 1 state machine, 2 no-op.
//!
//! # Body encodings
//!
//! * entry ([`ENTRY_HEADER_SIZE`] bytes, then the body): `checksum` u128, `parent` u128,
//!   `client` u128, `op` u64, `view` u64, `session` u64, `request` u64, body size u32,
//!   operation u8, body bytes. Decoding verifies the entry's checksum. [`encode_entry`] and
//!   [`decode_entry`] expose this encoding of one entry (storage keeps entries in it).
//! * entries: count u32, then that many entries with consecutive ops.
//! * delta: `op` u64, `op_checksum` u128, `since` u64, `offset` u64, `total_size` u64,
//!   `total_checksum` u128, chunk size u32, chunk bytes.

use bytes::Bytes;
use thiserror::Error;

use crate::checksum::checksum;
use crate::config::MESSAGE_BODY_SIZE_MAX;
use crate::message::{Entry, Envelope, Message, Operation, ReplyResult, Sender, StatePayload};

/// Size of every header, in bytes.
pub const HEADER_SIZE: usize = 128;
const _: () = assert!(HEADER_SIZE == 128);

/// The wire protocol version this code speaks; frames of any other version are rejected.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest frame: a header and the largest body.
pub const FRAME_SIZE_MAX: usize = HEADER_SIZE + MESSAGE_BODY_SIZE_MAX;
const _: () = assert!(FRAME_SIZE_MAX <= u32::MAX as usize);

/// Bytes an entry takes in a body besides its own body.
pub const ENTRY_HEADER_SIZE: usize = 16 * 3 + 8 * 4 + 4 + 1;
const _: () = assert!(ENTRY_HEADER_SIZE == 85);

/// Bytes the count of an entries list takes.
pub const ENTRIES_COUNT_SIZE: usize = 4;

/// Bytes a delta payload takes besides its chunk.
pub const DELTA_HEADER_SIZE: usize = 8 + 16 + 8 + 8 + 8 + 16 + 4;
const _: () = assert!(DELTA_HEADER_SIZE == 68);

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
    /// The frame speaks another protocol version.
    #[error("protocol version {version}, expected {PROTOCOL_VERSION}")]
    Version {
        /// The version in the header.
        version: u16,
    },
    /// The command byte names no message.
    #[error("unknown command {command}")]
    UnknownCommand {
        /// The command byte.
        command: u8,
    },
    /// The checksums passed but the contents are not a valid encoding.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A log entry's checksum does not match its fields.
    #[error("checksum mismatch in the entry at op {op}")]
    EntryChecksum {
        /// The op of the corrupt entry.
        op: u64,
    },
}

/// The command byte of each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Command {
    Request = 1,
    Reply = 2,
    Prepare = 3,
    PrepareOk = 4,
    Commit = 5,
    StartViewChange = 6,
    DoViewChange = 7,
    StartView = 8,
    GetState = 9,
    NewState = 10,
    Recovery = 11,
    RecoveryResponse = 12,
}

impl Command {
    const ALL: [Command; 12] = [
        Command::Request,
        Command::Reply,
        Command::Prepare,
        Command::PrepareOk,
        Command::Commit,
        Command::StartViewChange,
        Command::DoViewChange,
        Command::StartView,
        Command::GetState,
        Command::NewState,
        Command::Recovery,
        Command::RecoveryResponse,
    ];

    fn from_u8(byte: u8) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|command| *command as u8 == byte)
    }
}

const SENDER_KIND_REPLICA: u8 = 0;
const SENDER_KIND_CLIENT: u8 = 1;

const REPLY_EXECUTED: u8 = 0;
const REPLY_REGISTERED: u8 = 1;
const REPLY_SESSION_EVICTED: u8 = 2;

const PAYLOAD_ENTRIES: u8 = 0;
const PAYLOAD_DELTA: u8 = 1;

/// The header's fields, in wire order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Header {
    checksum: u128,
    checksum_body: u128,
    cluster: u128,
    client: u128,
    size: u32,
    epoch: u32,
    version: u16,
    command: u8,
    sender_kind: u8,
    replica: u8,
    kind: u8,
    flag: u8,
    reserved: u8,
    view: u64,
    op: u64,
    commit: u64,
    context: u64,
    context_wide: u128,
}

impl Header {
    fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut bytes = Vec::with_capacity(HEADER_SIZE);
        bytes.extend_from_slice(&self.checksum.to_le_bytes());
        bytes.extend_from_slice(&self.checksum_body.to_le_bytes());
        bytes.extend_from_slice(&self.cluster.to_le_bytes());
        bytes.extend_from_slice(&self.client.to_le_bytes());
        bytes.extend_from_slice(&self.size.to_le_bytes());
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        bytes.extend_from_slice(&self.version.to_le_bytes());
        bytes.extend_from_slice(&[
            self.command,
            self.sender_kind,
            self.replica,
            self.kind,
            self.flag,
            self.reserved,
        ]);
        bytes.extend_from_slice(&self.view.to_le_bytes());
        bytes.extend_from_slice(&self.op.to_le_bytes());
        bytes.extend_from_slice(&self.commit.to_le_bytes());
        bytes.extend_from_slice(&self.context.to_le_bytes());
        bytes.extend_from_slice(&self.context_wide.to_le_bytes());
        bytes
            .try_into()
            .expect("header fields add up to HEADER_SIZE")
    }

    fn from_bytes(bytes: &[u8; HEADER_SIZE]) -> Header {
        let mut reader = Reader::new(bytes);
        let header = Header::read(&mut reader).expect("header fields add up to HEADER_SIZE");
        assert!(reader.bytes.is_empty());
        header
    }

    fn read(reader: &mut Reader<'_>) -> Result<Header, DecodeError> {
        Ok(Header {
            checksum: reader.u128()?,
            checksum_body: reader.u128()?,
            cluster: reader.u128()?,
            client: reader.u128()?,
            size: reader.u32()?,
            epoch: reader.u32()?,
            version: u16::from_le_bytes(reader.array()?),
            command: reader.u8()?,
            sender_kind: reader.u8()?,
            replica: reader.u8()?,
            kind: reader.u8()?,
            flag: reader.u8()?,
            reserved: reader.u8()?,
            view: reader.u64()?,
            op: reader.u64()?,
            commit: reader.u64()?,
            context: reader.u64()?,
            context_wide: reader.u128()?,
        })
    }

    /// The checksum of a header's bytes after the checksum field.
    fn compute_checksum(bytes: &[u8; HEADER_SIZE]) -> u128 {
        checksum(&bytes[16..])
    }
}

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
    encode_body(&envelope.message, out);
    assert_eq!(out.len() - start, HEADER_SIZE + size_body);

    let mut header = header_fields(envelope);
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
    match message {
        Message::Request { body, .. } => body.len(),
        Message::Reply {
            result: ReplyResult::Executed(bytes),
            ..
        } => bytes.len(),
        Message::Prepare { entries, .. }
        | Message::DoViewChange { entries, .. }
        | Message::StartView { entries, .. }
        | Message::NewState {
            payload: StatePayload::Entries(entries),
            ..
        } => ENTRIES_COUNT_SIZE + entries.iter().map(entry_size).sum::<usize>(),
        Message::NewState {
            payload: StatePayload::Delta { chunk, .. },
            ..
        } => DELTA_HEADER_SIZE + chunk.len(),
        Message::Reply { .. }
        | Message::PrepareOk { .. }
        | Message::Commit { .. }
        | Message::StartViewChange { .. }
        | Message::GetState { .. }
        | Message::Recovery { .. }
        | Message::RecoveryResponse { .. } => 0,
    }
}

/// The size of `entry` in a body.
#[must_use]
pub fn entry_size(entry: &Entry) -> usize {
    ENTRY_HEADER_SIZE + entry.body.len()
}

/// Every header field but the checksums and the size, as [`encode`] sets them. Each helper
/// below is one column of the module doc's command table.
fn header_fields(envelope: &Envelope) -> Header {
    let message = &envelope.message;
    let (sender_kind, replica, client) = match (envelope.sender, message) {
        (Sender::Replica(replica), Message::Reply { client, .. }) => {
            (SENDER_KIND_REPLICA, replica, *client)
        }
        (Sender::Replica(replica), _) => (SENDER_KIND_REPLICA, replica, 0),
        (Sender::Client(client), _) => (SENDER_KIND_CLIENT, 0, client),
    };
    let (view, op, commit) = header_view_op_commit(message);
    Header {
        cluster: envelope.cluster,
        client,
        epoch: envelope.epoch,
        version: PROTOCOL_VERSION,
        command: header_command(message) as u8,
        sender_kind,
        replica,
        kind: header_kind(message),
        flag: header_flag(message),
        view,
        op,
        commit,
        context: header_context(message),
        context_wide: header_context_wide(message),
        ..Header::default()
    }
}

fn header_command(message: &Message) -> Command {
    match message {
        Message::Request { .. } => Command::Request,
        Message::Reply { .. } => Command::Reply,
        Message::Prepare { .. } => Command::Prepare,
        Message::PrepareOk { .. } => Command::PrepareOk,
        Message::Commit { .. } => Command::Commit,
        Message::StartViewChange { .. } => Command::StartViewChange,
        Message::DoViewChange { .. } => Command::DoViewChange,
        Message::StartView { .. } => Command::StartView,
        Message::GetState { .. } => Command::GetState,
        Message::NewState { .. } => Command::NewState,
        Message::Recovery { .. } => Command::Recovery,
        Message::RecoveryResponse { .. } => Command::RecoveryResponse,
    }
}

fn header_view_op_commit(message: &Message) -> (u64, u64, u64) {
    match message {
        Message::Request { .. } | Message::Recovery { .. } => (0, 0, 0),
        Message::Reply { view, op, .. } | Message::PrepareOk { view, op, .. } => (*view, *op, 0),
        Message::Prepare {
            view,
            commit,
            entries,
        } => (*view, entries.last().map_or(0, |entry| entry.op), *commit),
        Message::Commit { view, commit } => (*view, 0, *commit),
        Message::StartViewChange { view } => (*view, 0, 0),
        Message::DoViewChange {
            view, op, commit, ..
        }
        | Message::StartView {
            view, op, commit, ..
        }
        | Message::GetState { view, op, commit }
        | Message::NewState {
            view, op, commit, ..
        }
        | Message::RecoveryResponse {
            view, op, commit, ..
        } => (*view, *op, *commit),
    }
}

fn header_context(message: &Message) -> u64 {
    match message {
        Message::Request { request, .. } | Message::Reply { request, .. } => *request,
        Message::DoViewChange {
            last_normal_view, ..
        } => *last_normal_view,
        Message::Recovery { nonce } | Message::RecoveryResponse { nonce, .. } => *nonce,
        _ => 0,
    }
}

fn header_context_wide(message: &Message) -> u128 {
    match message {
        Message::Request { session, .. } => u128::from(*session),
        Message::Prepare { entries, .. } => entries.last().map_or(0, |entry| entry.checksum),
        Message::PrepareOk { checksum, .. } => *checksum,
        _ => 0,
    }
}

fn header_kind(message: &Message) -> u8 {
    match message {
        Message::Request { operation, .. } => *operation as u8,
        Message::Reply {
            result: ReplyResult::Executed(_),
            ..
        } => REPLY_EXECUTED,
        Message::Reply {
            result: ReplyResult::Registered,
            ..
        } => REPLY_REGISTERED,
        Message::Reply {
            result: ReplyResult::SessionEvicted,
            ..
        } => REPLY_SESSION_EVICTED,
        Message::NewState {
            payload: StatePayload::Entries(_),
            ..
        } => PAYLOAD_ENTRIES,
        Message::NewState {
            payload: StatePayload::Delta { .. },
            ..
        } => PAYLOAD_DELTA,
        _ => 0,
    }
}

fn header_flag(message: &Message) -> u8 {
    match message {
        Message::NewState { normal, .. } => u8::from(*normal),
        Message::RecoveryResponse { primary, .. } => u8::from(*primary),
        _ => 0,
    }
}

fn encode_body(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Request { body, .. } => out.extend_from_slice(body),
        Message::Reply {
            result: ReplyResult::Executed(bytes),
            ..
        } => out.extend_from_slice(bytes),
        Message::Prepare { entries, .. }
        | Message::DoViewChange { entries, .. }
        | Message::StartView { entries, .. }
        | Message::NewState {
            payload: StatePayload::Entries(entries),
            ..
        } => {
            encode_entries(entries, out);
        }
        Message::NewState {
            payload: StatePayload::Delta { .. },
            ..
        } => {
            encode_delta(message, out);
        }
        Message::Reply { .. }
        | Message::PrepareOk { .. }
        | Message::Commit { .. }
        | Message::StartViewChange { .. }
        | Message::GetState { .. }
        | Message::Recovery { .. }
        | Message::RecoveryResponse { .. } => {}
    }
}

/// Appends the encoding of one entry to `out`: the bytes a prepare carries as its body, and each
/// element of an entries list. It takes [`entry_size`] bytes ([`ENTRY_HEADER_SIZE`] plus the
/// body); the layout is in the module docs. Storage keeps entries in this same encoding.
///
/// # Panics
/// If the body is 4 GiB or larger (entries are bounded far below that).
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(&entry.checksum.to_le_bytes());
    out.extend_from_slice(&entry.parent.to_le_bytes());
    out.extend_from_slice(&entry.client.to_le_bytes());
    out.extend_from_slice(&entry.op.to_le_bytes());
    out.extend_from_slice(&entry.view.to_le_bytes());
    out.extend_from_slice(&entry.session.to_le_bytes());
    out.extend_from_slice(&entry.request.to_le_bytes());
    out.extend_from_slice(&length_u32(entry.body.len()).to_le_bytes());
    out.push(entry.operation as u8);
    out.extend_from_slice(&entry.body);
}

fn encode_entries(entries: &[Entry], out: &mut Vec<u8>) {
    out.extend_from_slice(&length_u32(entries.len()).to_le_bytes());
    for entry in entries {
        encode_entry(entry, out);
    }
}

fn encode_delta(message: &Message, out: &mut Vec<u8>) {
    let Message::NewState {
        payload:
            StatePayload::Delta {
                op,
                op_checksum,
                since,
                offset,
                total_size,
                total_checksum,
                chunk,
            },
        ..
    } = message
    else {
        unreachable!("encode_delta of a message without a delta");
    };
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(&op_checksum.to_le_bytes());
    out.extend_from_slice(&since.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&total_size.to_le_bytes());
    out.extend_from_slice(&total_checksum.to_le_bytes());
    out.extend_from_slice(&length_u32(chunk.len()).to_le_bytes());
    out.extend_from_slice(chunk);
}

/// A length inside a body; bodies are bounded far below 4 GiB.
fn length_u32(length: usize) -> u32 {
    u32::try_from(length).expect("lengths are bounded by MESSAGE_BODY_SIZE_MAX")
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

/// Decodes one whole frame: the only way from bytes to an [`Envelope`].
///
/// # Errors
/// When the frame is corrupt, truncated, of another version, or not exactly what [`encode`]
/// produces for the envelope it describes.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    decode_from(bytes, None)
}

/// [`decode`] of a frame held in shared [`Bytes`]: the bodies of the decoded message (request
/// and reply bodies, entry bodies, delta chunks) are slices of `frame`, not copies.
///
/// # Errors
/// As [`decode`].
pub fn decode_shared(frame: &Bytes) -> Result<Envelope, DecodeError> {
    decode_from(frame, Some(frame))
}

fn decode_from(bytes: &[u8], frame: Option<&Bytes>) -> Result<Envelope, DecodeError> {
    let Some(header_bytes) = bytes.first_chunk::<HEADER_SIZE>() else {
        return Err(DecodeError::TooShort { size: bytes.len() });
    };
    let header = verified_header(header_bytes)?;
    if header.size as usize != bytes.len() {
        return Err(DecodeError::SizeMismatch {
            size: header.size,
            received: bytes.len(),
        });
    }
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::Version {
            version: header.version,
        });
    }
    let Some(command) = Command::from_u8(header.command) else {
        return Err(DecodeError::UnknownCommand {
            command: header.command,
        });
    };
    if header.reserved != 0 {
        return Err(DecodeError::Malformed("reserved header byte is not zero"));
    }
    let body = &bytes[HEADER_SIZE..];
    if header.checksum_body != checksum(body) {
        return Err(DecodeError::BodyChecksum);
    }

    let sender = match header.sender_kind {
        SENDER_KIND_REPLICA => Sender::Replica(header.replica),
        SENDER_KIND_CLIENT if command == Command::Reply => {
            return Err(DecodeError::Malformed("a reply from a client"));
        }
        SENDER_KIND_CLIENT => Sender::Client(header.client),
        _ => return Err(DecodeError::Malformed("unknown sender kind")),
    };
    let mut reader = Reader { bytes: body, frame };
    let message = decode_message(&header, command, &mut reader)?;
    if !reader.bytes.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after the body"));
    }
    let envelope = Envelope {
        cluster: header.cluster,
        epoch: header.epoch,
        sender,
        message,
    };

    // Unused fields must be zero and duplicated fields must agree: compare with the header
    // encode would write.
    let expected = Header {
        checksum: header.checksum,
        checksum_body: header.checksum_body,
        size: header.size,
        ..header_fields(&envelope)
    };
    if expected != header {
        return Err(DecodeError::Malformed(
            "header field unused by the command is not zero",
        ));
    }
    Ok(envelope)
}

fn decode_message(
    header: &Header,
    command: Command,
    reader: &mut Reader<'_>,
) -> Result<Message, DecodeError> {
    let Header {
        view,
        op,
        commit,
        context,
        ..
    } = *header;
    let message = match command {
        Command::Request => Message::Request {
            session: u64::try_from(header.context_wide)
                .map_err(|_| DecodeError::Malformed("request session exceeds u64"))?,
            request: context,
            operation: decode_operation(header.kind)?,
            body: reader.rest_owned(),
        },
        Command::Reply => Message::Reply {
            client: header.client,
            view,
            op,
            request: context,
            result: match header.kind {
                REPLY_EXECUTED => ReplyResult::Executed(reader.rest_owned()),
                REPLY_REGISTERED => ReplyResult::Registered,
                REPLY_SESSION_EVICTED => ReplyResult::SessionEvicted,
                _ => return Err(DecodeError::Malformed("unknown reply result")),
            },
        },
        Command::Prepare => {
            let entries = decode_entries(reader)?;
            if entries.is_empty() {
                return Err(DecodeError::Malformed("prepare without entries"));
            }
            Message::Prepare {
                view,
                commit,
                entries,
            }
        }
        Command::PrepareOk => Message::PrepareOk {
            view,
            op,
            checksum: header.context_wide,
        },
        Command::Commit => Message::Commit { view, commit },
        Command::StartViewChange => Message::StartViewChange { view },
        Command::DoViewChange => Message::DoViewChange {
            view,
            last_normal_view: context,
            op,
            commit,
            entries: decode_entries(reader)?,
        },
        Command::StartView => Message::StartView {
            view,
            op,
            commit,
            entries: decode_entries(reader)?,
        },
        Command::GetState => Message::GetState { view, op, commit },
        Command::NewState => Message::NewState {
            view,
            op,
            commit,
            normal: decode_bool(header.flag)?,
            payload: match header.kind {
                PAYLOAD_ENTRIES => StatePayload::Entries(decode_entries(reader)?),
                PAYLOAD_DELTA => decode_delta(reader)?,
                _ => return Err(DecodeError::Malformed("unknown new_state payload")),
            },
        },
        Command::Recovery => Message::Recovery { nonce: context },
        Command::RecoveryResponse => Message::RecoveryResponse {
            view,
            nonce: context,
            op,
            commit,
            primary: decode_bool(header.flag)?,
        },
    };
    Ok(message)
}

fn decode_operation(tag: u8) -> Result<Operation, DecodeError> {
    [
        Operation::Register,
        Operation::StateMachine,
        Operation::Noop,
    ]
    .into_iter()
    .find(|operation| *operation as u8 == tag)
    .ok_or(DecodeError::Malformed("unknown operation"))
}

fn decode_bool(flag: u8) -> Result<bool, DecodeError> {
    match flag {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Malformed("flag is neither 0 nor 1")),
    }
}

/// Decodes exactly one entry that occupies all of `bytes`, as [`encode_entry`] wrote it, and
/// verifies it ([`Entry::is_valid`]): the inverse of [`encode_entry`].
///
/// # Errors
/// [`DecodeError::Malformed`] if `bytes` end inside the entry, hold bytes after it, or name an
/// unknown operation; [`DecodeError::EntryChecksum`] if the entry's checksum does not match
/// its fields.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut reader = Reader::new(bytes);
    let entry = read_entry(&mut reader)?;
    if !reader.bytes.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after the entry"));
    }
    Ok(entry)
}

fn read_entry(reader: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let checksum = reader.u128()?;
    let parent = reader.u128()?;
    let client = reader.u128()?;
    let op = reader.u64()?;
    let view = reader.u64()?;
    let session = reader.u64()?;
    let request = reader.u64()?;
    let body_size = reader.u32()? as usize;
    let operation = decode_operation(reader.u8()?)?;
    let body = reader.take_owned(body_size)?;
    let entry = Entry {
        op,
        view,
        parent,
        client,
        session,
        request,
        operation,
        body,
        checksum,
    };
    if !entry.is_valid() {
        return Err(DecodeError::EntryChecksum { op });
    }
    Ok(entry)
}

fn decode_entries(reader: &mut Reader<'_>) -> Result<Vec<Entry>, DecodeError> {
    let count = reader.u32()? as usize;
    // Each entry takes at least ENTRY_HEADER_SIZE bytes: a count the body cannot hold is
    // rejected before anything is allocated for it.
    if count > reader.bytes.len() / ENTRY_HEADER_SIZE {
        return Err(DecodeError::Malformed("entry count exceeds the body"));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = read_entry(reader)?;
        if let Some(previous) = entries.last()
            && previous.op.checked_add(1) != Some(entry.op)
        {
            return Err(DecodeError::Malformed("entry ops are not consecutive"));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn decode_delta(reader: &mut Reader<'_>) -> Result<StatePayload, DecodeError> {
    let op = reader.u64()?;
    let op_checksum = reader.u128()?;
    let since = reader.u64()?;
    let offset = reader.u64()?;
    let total_size = reader.u64()?;
    let total_checksum = reader.u128()?;
    let chunk_size = reader.u32()? as usize;
    let chunk = reader.take_owned(chunk_size)?;
    Ok(StatePayload::Delta {
        op,
        op_checksum,
        since,
        offset,
        total_size,
        total_checksum,
        chunk,
    })
}

/// Reads a body front to back; every read is checked against the bytes left.
struct Reader<'a> {
    bytes: &'a [u8],
    /// The frame `bytes` lie in, when it is shared: byte fields then slice it, not copy.
    frame: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, frame: None }
    }

    /// `bytes` as an owned field: a slice of the shared frame, or a copy.
    fn owned(&self, bytes: &[u8]) -> Bytes {
        match self.frame {
            Some(frame) => frame.slice_ref(bytes),
            None => Bytes::copy_from_slice(bytes),
        }
    }

    fn take_owned(&mut self, size: usize) -> Result<Bytes, DecodeError> {
        let bytes = self.take(size)?;
        Ok(self.owned(bytes))
    }

    fn rest_owned(&mut self) -> Bytes {
        let bytes = self.rest();
        self.owned(bytes)
    }

    fn take(&mut self, size: usize) -> Result<&'a [u8], DecodeError> {
        if size > self.bytes.len() {
            return Err(DecodeError::Malformed("body ends inside a field"));
        }
        let (head, tail) = self.bytes.split_at(size);
        self.bytes = tail;
        Ok(head)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self
            .take(N)?
            .try_into()
            .expect("take returns exactly N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(op: u64, body: &'static [u8]) -> Entry {
        Entry::new(
            op,
            7,
            0x1111_2222_3333_4444_5555_6666_7777_8888,
            0xabcd_ef01_2345_6789_abcd_ef01_2345_6789,
            3,
            op.wrapping_add(100),
            Operation::StateMachine,
            Bytes::from_static(body),
        )
    }

    fn envelope(sender: Sender, message: Message) -> Envelope {
        Envelope {
            cluster: 0xc1u128 << 100 | 0x5eed,
            epoch: 0,
            sender,
            message,
        }
    }

    /// One hand-written example of every variant (and every tag of `Reply` and `NewState`).
    fn examples() -> Vec<Envelope> {
        [client_examples(), normal_examples(), view_change_examples()].concat()
    }

    fn client_examples() -> Vec<Envelope> {
        let client = Sender::Client(u128::MAX - 5);
        let replica = Sender::Replica(2);
        let executed = ReplyResult::Executed(Bytes::from_static(b"ok"));
        vec![
            envelope(
                client,
                Message::Request {
                    session: 17,
                    request: 5,
                    operation: Operation::StateMachine,
                    body: Bytes::from_static(b"put k v"),
                },
            ),
            envelope(
                client,
                Message::Request {
                    session: 0,
                    request: 1,
                    operation: Operation::Register,
                    body: Bytes::new(),
                },
            ),
            envelope(
                replica,
                Message::Reply {
                    client: 0xc1,
                    view: 4,
                    op: 99,
                    request: 5,
                    result: executed,
                },
            ),
            envelope(
                replica,
                Message::Reply {
                    client: 0xc1,
                    view: 4,
                    op: 17,
                    request: 1,
                    result: ReplyResult::Registered,
                },
            ),
            envelope(
                replica,
                Message::Reply {
                    client: 0xc1,
                    view: 4,
                    op: 0,
                    request: 8,
                    result: ReplyResult::SessionEvicted,
                },
            ),
        ]
    }

    fn normal_examples() -> Vec<Envelope> {
        let replica = Sender::Replica(2);
        let prepare = entry(41, b"set x 1");
        let checksum = prepare.checksum;
        vec![
            envelope(
                replica,
                Message::Prepare {
                    view: 7,
                    commit: 40,
                    entries: vec![prepare],
                },
            ),
            envelope(
                replica,
                Message::PrepareOk {
                    view: 7,
                    op: 41,
                    checksum,
                },
            ),
            envelope(
                replica,
                Message::Commit {
                    view: 7,
                    commit: 41,
                },
            ),
            envelope(replica, Message::StartViewChange { view: 8 }),
        ]
    }

    fn view_change_examples() -> Vec<Envelope> {
        let replica = Sender::Replica(6);
        let chain = vec![
            entry(41, b"set x 1"),
            entry(42, b""),
            entry(43, &[0xff; 40]),
        ];
        let delta = StatePayload::Delta {
            op: 9000,
            op_checksum: u128::MAX / 3,
            since: 4000,
            offset: 65_536,
            total_size: 200_000,
            total_checksum: 0x0123_4567_89ab_cdef,
            chunk: Bytes::from_static(b"a chunk of the delta"),
        };
        let messages = vec![
            Message::DoViewChange {
                view: 8,
                last_normal_view: 7,
                op: 43,
                commit: 40,
                entries: chain.clone(),
            },
            Message::DoViewChange {
                view: 8,
                last_normal_view: 6,
                op: 40,
                commit: 40,
                entries: vec![],
            },
            Message::StartView {
                view: 8,
                op: 43,
                commit: 40,
                entries: chain.clone(),
            },
            Message::GetState {
                view: 8,
                op: 40,
                commit: 40,
            },
            Message::NewState {
                view: 8,
                op: 43,
                commit: 41,
                normal: true,
                payload: StatePayload::Entries(chain),
            },
            Message::NewState {
                view: 8,
                op: 0,
                commit: 9000,
                normal: false,
                payload: delta,
            },
            Message::Recovery { nonce: 0xdead_beef },
            Message::RecoveryResponse {
                view: 8,
                nonce: 0xdead_beef,
                op: 43,
                commit: 41,
                primary: true,
            },
        ];
        messages
            .into_iter()
            .map(|message| envelope(replica, message))
            .collect()
    }

    /// Recomputes the size and both checksums of a frame whose fields a test changed.
    fn reseal(bytes: &mut [u8]) {
        let size = u32::try_from(bytes.len()).unwrap();
        bytes[64..68].copy_from_slice(&size.to_le_bytes());
        let checksum_body = checksum(&bytes[HEADER_SIZE..]);
        bytes[16..32].copy_from_slice(&checksum_body.to_le_bytes());
        let checksum_header = checksum(&bytes[16..HEADER_SIZE]);
        bytes[..16].copy_from_slice(&checksum_header.to_le_bytes());
    }

    /// Every single-bit flip and every truncation of `bytes` is rejected.
    fn assert_corruption_detected(bytes: &[u8]) {
        let mut corrupt = bytes.to_vec();
        for bit in 0..bytes.len() * 8 {
            corrupt[bit / 8] ^= 1 << (bit % 8);
            let error = decode(&corrupt).expect_err("a flipped bit must be detected");
            assert!(
                matches!(
                    error,
                    DecodeError::HeaderChecksum | DecodeError::BodyChecksum
                ),
                "bit {bit}: {error:?}"
            );
            corrupt[bit / 8] ^= 1 << (bit % 8);
        }
        assert_eq!(corrupt, bytes);
        for size in 0..bytes.len() {
            let error = decode(&bytes[..size]).expect_err("a truncation must be detected");
            assert!(
                matches!(
                    error,
                    DecodeError::TooShort { .. } | DecodeError::SizeMismatch { .. }
                ),
                "size {size}: {error:?}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(
            decode(&longer),
            Err(DecodeError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn examples_round_trip() {
        let examples = examples();
        let mut commands: Vec<u8> = Vec::new();
        for example in &examples {
            let bytes = encode(example);
            assert_eq!(bytes.len(), HEADER_SIZE + body_size(&example.message));
            assert_eq!(frame_size(&bytes), Ok(Some(bytes.len())));
            assert_eq!(
                decode(&bytes).as_ref(),
                Ok(example),
                "{}",
                example.message.name()
            );
            assert_eq!(encode(example), bytes, "encoding is deterministic");
            let mut appended = vec![1, 2, 3];
            encode_into(example, &mut appended);
            assert_eq!(appended[3..], bytes[..]);
            commands.push(bytes[74]);
        }
        commands.sort_unstable();
        commands.dedup();
        assert_eq!(
            commands,
            (1..=12).collect::<Vec<u8>>(),
            "every command is exercised"
        );
    }

    #[test]
    fn header_layout() {
        let example = Envelope {
            cluster: 0x0102,
            epoch: 3,
            sender: Sender::Replica(4),
            message: Message::DoViewChange {
                view: 5,
                last_normal_view: 6,
                op: 7,
                commit: 8,
                entries: vec![],
            },
        };
        let bytes = encode(&example);
        assert_eq!(bytes.len(), HEADER_SIZE + 4);
        assert_eq!(
            u128::from_le_bytes(bytes[0..16].try_into().unwrap()),
            checksum(&bytes[16..128])
        );
        assert_eq!(
            u128::from_le_bytes(bytes[16..32].try_into().unwrap()),
            checksum(&[0; 4])
        );
        assert_eq!(bytes[32..48], 0x0102u128.to_le_bytes());
        assert_eq!(bytes[48..64], [0; 16]);
        assert_eq!(bytes[64..68], 132u32.to_le_bytes());
        assert_eq!(bytes[68..72], 3u32.to_le_bytes());
        assert_eq!(bytes[72..74], PROTOCOL_VERSION.to_le_bytes());
        assert_eq!(bytes[74..80], [7, 0, 4, 0, 0, 0]);
        assert_eq!(bytes[80..88], 5u64.to_le_bytes());
        assert_eq!(bytes[88..96], 7u64.to_le_bytes());
        assert_eq!(bytes[96..104], 8u64.to_le_bytes());
        assert_eq!(bytes[104..112], 6u64.to_le_bytes());
        assert_eq!(bytes[112..128], [0; 16]);
        assert_eq!(bytes[128..], [0; 4]);

        let request = envelope(
            Sender::Client(0x77),
            Message::Request {
                session: 9,
                request: 10,
                operation: Operation::Noop,
                body: Bytes::from_static(b"xyz"),
            },
        );
        let bytes = encode(&request);
        assert_eq!(bytes[48..64], 0x77u128.to_le_bytes());
        assert_eq!(bytes[74..80], [1, 1, 0, 2, 0, 0]);
        assert_eq!(bytes[104..112], 10u64.to_le_bytes());
        assert_eq!(bytes[112..128], 9u128.to_le_bytes());
        assert_eq!(&bytes[128..], b"xyz");
    }

    #[test]
    fn examples_detect_every_bit_flip_and_truncation() {
        for example in examples() {
            assert_corruption_detected(&encode(&example));
        }
    }

    #[test]
    fn frame_size_bounds() {
        let bytes = encode(&examples()[0]);
        for size in 0..HEADER_SIZE {
            assert_eq!(frame_size(&bytes[..size]), Ok(None));
        }
        assert_eq!(frame_size(&bytes[..HEADER_SIZE]), Ok(Some(bytes.len())));

        let mut header = bytes[..HEADER_SIZE].to_vec();
        let frame_max = u32::try_from(FRAME_SIZE_MAX).unwrap();
        for (size, expected) in [
            (u32::MAX, Err(DecodeError::TooLarge { size: u32::MAX })),
            (1 << 31, Err(DecodeError::TooLarge { size: 1 << 31 })),
            (
                frame_max + 1,
                Err(DecodeError::TooLarge {
                    size: frame_max + 1,
                }),
            ),
            (frame_max, Ok(Some(FRAME_SIZE_MAX))),
            (128, Ok(Some(HEADER_SIZE))),
            (127, Err(DecodeError::TooShort { size: 127 })),
            (0, Err(DecodeError::TooShort { size: 0 })),
        ] {
            header[64..68].copy_from_slice(&size.to_le_bytes());
            assert_eq!(
                frame_size(&header),
                Err(DecodeError::HeaderChecksum),
                "unsealed"
            );
            let checksum_header = checksum(&header[16..HEADER_SIZE]);
            header[..16].copy_from_slice(&checksum_header.to_le_bytes());
            assert_eq!(frame_size(&header), expected, "size {size}");
        }
    }

    #[test]
    fn largest_body_round_trips_and_larger_panics() {
        let mut request = envelope(
            Sender::Client(1),
            Message::Request {
                session: 1,
                request: 1,
                operation: Operation::StateMachine,
                body: Bytes::from(vec![0x5a; MESSAGE_BODY_SIZE_MAX]),
            },
        );
        let bytes = encode(&request);
        assert_eq!(bytes.len(), FRAME_SIZE_MAX);
        assert_eq!(decode(&bytes), Ok(request.clone()));

        let Message::Request { body, .. } = &mut request.message else {
            unreachable!()
        };
        *body = Bytes::from(vec![0x5a; MESSAGE_BODY_SIZE_MAX + 1]);
        let panic = std::panic::catch_unwind(|| encode(&request));
        assert!(
            panic.is_err(),
            "encode must refuse a body over MESSAGE_BODY_SIZE_MAX"
        );
    }

    /// Builds a frame with valid checksums from a valid one after `change` edits it.
    fn resealed(
        example: &Envelope,
        change: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Envelope, DecodeError> {
        let mut bytes = encode(example);
        change(&mut bytes);
        reseal(&mut bytes);
        decode(&bytes)
    }

    #[test]
    fn checksummed_but_invalid_frames_are_rejected() {
        let examples = examples();
        let (request, prepare, view_change, delta) =
            (&examples[0], &examples[5], &examples[9], &examples[14]);
        let malformed = |result: Result<Envelope, DecodeError>| {
            assert!(
                matches!(result, Err(DecodeError::Malformed(_))),
                "{result:?}"
            );
        };
        assert_eq!(
            resealed(request, |b| b[72] = 3),
            Err(DecodeError::Version { version: 3 })
        );
        assert_eq!(
            resealed(request, |b| b[74] = 0),
            Err(DecodeError::UnknownCommand { command: 0 })
        );
        assert_eq!(
            resealed(request, |b| b[74] = 13),
            Err(DecodeError::UnknownCommand { command: 13 })
        );
        malformed(resealed(request, |b| b[79] = 1)); // reserved
        malformed(resealed(request, |b| b[75] = 2)); // sender kind
        malformed(resealed(request, |b| b[76] = 1)); // replica index of a client
        malformed(resealed(request, |b| b[77] = 3)); // operation
        malformed(resealed(request, |b| b[80] = 1)); // view unused by request
        malformed(resealed(request, |b| b[120] = 1)); // session above u64
        malformed(resealed(&examples[7], |b| b[112] = 1)); // context_wide unused by commit
        malformed(resealed(&examples[7], |b| b.push(0))); // body on an empty command
        malformed(resealed(&examples[16], |b| b[78] = 2)); // flag neither 0 nor 1
        malformed(resealed(&examples[13], |b| b[77] = 2)); // new_state payload tag
        malformed(resealed(&examples[3], |b| b[77] = 3)); // reply result tag
        malformed(resealed(&examples[3], |b| b.push(0))); // registered reply with bytes
        malformed(resealed(prepare, |b| b[88] ^= 1)); // header op disagrees with entry op
        malformed(resealed(prepare, |b| b.push(0))); // trailing byte
        malformed(resealed(prepare, |b| b.truncate(b.len() - 1))); // entry body cut short
        malformed(resealed(prepare, |b| b[128 + 4 + 80] = 0xff)); // entry body size too large
        malformed(resealed(prepare, |b| {
            b.truncate(HEADER_SIZE);
            b.extend_from_slice(&0u32.to_le_bytes()); // a prepare without entries
        }));
        malformed(resealed(&examples[3], |b| b[75] = SENDER_KIND_CLIENT)); // reply from a client
        malformed(resealed(view_change, |b| b[128] = 4)); // count beyond the entries
        malformed(resealed(view_change, |b| {
            b[128..132].copy_from_slice(&u32::MAX.to_le_bytes());
        }));
        malformed(resealed(view_change, |b| b[128] = 2)); // trailing entry
        malformed(resealed(delta, |b| {
            let size = b.len();
            b[size - 24] = 0; // chunk size disagrees with the chunk
        }));
        assert_eq!(
            resealed(prepare, |b| b[HEADER_SIZE + 4 + 64] ^= 1), // entry view
            Err(DecodeError::EntryChecksum { op: 41 })
        );
    }

    #[test]
    fn entries_must_be_valid_and_consecutive() {
        let mut broken = entry(41, b"x");
        broken.request += 1;
        let bad_checksum = envelope(
            Sender::Replica(0),
            Message::StartView {
                view: 1,
                op: 42,
                commit: 40,
                entries: vec![entry(40, b""), broken],
            },
        );
        assert_eq!(
            decode(&encode(&bad_checksum)),
            Err(DecodeError::EntryChecksum { op: 41 })
        );

        for ops in [[40, 42], [40, 40], [41, 40], [u64::MAX, 0]] {
            let gap = envelope(
                Sender::Replica(0),
                Message::NewState {
                    view: 1,
                    op: 42,
                    commit: 40,
                    normal: false,
                    payload: StatePayload::Entries(ops.iter().map(|op| entry(*op, b"")).collect()),
                },
            );
            assert_eq!(
                decode(&encode(&gap)),
                Err(DecodeError::Malformed("entry ops are not consecutive")),
                "{ops:?}"
            );
        }
    }

    fn arbitrary_bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
    }

    fn arbitrary_operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            Just(Operation::Register),
            Just(Operation::StateMachine),
            Just(Operation::Noop)
        ]
    }

    fn arbitrary_entry_at(op: u64) -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<u128>(),
            any::<u128>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_flat_map(move |fields| (Just(fields), arbitrary_operation(), arbitrary_bytes()))
            .prop_map(
                move |((view, parent, client, session, request), operation, body)| {
                    Entry::new(op, view, parent, client, session, request, operation, body)
                },
            )
    }

    fn arbitrary_entry() -> impl Strategy<Value = Entry> {
        any::<u64>().prop_flat_map(arbitrary_entry_at)
    }

    /// Up to five entries with consecutive ops.
    fn arbitrary_entries() -> impl Strategy<Value = Vec<Entry>> {
        (any::<u64>(), 0..=5u64).prop_flat_map(|(start, count)| {
            let start = start.min(u64::MAX - count);
            (0..count)
                .map(|index| arbitrary_entry_at(start + index))
                .collect::<Vec<_>>()
        })
    }

    fn arbitrary_payload() -> impl Strategy<Value = StatePayload> {
        let delta = (any::<(u64, u128, u64, u64, u64, u128)>(), arbitrary_bytes()).prop_map(
            |((op, op_checksum, since, offset, total_size, total_checksum), chunk)| {
                StatePayload::Delta {
                    op,
                    op_checksum,
                    since,
                    offset,
                    total_size,
                    total_checksum,
                    chunk,
                }
            },
        );
        prop_oneof![arbitrary_entries().prop_map(StatePayload::Entries), delta]
    }

    fn arbitrary_result() -> impl Strategy<Value = ReplyResult> {
        prop_oneof![
            arbitrary_bytes().prop_map(ReplyResult::Executed),
            Just(ReplyResult::Registered),
            Just(ReplyResult::SessionEvicted),
        ]
    }

    fn arbitrary_message() -> impl Strategy<Value = Message> {
        let u = any::<u64>;
        prop_oneof![
            (u(), u(), arbitrary_operation(), arbitrary_bytes()).prop_map(
                |(session, request, operation, body)| Message::Request {
                    session,
                    request,
                    operation,
                    body
                }
            ),
            (any::<u128>(), u(), u(), u(), arbitrary_result()).prop_map(
                |(client, view, op, request, result)| Message::Reply {
                    client,
                    view,
                    op,
                    request,
                    result,
                }
            ),
            (u(), u(), arbitrary_entries())
                .prop_filter("a prepare carries entries", |(_, _, entries)| !entries
                    .is_empty())
                .prop_map(|(view, commit, entries)| Message::Prepare {
                    view,
                    commit,
                    entries
                }),
            (u(), u(), any::<u128>()).prop_map(|(view, op, checksum)| Message::PrepareOk {
                view,
                op,
                checksum
            }),
            (u(), u()).prop_map(|(view, commit)| Message::Commit { view, commit }),
            u().prop_map(|view| Message::StartViewChange { view }),
            (u(), u(), u(), u(), arbitrary_entries()).prop_map(
                |(view, last_normal_view, op, commit, entries)| Message::DoViewChange {
                    view,
                    last_normal_view,
                    op,
                    commit,
                    entries
                }
            ),
            (u(), u(), u(), arbitrary_entries()).prop_map(|(view, op, commit, entries)| {
                Message::StartView {
                    view,
                    op,
                    commit,
                    entries,
                }
            }),
            (u(), u(), u()).prop_map(|(view, op, commit)| Message::GetState { view, op, commit }),
            (u(), u(), u(), any::<bool>(), arbitrary_payload()).prop_map(
                |(view, op, commit, normal, payload)| Message::NewState {
                    view,
                    op,
                    commit,
                    normal,
                    payload
                }
            ),
            u().prop_map(|nonce| Message::Recovery { nonce }),
            (u(), u(), u(), u(), any::<bool>()).prop_map(|(view, nonce, op, commit, primary)| {
                Message::RecoveryResponse {
                    view,
                    nonce,
                    op,
                    commit,
                    primary,
                }
            }),
        ]
    }

    fn arbitrary_envelope() -> impl Strategy<Value = Envelope> {
        let sender = prop_oneof![
            any::<u8>().prop_map(Sender::Replica),
            any::<u128>().prop_map(Sender::Client)
        ];
        (any::<u128>(), any::<u32>(), sender, arbitrary_message()).prop_map(
            |(cluster, epoch, sender, message)| {
                // Replies come only from replicas: their header's client field names the
                // client replied to.
                let sender = match (sender, &message) {
                    (Sender::Client(client), Message::Reply { .. }) => {
                        Sender::Replica(client as u8)
                    }
                    _ => sender,
                };
                Envelope {
                    cluster,
                    epoch,
                    sender,
                    message,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn round_trip(envelope in arbitrary_envelope()) {
            let bytes = encode(&envelope);
            prop_assert_eq!(bytes.len(), HEADER_SIZE + body_size(&envelope.message));
            prop_assert_eq!(frame_size(&bytes), Ok(Some(bytes.len())));
            prop_assert_eq!(decode_shared(&Bytes::from(bytes.clone())), Ok(envelope.clone()));
            prop_assert_eq!(decode(&bytes), Ok(envelope));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = frame_size(&bytes);
            prop_assert!(decode(&bytes).is_err());
        }

        /// Garbage behind valid checksums reaches the body decoder: it must never panic, and
        /// whatever it accepts is exactly what encode produces.
        #[test]
        fn resealed_garbage_is_canonical(
            command in 0..=13u8,
            header in prop::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 48..=48),
            body in prop::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..300),
        ) {
            let mut bytes = vec![0; HEADER_SIZE];
            bytes[80..].copy_from_slice(&header);
            bytes[72..74].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            bytes[74] = command;
            bytes.extend_from_slice(&body);
            reseal(&mut bytes);
            if let Ok(envelope) = decode(&bytes) {
                prop_assert_eq!(encode(&envelope), bytes);
            }
        }

        /// A valid frame with some bytes overwritten and resealed: same property, but close
        /// enough to valid to reach deep into the body decoder.
        #[test]
        fn resealed_mutation_is_canonical(
            envelope in arbitrary_envelope(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode(&envelope);
            for (index, value) in edits {
                let position = 72 + index.index(bytes.len() - 72);
                bytes[position] = value;
            }
            reseal(&mut bytes);
            if let Ok(decoded) = decode(&bytes) {
                prop_assert_eq!(encode(&decoded), bytes);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_bit_flip_and_truncation_is_detected(envelope in arbitrary_envelope()) {
            assert_corruption_detected(&encode(&envelope));
        }

        /// The public entry encoding is the prepare body, and decoding takes exactly one whole,
        /// valid entry.
        #[test]
        fn one_entry_round_trips_and_every_flip_truncation_or_extension_is_rejected(
            entry in arbitrary_entry()
        ) {
            let mut bytes = Vec::new();
            encode_entry(&entry, &mut bytes);
            prop_assert_eq!(bytes.len(), entry_size(&entry));
            let prepare = envelope(
                Sender::Replica(0),
                Message::Prepare { view: entry.view, commit: 0, entries: vec![entry.clone()] },
            );
            prop_assert_eq!(&encode(&prepare)[HEADER_SIZE + ENTRIES_COUNT_SIZE..], &bytes[..]);
            prop_assert_eq!(decode_entry(&bytes), Ok(entry));
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(decode_entry(&flipped).is_err(), "bit {} flipped went unnoticed", bit);
            }
            for size in 0..bytes.len() {
                prop_assert!(decode_entry(&bytes[..size]).is_err(), "cut to {} bytes", size);
            }
            bytes.push(0);
            prop_assert_eq!(
                decode_entry(&bytes),
                Err(DecodeError::Malformed("trailing bytes after the entry"))
            );
        }
    }
}
