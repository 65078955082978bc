//! Entry points for the fuzz targets of `vsr-fuzz`: the byte-level decoders of this crate's
//! files, one function each. Not part of the API; nothing else should call them.
//!
//! Each function decodes as [`crate::FileStorage::open`] does and returns the re-encoding of
//! what it decoded (`None` where open would reject the bytes). Every one of these encodings is
//! canonical, so a target checks that the re-encoding equals its input.

use crate::headers::{decode_slot, encode_slot};
use crate::record::{Record, decode_record, encode_entry_record, encode_truncate_record};
use crate::superblock::{COPY_SIZE, Copy, Superblock};

/// Decodes one superblock copy; the re-encoding of a valid copy of this format.
#[must_use]
pub fn superblock_copy(bytes: &[u8]) -> Option<[u8; COPY_SIZE]> {
    match Superblock::decode(bytes) {
        Copy::Valid(superblock) => Some(superblock.encode()),
        Copy::Newer(_) | Copy::Damaged | Copy::Foreign => None,
    }
}

/// Decodes one whole WAL record (header and payload, nothing else); its re-encoding.
#[must_use]
pub fn record(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoded = Vec::new();
    match decode_record(bytes)? {
        Record::Append(entry) => encode_entry_record(&entry, &mut encoded),
        Record::Truncate { op } => encode_truncate_record(op, &mut encoded),
    }
    Some(encoded)
}

/// Decodes one slot of a headers file (the copy of a record's header); its re-encoding.
#[must_use]
pub fn header_slot(bytes: &[u8]) -> Option<Vec<u8>> {
    decode_slot(bytes).map(|slot| encode_slot(&slot).to_vec())
}
