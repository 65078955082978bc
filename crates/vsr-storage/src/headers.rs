//! The headers file: a redundant copy of each entry record's header, kept apart from the WAL.
//!
//! Each WAL file `wal-<start>-<generation>.log` has a companion `wal-<start>-<generation>.headers`:
//! an array of [`SLOT_SIZE`]-byte slots, slot `op - start` for op `op`. Appending an entry
//! buffers its slot here; [`crate::wal::Wal::sync`] writes the buffered slots only after the
//! WAL's fdatasync returned, then syncs this file. So any slot on disk that is not all zeros,
//! whole or torn, names a record that was synced before the slot was written. The slot names
//! the op, view, checksum and parent of the entry and the offset of its record in the WAL
//! file. A truncate that removes live entries writes a slot too, at the index of the first op
//! it removes (whose entry is gone): so a synced truncate whose record rots is not mistaken
//! for a torn one, which would bring the removed entries back. The file grows with the WAL (in
//! steps, like the WAL) and is replaced with it at every rotation, so it never wraps: a slot
//! can only be stale because its op was truncated away or because a crash cut the log behind
//! it.
//!
//! On open the slots tell a torn tail from a lost record: a valid slot that names a record at or
//! after the end of the WAL's valid records, where no valid record with that checksum sits, is a
//! record that was synced and may have been acknowledged. A slot that is neither zeros nor valid
//! after the last valid op ([`Scan::damaged`]) is one that rotted or was torn while being
//! written; [`crate::wal::replay`] decides which. The replica reports a lost op damaged and
//! repairs it. Stale slots never name an offset at or after the end: records are appended at
//! increasing offsets, so a truncated op's record lies before the truncate record that removed
//! it, inside the valid records; and the slots behind a cut are zeroed before anything is
//! written after it.
//!
//! | offset | size | field            | meaning                                          |
//! |-------:|-----:|------------------|--------------------------------------------------|
//! |      0 |   16 | `checksum`       | checksum of slot bytes 16..128                   |
//! |     16 |    4 | `magic`          | `VSRH`                                           |
//! |     20 |    1 | `kind`           | 1 entry, 2 truncate                              |
//! |     21 |    3 | reserved         | 0                                                |
//! |     24 |    8 | `op`             | the entry's op, or the truncate's last kept op   |
//! |     32 |    8 | `view`           | the entry's view (0 for truncate)                |
//! |     40 |    8 | `record_offset`  | where the record starts in the WAL file          |
//! |     48 |   16 | `entry_checksum` | the entry's checksum (0 for truncate)            |
//! |     64 |   16 | `entry_parent`   | the entry's parent (0 for truncate)              |
//! |     80 |   48 | reserved         | 0                                                |
//!
//! An all-zero slot was never written. Slots are 128 bytes so that a 512-byte sector holds four
//! whole slots: a torn sector write damages whole slots, which their checksums reveal.

use std::collections::BTreeMap;

use vsr::EntryChecksum;
use vsr::checksum::checksum;

use crate::StorageError;
use crate::disk::{Disk, read_tolerant};
use crate::file::GrowingFile;
use crate::record::{is_zero, u64_at, u128_at};

/// Bytes of one slot.
pub(crate) const SLOT_SIZE: usize = 128;
const _: () = assert!(512 % SLOT_SIZE == 0);

const SLOT_MAGIC: [u8; 4] = *b"VSRH";

/// Slots read at once on open.
const READ_SLOTS: usize = 8192;

/// What record a slot copies the header of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotKind {
    /// An entry record; the slot is at index `op - start`.
    Entry,
    /// A truncate record that removed live entries; the slot is at the index of the first op
    /// it removed (`op + 1`, or the WAL's start if that is later), and names no entry.
    Truncate,
}

/// The copy of one record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Entry or truncate.
    pub(crate) kind: SlotKind,
    /// The entry's op, or the truncate's last kept op.
    pub(crate) op: u64,
    /// The entry's view.
    pub(crate) view: u64,
    /// Where the entry's record starts in the WAL file.
    pub(crate) record_offset: u64,
    /// The entry's checksum.
    pub(crate) entry_checksum: EntryChecksum,
    /// The entry's parent.
    pub(crate) entry_parent: EntryChecksum,
}

const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;

impl Slot {
    /// The slot of a truncate record at `record_offset` keeping ops up to `op`.
    pub(crate) fn truncate(op: u64, record_offset: u64) -> Self {
        Self {
            kind: SlotKind::Truncate,
            op,
            view: 0,
            record_offset,
            entry_checksum: EntryChecksum(0),
            entry_parent: EntryChecksum(0),
        }
    }

    /// The slot's index in the headers file of a WAL starting at op `start`.
    pub(crate) fn index(&self, start: u64) -> u64 {
        match self.kind {
            SlotKind::Entry => self.op - start,
            SlotKind::Truncate => (self.op + 1).max(start) - start,
        }
    }
}

