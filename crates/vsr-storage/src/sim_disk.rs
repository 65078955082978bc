//! An in-memory [`Disk`] that remembers what is not yet durable and can crash (tests only).
//!
//! Every mutating call (create, remove, write, set_len) is appended to a pending list. `sync`
//! makes a file's pending writes durable; `sync_dir` makes pending creates and removes durable.
//! [`SimDisk::crash_image`] builds what a crash would leave: the durable files plus the first
//! `keep` pending operations in their original order, the next one optionally torn (a write of
//! which only a prefix reached the disk). Nothing else is reordered.
//!
//! [`SimDisk::fail_at`] makes the n-th mutating or syncing call fail, and every call after it:
//! the process "dies" there. A write that fails this way is still recorded as pending, so a
//! crash image can keep it whole or torn.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use crate::disk::Disk;

/// One file's bytes; everything between `data.len()` and `len` reads as zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SimFile {
    data: Vec<u8>,
    len: u64,
}

impl SimFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) {
        let offset = usize::try_from(offset).expect("small files");
        let end = offset + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        self.len = self.len.max(end as u64);
    }

    fn set_len(&mut self, len: u64) {
        self.data
            .truncate(usize::try_from(len).expect("small files"));
        self.len = len;
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> usize {
        let available = usize::try_from(self.len.saturating_sub(offset)).expect("small files");
        let count = available.min(buffer.len());
        for (index, byte) in buffer[..count].iter_mut().enumerate() {
            let position = usize::try_from(offset).expect("small files") + index;
            *byte = self.data.get(position).copied().unwrap_or(0);
        }
        count
    }
}

/// A mutation not yet durable.
#[derive(Clone, Debug)]
pub(crate) enum Operation {
    /// Name created and contents emptied.
    Create(String),
    /// Name created; its contents were synced since (so only the name is pending).
    Link(String),
    Remove(String),
    Write {
        name: String,
        offset: u64,
        data: Vec<u8>,
    },
    SetLen {
        name: String,
        len: u64,
    },
}

/// A directory of files after a crash.
pub(crate) type Image = BTreeMap<String, SimFile>;

#[derive(Debug, Default)]
struct State {
    durable_names: BTreeSet<String>,
    durable: BTreeMap<String, SimFile>,
    current: BTreeMap<String, SimFile>,
    pending: Vec<Operation>,
    calls: u64,
    fail_at: Option<u64>,
    failed: bool,
}

/// The in-memory disk; clones share the same files.
#[derive(Clone, Debug, Default)]
pub(crate) struct SimDisk(Arc<Mutex<State>>);

impl SimDisk {
    /// A disk holding `image`, all of it durable.
    pub(crate) fn from_image(image: &Image) -> Self {
        let state = State {
            durable_names: image.keys().cloned().collect(),
            durable: image.clone(),
            current: image.clone(),
            ..State::default()
        };
        Self(Arc::new(Mutex::new(state)))
    }

    /// Makes call number `call` (counted from now) and every later one fail.
    pub(crate) fn fail_at(&self, call: Option<u64>) {
        let mut state = self.0.lock().expect("not poisoned");
        state.calls = 0;
        state.fail_at = call;
    }

    /// Mutating and syncing calls since the last [`Self::fail_at`].
    pub(crate) fn calls(&self) -> u64 {
        self.0.lock().expect("not poisoned").calls
    }

    /// Operations not yet durable.
    pub(crate) fn pending(&self) -> Vec<Operation> {
        self.0.lock().expect("not poisoned").pending.clone()
    }

    /// What the process sees now (as if everything reached the disk).
    pub(crate) fn current(&self) -> Image {
        self.0.lock().expect("not poisoned").current.clone()
    }

    /// What a crash leaves: durable state, then `keep` pending operations, then optionally
    /// the next pending write with only `torn` of its bytes.
    pub(crate) fn crash_image(&self, keep: usize, torn: Option<usize>) -> Image {
        let state = self.0.lock().expect("not poisoned");
        let mut names = state.durable_names.clone();
        let mut files = state.durable.clone();
        for operation in &state.pending[..keep] {
            apply(&mut names, &mut files, operation);
        }
        if let (Some(torn), Some(Operation::Write { name, offset, data })) =
            (torn, state.pending.get(keep))
        {
            let torn = Operation::Write {
                name: name.clone(),
                offset: *offset,
                data: data[..torn.min(data.len())].to_vec(),
            };
            apply(&mut names, &mut files, &torn);
        }
        files.retain(|name, _| names.contains(name));
        files
    }

