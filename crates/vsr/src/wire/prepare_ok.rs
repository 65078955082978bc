//! prepare_ok: backup → primary, the entry is durable in my log.
//!
//! Header: `view`, `op`, `wide` = the entry's checksum. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};
use crate::numbers::{EntryChecksum, Op, View};

/// Backup → primary: the entry is durable in my log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareOk {
    /// The backup's view.
    pub view: View,
    /// The op now durable (all earlier ops are durable too).
    pub op: Op,
    /// The checksum of the entry at `op`.
    pub checksum: EntryChecksum,
}

impl WireMessage for PrepareOk {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            op: self.op.get(),
            wide: self.checksum.get(),
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op])?;
        Ok(PrepareOk {
            view: View(fields.view),
            op: Op(fields.op),
            checksum: EntryChecksum(fields.wide),
        })
    }
}
