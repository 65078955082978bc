//! prepare_ok: backup → primary, the entry is durable in my log.
//!
//! Header: `view`, `op`, `wide` = the entry's checksum. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};

/// Backup → primary: the entry is durable in my log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareOk {
    /// The backup's view.
    pub view: u64,
    /// The op now durable (all earlier ops are durable too).
    pub op: u64,
    /// The checksum of the entry at `op`.
    pub checksum: u128,
}

impl WireMessage for PrepareOk {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view,
            op: self.op,
            wide: self.checksum,
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view, fields.op])?;
        Ok(PrepareOk {
            view: fields.view,
            op: fields.op,
            checksum: fields.wide,
        })
    }
}
