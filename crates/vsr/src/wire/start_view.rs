//! start_view: the new primary → all, the view has started; here is the log suffix.
//!
//! Header: `view`, `op`, `commit`. Body: an entries list. Only the view's primary sends it.

use bytes::Bytes;

use super::entry::{decode_entries, encode_entries, entries_size};
use super::{DecodeError, Fields, WireMessage, in_bounds};
use crate::numbers::{Op, View};
use crate::wire::Entry;

/// New primary → all: the view has started; here is the log suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartView {
    /// The new view.
    pub view: View,
    /// The new primary's op number.
    pub op: Op,
    /// The new primary's commit number.
    pub commit: Op,
    /// The log suffix after `commit`, up to `op`.
    pub entries: Vec<Entry>,
}

impl WireMessage for StartView {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            op: self.op.get(),
            commit: self.commit.get(),
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
        in_bounds(&[fields.view, fields.op, fields.commit])?;
        let message = StartView {
            view: View(fields.view),
            op: Op(fields.op),
            commit: Op(fields.commit),
            entries: decode_entries(body)?,
        };
        // Entries are consecutive (decode_entries checks) and end at op.
        let consistent = message.commit <= message.op
            && message
                .entries
                .last()
                .is_none_or(|entry| entry.op == message.op);
        if !consistent {
            return Err(DecodeError::Malformed(
                "start_view log suffix does not match its numbers",
            ));
        }
        Ok(message)
    }

    fn primary_of(&self) -> Option<View> {
        Some(self.view)
    }
}
