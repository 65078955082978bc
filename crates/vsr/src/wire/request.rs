//! request: client → primary, execute an operation.
//!
//! Header: `word` = request, `wide` = session, `tag` = operation. Body: the operation's bytes,
//! at most [`crate::limits::OPERATION_SIZE_MAX`]. Only a client sends it.

use bytes::{BufMut, Bytes};

use super::{DecodeError, Fields, WireMessage, client_body};
use crate::wire::Operation;

/// Client → primary: execute an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's session (0 when registering).
    pub session: u64,
    /// The client's request number (strictly increasing per client).
    pub request: u64,
    /// What to execute.
    pub operation: Operation,
    /// The encoded state machine operation.
    pub body: Bytes,
}

impl WireMessage for Request {
    const FROM_CLIENT: bool = true;

    fn fields(&self) -> Fields {
        Fields {
            word: self.request,
            wide: u128::from(self.session),
            tag: self.operation as u8,
            ..Fields::default()
        }
    }

    fn body_size(&self) -> usize {
        self.body.len()
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.put_slice(&self.body);
    }

    fn decode(fields: &Fields, body: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Request {
            session: u64::try_from(fields.wide)
                .map_err(|_| DecodeError::Malformed("request session exceeds u64"))?,
            request: fields.word,
            operation: Operation::from_tag(fields.tag)?,
            body: client_body(body)?,
        })
    }
}