    /// What a disk that reorders writes could leave: durable state, then only the pending
    /// operations `keep` selects.
    pub(crate) fn reordered_image(&self, keep: impl Fn(&Operation) -> bool) -> Image {
        let state = self.0.lock().expect("not poisoned");
        let mut names = state.durable_names.clone();
        let mut files = state.durable.clone();
        for operation in state.pending.iter().filter(|operation| keep(operation)) {
            apply(&mut names, &mut files, operation);
        }
        files.retain(|name, _| names.contains(name));
        files
    }

    fn call(&self, operation: Option<Operation>) -> io::Result<()> {
        let mut state = self.0.lock().expect("not poisoned");
        let call = state.calls;
        state.calls += 1;
        if state.failed || state.fail_at == Some(call) {
            if !state.failed {
                // The call in flight when the process died: it may have partly reached the disk.
                state
                    .pending
                    .extend(operation.filter(|op| matches!(op, Operation::Write { .. })));
            }
            state.failed = true;
            return Err(io::Error::other("simulated crash"));
        }
        if let Some(operation) = operation {
            let State {
                current, pending, ..
            } = &mut *state;
            let mut names: BTreeSet<String> = current.keys().cloned().collect();
            apply(&mut names, current, &operation);
            current.retain(|name, _| names.contains(name));
            pending.push(operation);
        }
        Ok(())
    }
}

fn apply(names: &mut BTreeSet<String>, files: &mut Image, operation: &Operation) {
    match operation {
        Operation::Create(name) => {
            names.insert(name.clone());
            files.insert(name.clone(), SimFile::default());
        }
        Operation::Link(name) => {
            names.insert(name.clone());
            files.entry(name.clone()).or_default();
        }
        Operation::Remove(name) => {
            names.remove(name);
        }
        Operation::Write { name, offset, data } => {
            files
                .entry(name.clone())
                .or_default()
                .write_at(*offset, data);
        }
        Operation::SetLen { name, len } => files.entry(name.clone()).or_default().set_len(*len),
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl Disk for SimDisk {
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self
            .0
            .lock()
            .expect("not poisoned")
            .current
            .keys()
            .cloned()
            .collect())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.call(Some(Operation::Create(name.to_owned())))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.len(name)?;
        self.call(Some(Operation::Remove(name.to_owned())))
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        let state = self.0.lock().expect("not poisoned");
        state
            .current
            .get(name)
            .map(|file| file.len)
            .ok_or_else(|| not_found(name))
    }

    fn read_at(&mut self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        let state = self.0.lock().expect("not poisoned");
        let file = state.current.get(name).ok_or_else(|| not_found(name))?;
        Ok(file.read_at(offset, buffer))
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.len(name)?;
        let data = data.to_vec();
        self.call(Some(Operation::Write {
            name: name.to_owned(),
            offset,
            data,
        }))
    }

    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.len(name)?;
        self.call(Some(Operation::SetLen {
            name: name.to_owned(),
            len,
        }))
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.len(name)?;
        self.call(None)?;
        let mut state = self.0.lock().expect("not poisoned");
        let contents = state.current[name].clone();
        state.durable.insert(name.to_owned(), contents);
        let pending = std::mem::take(&mut state.pending);
        state.pending = pending
            .into_iter()
            .filter_map(|operation| match operation {
                Operation::Write { name: ref file, .. }
                | Operation::SetLen { name: ref file, .. }
                    if file == name =>
                {
                    None
                }
                Operation::Create(file) if file == name => Some(Operation::Link(file)),
                other => Some(other),
            })
            .collect();
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.call(None)?;
        let mut state = self.0.lock().expect("not poisoned");
        let pending = std::mem::take(&mut state.pending);
        let mut kept = Vec::new();
        for operation in pending {
            match operation {
                // The name is durable; its contents only as far as synced.
                Operation::Create(name) => {
                    state.durable_names.insert(name.clone());
                    state.durable.insert(name, SimFile::default());
                }
                Operation::Link(name) => {
                    state.durable_names.insert(name.clone());
                    state.durable.entry(name).or_default();
                }
                Operation::Remove(name) => {
                    state.durable_names.remove(&name);
                    state.durable.remove(&name);
                }
                other => kept.push(other),
            }
        }
        state.pending = kept;
        Ok(())
    }
}

/// The size of a file in an image.
pub(crate) fn len(file: &SimFile) -> u64 {
    file.len
}
