//! get_state: a lagging replica asks a peer for what it is missing after `op`.
//!
//! Header: `view`, `op`, `commit`. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};
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
}

impl WireMessage for GetState {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            op: self.op.get(),
            commit: self.commit.get(),
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op, fields.commit])?;
        Ok(GetState {
            view: View(fields.view),
            op: Op(fields.op),
            commit: Op(fields.commit),
        })
    }
}
