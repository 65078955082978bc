//! new_state: the answer to get_state (and the state a recovering replica installs).
//!
//! Header: `view`, `op`, `commit`, `flag` = normal, `tag` = payload (0 entries, 1 delta).
//! Body: an entries list, or a delta: `op` u64, `op_checksum` u128, `since` u64, `offset` u64,
//! `total_size` u64, `total_checksum` u128, chunk size u32, chunk bytes.

use bytes::{BufMut, Bytes};

use super::entry::{decode_entries, encode_entries, entries_size};
use super::{DecodeError, Fields, Read, WireMessage, decode_bool, in_bounds, length_u32};
use crate::limits::DELTA_HEADER_SIZE;
use crate::numbers::{Op, View};
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
    Delta {
        /// The op the delta brings the requester up to (the responder's commit).
        op: Op,
        /// The checksum of the hash-chain entry at `op`, so the requester can continue the chain.
        op_checksum: u128,
        /// The commit number the delta starts from (the requester's commit).
        since: Op,
        /// Byte offset of this chunk in the encoded delta.
        offset: u64,
        /// Total size of the encoded delta.
        total_size: u64,
        /// Checksum of the whole encoded delta.
        total_checksum: u128,
        /// This chunk's bytes.
        chunk: Bytes,
    },
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
            StatePayload::Delta { chunk, .. } => DELTA_HEADER_SIZE + chunk.len(),
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        match &self.payload {
            StatePayload::Entries(entries) => encode_entries(entries, out),
            StatePayload::Delta {
                op,
                op_checksum,
                since,
                offset,
                total_size,
                total_checksum,
                chunk,
            } => {
                out.put_u64_le(op.get());
                out.put_u128_le(*op_checksum);
                out.put_u64_le(since.get());
                out.put_u64_le(*offset);
                out.put_u64_le(*total_size);
                out.put_u128_le(*total_checksum);
                out.put_u32_le(length_u32(chunk.len()));
                out.put_slice(chunk);
            }
        }
    }

    fn decode(fields: &Fields, body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op, fields.commit])?;
        let normal = decode_bool(fields.flag)?;
        let payload = match fields.tag {
            ENTRIES => StatePayload::Entries(decode_entries(body)?),
            DELTA => decode_delta(body)?,
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

fn decode_delta(body: &mut Bytes) -> Result<StatePayload, DecodeError> {
    let op = body.u64()?;
    let op_checksum = body.u128()?;
    let since = body.u64()?;
    let offset = body.u64()?;
    let total_size = body.u64()?;
    let total_checksum = body.u128()?;
    let chunk_size = body.u32()? as usize;
    let chunk = body.take(chunk_size)?;
    in_bounds(&[op, since, offset, total_size])?;
    Ok(StatePayload::Delta {
        op: Op(op),
        op_checksum,
        since: Op(since),
        offset,
        total_size,
        total_checksum,
        chunk,
    })
}
