//! commit: primary → backups when idle, the commit number (a heartbeat).
//!
//! Header: `view`, `commit`. No body. Only the view's primary sends it.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};

/// Primary → backups, when idle: the commit number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The primary's view.
    pub view: u64,
    /// The primary's commit number.
    pub commit: u64,
}

impl WireMessage for Commit {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view,
            commit: self.commit,
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.commit])?;
        Ok(Commit {
            view: fields.view,
            commit: fields.commit,
        })
    }

    fn primary_of(&self) -> Option<u64> {
        Some(self.view)
    }
}
