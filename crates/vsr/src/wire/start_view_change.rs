//! start_view_change: any replica → all, I have moved to this view.
//!
//! Header: `view`. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};

/// Any replica → all: I have moved to this view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartViewChange {
    /// The new view.
    pub view: u64,
}

impl WireMessage for StartViewChange {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view,
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view])?;
        Ok(StartViewChange { view: fields.view })
    }
}
