//! The write-ahead log: appending records, and replaying them on open.
//!
//! Records are appended back to back from offset 0 of the live WAL file. Appends collect in a
//! memory buffer and reach the file as one positional write per flush; the file grows in large
//! steps ([`crate::storage`]'s tuning) so most appends do not change its size. The WAL keeps an
//! index of the records of live entries (those after the checkpoint, not truncated) so a
//! rotation can copy them to the next WAL file without holding entries in memory.
//!
//! Each entry record (and each truncate that removes live entries) also gets a copy of its
//! header in the WAL's headers file ([`crate::headers`]), written after the records of the same
//! flush and synced after them.
//!
//! Replay reads records in order and applies them to a [`DurableState`] until the first record
//! that is not valid. What follows decides what that record was: if a valid record appears
//! later in the file, the log is damaged in the middle and the unreadable ops are reported; if
//! a header copy names a record at or after that point which is not there, that record was
//! written (and maybe acknowledged) and is lost: its op is reported; otherwise the tail was
//! torn by a crash and is cut off.

use std::collections::VecDeque;

use vsr::{DurableState, Write};

use crate::StorageError;
use crate::disk::{Disk, read_tolerant};
use crate::headers::{self, Headers, Slot, SlotKind};
use crate::record::{
    MAGIC_OFFSET, RECORD_HEADER_SIZE, RECORD_MAGIC, Record, RecordHeader, RecordKind,
    decode_header, decode_payload, encode_entry_record, encode_truncate_record, is_zero,
};

/// Bytes read at once while replaying.
const READ_WINDOW_BYTES: usize = 1 << 20;

/// Where the record of a live entry sits in the WAL file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LiveRecord {
    pub(crate) op: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// The live WAL file, open for appending.
#[derive(Debug)]
pub(crate) struct Wal {
    /// File name.
    pub(crate) name: String,
    /// Logical end: where the next record goes (buffered records included).
    pub(crate) end: u64,
    /// Size of the file.
    pub(crate) allocated: u64,
    /// Records not yet written to the file; they start at `end - buffer.len()`.
    buffer: Vec<u8>,
    /// Whether the file has writes not yet synced.
    unsynced: bool,
    /// The records of live entries, in op order.
    pub(crate) live: VecDeque<LiveRecord>,
    /// The copies of the entry records' headers.
    pub(crate) headers: Headers,
    grow_bytes: u64,
}

impl Wal {
    /// A WAL over an existing file whose valid records end at `end`.
    pub(crate) fn new(
        name: String,
        end: u64,
        allocated: u64,
        live: VecDeque<LiveRecord>,
        headers: Headers,
        grow_bytes: u64,
    ) -> Self {
        assert!(grow_bytes > 0);
        Self {
            name,
            end,
            allocated,
            buffer: Vec::new(),
            unsynced: false,
            live,
            headers,
            grow_bytes,
        }
    }

    /// Creates an empty, preallocated WAL file and its headers file (not yet synced).
    pub(crate) fn create(
        disk: &mut dyn Disk,
        files: WalFiles,
        grow_bytes: u64,
        headers_grow_bytes: u64,
    ) -> Result<Self, StorageError> {
        disk.create(&files.name)?;
        disk.set_len(&files.name, grow_bytes)?;
        let headers = Headers::create(disk, files.headers_name, files.start, headers_grow_bytes)?;
        let mut wal = Self::new(
            files.name,
            0,
            grow_bytes,
            VecDeque::new(),
            headers,
            grow_bytes,
        );
        wal.unsynced = true;
        Ok(wal)
    }

    /// Buffers the record of an entry, and the copy of its header.
    pub(crate) fn append(&mut self, entry: &vsr::Entry) {
        let start = self.buffer.len();
        encode_entry_record(entry, &mut self.buffer);
        let size = (self.buffer.len() - start) as u64;
        self.headers.put(&Slot {
            kind: SlotKind::Entry,
            op: entry.op,
            view: entry.view,
            record_offset: self.end,
            entry_checksum: entry.checksum,
            entry_parent: entry.parent,
        });
        self.live.push_back(LiveRecord {
            op: entry.op,
            offset: self.end,
            size,
        });
        self.end += size;
    }

