//! The client table: per client session, the latest request number and its reply.
//!
//! It is replicated state: every replica changes it only when executing a committed entry, in
//! log order, so all replicas agree on it, including on which session is evicted when the table
//! is full (the least recently used, by the op of its last execution).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::message::{ClientId, Entry, Operation, ReplyResult};
use crate::state_machine::CodecError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The op of the register entry that created the session.
    pub(crate) session: u64,
    /// The latest request number executed.
    pub(crate) request: u64,
    /// The op at which that request executed.
    pub(crate) reply_op: u64,
    /// Its reply.
    pub(crate) reply: ReplyResult,
}

/// What executing an entry against the table decided.
pub(crate) enum Admission {
    /// A new request of a live session: execute it.
    Execute,
    /// Not executed; reply this (a duplicate's cached reply, or session evicted).
    Reply { op: u64, result: ReplyResult },
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
            session: entry.op,
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
        out.extend_from_slice(&(self.sessions.len() as u32).to_le_bytes());
        for (client, session) in &self.sessions {
            out.extend_from_slice(&client.to_le_bytes());
            out.extend_from_slice(&session.session.to_le_bytes());
            out.extend_from_slice(&session.request.to_le_bytes());
            out.extend_from_slice(&session.reply_op.to_le_bytes());
            match &session.reply {
                ReplyResult::Registered => out.push(0),
                ReplyResult::SessionEvicted => out.push(1),
                ReplyResult::Executed(result) => {
                    let result = if results { &result[..] } else { &[][..] };
                    out.push(2);
                    out.extend_from_slice(&(result.len() as u32).to_le_bytes());
                    out.extend_from_slice(result);
                }
            }
        }
    }

    /// Decodes a table from the front of `bytes`, returning it and the bytes consumed.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let error = |reason| CodecError::new("client table", reason);
        let mut reader = Reader { bytes, position: 0 };
        let count = reader.u32().ok_or_else(|| error("truncated count"))?;
        let mut sessions = BTreeMap::new();
        for _ in 0..count {
            let client = reader.u128().ok_or_else(|| error("truncated client"))?;
            let session = reader.u64().ok_or_else(|| error("truncated session"))?;
            let request = reader.u64().ok_or_else(|| error("truncated request"))?;
            let reply_op = reader.u64().ok_or_else(|| error("truncated reply op"))?;
            let reply = match reader.take(1).ok_or_else(|| error("truncated reply"))?[0] {
                0 => ReplyResult::Registered,
                1 => ReplyResult::SessionEvicted,
                2 => {
                    let size = reader.u32().ok_or_else(|| error("truncated reply size"))?;
                    let size = usize::try_from(size).map_err(|_| error("reply size"))?;
                    let result = reader.take(size).ok_or_else(|| error("truncated reply"))?;
                    ReplyResult::Executed(Bytes::copy_from_slice(result))
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
        Ok((Self { sessions }, reader.position))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, size: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(size)?;
        let slice = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
}
