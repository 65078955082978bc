//! The write-ahead log: appending records, and replaying them on open.
//!
//! Records are appended back to back from offset 0 of the live WAL file. Appends collect in a
//! memory buffer and reach the file as one positional write per flush; the file grows in large
//! steps ([`crate::storage`]'s tuning) so most appends do not change its size. The WAL keeps an
//! index of the records of live entries (those after the checkpoint, not truncated) so a
//! rotation can copy them to the next WAL file without holding entries in memory.
//!
//! Each entry record (and each truncate that removes live entries) also gets a copy of its
//! header in the WAL's headers file ([`crate::headers`]). The copies are written only by
//! [`Wal::sync`], after the WAL's fdatasync returned, and then synced: a slot that is not all
//! zeros names a record that was durable before the slot was written.
//!
//! Replay reads records in order and applies them to a [`DurableState`] until the first record
//! that is not valid. What follows decides what that record was: if a valid record appears
//! later in the file, the log is damaged in the middle and the unreadable ops are reported; if
//! a header copy names a record at or after that point which is not there, that record was
//! synced (and maybe acknowledged) and is lost: its op is reported; if a slot after the last
//! valid op is damaged while something unreadable follows the valid records, the record that
//! slot named was synced and is lost with its copy: its op is reported; otherwise the tail was
//! torn by a crash and is cut off.

use std::collections::{BTreeMap, VecDeque};

use vsr::{DurableState, EntryChecksum, Op, Write};

use crate::StorageError;
use crate::disk::{Disk, read_noting_unreadable};
use crate::file::GrowingFile;
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
    pub(crate) op: Op,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// The live WAL file, open for appending.