    /// Buffers a truncate record, and its slot if it removes live entries. The slots of the
    /// removed entries stay: they name records before this one, which replay passes before it
    /// reaches the end of the valid records.
    pub(crate) fn truncate(&mut self, op: u64) {
        if self.live.back().is_some_and(|record| record.op > op) {
            self.headers.put(&Slot::truncate(op, self.end));
        }
        let start = self.buffer.len();
        encode_truncate_record(op, &mut self.buffer);
        self.end += (self.buffer.len() - start) as u64;
        while self.live.back().is_some_and(|record| record.op > op) {
            self.live.pop_back();
        }
    }

    /// Buffers a copy of a verified record (header and payload) of a live entry.
    fn append_raw(&mut self, header: &RecordHeader, bytes: &[u8]) {
        let size = bytes.len() as u64;
        self.headers.put(&Slot {
            kind: SlotKind::Entry,
            op: header.op,
            view: header.view,
            record_offset: self.end,
            entry_checksum: header.entry_checksum,
            entry_parent: header.entry_parent,
        });
        self.live.push_back(LiveRecord {
            op: header.op,
            offset: self.end,
            size,
        });
        self.buffer.extend_from_slice(bytes);
        self.end += size;
    }

    /// Bytes buffered in memory.
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Writes the buffer to the file, growing it first when needed, then the buffered header
    /// copies to the headers file: a crash that keeps a slot keeps the record it names.
    pub(crate) fn flush(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        self.flush_records(disk)?;
        self.headers.flush(disk)
    }

    fn flush_records(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.end > self.allocated {
            let allocated = self.end.div_ceil(self.grow_bytes) * self.grow_bytes;
            disk.set_len(&self.name, allocated)?;
            self.allocated = allocated;
        }
        let offset = self.end - self.buffer.len() as u64;
        disk.write_at(&self.name, offset, &self.buffer)?;
        self.buffer.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Flushes and makes everything written durable: the WAL first, then the headers file, so
    /// that a disk which keeps write order never holds a durable slot without its record.
    pub(crate) fn sync(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        let buffered = !self.buffer.is_empty();
        self.flush(disk)?;
        if cfg!(feature = "bug-headers-synced-first") {
            self.headers.sync(disk)?;
        }
        let unsynced = if cfg!(feature = "bug-wal-sync-skips-flushed") {
            buffered
        } else {
            self.unsynced
        };
        if unsynced {
            disk.sync(&self.name)?;
            self.unsynced = false;
        }
        self.headers.sync(disk)
    }

    /// Drops live records at or before a checkpoint, as [`DurableState::apply`] drops entries.
    pub(crate) fn checkpoint(&mut self, op: u64) {
        while self.live.front().is_some_and(|record| record.op <= op) {
            self.live.pop_front();
        }
        if self.live.front().is_some_and(|record| record.op != op + 1) {
            self.live.clear();
        }
    }

    /// Creates the next WAL file holding copies of this WAL's live records, and syncs it.
    pub(crate) fn rotate(
        &mut self,
        disk: &mut dyn Disk,
        files: WalFiles,
    ) -> Result<Wal, StorageError> {
        self.flush(disk)?;
        let headers_grow_bytes = self.headers.grow_bytes();
        let mut next = Wal::create(disk, files, self.grow_bytes, headers_grow_bytes)?;
        for record in &self.live {
            let mut bytes = vec![0u8; usize::try_from(record.size).expect("records are bounded")];
            let read = disk.read_at(&self.name, record.offset, &mut bytes)?;
            let header = bytes
                .first_chunk::<RECORD_HEADER_SIZE>()
                .and_then(decode_header);
            let valid = header.filter(|header| {
                read == bytes.len()
                    && decode_payload(header, &bytes[RECORD_HEADER_SIZE..]).is_some()
            });
            let Some(header) = valid else {
                return Err(StorageError::Corrupt(format!(
                    "the record of op {} in {} became unreadable before it could be copied",
                    record.op, self.name
                )));
            };
            next.append_raw(&header, &bytes);
        }
        next.sync(disk)?;
        disk.sync_dir()?;
        Ok(next)
    }
}

/// The files of one WAL: its records and the copies of their headers.
#[derive(Clone, Debug)]
pub(crate) struct WalFiles {
    /// The WAL file.
    pub(crate) name: String,
    /// Its headers file.
    pub(crate) headers_name: String,
    /// The first op the WAL may hold.
    pub(crate) start: u64,
}

/// What replaying a WAL file found.
#[derive(Debug)]
pub(crate) struct Replay {
    /// End of the last record applied: the WAL's logical end.
    pub(crate) end: u64,
    /// Size of the file.
    pub(crate) file_size: u64,
    /// The records of live entries.
    pub(crate) live: VecDeque<LiveRecord>,
    /// Ops whose records are unreadable while valid records follow them, or whose records the
    /// headers file says were written where no valid record is.
    pub(crate) corrupt_ops: Vec<u64>,
    /// Damaged records at the end of the log, with nothing valid after them and no header copy
    /// naming them.
    pub(crate) torn_tail_records: usize,
    /// Whether anything but zeros follows `end`.
    pub(crate) dirty_tail: bool,
    /// Header copies that name records at or after `end`: they are zeroed when the tail is
    /// cut, before anything is written there.
    pub(crate) stale_slots: Vec<Slot>,
    /// Size of the headers file; `None` if it is missing.
    pub(crate) headers_size: Option<u64>,
}

/// One step of the scan.
enum Step {
    /// A valid record.
    Valid { size: u64, record: Record },
    /// A record whose header is valid but whose payload is not.
    Torn { size: u64, op: Option<u64> },
    /// Neither a valid header nor zeros.
    Garbage,
    /// Zeros, or the end of the file.
    Empty,
}
/// Reads a WAL file through a window of [`READ_WINDOW_BYTES`].
struct Reader<'a> {
    disk: &'a mut dyn Disk,
    name: &'a str,
    file_size: u64,
    window_start: u64,
    window: Vec<u8>,
}