/// Encodes one sealed slot.
pub(crate) fn encode_slot(slot: &Slot) -> [u8; SLOT_SIZE] {
    let mut bytes = [0u8; SLOT_SIZE];
    bytes[16..20].copy_from_slice(&SLOT_MAGIC);
    bytes[20] = match slot.kind {
        SlotKind::Entry => KIND_ENTRY,
        SlotKind::Truncate => KIND_TRUNCATE,
    };
    bytes[24..32].copy_from_slice(&slot.op.to_le_bytes());
    bytes[32..40].copy_from_slice(&slot.view.to_le_bytes());
    bytes[40..48].copy_from_slice(&slot.record_offset.to_le_bytes());
    bytes[48..64].copy_from_slice(&slot.entry_checksum.get().to_le_bytes());
    bytes[64..80].copy_from_slice(&slot.entry_parent.get().to_le_bytes());
    let sealed = checksum(&bytes[16..]);
    bytes[..16].copy_from_slice(&sealed.to_le_bytes());
    bytes
}

/// Verifies and decodes one slot; `None` unless `bytes` is exactly one valid slot.
pub(crate) fn decode_slot(bytes: &[u8]) -> Option<Slot> {
    let bytes: &[u8; SLOT_SIZE] = bytes.try_into().ok()?;
    let valid = bytes[16..20] == SLOT_MAGIC
        && u128_at(bytes, 0) == checksum(&bytes[16..])
        && is_zero(&bytes[21..24])
        && is_zero(&bytes[80..]);
    let kind = match bytes[20] {
        KIND_ENTRY => SlotKind::Entry,
        KIND_TRUNCATE if is_zero(&bytes[32..40]) && is_zero(&bytes[48..80]) => SlotKind::Truncate,
        _ => return None,
    };
    valid.then(|| Slot {
        kind,
        op: u64_at(bytes, 24),
        view: u64_at(bytes, 32),
        record_offset: u64_at(bytes, 40),
        entry_checksum: EntryChecksum(u128_at(bytes, 48)),
        entry_parent: EntryChecksum(u128_at(bytes, 64)),
    })
}

/// The headers file of the live WAL, open for writing.
#[derive(Debug)]
pub(crate) struct Headers {
    /// The headers file.
    pub(crate) file: GrowingFile,
    /// The op of slot 0: the WAL's start.
    start: u64,
    /// Slots not yet written, by index; a later slot for the same op replaces an earlier one.
    pending: BTreeMap<u64, [u8; SLOT_SIZE]>,
    /// The file does not exist (data written before headers files existed): the first write
    /// after open creates it.
    missing: bool,
}

impl Headers {
    /// The headers file `name` of a WAL starting at op `start`, `allocated` bytes long.
    pub(crate) fn new(name: String, start: u64, allocated: u64, grow_bytes: u64) -> Self {
        Self::with_file(GrowingFile::new(name, allocated, grow_bytes), start)
    }

    fn with_file(file: GrowingFile, start: u64) -> Self {
        assert!(file.grow_bytes().is_multiple_of(SLOT_SIZE as u64));
        Self {
            file,
            start,
            pending: BTreeMap::new(),
            missing: false,
        }
    }

    /// Headers for a file that does not exist yet; [`Self::create_if_missing`] creates it.
    pub(crate) fn new_missing(name: String, start: u64, grow_bytes: u64) -> Self {
        let mut headers = Self::new(name, start, 0, grow_bytes);
        headers.missing = true;
        headers
    }

    /// Creates the file empty and preallocated (not yet synced).
    pub(crate) fn create(
        disk: &mut dyn Disk,
        name: String,
        start: u64,
        grow_bytes: u64,
    ) -> Result<Self, StorageError> {
        let file = GrowingFile::create(disk, name, grow_bytes)?;
        Ok(Self::with_file(file, start))
    }

    /// Creates the file if open found it missing, durably.
    pub(crate) fn create_if_missing(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        if self.missing {
            vsr::mark!(HeadersFileRecreated);
            let pending = std::mem::take(&mut self.pending);
            let name = self.file.name.clone();
            *self = Self::create(disk, name, self.start, self.file.grow_bytes())?;
            self.pending = pending;
            self.sync(disk)?;
            disk.sync_dir()?;
        }
        Ok(())
    }

    /// The first op of the WAL this file belongs to.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// The step the file grows in.
    pub(crate) fn grow_bytes(&self) -> u64 {
        self.file.grow_bytes()
    }

    /// Buffers the slot of a record.
    pub(crate) fn put(&mut self, slot: &Slot) {
        assert!(slot.op >= self.start || slot.kind == SlotKind::Truncate);
        self.pending
            .insert(slot.index(self.start), encode_slot(slot));
    }

    /// Buffers zeros over the slots at `indexes`: they name records that are being cut, or
    /// are damaged and name no record of the log.
    pub(crate) fn clear(&mut self, indexes: &[u64]) {
        for index in indexes {
            self.pending.insert(*index, [0u8; SLOT_SIZE]);
        }
    }

