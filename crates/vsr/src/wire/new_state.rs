//! new_state: the answer to get_state (and the state a recovering replica installs).
//!
//! Header: `view`, `op`, `commit`, `flag` = normal, `tag` = payload (0 entries, 1 delta).
//! Body: an entries list, or a delta: `op` u64, `op_checksum` u128, `since` u64, `offset` u64,
//! `total_size` u64, `total_checksum` u128, chunk size u32, chunk bytes.

use bytes::{BufMut, Bytes};

use super::entry::{decode_entries, encode_entries, entries_size};
use super::{DecodeError, Fields, Read, WireMessage, decode_bool, in_bounds, length_u32};
use crate::limits::DELTA_HEADER_SIZE;
use crate::numbers::{EntryChecksum, Op, View};
use crate::wire::Entry;

const ENTRIES: u8 = 0;
const DELTA: u8 = 1;

/// State sent by [`NewState`]: committed log entries when the responder still has them,
/// otherwise a chunk of a snapshot delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatePayload {
    /// Log entries, consecutive, starting right after the requester's op.
    Entries(Vec<Entry>),
    /// One chunk of an encoded snapshot delta (client table + state machine delta).
    Delta(DeltaChunk),
}

/// One chunk of an encoded snapshot delta, and what the whole delta is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaChunk {
    /// The op the delta brings the requester up to (the responder's commit).
    pub op: Op,
    /// The checksum of the hash-chain entry at `op`, so the requester can continue the chain.
    pub op_checksum: EntryChecksum,
    /// The commit number the delta starts from (the requester's commit).
    pub since: Op,
    /// Byte offset of this chunk in the encoded delta.
    pub offset: u64,
    /// Total size of the encoded delta.
    pub total_size: u64,
    /// Checksum of the whole encoded delta.
    pub total_checksum: u128,
    /// This chunk's bytes.
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
            tag: match self.payload {
                StatePayload::Entries(_) => ENTRIES,
                StatePayload::Delta { .. } => DELTA,
            },
            ..Fields::default()
        }
    }

    fn body_size(&self) -> usize {
        match &self.payload {
            StatePayload::Entries(entries) => entries_size(entries),
            StatePayload::Delta(delta) => DELTA_HEADER_SIZE + delta.chunk.len(),
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
            DELTA => StatePayload::Delta(DeltaChunk::decode(body)?),
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

impl DeltaChunk {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64_le(self.op.get());
        out.put_u128_le(self.op_checksum.get());
        out.put_u64_le(self.since.get());
        out.put_u64_le(self.offset);
        out.put_u64_le(self.total_size);
        out.put_u128_le(self.total_checksum);
        out.put_u32_le(length_u32(self.chunk.len()));
        out.put_slice(&self.chunk);
    }

    fn decode(body: &mut Bytes) -> Result<DeltaChunk, DecodeError> {
        let op = body.u64()?;
        let op_checksum = EntryChecksum(body.u128()?);
        let since = body.u64()?;
        let offset = body.u64()?;
        let total_size = body.u64()?;
        let total_checksum = body.u128()?;
        let chunk_size = body.u32()? as usize;
        let chunk = body.take(chunk_size)?;
        in_bounds(&[op, since, offset, total_size])?;
        Ok(DeltaChunk {
            op: Op(op),
            op_checksum,
            since: Op(since),
            offset,
            total_size,
            total_checksum,
            chunk,
        })
    }
}