#[derive(Debug)]
pub(crate) struct Wal {
    /// The WAL file.
    pub(crate) file: GrowingFile,
    /// Logical end: where the next record goes (buffered records included).
    pub(crate) end: u64,
    /// Records not yet written to the file; they start at `end - buffer.len()`.
    buffer: Vec<u8>,
    /// The records of live entries, in op order.
    pub(crate) live: VecDeque<LiveRecord>,
    /// The copies of the entry records' headers.
    pub(crate) headers: Headers,
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
        Self {
            file: GrowingFile::new(name, allocated, grow_bytes),
            end,
            buffer: Vec::new(),
            live,
            headers,
        }
    }

    /// Creates an empty, preallocated WAL file and its headers file (not yet synced).
    pub(crate) fn create(
        disk: &mut dyn Disk,
        files: WalFiles,
        grow_bytes: u64,
        headers_grow_bytes: u64,
    ) -> Result<Self, StorageError> {
        let file = GrowingFile::create(disk, files.name, grow_bytes)?;
        let headers = Headers::create(disk, files.headers_name, files.start, headers_grow_bytes)?;
        Ok(Self {
            file,
            end: 0,
            buffer: Vec::new(),
            live: VecDeque::new(),
            headers,
        })
    }

    /// Buffers the record of an entry, and the copy of its header.
    pub(crate) fn append(&mut self, entry: &vsr::Entry) {
        let start = self.buffer.len();
        encode_entry_record(entry, &mut self.buffer);
        let size = (self.buffer.len() - start) as u64;
        self.headers.put(&Slot {
            kind: SlotKind::Entry,
            op: entry.op.get(),
            view: entry.view.get(),
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
    pub(crate) fn truncate(&mut self, op: Op) {
        if self.live.back().is_some_and(|record| record.op > op) {
            self.headers.put(&Slot::truncate(op.get(), self.end));
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
            op: Op(header.op),
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

    /// Writes the buffered records to the file, growing it first when needed. The buffered
    /// header copies stay buffered: only [`Self::sync`] writes them, once their records are
    /// durable.
    pub(crate) fn flush(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.file.reserve(disk, self.end)?;
        let offset = self.end - self.buffer.len() as u64;
        self.file.write_at(disk, offset, &self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Makes everything buffered durable: writes the records and fdatasyncs the WAL, and only
    /// then writes the header copies and fdatasyncs the headers file. So no disk, whatever order
    /// it keeps unsynced writes in, ever holds a slot (whole or torn) whose record was not
    /// durable before it (docs/storage.md, ordering rule 2).
    pub(crate) fn sync(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        let buffered = !self.buffer.is_empty();
        self.flush(disk)?;
        if vsr::bug!(HeadersSyncedFirst) {
            self.headers.sync(disk)?;
        }
        // (The slip: only a sync that flushed records fdatasyncs, so records an earlier flush
        // wrote stay unsynced.)
        if !vsr::bug!(WalSyncSkipsFlushed) || buffered {
            self.file.sync(disk)?;
        }
        self.headers.sync(disk)
    }

    /// Carries out the slot repairs open found necessary, durably, before anything else is
    /// written: zeros over the slots of records behind a cut and over damaged slots that name
    /// nothing the log holds, and the expected slot wherever the file does not hold it. Stale
    /// or damaged slots would otherwise be taken for lost records once a later truncate puts
    /// their index after the log's end; and records without slots (kept by a crash before
    /// their sync, or written before headers files existed) could rot unnoticed.
    pub(crate) fn repair_slots(
        &mut self,
        disk: &mut dyn Disk,
        repairs: &SlotRepairs,
    ) -> Result<(), StorageError> {
        assert!(
            self.buffer.is_empty(),
            "repairs come before the first write"
        );
        if !repairs.zero.is_empty() {
            vsr::mark!(HeadersStaleSlotZeroed);
        }
        if !repairs.rewrite.is_empty() {
            vsr::mark!(HeadersSlotRewritten);
            // The records must be durable before slots name them: open may have read them from
            // a page cache that outlived the process.
            self.file.sync_now(disk)?;
        }
        self.headers.clear(&repairs.zero);
        for slot in &repairs.rewrite {
            self.headers.put(slot);
        }
        self.headers.sync(disk)
    }

    /// Drops live records at or before a checkpoint, as [`DurableState::apply`] drops entries.
    pub(crate) fn checkpoint(&mut self, op: Op) {
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
        let mut next = Wal::create(
            disk,
            files,
            self.file.grow_bytes(),
            self.headers.grow_bytes(),
        )?;
        disk.sync_dir()?;
        self.copy_live_into(disk, &mut next)?;
        Ok(next)
    }

    /// The steps the WAL file and its headers file grow in: a WAL prepared to take over from
    /// this one ([`Self::copy_live_into`]) is created with them.
    pub(crate) fn grow_bytes(&self) -> (u64, u64) {
        (self.file.grow_bytes(), self.headers.grow_bytes())
    }

    /// Copies the live records into `next`, a new, empty WAL (created, its name durable), and
    /// makes them durable there.
    pub(crate) fn copy_live_into(
        &mut self,
        disk: &mut dyn Disk,
        next: &mut Wal,
    ) -> Result<(), StorageError> {
        assert_eq!(next.end, 0, "records are copied into an empty WAL");
        self.copy_after(disk, next, Op(0), u64::MAX)?;
        next.sync(disk)
    }

    /// Copies into `next` the live records after op `after`, in order, until `budget` bytes
    /// are copied (at least one record, if any is left); returns the last op copied (`after`
    /// if none). `next` must end with op `after`. Buffered only: the caller syncs `next`.
    pub(crate) fn copy_after(
        &mut self,
        disk: &mut dyn Disk,
        next: &mut Wal,
        after: Op,
        budget: u64,
    ) -> Result<Op, StorageError> {
        self.flush(disk)?;
        let first = self.live.partition_point(|record| record.op <= after);
        let mut copied = 0;
        let mut last = after;
        for record in self.live.range(first..) {
            if copied > 0 && copied + record.size > budget {
                break;
            }
            let mut bytes = vec![0u8; usize::try_from(record.size).expect("records are bounded")];
            let read = disk.read_at(&self.file.name, record.offset, &mut bytes)?;
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
                    record.op, self.file.name
                )));
            };
            next.append_raw(&header, &bytes);
            copied += record.size;
            last = record.op;
        }
        Ok(last)
    }

    /// The last live op, if any.
    pub(crate) fn last_op(&self) -> Option<Op> {
        self.live.back().map(|record| record.op)
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
    /// Whether a record, valid or not, follows `end`.
    pub(crate) dirty_tail: bool,
    /// Slots to zero or rewrite before anything is written after `end`.
    pub(crate) slot_repairs: SlotRepairs,
    /// Size of the headers file; `None` if it is missing.
    pub(crate) headers_size: Option<u64>,
}

/// Slots that the first write after open repairs, durably, before it writes anything else.
#[derive(Debug, Default)]
pub(crate) struct SlotRepairs {
    /// Indexes to zero: valid slots naming records at or after the end of the valid records
    /// (they would be taken for lost records of the new log), and damaged slots that name
    /// nothing the log holds.
    pub(crate) zero: Vec<u64>,
    /// The slots the valid records put that the file does not hold (missing, damaged, or
    /// naming another record): copies of live entries' record headers, and of truncates that
    /// removed the op at their index. Written after zeros at the same index.
    pub(crate) rewrite: Vec<Slot>,
}

impl SlotRepairs {
    /// Whether there is nothing to repair.
    pub(crate) fn is_empty(&self) -> bool {
        self.zero.is_empty() && self.rewrite.is_empty()
    }
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
    /// The offset of the first sector that could not be read (read as damage), if any.
    unreadable: Option<u64>,
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
            let read = read_noting_unreadable(
                self.disk,
                self.name,
                offset,
                &mut self.window,
                &mut self.unreadable,
            )?;
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
            // Candidates are found by their magic (a vectorised search: the tail is mostly
            // zeros, a whole preallocated step of them), then checked whole.
            let limit = bytes.len() - RECORD_HEADER_SIZE + MAGIC_OFFSET + RECORD_MAGIC.len();
            let found = memchr::memmem::find_iter(&bytes[MAGIC_OFFSET..limit], &RECORD_MAGIC).find(
                |&position| {
                    let candidate = &bytes[position..position + RECORD_HEADER_SIZE];
                    decode_header(candidate.try_into().expect("a header")).is_some()
                },
            );
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
        unreadable: None,
    };
    let mut log = Applied {
        start: files.start,
        live: VecDeque::new(),
        truncate_slots: BTreeMap::new(),
    };
    let mut offset = 0;
    let first_bad = loop {
        match reader.step(offset)? {
            Step::Valid { size, record } if applies(state, &record) => {
                log.apply(state, record, offset, size);
                offset += size;
            }
            step => break step,
        }
    };
    let end = offset;
    let mut tail = Tail::default();
    if matches!(first_bad, Step::Valid { .. }) {
        // A valid record that does not continue the log: something between was lost.
        vsr::mark!(WalRecordOutOfSequence);
        tail.bad_records = 1;
    }
    scan_tail(&mut reader, &mut tail, end, first_bad)?;
    let first_after = log.first_after(state);
    let expected = |index| log.expected_slot(state, first_after, index);
    let scan = headers::scan(disk, &files.headers_name, files.start, end, &expected)?;
    let evidence = evidence(&scan, &tail, first_after, files.start, checkpoint_op);
    let mut corrupt_ops = if tail.valid_after_bad {
        vsr::mark!(WalDamagedRecordReported);
        tail.corrupt_ops(state, file_size)
    } else {
        Vec::new()
    };
    if !vsr::bug!(HeadersIgnored) {
        corrupt_ops.extend(&evidence.lost_ops);
    }
    if corrupt_ops.is_empty() {
        // The cut would discard synced records silently: only zeros (a lost write) lie
        // between them and the valid log, and the records lost there are before the
        // checkpoint. Any damage report makes the replica repair everything after the cut.
        if !evidence.discarded_ops.is_empty() {
            vsr::mark!(WalCutDiscardsSyncedRecords);
        }
        corrupt_ops.extend(&evidence.discarded_ops);
    }
    if vsr::bug!(DamageAsTornTail) {
        corrupt_ops.clear();
    }
    corrupt_ops.sort_unstable();
    corrupt_ops.dedup();
    let headers_size = scan.file_size;
    let slot_repairs = log.slot_repairs(scan, state, first_after);
    let torn_tail_records = tail.torn_tail_records(&evidence);
    if torn_tail_records > 0 {
        vsr::mark!(WalTornTailCut);
    }
    Ok(Replay {
        end,
        file_size,
        live: log.live,
        corrupt_ops,
        torn_tail_records,
        // Valid records after zeros count too (a misdirected or lost write before them): left
        // behind new records, they would come back after them or make a torn one look like
        // damage in the middle.
        dirty_tail: !tail.items.is_empty(),
        slot_repairs,
        headers_size,
    })
}

/// What the header copies say was lost at the end of the log.
struct Evidence {
    /// Ops of synced records that are not in the valid log (after `checkpoint_op`).
    lost_ops: Vec<u64>,
    /// Offsets of lost records that valid slots name.
    lost_offsets: Vec<u64>,
    /// Records were lost together with their slots: where they were is unknown.
    lost_unnamed: bool,
    /// Ops of valid records after the end that slots name: synced, and discarded by the cut
    /// (after `checkpoint_op`).
    discarded_ops: Vec<u64>,
}

/// Reads the scan of the headers file: which synced records the valid log misses.
///
/// A valid slot naming a record at or after the end, where no valid record with its checksum
/// sits, names a lost record (for a truncate's slot, the first op it removed is reported: the
/// removed entries would otherwise come back). A valid slot naming a valid record after the
/// end names a synced record that the cut discards ([`Evidence::discarded_ops`]).
///
/// A damaged slot at or after `first_after` (the index after the last valid op) names a lost
/// record too if anything but zeros follows the valid records. Slots are written only after the
/// records they name were synced, so such a slot names a synced record that is not in the valid
/// log: rotten, or lost. Unless the slot was torn by a crash while it was written; but then its
/// records were synced and are in the valid log, and nothing was written to the WAL after
/// them, so only zeros follow the valid records. (That torn slot can sit after the last valid
/// op: the slot of a truncate sits at the first op it removed, and a batch that appends an op
/// and truncates it writes the op's slot too.) A rotten or unreadable record leaves something
/// that is not zeros at the end of the valid records.
fn evidence(
    scan: &headers::Scan,
    tail: &Tail,
    first_after: u64,
    start: u64,
    checkpoint_op: u64,
) -> Evidence {
    let (held, lost): (Vec<&Slot>, Vec<&Slot>) =
        scan.claims.iter().partition(|slot| tail.holds(slot));
    let named_op = |slot: &&Slot| match slot.kind {
        SlotKind::Entry => slot.op,
        SlotKind::Truncate => slot.op + 1,
    };
    let mut lost_ops: Vec<u64> = lost.iter().map(named_op).collect();
    if !lost.is_empty() {
        vsr::mark!(WalSlotNamesLostRecord);
    }
    let mut lost_unnamed = false;
    if !tail.items.is_empty() {
        for index in scan.damaged.iter().filter(|index| **index >= first_after) {
            vsr::mark!(WalDamagedSlotNamesLostRecord);
            lost_ops.push(start + index);
            lost_unnamed = true;
        }
    }
    let named = lost_ops.len();
    lost_ops.retain(|op| *op > checkpoint_op);
    if lost_ops.len() < named {
        vsr::mark!(WalLostRecordCoveredByCheckpoint);
    }
    Evidence {
        lost_ops,
        lost_offsets: lost.iter().map(|slot| slot.record_offset).collect(),
        lost_unnamed,
        discarded_ops: held
            .iter()
            .map(named_op)
            .filter(|op| *op > checkpoint_op)
            .collect(),
    }
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

/// The valid records replayed so far, as far as the WAL and its headers file need them.
struct Applied {
    /// The WAL's first op: slot 0.
    start: u64,
    /// The records of live entries.
    live: VecDeque<LiveRecord>,
    /// The slots of truncates that removed live entries, by index, until an append at the
    /// index replaces them: what the headers file holds there after the records so far.
    truncate_slots: BTreeMap<u64, Slot>,
}

impl Applied {
    /// Applies a valid record, as [`Wal::append`] and [`Wal::truncate`] wrote it.
    fn apply(&mut self, state: &mut DurableState, record: Record, offset: u64, size: u64) {
        match record {
            Record::Append(entry) => {
                self.truncate_slots.remove(&(entry.op.get() - self.start));
                self.live.push_back(LiveRecord {
                    op: entry.op,
                    offset,
                    size,
                });
                state.apply(&Write::Append(entry));
            }
            Record::Truncate { op } => {
                if self.live.back().is_some_and(|record| record.op > op) {
                    let slot = Slot::truncate(op.get(), offset);
                    self.truncate_slots.insert(slot.index(self.start), slot);
                }
                while self.live.back().is_some_and(|record| record.op > op) {
                    self.live.pop_back();
                }
                state.apply(&Write::Truncate { op });
            }
        }
    }

    /// The index of the first slot after the last valid op.
    fn first_after(&self, state: &DurableState) -> u64 {
        let last = state
            .entries
            .back()
            .map_or(state.checkpoint_op(), |last| last.op);
        last.get() + 1 - self.start
    }

    /// The slot the valid records put at `index`, if it still matters: the copy of a live
    /// entry's record header, or of a truncate that removed the op at `index`.
    fn expected_slot(&self, state: &DurableState, first_after: u64, index: u64) -> Option<Slot> {
        if index >= first_after {
            return self.truncate_slots.get(&index).copied();
        }
        // Every op from the WAL's start to the last valid op is live, in order.
        let op = self.start + index;
        let position = usize::try_from(index).expect("an index into the log");
        let (entry, record) = (&state.entries[position], self.live[position]);
        assert!(
            entry.op == Op(op) && record.op == Op(op),
            "live ops are consecutive"
        );
        Some(Slot {
            kind: SlotKind::Entry,
            op,
            view: entry.view.get(),
            record_offset: record.offset,
            entry_checksum: entry.checksum,
            entry_parent: entry.parent,
        })
    }

    /// What the first write after open repairs in the headers file ([`Wal::repair_slots`]):
    /// zeros over the slots that name records at or after the end and over damaged slots that
    /// name nothing the log holds; the expected slot wherever the file does not hold it (a
    /// crash kept a record but not its slot, a torn slot, a rotten one, a WAL from before
    /// headers files).
    fn slot_repairs(
        &self,
        scan: headers::Scan,
        state: &DurableState,
        first_after: u64,
    ) -> SlotRepairs {
        let expected = |index| self.expected_slot(state, first_after, index);
        let mut zero: Vec<u64> = scan
            .claims
            .iter()
            .map(|slot| slot.index(self.start))
            .collect();
        zero.extend(
            scan.damaged
                .iter()
                .filter(|index| expected(**index).is_none()),
        );
        let mut rewrite = scan.mismatched;
        rewrite.extend((scan.slot_count..first_after).filter_map(expected));
        rewrite.extend(
            self.truncate_slots
                .range(scan.slot_count.max(first_after)..)
                .map(|(_, slot)| *slot),
        );
        SlotRepairs { zero, rewrite }
    }
}

/// One record after the valid prefix, as far as the damage report needs it.
#[derive(Clone, Copy)]
enum TailItem {
    /// A valid entry record: its op, its entry's checksum, its offset.
    Entry {
        op: u64,
        checksum: EntryChecksum,
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
    ///
    /// Records found after damage are not trusted for more than their checksums: the checksum is
    /// not a secret, so a client's payload can hold a well-formed record that resynchronisation
    /// finds once the real header before it rotted. An op outside what a file of `file_size`
    /// bytes can hold after the valid log is ignored, so no forged op can make this overflow or
    /// list more ops than the file has records.
    fn corrupt_ops(&self, state: &DurableState, file_size: u64) -> Vec<u64> {
        let mut next_op = state
            .entries
            .back()
            .map_or(state.checkpoint_op(), |last| last.op)
            .get()
            + 1;
        let op_first = next_op;
        let op_limit = next_op.saturating_add(file_size / RECORD_HEADER_SIZE as u64);
        let plausible = |op: u64| (op_first..=op_limit).contains(&op);
        let mut ops = Vec::new();
        for item in &self.items[..self.last_valid().map_or(0, |last| last + 1)] {
            let item = match *item {
                TailItem::Bad {
                    op: Some(op),
                    offset,
                } if !plausible(op) => TailItem::Bad { op: None, offset },
                TailItem::Entry { op, .. } | TailItem::Truncate { op, .. } if !plausible(op) => {
                    continue;
                }
                item => item,
            };
            match item {
                TailItem::Bad { op: Some(op), .. } => {
                    ops.extend(next_op..op);
                    ops.push(op);
                    next_op = op.saturating_add(1);
                }
                TailItem::Bad { op: None, .. } => {}
                TailItem::Entry { op, .. } => {
                    ops.extend(next_op..op);
                    next_op = op.saturating_add(1);
                }
                TailItem::Truncate { op, .. } => next_op = op.saturating_add(1),
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
    /// them while they were written, before any sync covered them. When records were lost
    /// with their slots, none counts: the lost ones cannot be told from torn ones after them.
    fn torn_tail_records(&self, evidence: &Evidence) -> usize {
        if evidence.lost_unnamed {
            return 0;
        }
        let lost_offsets = &evidence.lost_offsets;
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
                        op: entry.op.get(),
                        checksum: entry.checksum,
                        offset,
                    },
                    Record::Truncate { op } => TailItem::Truncate {
                        op: op.get(),
                        offset,
                    },
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
            _ => break,
        }
    }
    // A sector after the valid records that cannot be read held something (say, a record
    // written there by a misdirected write): the tail is not all zeros, though resynchronising
    // finds no record in it.
    if tail.items.is_empty()
        && let Some(unreadable) = reader.unreadable.filter(|offset| *offset >= end)
    {
        vsr::mark!(WalUnreadableSectorInTail);
        tail.push(TailItem::Bad {
            op: None,
            offset: unreadable,
        });
    }
    Ok(())
}
