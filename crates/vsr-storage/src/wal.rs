//! The write-ahead log: appending records, and replaying them on open.
//!
//! Records are appended back to back from offset 0 of the live WAL file. Appends collect in a
//! memory buffer and reach the file as one positional write per flush; the file grows in large
//! steps ([`crate::storage`]'s tuning) so most appends do not change its size. The WAL keeps an
//! index of the records of live entries (those after the checkpoint, not truncated) so a
//! rotation can copy them to the next WAL file without holding entries in memory.
//!
//! Replay reads records in order and applies them to a [`DurableState`] until the first record
//! that is not valid. What follows decides what that record was: if a valid record appears
//! later in the file, the log is damaged in the middle and the unreadable ops are reported; if
//! nothing valid follows, the tail was torn by a crash and is cut off.

use std::collections::VecDeque;

use vsr::{DurableState, Write};

use crate::StorageError;
use crate::disk::Disk;
use crate::record::{
    MAGIC_OFFSET, RECORD_HEADER_SIZE, RECORD_MAGIC, Record, decode_header, decode_payload,
    encode_entry_record, encode_truncate_record, is_zero,
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
    grow_bytes: u64,
}

impl Wal {
    /// A WAL over an existing file whose valid records end at `end`.
    pub(crate) fn new(
        name: String,
        end: u64,
        allocated: u64,
        live: VecDeque<LiveRecord>,
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
            grow_bytes,
        }
    }

    /// Creates an empty, preallocated WAL file (not yet synced).
    pub(crate) fn create(
        disk: &mut dyn Disk,
        name: String,
        grow_bytes: u64,
    ) -> Result<Self, StorageError> {
        disk.create(&name)?;
        disk.set_len(&name, grow_bytes)?;
        let mut wal = Self::new(name, 0, grow_bytes, VecDeque::new(), grow_bytes);
        wal.unsynced = true;
        Ok(wal)
    }

    /// Buffers the record of an entry.
    pub(crate) fn append(&mut self, entry: &vsr::Entry) {
        let start = self.buffer.len();
        encode_entry_record(entry, &mut self.buffer);
        let size = (self.buffer.len() - start) as u64;
        self.live.push_back(LiveRecord {
            op: entry.op,
            offset: self.end,
            size,
        });
        self.end += size;
    }

    /// Buffers a truncate record.
    pub(crate) fn truncate(&mut self, op: u64) {
        let start = self.buffer.len();
        encode_truncate_record(op, &mut self.buffer);
        self.end += (self.buffer.len() - start) as u64;
        while self.live.back().is_some_and(|record| record.op > op) {
            self.live.pop_back();
        }
    }

    /// Buffers a copy of a verified record (header and payload) of a live entry.
    fn append_raw(&mut self, op: u64, bytes: &[u8]) {
        let size = bytes.len() as u64;
        self.live.push_back(LiveRecord {
            op,
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

    /// Writes the buffer to the file, growing it first when needed.
    pub(crate) fn flush(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
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

    /// Flushes and makes everything written durable.
    pub(crate) fn sync(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        self.flush(disk)?;
        if self.unsynced {
            disk.sync(&self.name)?;
            self.unsynced = false;
        }
        Ok(())
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
        name: String,
    ) -> Result<Wal, StorageError> {
        self.flush(disk)?;
        let mut next = Wal::create(disk, name, self.grow_bytes)?;
        for record in &self.live {
            let mut bytes = vec![0u8; usize::try_from(record.size).expect("records are bounded")];
            let read = disk.read_at(&self.name, record.offset, &mut bytes)?;
            let header = bytes
                .first_chunk::<RECORD_HEADER_SIZE>()
                .and_then(decode_header);
            let valid = read == bytes.len()
                && header.is_some_and(|header| {
                    decode_payload(&header, &bytes[RECORD_HEADER_SIZE..]).is_some()
                });
            if !valid {
                return Err(StorageError::Corrupt(format!(
                    "the record of op {} in {} became unreadable before it could be copied",
                    record.op, self.name
                )));
            }
            next.append_raw(record.op, &bytes);
        }
        next.sync(disk)?;
        disk.sync_dir()?;
        Ok(next)
    }
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
    /// Ops whose records are unreadable while valid records follow them.
    pub(crate) corrupt_ops: Vec<u64>,
    /// Damaged records at the end of the log, with nothing valid after them.
    pub(crate) torn_tail_records: usize,
    /// Whether anything but zeros follows `end`.
    pub(crate) dirty_tail: bool,
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
            let read = self.disk.read_at(self.name, offset, &mut self.window)?;
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
        let op = matches!(header.kind, crate::record::RecordKind::Entry).then_some(header.op);
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

/// Replays the WAL file `name` onto `state`.
pub(crate) fn replay(
    disk: &mut dyn Disk,
    name: &str,
    state: &mut DurableState,
) -> Result<Replay, StorageError> {
    let file_size = disk.len(name)?;
    let mut reader = Reader {
        disk,
        name,
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
    let dirty_tail = tail.bad_records > 0 || tail.valid_after_bad;
    let (corrupt_ops, torn_tail_records) = if tail.valid_after_bad {
        (tail.corrupt_ops(state), tail.bad_after_last_valid)
    } else {
        (Vec::new(), tail.bad_records)
    };
    Ok(Replay {
        end,
        file_size,
        live,
        corrupt_ops,
        torn_tail_records,
        dirty_tail,
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
enum TailItem {
    /// A valid entry record.
    Entry(u64),
    /// A valid truncate record.
    Truncate(u64),
    /// An unreadable record, with its op when its header survived.
    Bad(Option<u64>),
}

/// What lies after the valid prefix of the log.
#[derive(Default)]
struct Tail {
    items: Vec<TailItem>,
    bad_records: usize,
    bad_after_last_valid: usize,
    valid_after_bad: bool,
}

impl Tail {
    fn push(&mut self, item: TailItem) {
        if matches!(item, TailItem::Bad(_)) {
            self.bad_records += 1;
            self.bad_after_last_valid += 1;
        } else {
            self.valid_after_bad |= self.bad_records > 0;
            self.bad_after_last_valid = 0;
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
        let last_valid = self
            .items
            .iter()
            .rposition(|item| !matches!(item, TailItem::Bad(_)));
        for item in &self.items[..last_valid.map_or(0, |last| last + 1)] {
            match *item {
                TailItem::Bad(Some(op)) => {
                    ops.extend(next_op..op);
                    ops.push(op);
                    next_op = op + 1;
                }
                TailItem::Bad(None) => {}
                TailItem::Entry(op) => {
                    ops.extend(next_op..op);
                    next_op = op + 1;
                }
                TailItem::Truncate(op) => next_op = op + 1,
            }
        }
        ops.sort_unstable();
        ops.dedup();
        ops
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
                    Record::Append(entry) => TailItem::Entry(entry.op),
                    Record::Truncate { op } => TailItem::Truncate(op),
                });
                Some(offset + size)
            }
            Step::Torn { size, op } => {
                tail.push(TailItem::Bad(op));
                Some(offset + size)
            }
            Step::Garbage => {
                tail.push(TailItem::Bad(None));
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
