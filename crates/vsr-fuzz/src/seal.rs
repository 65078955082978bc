//! Recomputes the checksums of bytes a fuzzer mutated, so that mutations reach the decoding
//! behind the checksums instead of stopping at the first one.
//!
//! Each function knows one layout (the tables in `vsr::wire`, `vsr::wire::entry` and
//! `vsr-storage`'s `record.rs`, `headers.rs`, `superblock.rs` and `checkpoint.rs`), walks it as
//! far as the bytes allow and overwrites only checksum fields (and, for a frame, the size). It
//! never fails: bytes it cannot walk are left as they are, for the decoder to reject.

use bytes::Bytes;
use vsr::checksum::checksum;
use vsr::wire::{ENTRIES_COUNT_SIZE, ENTRY_HEADER_SIZE, HEADER_SIZE};
use vsr::{Entry, EntryChecksum, Op, Operation, View};

/// Most entries [`entries`] seals in one list: far more than any message holds.
const ENTRIES_SEALED_MAX: usize = 4096;

/// Bytes of a WAL record header.
pub const RECORD_HEADER_SIZE: usize = 96;

/// Bytes of a headers-file slot.
pub const SLOT_SIZE: usize = 128;

/// Bytes of a superblock copy.
pub const SUPERBLOCK_COPY_SIZE: usize = 256;

/// Bytes of a checkpoint file's trailer.
pub const CHECKPOINT_TRAILER_SIZE: usize = 72;

/// The little-endian integer of `N` bytes at `offset` (which must be in bounds).
fn le<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(le(bytes, offset))
}

pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(le(bytes, offset))
}

pub(crate) fn u128_at(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(le(bytes, offset))
}

/// Writes `checksum(bytes[covered..])` into `bytes[..16]`.
fn put_checksum(bytes: &mut [u8], covered: usize) {
    let sealed = checksum(&bytes[covered..]);
    bytes[..16].copy_from_slice(&sealed.to_le_bytes());
}

/// Seals the log entry at the front of `bytes` (laid out as `vsr::wire::encode_entry` writes
/// it); returns its size, or `None` if the bytes end inside it or its operation is unknown.
pub fn entry(bytes: &mut [u8]) -> Option<usize> {
    let header = bytes.get(..ENTRY_HEADER_SIZE)?;
    let end = ENTRY_HEADER_SIZE.checked_add(u32_at(header, 80) as usize)?;
    let operation = match header[84] {
        0 => Operation::Register,
        1 => Operation::StateMachine,
        2 => Operation::Noop,
        _ => return None,
    };
    let body = bytes.get(ENTRY_HEADER_SIZE..end)?;
    let sealed = Entry {
        op: Op(u64_at(bytes, 48)),
        view: View(u64_at(bytes, 56)),
        parent: EntryChecksum(u128_at(bytes, 16)),
        client: u128_at(bytes, 32),
        session: u64_at(bytes, 64),
        request: u64_at(bytes, 72),
        operation,
        body: Bytes::copy_from_slice(body),
        checksum: EntryChecksum(0),
    }
    .compute_checksum();
    bytes[..16].copy_from_slice(&sealed.get().to_le_bytes());
    Some(end)
}

/// Seals every entry of the entries list (a count, then the entries) at the front of `bytes`.
pub fn entries(bytes: &mut [u8]) {
    let Some(count) = bytes
        .get(..ENTRIES_COUNT_SIZE)
        .map(|count| u32_at(count, 0))
    else {
        return;
    };
    let mut offset = ENTRIES_COUNT_SIZE;
    for _ in 0..(count as usize).min(ENTRIES_SEALED_MAX) {
        match entry(&mut bytes[offset..]) {
            Some(size) => offset += size,
            None => return,
        }
    }
}

/// Seals a frame: its size, the entries of a message that carries them, the body checksum
/// and the header checksum.
pub fn frame(frame: &mut [u8]) {
    if frame.len() < HEADER_SIZE {
        return;
    }
    let size = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    frame[64..68].copy_from_slice(&size.to_le_bytes());
    // prepare, do_view_change, start_view, and new_state with an entries payload (tag 0).
    let carries_entries = matches!(frame[74], 3 | 7 | 8) || (frame[74] == 10 && frame[77] == 0);
    if carries_entries {
        entries(&mut frame[HEADER_SIZE..]);
    }
    let body = checksum(&frame[HEADER_SIZE..]);
    frame[16..32].copy_from_slice(&body.to_le_bytes());
    put_checksum(&mut frame[..HEADER_SIZE], 16);
}

/// Seals one superblock copy (the first [`SUPERBLOCK_COPY_SIZE`] bytes of `copy`).
pub fn superblock_copy(copy: &mut [u8]) {
    if let Some(copy) = copy.get_mut(..SUPERBLOCK_COPY_SIZE) {
        put_checksum(copy, 16);
    }
}

/// Seals the records of a WAL file from its start until the bytes end or all-zero
/// (never-written) space begins. With `agree`, an entry record's header is made to repeat the
/// op, view, checksum and parent of its (sealed) entry, as a writer does.
pub fn wal(wal: &mut [u8], agree: bool) {
    let mut offset = 0;
    while let Some(header) = wal.get(offset..offset + RECORD_HEADER_SIZE) {
        if header.iter().all(|byte| *byte == 0) {
            return;
        }
        let payload_start = offset + RECORD_HEADER_SIZE;
        let end = payload_start.saturating_add(u32_at(header, 40) as usize);
        let is_entry = header[36] == 1;
        if let Some(payload) = wal.get_mut(payload_start..end) {
            if is_entry && entry(payload).is_some() && agree {
                let (op_view, checksums) = (le::<16>(payload, 48), le::<32>(payload, 0));
                wal[offset + 48..offset + 64].copy_from_slice(&op_view);
                wal[offset + 64..offset + 96].copy_from_slice(&checksums);
            }
            let sealed = checksum(&wal[payload_start..end]);
            wal[offset + 16..offset + 32].copy_from_slice(&sealed.to_le_bytes());
        }
        put_checksum(&mut wal[offset..payload_start], 16);
        if end > wal.len() {
            return;
        }
        offset = end;
    }
}

/// Seals every slot of a headers file that is not all zeros (never written).
pub fn headers(headers: &mut [u8]) {
    for slot in headers.chunks_exact_mut(SLOT_SIZE) {
        if slot.iter().any(|byte| *byte != 0) {
            put_checksum(slot, 16);
        }
    }
}

/// The trailer of a checkpoint file for the checkpoint a superblock copy names: its op,
/// op checksum, snapshot size and snapshot checksum.
#[must_use]
pub fn checkpoint_trailer(copy: &[u8; SUPERBLOCK_COPY_SIZE]) -> [u8; CHECKPOINT_TRAILER_SIZE] {
    let mut trailer = [0u8; CHECKPOINT_TRAILER_SIZE];
    trailer[16..24].copy_from_slice(b"VSRCHKPT");
    trailer[24..32].copy_from_slice(&copy[80..88]);
    trailer[32..48].copy_from_slice(&copy[88..104]);
    trailer[48..56].copy_from_slice(&copy[104..112]);
    trailer[56..72].copy_from_slice(&copy[112..128]);
    put_checksum(&mut trailer, 16);
    trailer
}
