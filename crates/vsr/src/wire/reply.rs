//! reply: replica → client, the result of a request.
//!
//! Header: `view`, `op`, `client` = the client replied to, `word` = request, `tag` = result
//! (0 executed, 1 registered, 2 session evicted, 3 answered, 4 not primary, 5 wrong cluster),
//! `wide` = the cluster the replica serves (wrong cluster only, else 0). Body: the result's
//! bytes (executed and answered only).
//! Only a replica sends it, and only a client receives it.
//!
//! A wrong-cluster reply is the one frame a replica writes in another cluster's name: it
//! answers a client's request or query of that cluster (see [`super::Receiver::wrong_cluster`])
//! so the client learns its mistake in one round trip instead of waiting out its deadline. Its
//! header names the client's cluster, so that the client's decoding admits it; the replica's
//! own cluster travels in `wide`. Tag 5 is new in this protocol version without a version
//! change: a client that does not know it decodes it as malformed and drops it, which is what
//! it did with the silence it replaces.

use bytes::{BufMut, Bytes};

use super::{DecodeError, Fields, Read, WireMessage};
use crate::message::ClientId;
use crate::numbers::{Op, View};

/// The outcome carried by a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyResult {
    /// The request executed; the encoded state machine result.
    Executed(Bytes),
    /// A register request executed; the session number is the reply's op.
    Registered,
    /// The client's session is not in the client table (evicted, or never registered). The
    /// request was not executed by this session; whether an earlier copy executed is unknown.
    SessionEvicted,
    /// A query was answered from the state after the reply's op; the encoded result.
    Answered(Bytes),
    /// The replica is not the primary of the reply's view (it is a backup, or changing views);
    /// the client sends to that view's primary instead. Sent for requests and queries alike,
    /// so a client finds the primary in one round trip.
    NotPrimary,
    /// The request or query named another cluster than the replica's: nothing was executed.
    /// The reply's header carries the request's cluster, its view and op are 0.
    WrongCluster {
        /// The cluster the replica serves.
        cluster: u128,
    },
}

const EXECUTED: u8 = 0;
const REGISTERED: u8 = 1;
const SESSION_EVICTED: u8 = 2;
const ANSWERED: u8 = 3;
const NOT_PRIMARY: u8 = 4;
const WRONG_CLUSTER: u8 = 5;

/// Replica → client: the result of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The client this reply is for, so replies of many sessions can share a connection.
    pub client: ClientId,
    /// The view of the replying primary, so the client learns who is primary.
    pub view: View,
    /// The op number at which the request executed (the session for a register); for a query,
    /// the commit number of the state that answered it; 0 for not primary.
    pub op: Op,
    /// The client's request number this replies to.
    pub request: u64,
    /// The outcome.
    pub result: ReplyResult,
}

impl WireMessage for Reply {
    const TO_CLIENT: bool = true;

    fn fields(&self) -> Fields {
        Fields {
            client: self.client,
            view: self.view.get(),
            op: self.op.get(),
            word: self.request,
            tag: match self.result {
                ReplyResult::Executed(_) => EXECUTED,
                ReplyResult::Registered => REGISTERED,
                ReplyResult::SessionEvicted => SESSION_EVICTED,
                ReplyResult::Answered(_) => ANSWERED,
                ReplyResult::NotPrimary => NOT_PRIMARY,
                ReplyResult::WrongCluster { .. } => WRONG_CLUSTER,
            },
            wide: match self.result {
                ReplyResult::WrongCluster { cluster } => cluster,
                _ => 0,
            },
            ..Fields::default()
        }
    }

    fn body_size(&self) -> usize {
        match &self.result {
            ReplyResult::Executed(bytes) | ReplyResult::Answered(bytes) => bytes.len(),
            ReplyResult::Registered
            | ReplyResult::SessionEvicted
            | ReplyResult::NotPrimary
            | ReplyResult::WrongCluster { .. } => 0,
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        if let ReplyResult::Executed(bytes) | ReplyResult::Answered(bytes) = &self.result {
            out.put_slice(bytes);
        }
    }

    fn decode(fields: &Fields, body: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Reply {
            client: fields.client,
            view: View(fields.view),
            op: Op(fields.op),
            request: fields.word,
            result: match fields.tag {
                EXECUTED => ReplyResult::Executed(body.rest()),
                REGISTERED => ReplyResult::Registered,
                SESSION_EVICTED => ReplyResult::SessionEvicted,
                ANSWERED => ReplyResult::Answered(body.rest()),
                NOT_PRIMARY => ReplyResult::NotPrimary,
                WRONG_CLUSTER => ReplyResult::WrongCluster {
                    cluster: fields.wide,
                },
                _ => return Err(DecodeError::Malformed("unknown reply result")),
            },
        })
    }
}
