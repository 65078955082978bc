//! A log entry, and its encoding: inside prepare, do_view_change, start_view and new_state
//! bodies, and in storage's log records.
//!
//! One entry takes [`ENTRY_HEADER_SIZE`] bytes plus its body: `checksum` u128, `parent` u128,
//! `client` u128, `op` u64, `view` u64, `session` u64, `request` u64, body size u32,
//! operation u8 (0 register, 1 state machine, 2 no-op), body bytes. An entries list is a count
//! u32 followed by that many entries with consecutive ops.

use bytes::{BufMut, Bytes};

use super::{DecodeError, Read};
use crate::checksum::Checksum;
use crate::limits::{ENTRIES_COUNT_SIZE, ENTRY_HEADER_SIZE, NUMBER_MAX};
use crate::message::ClientId;
use crate::numbers::{EntryChecksum, Op, View};

/// What a log entry asks the replicated service to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Registers a client session; its reply carries the session number (the op number).
    Register,
    /// An operation of the state machine, encoded in the entry's body.
    StateMachine,
    /// A no-op the primary appends at the start of a view (never sent by clients).
    Noop,
}

impl Operation {
    /// The operation with wire tag `tag`.
    pub(crate) fn from_tag(tag: u8) -> Result<Operation, DecodeError> {
        [
            Operation::Register,
            Operation::StateMachine,
            Operation::Noop,
        ]
        .into_iter()
        .find(|operation| *operation as u8 == tag)
        .ok_or(DecodeError::Malformed("unknown operation"))
    }
}

/// One entry of the log: a prepared client request.
///
/// Built as a struct literal with named fields (`checksum: EntryChecksum(0)`) and then [`Entry::sealed`], which
/// computes the checksum: every field is named, so no two numbers can trade places.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub op: Op,
    /// The view in which the primary assigned this op.
    pub view: View,
    /// Checksum of the previous entry (0 for op 1): the log is a hash chain.
    pub parent: EntryChecksum,
    /// The client that sent the request (0 for [`Operation::Noop`]).
    pub client: ClientId,
    /// The client's session (the op number of its register entry; 0 when registering).
    pub session: u64,
    /// The client's request number.
    pub request: u64,
    /// What kind of entry this is.
    pub operation: Operation,
    /// The encoded state machine operation (empty for register and no-op).
    pub body: Bytes,
    /// Checksum over every other field: identifies this exact entry.
    pub checksum: EntryChecksum,
}

impl Entry {
    /// Seals `self`: computes its checksum from the other fields (whatever `checksum` held).
    #[must_use]
    pub fn sealed(mut self) -> Self {
        self.checksum = self.compute_checksum();
        self
    }

    /// Recomputes the checksum from the fields.
    #[must_use]
    pub fn compute_checksum(&self) -> EntryChecksum {
        let mut hasher = Checksum::default();
        hasher.update(&self.op.get().to_le_bytes());
        hasher.update(&self.view.get().to_le_bytes());
        hasher.update(&self.parent.get().to_le_bytes());
        hasher.update(&self.client.to_le_bytes());
        hasher.update(&self.session.to_le_bytes());
        hasher.update(&self.request.to_le_bytes());
        hasher.update(&[self.operation as u8]);
        hasher.update(&(self.body.len() as u64).to_le_bytes());
        hasher.update(&self.body);
        EntryChecksum(hasher.finalize())
    }

    /// Whether the stored checksum matches the fields.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.checksum == self.compute_checksum()
    }

    /// Whether op and view are numbers a cluster can reach.
    pub(crate) fn in_bounds(&self) -> bool {
        self.op.get() < NUMBER_MAX && self.view.get() < NUMBER_MAX
    }
}

/// The size of `entry` in a body.
#[must_use]
pub fn entry_size(entry: &Entry) -> usize {
    ENTRY_HEADER_SIZE + entry.body.len()
}

/// The size of an entries list in a body.
pub(crate) fn entries_size(entries: &[Entry]) -> usize {
    ENTRIES_COUNT_SIZE + entries.iter().map(entry_size).sum::<usize>()
}

/// Appends the encoding of one entry to `out`: [`entry_size`] bytes, laid out as the module
/// docs say. Storage keeps entries in this same encoding.
///
/// # Panics
/// If the body is 4 GiB or larger (entries are bounded far below that).
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    out.put_u128_le(entry.checksum.get());
    out.put_u128_le(entry.parent.get());
    out.put_u128_le(entry.client);
    out.put_u64_le(entry.op.get());
    out.put_u64_le(entry.view.get());
    out.put_u64_le(entry.session);
    out.put_u64_le(entry.request);
    out.put_u32_le(super::length_u32(entry.body.len()));
    out.put_u8(entry.operation as u8);
    out.put_slice(&entry.body);
}

/// Decodes exactly one entry that occupies all of `bytes`, as [`encode_entry`] wrote it, and
/// verifies it ([`Entry::is_valid`]): the inverse of [`encode_entry`].
///
/// # Errors
/// [`DecodeError::Malformed`] if `bytes` end inside the entry, hold bytes after it, or name an
/// unknown operation; [`DecodeError::EntryChecksum`] if the entry's checksum does not match
/// its fields.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut input = Bytes::copy_from_slice(bytes);
    let entry = read_entry(&mut input)?;
    if !input.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after the entry"));
    }
    Ok(entry)
}

fn read_entry(input: &mut Bytes) -> Result<Entry, DecodeError> {
    let checksum = EntryChecksum(input.u128()?);
    let parent = EntryChecksum(input.u128()?);
    let client = input.u128()?;
    let op = Op(input.u64()?);
    let view = View(input.u64()?);
    let session = input.u64()?;
    let request = input.u64()?;
    let body_size = input.u32()? as usize;
    let operation = Operation::from_tag(input.u8()?)?;
    let body = input.take(body_size)?;
    let entry = Entry {
        op,
        view,
        parent,
        client,
        session,
        request,
        operation,
        body,
        checksum,
    };
    if !entry.is_valid() {
        return Err(DecodeError::EntryChecksum { op });
    }
    Ok(entry)
}

/// Appends an entries list.
pub(crate) fn encode_entries(entries: &[Entry], out: &mut Vec<u8>) {
    out.put_u32_le(super::length_u32(entries.len()));
    for entry in entries {
        encode_entry(entry, out);
    }
}

/// Reads an entries list: every entry verified, ops consecutive, numbers in bounds.
pub(crate) fn decode_entries(input: &mut Bytes) -> Result<Vec<Entry>, DecodeError> {
    let count = input.u32()? as usize;
    // Each entry takes at least ENTRY_HEADER_SIZE bytes: a count the body cannot hold is
    // rejected before anything is allocated for it.
    if count > input.len() / ENTRY_HEADER_SIZE {
        return Err(DecodeError::Malformed("entry count exceeds the body"));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = read_entry(input)?;
        if let Some(previous) = entries.last()
            && previous.op.checked_add(1) != Some(entry.op)
        {
            return Err(DecodeError::Malformed("entry ops are not consecutive"));
        }
        entries.push(entry);
    }
    if !entries.iter().all(Entry::in_bounds) {
        return Err(super::out_of_bounds());
    }
    Ok(entries)
}