impl Reader<'_> {
    /// `size` bytes at `offset`, or `None` past the end of the file.
    fn read(&mut self, offset: u64, size: usize) -> Result<Option<&[u8]>, StorageError> {
        if offset + size as u64 > self.file_size {
            return Ok(None);
        }
        let window_end = self.window_start + self.window.len() as u64;
        if offset < self.window_start || offset + size as u64 > window_end {
            let available = usize::try_from(self.file_size - offset).unwrap_or(usize::MAX);
            self.window
                .resize(size.max(READ_WINDOW_BYTES).min(available), 0);
            let read = read_tolerant(self.disk, self.name, offset, &mut self.window)?;
            self.window.truncate(read);
            self.window_start = offset;
            if read < size {
                return Ok(None);
            }
        }
        let start = usize::try_from(offset - self.window_start).expect("inside the window");
        Ok(Some(&self.window[start..start + size]))
    }

    fn step(&mut self, offset: u64) -> Result<Step, StorageError> {
        let Some(bytes) = self.read(offset, RECORD_HEADER_SIZE)? else {
            let rest = usize::try_from(self.file_size.saturating_sub(offset)).unwrap_or(0);
            let rest_zero = self.read(offset, rest)?.is_none_or(is_zero);
            return Ok(if rest_zero {
                Step::Empty
            } else {
                Step::Garbage
            });
        };
        if is_zero(bytes) {
            return Ok(Step::Empty);
        }
        let Some(header) = decode_header(bytes.try_into().expect("a header")) else {
            return Ok(Step::Garbage);
        };
        let size = header.record_size() as u64;
        let op = matches!(header.kind, RecordKind::Entry).then_some(header.op);
        let payload = self.read(
            offset + RECORD_HEADER_SIZE as u64,
            header.payload_size as usize,
        )?;
        match payload.and_then(|payload| decode_payload(&header, payload)) {
            Some(record) => Ok(Step::Valid { size, record }),
            None => Ok(Step::Torn { size, op }),
        }
    }

    /// The first offset after `from` where a valid record header starts.
    fn resync(&mut self, from: u64) -> Result<Option<u64>, StorageError> {
        let mut start = from;
        while start + RECORD_HEADER_SIZE as u64 <= self.file_size {
            let size = usize::try_from(self.file_size - start).unwrap_or(usize::MAX);
            let size = size.min(READ_WINDOW_BYTES);
            let bytes = self.read(start, size)?.expect("inside the file");
            let found = bytes.windows(RECORD_HEADER_SIZE).position(|candidate| {
                candidate[MAGIC_OFFSET..MAGIC_OFFSET + 4] == RECORD_MAGIC
                    && decode_header(candidate.try_into().expect("a header")).is_some()
            });
            if let Some(position) = found {
                return Ok(Some(start + position as u64));
            }
            start += (size - RECORD_HEADER_SIZE + 1) as u64;
        }
        Ok(None)
    }
}

