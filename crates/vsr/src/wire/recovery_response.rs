//! recovery_response: the answer to recovery.
//!
//! Header: `view`, `op`, `commit`, `word` = nonce, `flag` = primary. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, decode_bool, in_bounds};
use crate::numbers::{Op, View};

/// The answer to [`super::Recovery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryResponse {
    /// The responder's view.
    pub view: View,
    /// The recovering replica's nonce.
    pub nonce: u64,
    /// The responder's op number (meaningful from the primary).
    pub op: Op,
    /// The responder's commit number (meaningful from the primary).
    pub commit: Op,
    /// Whether the responder is the primary of `view` in normal status.
    pub primary: bool,
}

impl WireMessage for RecoveryResponse {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            op: self.op.get(),
            commit: self.commit.get(),
            word: self.nonce,
            flag: u8::from(self.primary),
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op, fields.commit])?;
        Ok(RecoveryResponse {
            view: View(fields.view),
            nonce: fields.word,
            op: Op(fields.op),
            commit: Op(fields.commit),
            primary: decode_bool(fields.flag)?,
        })
    }
}
