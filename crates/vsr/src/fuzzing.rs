//! Entry points for the fuzz targets of `vsr-fuzz`: the decoders this crate keeps private, one
//! function each. Not part of the API; nothing else should call them.
//!
//! Each function decodes as the replica does and hands back the canonical re-encoding of what
//! it decoded, so a target can check that decoding that again gives the same value.

use crate::replica::{ClientTable, decode_snapshot};
use crate::state_machine::{CodecError, StateMachine};

/// Decodes a client table from the front of `bytes` as a snapshot holds it; returns the
/// table's encoding (cached results included) and the bytes the table took.
///
/// # Errors
/// When `bytes` does not start with a client table.
pub fn client_table(bytes: &[u8]) -> Result<(Vec<u8>, usize), CodecError> {
    let (table, used) = ClientTable::decode(bytes)?;
    let mut encoded = Vec::new();
    table.encode(&mut encoded, true);
    Ok((encoded, used))
}

/// Decodes a snapshot (a checkpoint's contents, or an assembled state-transfer delta) as a
/// replica installs it; returns the client table's encoding and the state machine's delta.
///
/// # Errors
/// When `bytes` is not a snapshot of `S`.
pub fn snapshot<S: StateMachine>(bytes: &[u8]) -> Result<(Vec<u8>, S::Delta), CodecError> {
    let (table, delta) = decode_snapshot::<S>(bytes)?;
    let mut encoded = Vec::new();
    table.encode(&mut encoded, true);
    Ok((encoded, delta))
}
