//! The client table: per client session, the latest request number and its reply.
//!
//! It is replicated state: every replica changes it only when executing a committed entry, in
//! log order, so all replicas agree on it, including on which session is evicted when the table
//! is full (the least recently used, by the op of its last execution).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes};

use crate::message::{ClientId, Entry, Operation, ReplyResult};
use crate::numbers::Op;
use crate::state_machine::CodecError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The op of the register entry that created the session.
    pub(crate) session: u64,
    /// The latest request number executed.
    pub(crate) request: u64,
    /// The op at which that request executed.
    pub(crate) reply_op: Op,
    /// Its reply.
    pub(crate) reply: ReplyResult,
}

/// What executing an entry against the table decided.
pub(crate) enum Admission {
    /// A new request of a live session: execute it.
    Execute,
    /// Not executed; reply this (a duplicate's cached reply, or session evicted).
    Reply { op: Op, result: ReplyResult },
    /// Not executed, no reply (an old duplicate).
    Drop,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientTable {
    sessions: BTreeMap<ClientId, Session>,
}

impl ClientTable {
    /// The number of sessions.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn get(&self, client: ClientId) -> Option<&Session> {
        self.sessions.get(&client)
    }

    /// Decides what a committed state machine entry does, without changing the table.
    pub(crate) fn admit(&self, entry: &Entry) -> Admission {
        assert_eq!(entry.operation, Operation::StateMachine);
        match self.sessions.get(&entry.client) {
            Some(session) if session.session == entry.session => {
                let skip_dedup = crate::bug!(SkipDedup);
                if entry.request > session.request || skip_dedup {
                    Admission::Execute
                } else if entry.request == session.request {
                    crate::mark!(ExecuteDuplicateRepliedFromTable);
                    Admission::Reply {
                        op: session.reply_op,
                        result: session.reply.clone(),
                    }
                } else {
                    crate::mark!(ExecuteOldRequestDropped);
                    Admission::Drop
                }
            }
            _ => {
                crate::mark!(ExecuteSessionEvicted);
                Admission::Reply {
                    op: entry.op,
                    result: ReplyResult::SessionEvicted,
                }
            }
        }
    }

    /// Decides what a committed register entry does: a register with a request number the
    /// client's live session has already reached is a duplicate (resent or delayed) and must
    /// not replace the session.
    pub(crate) fn admit_register(&self, entry: &Entry) -> Admission {
        assert_eq!(entry.operation, Operation::Register);
        match self.sessions.get(&entry.client) {
            Some(session) if entry.request == session.request => {
                crate::mark!(ExecuteRegisterDuplicate);
                Admission::Reply {
                    op: session.reply_op,
                    result: session.reply.clone(),
                }
            }
            Some(session) if entry.request < session.request => {
                crate::mark!(ExecuteRegisterOldDropped);
                Admission::Drop
            }
            _ => Admission::Execute,
        }
    }

    /// Records an executed request's reply.
    pub(crate) fn record(&mut self, entry: &Entry, result: Bytes) {
        let session = self
            .sessions
            .get_mut(&entry.client)
            .expect("admitted session");
        assert!(entry.request > session.request || crate::bug!(SkipDedup));
        session.request = entry.request;
        session.reply_op = entry.op;
        session.reply = ReplyResult::Executed(result);
    }

    /// Registers a session at `entry.op`; returns whether another session was evicted.
    pub(crate) fn register(&mut self, entry: &Entry, clients_max: usize) -> bool {
        assert_eq!(entry.operation, Operation::Register);
        let mut evicted = false;
        if !self.sessions.contains_key(&entry.client) && self.sessions.len() >= clients_max {
            let (&oldest, _) = self
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.reply_op)
                .expect("the table is full, so not empty");
            self.sessions.remove(&oldest);
            crate::mark!(ClientTableEvictsOldest);
            evicted = true;
        }
        let session = Session {
            // A session number is the op of its register entry.
            session: entry.op.get(),
            request: entry.request,
            reply_op: entry.op,
            reply: ReplyResult::Registered,
        };
        self.sessions.insert(entry.client, session);
        evicted
    }

    /// A checksum over every session. The whole table is replicated state (the pipeline, not
    /// the table, holds a primary's requests in flight), so it is equal on every replica at the
    /// same commit number.
    pub(crate) fn digest(&self) -> u128 {
        let mut bytes = Vec::new();
        self.encode(&mut bytes, true);
        crate::checksum::checksum(&bytes)
    }

    /// Encodes the table; without `results`, each cached result as empty.
    pub(crate) fn encode(&self, out: &mut Vec<u8>, results: bool) {
        out.put_u32_le(u32::try_from(self.sessions.len()).expect("bounded by clients_max"));
        for (client, session) in &self.sessions {
            out.put_u128_le(*client);
            out.put_u64_le(session.session);
            out.put_u64_le(session.request);
            out.put_u64_le(session.reply_op.get());
            match &session.reply {
                ReplyResult::Registered => out.put_u8(0),
                ReplyResult::SessionEvicted => out.put_u8(1),
                ReplyResult::Executed(result) => {
                    let result = if results { &result[..] } else { &[][..] };
                    out.put_u8(2);
                    out.put_u32_le(u32::try_from(result.len()).expect("results are bounded"));
                    out.put_slice(result);
                }
                ReplyResult::Answered(_)
                | ReplyResult::NotPrimary
                | ReplyResult::WrongCluster { .. } => {
                    unreachable!("the client table caches only replies to logged requests")
                }
            }
        }
    }

    /// Decodes a table from the front of `bytes`, returning it and the bytes consumed.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let error = |reason| CodecError::new("client table", reason);
        let mut input = bytes;
        let count = input
            .try_get_u32_le()
            .map_err(|_| error("truncated count"))?;
        let mut sessions = BTreeMap::new();
        for _ in 0..count {
            let client = input
                .try_get_u128_le()
                .map_err(|_| error("truncated client"))?;
            let session = input
                .try_get_u64_le()
                .map_err(|_| error("truncated session"))?;
            let request = input
                .try_get_u64_le()
                .map_err(|_| error("truncated request"))?;
            let reply_op = Op(input
                .try_get_u64_le()
                .map_err(|_| error("truncated reply op"))?);
            let reply = match input.try_get_u8().map_err(|_| error("truncated reply"))? {
                0 => ReplyResult::Registered,
                1 => ReplyResult::SessionEvicted,
                2 => {
                    let size = input
                        .try_get_u32_le()
                        .map_err(|_| error("truncated reply size"))?;
                    let size = usize::try_from(size).map_err(|_| error("reply size"))?;
                    if input.remaining() < size {
                        return Err(error("truncated reply"));
                    }
                    ReplyResult::Executed(input.copy_to_bytes(size))
                }
                _ => return Err(error("unknown reply tag")),
            };
            sessions.insert(
                client,
                Session {
                    session,
                    request,
                    reply_op,
                    reply,
                },
            );
        }
        Ok((Self { sessions }, bytes.len() - input.len()))
    }
}