    /// Writes the buffered slots, one write per run of consecutive slots, growing the file
    /// first when needed.
    pub(crate) fn flush(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        let Some(last) = self.pending.keys().next_back() else {
            return Ok(());
        };
        assert!(
            !self.missing,
            "the headers file is created before the first write"
        );
        self.file.reserve(disk, (last + 1) * SLOT_SIZE as u64)?;
        let pending = std::mem::take(&mut self.pending);
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0;
        for (index, bytes) in pending {
            if !run.is_empty() && run_start + (run.len() / SLOT_SIZE) as u64 != index {
                self.file
                    .write_at(disk, run_start * SLOT_SIZE as u64, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = index;
            }
            run.extend_from_slice(&bytes);
        }
        self.file.write_at(disk, run_start * SLOT_SIZE as u64, &run)
    }

    /// Flushes and makes everything written durable.
    pub(crate) fn sync(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        self.flush(disk)?;
        self.file.sync(disk)
    }
}

/// What open found in a headers file.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Valid slots naming a record at or after the offset asked about, in op order.
    pub(crate) claims: Vec<Slot>,
    /// Indexes of the slots that are neither all zeros nor valid at their index (rotten, torn
    /// while being written, or misdirected), in order.
    pub(crate) damaged: Vec<u64>,
    /// The expected slots that the file does not hold (a slot missing, damaged, or naming
    /// another record), for the indexes the file covers.
    pub(crate) mismatched: Vec<Slot>,
    /// Slots the file covers: indexes from here on were never written.
    pub(crate) slot_count: u64,
    /// Size of the file; `None` if it is missing.
    pub(crate) file_size: Option<u64>,
}

/// Reads the headers file `name` of a WAL starting at op `start`. Returns the valid slots that
/// name a record at or after `from_offset`, the indexes of damaged slots, and the slots that
/// differ from `expected(index)` where that is given. A slot whose op does not match its index
/// is not valid (a misdirected write).
pub(crate) fn scan(
    disk: &mut dyn Disk,
    name: &str,
    start: u64,
    from_offset: u64,
    expected: &dyn Fn(u64) -> Option<Slot>,
) -> Result<Scan, StorageError> {
    if !disk.list()?.iter().any(|file| file == name) {
        return Ok(Scan::default());
    }
    let file_size = disk.len(name)?;
    let mut scan = Scan {
        file_size: Some(file_size),
        ..Scan::default()
    };
    let buffer_size =
        (READ_SLOTS * SLOT_SIZE).min(usize::try_from(file_size).unwrap_or(usize::MAX));
    let mut buffer = vec![0u8; buffer_size.max(SLOT_SIZE)];
    let mut offset = 0;
    while offset < file_size {
        let read = read_tolerant(disk, name, offset, &mut buffer)?;
        if read == 0 {
            break;
        }
        for (position, bytes) in buffer[..read].chunks_exact(SLOT_SIZE).enumerate() {
            let index = offset / SLOT_SIZE as u64 + position as u64;
            let decoded = decode_slot(bytes);
            let placed = decoded.filter(|slot| match slot.kind {
                SlotKind::Entry => slot.op >= start && slot.index(start) == index,
                SlotKind::Truncate => slot.op < u64::MAX && slot.index(start) == index,
            });
            if decoded.is_some() && placed.is_none() {
                vsr::mark!(HeadersMisdirectedSlotRejected);
            }
            match placed {
                Some(slot) if slot.record_offset >= from_offset => scan.claims.push(slot),
                Some(_) => {}
                None if is_zero(bytes) => {}
                None => scan.damaged.push(index),
            }
            if let Some(slot) = expected(index).filter(|slot| placed != Some(*slot)) {
                scan.mismatched.push(slot);
            }
            scan.slot_count = index + 1;
        }
        offset += read as u64;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn slots_round_trip_and_detect_every_flip_and_truncation(
            fields in any::<(u64, u64, u64, u128, u128)>(),
            truncate in any::<bool>(),
        ) {
            let (op, view, record_offset, entry_checksum, entry_parent) = fields;
            let slot = if truncate {
                Slot::truncate(op, record_offset)
            } else {
                Slot {
                    kind: SlotKind::Entry,
                    op,
                    view,
                    record_offset,
                    entry_checksum: EntryChecksum(entry_checksum),
                    entry_parent: EntryChecksum(entry_parent),
                }
            };
            let bytes = encode_slot(&slot);
            prop_assert_eq!(decode_slot(&bytes), Some(slot));
            for bit in 0..SLOT_SIZE * 8 {
                let mut flipped = bytes;
                flipped[bit / 8] ^= 1 << (bit % 8);
                prop_assert_eq!(decode_slot(&flipped), None, "bit {} flipped went unnoticed", bit);
            }
            for size in 0..SLOT_SIZE {
                prop_assert_eq!(decode_slot(&bytes[..size]), None, "cut to {} bytes", size);
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            prop_assert_eq!(decode_slot(&longer), None);
        }
    }

    #[test]
    fn a_never_written_slot_is_not_valid() {
        assert_eq!(decode_slot(&[0u8; SLOT_SIZE]), None);
    }
}