/// Replays the WAL `files` onto `state`, then reads the header copies to tell a torn tail from
/// lost records. Lost records of ops at or before `checkpoint_op` are not damage: the
/// checkpoint holds their effects.
pub(crate) fn replay(
    disk: &mut dyn Disk,
    files: &WalFiles,
    checkpoint_op: u64,
    state: &mut DurableState,
) -> Result<Replay, StorageError> {
    let file_size = disk.len(&files.name)?;
    let mut reader = Reader {
        disk: &mut *disk,
        name: &files.name,
        file_size,
        window_start: 0,
        window: Vec::new(),
    };
    let mut live = VecDeque::new();
    let mut offset = 0;
    let first_bad = loop {
        match reader.step(offset)? {
            Step::Valid { size, record } if applies(state, &record) => {
                apply(state, &mut live, record, offset, size);
                offset += size;
            }
            step => break step,
        }
    };
    let end = offset;
    let mut tail = Tail::default();
    if matches!(first_bad, Step::Valid { .. }) {
        // A valid record that does not continue the log: something between was lost.
        tail.bad_records = 1;
    }
    scan_tail(&mut reader, &mut tail, end, first_bad)?;
    let claims = headers::claims(disk, &files.headers_name, files.start, end)?;
    let lost: Vec<&Slot> = claims
        .slots
        .iter()
        .filter(|slot| !tail.holds(slot))
        .collect();
    let mut corrupt_ops = if tail.valid_after_bad {
        tail.corrupt_ops(state)
    } else {
        Vec::new()
    };
    // A lost truncate puts every op it removed in doubt: report the first.
    corrupt_ops.extend(
        lost.iter()
            .map(|slot| match slot.kind {
                SlotKind::Entry => slot.op,
                SlotKind::Truncate => slot.op + 1,
            })
            .filter(|op| *op > checkpoint_op),
    );
    if cfg!(feature = "bug-damage-as-torn-tail") {
        corrupt_ops.clear();
    }
    corrupt_ops.sort_unstable();
    corrupt_ops.dedup();
    let lost_offsets: Vec<u64> = lost.iter().map(|slot| slot.record_offset).collect();
    Ok(Replay {
        end,
        file_size,
        live,
        corrupt_ops,
        torn_tail_records: tail.torn_tail_records(&lost_offsets),
        dirty_tail: tail.bad_records > 0 || tail.valid_after_bad,
        stale_slots: claims.slots,
        headers_size: claims.file_size,
    })
}

fn applies(state: &DurableState, record: &Record) -> bool {
    match record {
        Record::Truncate { .. } => true,
        Record::Append(entry) => {
            let expected = state
                .entries
                .back()
                .map_or(state.checkpoint_op() + 1, |last| last.op + 1);
            entry.op == expected
        }
    }
}

fn apply(
    state: &mut DurableState,
    live: &mut VecDeque<LiveRecord>,
    record: Record,
    offset: u64,
    size: u64,
) {
    match record {
        Record::Append(entry) => {
            live.push_back(LiveRecord {
                op: entry.op,
                offset,
                size,
            });
            state.apply(&Write::Append(entry));
        }
        Record::Truncate { op } => {
            while live.back().is_some_and(|record| record.op > op) {
                live.pop_back();
            }
            state.apply(&Write::Truncate { op });
        }
    }
}

