//! do_view_change: replica → the new view's primary, my log for the view change.
//!
//! Header: `view`, `op`, `commit`, `word` = last_normal_view. Body: an entries list.

use bytes::Bytes;

use super::entry::{decode_entries, encode_entries, entries_size};
use super::{DecodeError, Fields, WireMessage, in_bounds};
use crate::numbers::{Op, View};
use crate::wire::Entry;

/// Replica → new primary: my log for the view change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoViewChange {
    /// The new view.
    pub view: View,
    /// The latest view in which the sender's status was normal.
    pub last_normal_view: View,
    /// The sender's op number.
    pub op: Op,
    /// The sender's commit number.
    pub commit: Op,
    /// The sender's log suffix after `commit`, up to `op` (bounded by the pipeline).
    pub entries: Vec<Entry>,
}

impl WireMessage for DoViewChange {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            op: self.op.get(),
            commit: self.commit.get(),
            word: self.last_normal_view.get(),
            ..Fields::default()
        }
    }

    fn body_size(&self) -> usize {
        entries_size(&self.entries)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        encode_entries(&self.entries, out);
    }

    fn decode(fields: &Fields, body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.word, fields.op, fields.commit])?;
        let message = DoViewChange {
            view: View(fields.view),
            last_normal_view: View(fields.word),
            op: Op(fields.op),
            commit: Op(fields.commit),
            entries: decode_entries(body)?,
        };
        // The suffix is exactly the ops after commit up to op, from a view before this one.
        let consistent = message.last_normal_view < message.view
            && message.commit <= message.op
            && message.entries.len() as u64 == message.op - message.commit
            && message
                .entries
                .first()
                .is_none_or(|entry| entry.op == message.commit + 1);
        if !consistent {
            return Err(DecodeError::Malformed(
                "do_view_change log suffix does not match its numbers",
            ));
        }
        Ok(message)
    }
}
