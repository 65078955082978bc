//! query: client → primary, read the state without entering the log.
//!
//! Header: `word` = request (the client's request number). Body: the query's bytes, at most
//! [`crate::limits::OPERATION_SIZE_MAX`]. Only a client sends it. A query needs no session: it changes
//! nothing, so a client may resend it freely.

use bytes::{BufMut, Bytes};

use super::{DecodeError, Fields, WireMessage, client_body};

/// Client → primary: answer a query from the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The client's request number, echoed by the reply.
    pub request: u64,
    /// The encoded state machine query.
    pub body: Bytes,
}

impl WireMessage for Query {
    const FROM_CLIENT: bool = true;

    fn fields(&self) -> Fields {
        Fields {
            word: self.request,
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
        Ok(Query {
            request: fields.word,
            body: client_body(body)?,
        })
    }
}
