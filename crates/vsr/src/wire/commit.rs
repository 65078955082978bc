//! commit: primary → backups when idle, the commit number (a heartbeat).
//!
//! Header: `view`, `commit`, `word` = read round (0: none). No body. Only the view's primary
//! sends it; a backup answers a commit that carries a read round with a confirm.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};
use crate::numbers::{Op, View};

/// Primary → backups, when idle: the commit number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The primary's view.
    pub view: View,
    /// The primary's commit number.
    pub commit: Op,
    /// The read round this message starts, or 0 (see [`super::Prepare::round`]).
    pub round: u64,
}

impl WireMessage for Commit {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            commit: self.commit.get(),
            word: self.round,
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.commit])?;
        Ok(Commit {
            view: View(fields.view),
            commit: Op(fields.commit),
            round: fields.word,
        })
    }

    fn primary_of(&self) -> Option<View> {
        Some(self.view)
    }
}
