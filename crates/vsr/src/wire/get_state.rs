//! get_state: a lagging replica asks a peer for what it is missing after `op`.
//!
//! Header: `view`, `op`, `commit`. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};

/// A lagging replica asks a peer for what it is missing after `op`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetState {
    /// The requester's view.
    pub view: u64,
    /// The requester's last op it holds and trusts (its commit after a view change).
    pub op: u64,
    /// The requester's commit number (a delta starts here).
    pub commit: u64,
}

impl WireMessage for GetState {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view,
            op: self.op,
            commit: self.commit,
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op, fields.commit])?;
        Ok(GetState {
            view: fields.view,
            op: fields.op,
            commit: fields.commit,
        })
    }
}
