//! new_state: the answer to get_state (and the state a recovering replica installs).
//!
//! Header: `view`, `op`, `commit`, `flag` = normal, `tag` = payload (0 entries, 1 a delta
//! chunk, 2 the last chunk of a delta).
//! Body: an entries list, or a delta chunk: the target (`transfer` u64, `op` u64,
//! `op_checksum` u128, `since` u64), `offset` u64, in the last chunk only the whole delta's
//! `size` u64 and `checksum` u128, then chunk size u32 and the chunk's bytes.
//!
//! A delta is streamed (see `replica/state_transfer.rs`): its sender encodes it as it goes, so
//! the whole delta's size and checksum are known only when the last chunk leaves, and only that
//! chunk carries them. Every chunk but the last holds at least one byte, and the last chunk's
//! size is its offset plus its length: a frame that says otherwise does not decode.

use bytes::{BufMut, Bytes};

use super::entry::{decode_entries, encode_entries, entries_size};
use super::{DecodeError, Fields, Read, WireMessage, decode_bool, in_bounds, length_u32};
use crate::limits::{DELTA_END_SIZE, DELTA_HEADER_SIZE};
use crate::numbers::{EntryChecksum, Op, View};
use crate::wire::Entry;

const ENTRIES: u8 = 0;
const DELTA: u8 = 1;
const DELTA_LAST: u8 = 2;

/// State sent by [`NewState`]: committed log entries when the responder still has them,
/// otherwise a chunk of a snapshot delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatePayload {
    /// Log entries, consecutive, starting right after the requester's op.
    Entries(Vec<Entry>),
    /// One chunk of an encoded snapshot delta (client table + state machine delta), boxed: it
    /// is the largest payload, and every message would otherwise be as large.
    Delta(Box<DeltaChunk>),
}

/// Which delta a chunk belongs to, or a get_state's cursor names: one transfer of one sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaTarget {
    /// Drawn by the sender when it starts the transfer: two transfers of the same state (a
    /// sender that started anew, or restarted) are told apart by it.
    pub transfer: u64,
    /// The op the delta brings the requester up to (the responder's commit).
    pub op: Op,
    /// The checksum of the hash-chain entry at `op`, so the requester can continue the chain.
    pub op_checksum: EntryChecksum,
    /// The commit number the delta starts from (the requester's commit).
    pub since: Op,
}

/// What only the last chunk of a delta carries: the whole delta, known once encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaEnd {
    /// Size of the whole encoded delta: the last chunk's offset plus its length.
    pub size: u64,
    /// Checksum of the whole encoded delta.
    pub checksum: u128,
}

/// One chunk of an encoded snapshot delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaChunk {
    /// The transfer this chunk belongs to.
    pub target: DeltaTarget,
    /// Byte offset of this chunk in the encoded delta.
    pub offset: u64,
    /// In the last chunk only: the whole delta's size and checksum.
    pub end: Option<DeltaEnd>,
    /// This chunk's bytes; empty only in a last chunk.
    pub chunk: Bytes,
}

/// The answer to [`super::GetState`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewState {
    /// The responder's view.
    pub view: View,
    /// The responder's op number (only meaningful when the responder is normal in `view`).
    pub op: Op,
    /// The responder's commit number.
    pub commit: Op,
    /// Whether `Entries` may include uncommitted entries of `view` (responder normal in it).
    pub normal: bool,
    /// The state.
    pub payload: StatePayload,
}

impl WireMessage for NewState {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            op: self.op.get(),
            commit: self.commit.get(),
            flag: u8::from(self.normal),
            tag: match &self.payload {
                StatePayload::Entries(_) => ENTRIES,
                StatePayload::Delta(delta) if delta.end.is_some() => DELTA_LAST,
                StatePayload::Delta(_) => DELTA,
            },
            ..Fields::default()
        }
    }

    fn body_size(&self) -> usize {
        match &self.payload {
            StatePayload::Entries(entries) => entries_size(entries),
            StatePayload::Delta(delta) => {
                let end = if delta.end.is_some() {
                    DELTA_END_SIZE
                } else {
                    0
                };
                DELTA_HEADER_SIZE + end + delta.chunk.len()
            }
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match &self.payload {
            StatePayload::Entries(entries) => encode_entries(entries, out),
            StatePayload::Delta(delta) => delta.encode(out),
        }
    }

    fn decode(fields: &Fields, body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op, fields.commit])?;
        let normal = decode_bool(fields.flag)?;
        let payload = match fields.tag {
            ENTRIES => StatePayload::Entries(decode_entries(body)?),
            DELTA => StatePayload::Delta(Box::new(DeltaChunk::decode(body, false)?)),
            DELTA_LAST => StatePayload::Delta(Box::new(DeltaChunk::decode(body, true)?)),
            _ => return Err(DecodeError::Malformed("unknown new_state payload")),
        };
        Ok(NewState {
            view: View(fields.view),
            op: Op(fields.op),
            commit: Op(fields.commit),
            normal,
            payload,
        })
    }
}

impl DeltaTarget {
    /// Appends the target's encoding.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64_le(self.transfer);
        out.put_u64_le(self.op.get());
        out.put_u128_le(self.op_checksum.get());
        out.put_u64_le(self.since.get());
    }

    /// Reads a target; its op numbers must be within bounds.
    pub(super) fn decode(body: &mut Bytes) -> Result<DeltaTarget, DecodeError> {
        let transfer = body.u64()?;
        let op = body.u64()?;
        let op_checksum = EntryChecksum(body.u128()?);
        let since = body.u64()?;
        in_bounds(&[op, since])?;
        Ok(DeltaTarget {
            transfer,
            op: Op(op),
            op_checksum,
            since: Op(since),
        })
    }
}

impl DeltaChunk {
    fn encode(&self, out: &mut Vec<u8>) {
        self.target.encode(out);
        out.put_u64_le(self.offset);
        if let Some(end) = &self.end {
            out.put_u64_le(end.size);
            out.put_u128_le(end.checksum);
        }
        out.put_u32_le(length_u32(self.chunk.len()));
        out.put_slice(&self.chunk);
    }

    fn decode(body: &mut Bytes, last: bool) -> Result<DeltaChunk, DecodeError> {
        let target = DeltaTarget::decode(body)?;
        let offset = body.u64()?;
        let end = if last {
            Some(DeltaEnd {
                size: body.u64()?,
                checksum: body.u128()?,
            })
        } else {
            None
        };
        let chunk_size = body.u32()? as usize;
        let chunk = body.take(chunk_size)?;
        in_bounds(&[offset, end.map_or(0, |end| end.size)])?;
        match end {
            None if chunk.is_empty() => {
                return Err(DecodeError::Malformed(
                    "empty delta chunk that is not the last",
                ));
            }
            Some(end) if end.size != offset + chunk.len() as u64 => {
                return Err(DecodeError::Malformed(
                    "delta size is not the last chunk's end",
                ));
            }
            _ => {}
        }
        Ok(DeltaChunk {
            target,
            offset,
            end,
            chunk,
        })
    }
}
