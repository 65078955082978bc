//! confirm: backup → primary, "I was still in your view when your read round reached me".
//!
//! Header: `view`, `word` = round. No body. A backup in normal status sends it, at once and
//! without any write, for every prepare or commit of its view's primary that carries a read
//! round (see [`super::Prepare::round`]). The primary answers the reads waiting for a round
//! once f backups confirmed it (see `replica/reads.rs`).

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};
use crate::numbers::View;

/// Backup → primary: still a backup of `view` after round `round` was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The backup's view, which is the primary's.
    pub view: View,
    /// The read round confirmed (at least 1).
    pub round: u64,
}

impl WireMessage for Confirm {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            word: self.round,
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view])?;
        if fields.word == 0 {
            return Err(DecodeError::Malformed("confirm of round 0"));
        }
        Ok(Confirm {
            view: View(fields.view),
            round: fields.word,
        })
    }
}