/// One record after the valid prefix, as far as the damage report needs it.
#[derive(Clone, Copy)]
enum TailItem {
    /// A valid entry record: its op, its entry's checksum, its offset.
    Entry {
        op: u64,
        checksum: u128,
        offset: u64,
    },
    /// A valid truncate record: its last kept op, its offset.
    Truncate { op: u64, offset: u64 },
    /// An unreadable record at `offset`, with its op when its header survived.
    Bad { op: Option<u64>, offset: u64 },
}

/// What lies after the valid prefix of the log.
#[derive(Default)]
struct Tail {
    items: Vec<TailItem>,
    bad_records: usize,
    valid_after_bad: bool,
}

impl Tail {
    fn push(&mut self, item: TailItem) {
        if matches!(item, TailItem::Bad { .. }) {
            self.bad_records += 1;
        } else {
            self.valid_after_bad |= self.bad_records > 0;
        }
        self.items.push(item);
    }

    /// Ops known or inferred to be lost, up to the last valid record.
    fn corrupt_ops(&self, state: &DurableState) -> Vec<u64> {
        let mut next_op = state
            .entries
            .back()
            .map_or(state.checkpoint_op() + 1, |last| last.op + 1);
        let mut ops = Vec::new();
        for item in &self.items[..self.last_valid().map_or(0, |last| last + 1)] {
            match *item {
                TailItem::Bad { op: Some(op), .. } => {
                    ops.extend(next_op..op);
                    ops.push(op);
                    next_op = op + 1;
                }
                TailItem::Bad { op: None, .. } => {}
                TailItem::Entry { op, .. } => {
                    ops.extend(next_op..op);
                    next_op = op + 1;
                }
                TailItem::Truncate { op, .. } => next_op = op + 1,
            }
        }
        ops.sort_unstable();
        ops.dedup();
        ops
    }

    fn last_valid(&self) -> Option<usize> {
        self.items
            .iter()
            .rposition(|item| !matches!(item, TailItem::Bad { .. }))
    }

    /// Whether the valid record `slot` names sits where the slot says.
    fn holds(&self, slot: &Slot) -> bool {
        self.items.iter().any(|item| match (*item, slot.kind) {
            (
                TailItem::Entry {
                    checksum, offset, ..
                },
                SlotKind::Entry,
            ) => offset == slot.record_offset && checksum == slot.entry_checksum,
            (TailItem::Truncate { op, offset }, SlotKind::Truncate) => {
                offset == slot.record_offset && op == slot.op
            }
            _ => false,
        })
    }

    /// Unreadable records after the last valid one that no header copy names: a crash tore
    /// them while they were written, before any sync covered them.
    fn torn_tail_records(&self, lost_offsets: &[u64]) -> usize {
        let after = self.last_valid().map_or(0, |last| last + 1);
        self.items[after..]
            .iter()
            .filter(|item| {
                matches!(item, TailItem::Bad { offset, .. } if !lost_offsets.contains(offset))
            })
            .count()
    }
}

/// Walks everything after the valid prefix, resynchronising after each unreadable spot.
fn scan_tail(
    reader: &mut Reader<'_>,
    tail: &mut Tail,
    end: u64,
    first: Step,
) -> Result<(), StorageError> {
    let mut offset = end;
    let mut step = first;
    loop {
        let next = match step {
            Step::Valid { size, record } => {
                tail.push(match record {
                    Record::Append(entry) => TailItem::Entry {
                        op: entry.op,
                        checksum: entry.checksum,
                        offset,
                    },
                    Record::Truncate { op } => TailItem::Truncate { op, offset },
                });
                Some(offset + size)
            }
            Step::Torn { size, op } => {
                tail.push(TailItem::Bad { op, offset });
                Some(offset + size)
            }
            Step::Garbage => {
                tail.push(TailItem::Bad { op: None, offset });
                reader.resync(offset + 1)?
            }
            Step::Empty => reader.resync(offset + 1)?,
        };
        match next {
            Some(next) if next < reader.file_size => {
                offset = next;
                step = reader.step(offset)?;
            }
            _ => return Ok(()),
        }
    }
}
