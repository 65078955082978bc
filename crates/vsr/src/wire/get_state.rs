//! get_state: a lagging replica asks a peer for what it is missing after `op`.
//!
//! Header: `view`, `op`, `commit`, `flag` = whether a cursor follows. Body: empty, or the
//! cursor: the target of the delta being received (`transfer` u64, `op` u64, `op_checksum`
//! u128, `since` u64) and `offset` u64, the bytes of it held.
//!
//! A requester receiving a delta pulls it with get_state: each one says how far it got, and
//! acknowledges every chunk before that offset (see `replica/state_transfer.rs`).

use bytes::{BufMut, Bytes};

use super::new_state::DeltaTarget;
use super::{DecodeError, Fields, Read, WireMessage, decode_bool, in_bounds};
use crate::limits::DELTA_CURSOR_SIZE;
use crate::numbers::{Op, View};

/// A lagging replica asks a peer for what it is missing after `op`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetState {
    /// The requester's view.
    pub view: View,
    /// The requester's last op it holds and trusts (its commit after a view change).
    pub op: Op,
    /// The requester's commit number (a delta starts here).
    pub commit: Op,
    /// The delta the requester is receiving and how much of it it holds, if it is receiving
    /// one.
    pub cursor: Option<DeltaCursor>,
}

/// How far a requester got in a delta: the bytes before `offset` are held, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaCursor {
    /// The delta being received.
    pub target: DeltaTarget,
    /// Bytes of it held.
    pub offset: u64,
}

impl WireMessage for GetState {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            op: self.op.get(),
            commit: self.commit.get(),
            flag: u8::from(self.cursor.is_some()),
            ..Fields::default()
        }
    }

    fn body_size(&self) -> usize {
        if self.cursor.is_some() {
            DELTA_CURSOR_SIZE
        } else {
            0
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        if let Some(cursor) = &self.cursor {
            cursor.target.encode(out);
            out.put_u64_le(cursor.offset);
        }
    }

    fn decode(fields: &Fields, body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op, fields.commit])?;
        let cursor = if decode_bool(fields.flag)? {
            let target = DeltaTarget::decode(body)?;
            let offset = body.u64()?;
            in_bounds(&[offset])?;
            Some(DeltaCursor { target, offset })
        } else {
            None
        };
        Ok(GetState {
            view: View(fields.view),
            op: Op(fields.op),
            commit: Op(fields.commit),
            cursor,
        })
    }
}
