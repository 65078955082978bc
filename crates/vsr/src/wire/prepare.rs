//! prepare: primary → backups, append these entries (a batch of client requests).
//!
//! Header: `view`, `commit`, `op` = the last entry's op, `wide` = the last entry's checksum,
//! `word` = read round (0: none).
//! Body: an entries list of at least one entry. Only the view's primary sends it.

use bytes::Bytes;

use super::entry::{decode_entries, encode_entries, entries_size};
use super::{DecodeError, Fields, WireMessage, in_bounds};
use crate::numbers::{Op, View};
use crate::wire::Entry;

/// Primary → backups: append these entries, a batch of client requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// The primary's view.
    pub view: View,
    /// The primary's commit number.
    pub commit: Op,
    /// The entries to append: at least one, consecutive, bounded by
    /// [`crate::config::BATCH_SIZE_MAX`] bytes.
    pub entries: Vec<Entry>,
    /// The read round this message starts, or 0. Every backup of the view that gets a message
    /// with a round answers it with a confirm at once; the primary numbers its rounds in
    /// increasing order, so a confirm proves the backup was still in the view after the round
    /// was sent.
    pub round: u64,
}

impl WireMessage for Prepare {
    fn fields(&self) -> Fields {
        let last = self.entries.last();
        Fields {
            view: self.view.get(),
            op: last.map_or(0, |entry| entry.op.get()),
            commit: self.commit.get(),
            wide: last.map_or(0, |entry| entry.checksum.get()),
            word: self.round,
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
        in_bounds(&[fields.view, fields.commit])?;
        let entries = decode_entries(body)?;
        if entries.is_empty() {
            return Err(DecodeError::Malformed("prepare without entries"));
        }
        Ok(Prepare {
            view: View(fields.view),
            commit: Op(fields.commit),
            entries,
            round: fields.word,
        })
    }

    fn primary_of(&self) -> Option<View> {
        Some(self.view)
    }
}
