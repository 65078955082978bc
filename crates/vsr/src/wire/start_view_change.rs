//! start_view_change: any replica → all, I have moved to this view.
//!
//! Header: `view`. No body.

use bytes::Bytes;

use super::{DecodeError, Fields, WireMessage, in_bounds};
use crate::numbers::View;

/// Any replica → all: I have moved to this view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartViewChange {
    /// The new view.
    pub view: View,
}

impl WireMessage for StartViewChange {
    fn fields(&self) -> Fields {
        Fields {
            view: self.view.get(),
            ..Fields::default()
        }
    }

    fn decode(fields: &Fields, _body: &mut Bytes) -> Result<Self, DecodeError> {
        in_bounds(&[fields.view])?;
        Ok(StartViewChange {
            view: View(fields.view),
        })
    }
}
