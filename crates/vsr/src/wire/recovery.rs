//! recovery: a replica that lost its state asks everyone for the view.
//!
//! Header: `word` = nonce. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage};

/// A replica that lost its state asks everyone for the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// A fresh nonce, echoed in responses.
    pub nonce: u64,
}

impl WireMessage for Recovery {
    fn fields(&self) -> Fields {
        Fields {
            word: self.nonce,
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Recovery { nonce: fields.word })
    }
}
