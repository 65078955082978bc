//! An in-memory [`Disk`] that fails the way real disks and file systems do (feature
//! `simulation`, and this crate's tests).
//!
//! The disk keeps two views of every file. `current` is what the process reads (the page cache);
//! the *platter* (`durable` and `durable_names`) is what survives a crash. Every mutating call
//! (create, remove, write, set_len) is applied to `current` at once and appended to a pending
//! list; [`Disk::sync`] carries a file's pending content changes to the platter, in order;
//! [`Disk::sync_dir`] carries pending creates and removes. So writes are lost unless synced, per
//! file, and new names and removals are lost unless the directory is synced.
//!
//! ```text
//!   write_at ──▶ current (page cache) + pending ──sync(file)──▶ platter ──crash──▶ image
//!                                         │                      ▲
//!                                         └── crash: each pending operation kept, lost or
//!                                             torn at sector granularity (the caller decides)
//! ```
//!
//! Faults, each under the caller's control so that a simulator can draw them from its seed:
//! - [`SimDisk::crash_process`]: the process dies, the page cache survives: nothing is lost
//!   yet, nothing becomes durable either.
//! - [`SimDisk::crash`]: the machine loses power; each pending operation reaches the platter whole,
//!   not at all, or torn (any subset of its 512-byte sectors), as a [`Fate`] chooses. Keeping a
//!   prefix in order is the gentle case; anything else is unsynced writes reaching the platter
//!   in any order. [`SimDisk::crash_image`] and [`SimDisk::reordered_image`] build such images
//!   without changing the disk.
//! - [`SimDisk::fail_at`] / [`SimDisk::fail_with`]: the n-th mutating or syncing call fails,
//!   with a crash (every later call fails too) or with an I/O error such as EIO or ENOSPC.
//! - [`SimDisk::misdirect_next`]: the next write a sync carries to the platter lands at another
//!   offset of its file; the page cache still shows it where it belongs until the next crash.
//! - [`SimDisk::corrupt_sector`]: bits of a sector on the platter flip (latent corruption).
//! - [`SimDisk::make_unreadable`]: a sector fails every read with an I/O error until it is
//!   written again (a latent sector error).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::Disk;

/// Bytes of a sector: the unit of torn writes, corruption and read errors.
pub const SECTOR_SIZE: u64 = 512;

/// One file's bytes; everything between `data.len()` and `len` reads as zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimFile {
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
        let start = usize::try_from(offset).expect("small files");
        let stored = self.data.len().saturating_sub(start).min(count);
        if stored > 0 {
            buffer[..stored].copy_from_slice(&self.data[start..start + stored]);
        }
        buffer[stored..count].fill(0);
        count
    }

    /// The file's size in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes ever written (the rest of the file is a hole that reads as zeros).
    #[must_use]
    pub fn written(&self) -> u64 {
        self.data.len() as u64
    }
}

/// A mutation not yet durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Name created and contents emptied.
    Create(String),
    /// Name created; its contents were synced since (so only the name is pending).
    Link(String),
    /// Name removed.
    Remove(String),
    /// Bytes written at an offset.
    Write {
        /// The file.
        name: String,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// File size set.
    SetLen {
        /// The file.
        name: String,
        /// The new size.
        len: u64,
    },
}

impl Operation {
    /// Sectors a write touches (0 for anything else): the length of a [`Fate::Torn`] mask.
    #[must_use]
    pub fn sectors(&self) -> usize {
        match self {
            Operation::Write { offset, data, .. } if !data.is_empty() => {
                let first = offset / SECTOR_SIZE;
                let last = (offset + data.len() as u64 - 1) / SECTOR_SIZE;
                usize::try_from(last - first + 1).expect("small files")
            }
            _ => 0,
        }
    }

    /// Whether this changes a name rather than contents (create, link, remove).
    #[must_use]
    pub fn is_name_change(&self) -> bool {
        matches!(
            self,
            Operation::Create(_) | Operation::Link(_) | Operation::Remove(_)
        )
    }
}

/// What a crash does to one pending operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It reached the platter whole.
    Kept,
    /// It never reached the platter.
    Lost,
    /// A write of which only the sectors marked `true` reached the platter (one flag per sector
    /// it touches, see [`Operation::sectors`]). For anything but a write this is [`Fate::Lost`].
    Torn(Vec<bool>),
}

/// What a crash did to the pending operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Pending operations that reached the platter whole.
    pub kept: u64,
    /// Pending writes and size changes lost.
    pub lost: u64,
    /// Pending creates, links and removes lost (the directory was not synced).
    pub names_lost: u64,
    /// Writes torn: some of their sectors reached the platter, others not.
    pub torn: u64,
}

/// A directory of files after a crash.
pub type Image = BTreeMap<String, SimFile>;

/// How an injected call failure fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The process dies: this call and every later one fail.
    Crash,
    /// This call returns an I/O error of this kind; later calls work.
    Error(io::ErrorKind),
}

impl State {
    /// The pending operations, then the write a crash interrupted.
    fn all_pending(&self) -> Vec<Operation> {
        let mut all = self.pending.clone();
        all.extend(self.in_flight.clone());
        all
    }
}

#[derive(Debug, Default)]
struct State {
    durable_names: BTreeSet<String>,
    durable: BTreeMap<String, SimFile>,
    current: BTreeMap<String, SimFile>,
    pending: Vec<Operation>,
    /// The write a crash interrupted: it may have partly reached the platter, never the page
    /// cache. A power loss may keep it (whole or torn); a crash of the process alone drops it.
    in_flight: Option<Operation>,
    calls: u64,
    fail_at: Option<(u64, Option<Failure>)>,
    failed: bool,
    /// The file the injected failure hit ("" for the directory).
    failed_on: Option<String>,
    /// The next write carried to the platter of a file whose name starts with the prefix lands
    /// this many bytes away.
    misdirect: Option<(String, i64)>,
    /// Sectors that fail every read, by file.
    unreadable: BTreeMap<String, BTreeSet<u64>>,
}

/// The in-memory disk; clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<State>>);

impl SimDisk {
    /// An empty disk.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk holding `image`, all of it durable.
    #[must_use]
    pub fn from_image(image: &Image) -> Self {
        let state = State {
            durable_names: image.keys().cloned().collect(),
            durable: image.clone(),
            current: image.clone(),
            ..State::default()
        };
        Self(Arc::new(Mutex::new(state)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("not poisoned")
    }

    /// Makes call number `call` (counted from now) and every later one fail, as if the process
    /// died there; `None` disarms.
    pub fn fail_at(&self, call: Option<u64>) {
        let mut state = self.state();
        state.calls = 0;
        state.fail_at = call.map(|call| (call, Some(Failure::Crash)));
    }

    /// Makes call number `call` (counted from now) return an I/O error of `kind` (EIO is
    /// [`io::ErrorKind::Other`], ENOSPC [`io::ErrorKind::StorageFull`]); later calls work. A
    /// write that fails this way did not happen.
    pub fn fail_with(&self, call: u64, kind: io::ErrorKind) {
        let mut state = self.state();
        state.calls = 0;
        state.fail_at = Some((call, Some(Failure::Error(kind))));
    }

    /// Mutating and syncing calls since the last [`Self::fail_at`] or [`Self::fail_with`].
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.state().calls
    }

    /// Whether an injected failure fired, and on which file ("" for the directory).
    #[must_use]
    pub fn failed_on(&self) -> Option<String> {
        self.state().failed_on.clone()
    }

    /// Operations not yet durable.
    #[must_use]
    pub fn pending(&self) -> Vec<Operation> {
        self.state().all_pending()
    }

    /// Number of operations not yet durable.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.state().all_pending().len()
    }

    /// What the process sees now (as if everything reached the disk).
    #[must_use]
    pub fn current(&self) -> Image {
        self.state().current.clone()
    }

    /// The durable files and their sizes, by name.
    /// The durable files, by name, with the bytes ever written to each (the rest of a file is
    /// a hole): enough to aim a fault without copying contents.
    #[must_use]
    pub fn durable_files(&self) -> Vec<(String, u64)> {
        let state = self.state();
        state
            .durable
            .iter()
            .filter(|(name, _)| state.durable_names.contains(*name))
            .map(|(name, file)| (name.clone(), file.written()))
            .collect()
    }

    /// What a crash leaves: durable state, then `keep` pending operations, then optionally
    /// the next pending write with only `torn` of its bytes.
    #[must_use]
    pub fn crash_image(&self, keep: usize, torn: Option<usize>) -> Image {
        let state = self.state();
        let mut names = state.durable_names.clone();
        let mut files = state.durable.clone();
        let pending = state.all_pending();
        for operation in &pending[..keep] {
            apply(&mut names, &mut files, operation);
        }
        if let (Some(torn), Some(Operation::Write { name, offset, data })) =
            (torn, pending.get(keep))
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
    #[must_use]
    pub fn reordered_image(&self, keep: impl Fn(&Operation) -> bool) -> Image {
        let state = self.state();
        let mut names = state.durable_names.clone();
        let mut files = state.durable.clone();
        for operation in state
            .all_pending()
            .iter()
            .filter(|operation| keep(operation))
        {
            apply(&mut names, &mut files, operation);
        }
        files.retain(|name, _| names.contains(name));
        files
    }

    /// The process dies: for each pending operation, in order, `fate(index, operation)` says
    /// whether it reached the platter. The disk then holds only what the platter holds (the
    /// page cache is gone), nothing is pending, and injected call failures are disarmed.
    pub fn crash(&self, mut fate: impl FnMut(usize, &Operation) -> Fate) -> CrashReport {
        let mut state = self.state();
        let mut names = std::mem::take(&mut state.durable_names);
        let mut files = std::mem::take(&mut state.durable);
        let mut report = CrashReport::default();
        let mut pending = std::mem::take(&mut state.pending);
        pending.extend(state.in_flight.take());
        for (index, operation) in pending.iter().enumerate() {
            match fate(index, operation) {
                Fate::Kept => {
                    report.kept += 1;
                    apply(&mut names, &mut files, operation);
                }
                Fate::Torn(mask) if operation.sectors() > 0 => {
                    report.torn += 1;
                    apply_torn(&mut names, &mut files, operation, &mask);
                }
                Fate::Lost | Fate::Torn(_) if operation.is_name_change() => report.names_lost += 1,
                Fate::Lost | Fate::Torn(_) => report.lost += 1,
            }
        }
        files.retain(|name, _| names.contains(name));
        state.durable_names = names;
        state.current = files.clone();
        state.durable = files;
        state.calls = 0;
        state.fail_at = None;
        state.failed = false;
        state.failed_on = None;
        state.misdirect = None;
        report
    }

    /// The process dies but the machine stays up: the page cache survives, so nothing written
    /// is lost yet, and what is not synced stays pending (a later power loss may still lose
    /// it). Injected call failures and misdirections are disarmed.
    pub fn crash_process(&self) {
        let mut state = self.state();
        state.in_flight = None;
        state.calls = 0;
        state.fail_at = None;
        state.failed = false;
        state.failed_on = None;
        state.misdirect = None;
    }

    /// The next write a sync carries to the platter lands `sectors` sectors away from where it
    /// belongs (towards the file's start if that is possible, else towards its end). The page
    /// cache keeps the right bytes until the next crash.
    pub fn misdirect_next(&self, sectors: u64) {
        self.misdirect_next_in("", sectors);
    }

    /// As [`Self::misdirect_next`], for the next write to a file whose name starts or ends with
    /// `pattern` (`"wal-"`, `".headers"`).
    pub fn misdirect_next_in(&self, pattern: &str, sectors: u64) {
        let distance = i64::try_from(sectors * SECTOR_SIZE).expect("small files");
        self.state().misdirect = Some((pattern.to_owned(), distance));
    }

    /// Whether a misdirection armed by [`Self::misdirect_next`] is still waiting for a write.
    #[must_use]
    pub fn misdirect_armed(&self) -> bool {
        self.state().misdirect.is_some()
    }

    /// Flips bits of sector `sector` of `name` on the platter (and in the page cache): `pattern`
    /// is xored into its bytes. Returns false if the file has no written bytes there.
    pub fn corrupt_sector(&self, name: &str, sector: u64, pattern: u64) -> bool {
        let mut state = self.state();
        let State {
            durable, current, ..
        } = &mut *state;
        let mut hit = false;
        for files in [durable, current] {
            if let Some(file) = files.get_mut(name) {
                let start = usize::try_from(sector * SECTOR_SIZE).expect("small files");
                let end = (start + SECTOR_SIZE as usize).min(file.data.len());
                if start < end {
                    for (index, byte) in file.data[start..end].iter_mut().enumerate() {
                        // A different, never-zero mask per byte.
                        let shift = (index % 8) * 8;
                        *byte ^= ((pattern >> shift) as u8) | 1;
                    }
                    hit = true;
                }
            }
        }
        hit
    }

    /// Makes sector `sector` of `name` fail every read until it is written again.
    pub fn make_unreadable(&self, name: &str, sector: u64) {
        self.state()
            .unreadable
            .entry(name.to_owned())
            .or_default()
            .insert(sector);
    }

    /// Sectors that currently fail reads, over all files.
    #[must_use]
    pub fn unreadable_sectors(&self) -> usize {
        self.state().unreadable.values().map(BTreeSet::len).sum()
    }

    fn call(&self, operation: Option<Operation>, target: &str) -> io::Result<()> {
        let mut state = self.state();
        let call = state.calls;
        state.calls += 1;
        let injected = match state.fail_at {
            Some((at, failure)) if at == call => failure,
            _ => None,
        };
        if state.failed || injected.is_some() {
            if !state.failed {
                // The write in flight when the process died may have partly reached the
                // platter (never the page cache); one that failed with an error did not happen.
                if injected == Some(Failure::Crash) {
                    state.in_flight = operation.filter(|op| matches!(op, Operation::Write { .. }));
                }
                state.failed_on = Some(target.to_owned());
            }
            return match injected {
                Some(Failure::Error(kind)) => {
                    state.fail_at = None;
                    Err(io::Error::new(
                        kind,
                        format!("simulated I/O error on {target}"),
                    ))
                }
                _ => {
                    state.failed = true;
                    Err(io::Error::other("simulated crash"))
                }
            };
        }
        if let Some(operation) = operation {
            let State {
                current,
                pending,
                unreadable,
                ..
            } = &mut *state;
            let mut names: BTreeSet<String> = current.keys().cloned().collect();
            apply(&mut names, current, &operation);
            current.retain(|name, _| names.contains(name));
            remap_written(unreadable, &operation);
            pending.push(operation);
        }
        Ok(())
    }

    /// A sync with nothing to carry to the platter does nothing and is not counted as a call
    /// (a crash "at" it is a crash at the next call); a dead process still fails it.
    fn nothing_pending(&self, concerns: impl Fn(&Operation) -> bool) -> io::Result<bool> {
        let state = self.state();
        if state.failed {
            return Err(io::Error::other("simulated crash"));
        }
        Ok(!state.pending.iter().any(concerns))
    }

    fn check_readable(&self, name: &str, offset: u64, size: usize) -> io::Result<()> {
        let state = self.state();
        let Some(sectors) = state.unreadable.get(name) else {
            return Ok(());
        };
        if size == 0 {
            return Ok(());
        }
        let first = offset / SECTOR_SIZE;
        let last = (offset + size as u64 - 1) / SECTOR_SIZE;
        if sectors.range(first..=last).next().is_some() {
            return Err(io::Error::other(format!(
                "simulated latent sector error reading {name}"
            )));
        }
        Ok(())
    }
}

/// A write over any part of an unreadable sector remaps it (the file system writes whole blocks
/// from its page cache), and so does cutting the file before it: it reads again.
fn remap_written(unreadable: &mut BTreeMap<String, BTreeSet<u64>>, operation: &Operation) {
    match operation {
        Operation::Write { name, offset, data } => {
            if let Some(sectors) = unreadable.get_mut(name)
                && !data.is_empty()
            {
                let first = offset / SECTOR_SIZE;
                let last = (offset + data.len() as u64 - 1) / SECTOR_SIZE;
                sectors.retain(|sector| !(first..=last).contains(sector));
            }
        }
        Operation::SetLen { name, len } => {
            if let Some(sectors) = unreadable.get_mut(name) {
                sectors.retain(|sector| sector * SECTOR_SIZE < *len);
            }
        }
        Operation::Create(name) | Operation::Remove(name) => {
            unreadable.remove(name);
        }
        Operation::Link(_) => {}
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

/// Applies the sectors of a write that `mask` marks as reached.
fn apply_torn(
    names: &mut BTreeSet<String>,
    files: &mut Image,
    operation: &Operation,
    mask: &[bool],
) {
    let Operation::Write { name, offset, data } = operation else {
        return;
    };
    let first_sector = offset / SECTOR_SIZE;
    let end = offset + data.len() as u64;
    for (index, reached) in mask.iter().enumerate() {
        if !reached {
            continue;
        }
        let sector = first_sector + index as u64;
        let start = (sector * SECTOR_SIZE).max(*offset);
        let stop = ((sector + 1) * SECTOR_SIZE).min(end);
        if start >= stop {
            continue;
        }
        let piece = Operation::Write {
            name: name.clone(),
            offset: start,
            data: data[usize::try_from(start - offset).expect("small")
                ..usize::try_from(stop - offset).expect("small")]
                .to_vec(),
        };
        apply(names, files, &piece);
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl Disk for SimDisk {
    fn duplicate(&self) -> io::Result<Box<dyn Disk>> {
        Ok(Box::new(self.clone()))
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.state().current.keys().cloned().collect())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.call(Some(Operation::Create(name.to_owned())), name)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.len(name)?;
        self.call(Some(Operation::Remove(name.to_owned())), name)
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        let state = self.state();
        state
            .current
            .get(name)
            .map(|file| file.len)
            .ok_or_else(|| not_found(name))
    }

    fn read_at(&mut self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        self.check_readable(name, offset, buffer.len())?;
        let state = self.state();
        let file = state.current.get(name).ok_or_else(|| not_found(name))?;
        Ok(file.read_at(offset, buffer))
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.len(name)?;
        let data = data.to_vec();
        self.call(
            Some(Operation::Write {
                name: name.to_owned(),
                offset,
                data,
            }),
            name,
        )
    }

    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.len(name)?;
        self.call(
            Some(Operation::SetLen {
                name: name.to_owned(),
                len,
            }),
            name,
        )
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.len(name)?;
        if self.nothing_pending(|operation| operation_file(operation) == Some(name))? {
            return Ok(());
        }
        self.call(None, name)?;
        let mut state = self.state();
        let pending = std::mem::take(&mut state.pending);
        let mut kept = Vec::with_capacity(pending.len());
        for operation in pending {
            match operation {
                Operation::Write {
                    name: file,
                    offset,
                    data,
                } if file == name => {
                    let offset = match state.misdirect.take() {
                        Some((pattern, distance))
                            if file.starts_with(&pattern) || file.ends_with(&pattern) =>
                        {
                            misdirected(offset, distance)
                        }
                        other => {
                            state.misdirect = other;
                            offset
                        }
                    };
                    state
                        .durable
                        .entry(file)
                        .or_default()
                        .write_at(offset, &data);
                }
                Operation::SetLen { name: file, len } if file == name => {
                    state.durable.entry(file).or_default().set_len(len);
                }
                // The contents are durable from here; the name only once the directory is.
                Operation::Create(file) if file == name => {
                    state.durable.insert(file.clone(), SimFile::default());
                    kept.push(Operation::Link(file));
                }
                other => kept.push(other),
            }
        }
        state.pending = kept;
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if self.nothing_pending(Operation::is_name_change)? {
            return Ok(());
        }
        self.call(None, "")?;
        let mut state = self.state();
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

/// The file whose contents an operation changes.
fn operation_file(operation: &Operation) -> Option<&str> {
    match operation {
        Operation::Write { name, .. }
        | Operation::SetLen { name, .. }
        | Operation::Create(name) => Some(name),
        Operation::Link(_) | Operation::Remove(_) => None,
    }
}

/// Where a write misdirected by `distance` bytes lands.
fn misdirected(offset: u64, distance: i64) -> u64 {
    let distance = distance.unsigned_abs();
    offset.checked_sub(distance).unwrap_or(offset + distance)
}

/// The size of a file in an image.
#[must_use]
pub fn len(file: &SimFile) -> u64 {
    file.len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_file() -> SimDisk {
        let mut disk = SimDisk::new();
        disk.create("f").unwrap();
        disk.write_at("f", 0, &[1; 1024]).unwrap();
        disk.sync("f").unwrap();
        disk.sync_dir().unwrap();
        disk
    }

    fn read(disk: &mut SimDisk, offset: u64, size: usize) -> Vec<u8> {
        let mut buffer = vec![0; size];
        disk.read_at("f", offset, &mut buffer).unwrap();
        buffer
    }

    #[test]
    fn unsynced_writes_and_names_are_lost_at_a_crash() {
        let mut disk = disk_with_file();
        disk.write_at("f", 0, &[2; 512]).unwrap();
        disk.create("g").unwrap();
        disk.sync("g").unwrap();
        let report = disk.crash(|_, _| Fate::Lost);
        assert_eq!(report.lost, 1);
        assert_eq!(report.names_lost, 1);
        assert_eq!(read(&mut disk, 0, 4), [1; 4]);
        assert!(disk.len("g").is_err());
    }

    #[test]
    fn a_torn_write_keeps_only_the_sectors_that_reached_the_platter() {
        let mut disk = disk_with_file();
        disk.write_at("f", 256, &[3; 768]).unwrap();
        assert_eq!(disk.pending()[0].sectors(), 2);
        let report = disk.crash(|_, _| Fate::Torn(vec![false, true]));
        assert_eq!(report.torn, 1);
        assert_eq!(read(&mut disk, 256, 256), [1; 256]);
        assert_eq!(read(&mut disk, 512, 512), [3; 512]);
    }

    #[test]
    fn a_misdirected_write_lands_elsewhere_after_the_crash_only() {
        let mut disk = disk_with_file();
        disk.misdirect_next(1);
        disk.write_at("f", 512, &[4; 512]).unwrap();
        disk.sync("f").unwrap();
        assert_eq!(read(&mut disk, 512, 4), [4; 4], "the page cache is right");
        disk.crash(|_, _| Fate::Kept);
        assert_eq!(read(&mut disk, 0, 4), [4; 4]);
        assert_eq!(read(&mut disk, 512, 4), [1; 4]);
    }

    #[test]
    fn corrupt_and_unreadable_sectors_until_rewritten() {
        let mut disk = disk_with_file();
        assert!(disk.corrupt_sector("f", 1, 0x55));
        assert_ne!(read(&mut disk, 512, 512), [1; 512]);
        disk.make_unreadable("f", 0);
        let mut buffer = [0; 8];
        assert!(disk.read_at("f", 500, &mut buffer).is_err());
        disk.write_at("f", 0, &[5; 512]).unwrap();
        assert_eq!(read(&mut disk, 0, 4), [5; 4]);
        assert_eq!(disk.unreadable_sectors(), 0);
    }

    #[test]
    fn an_injected_error_fails_one_call_and_a_crash_every_later_one() {
        let mut disk = disk_with_file();
        disk.fail_with(1, io::ErrorKind::StorageFull);
        disk.write_at("f", 0, &[6; 8]).unwrap();
        let error = disk.write_at("f", 8, &[6; 8]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(disk.failed_on().as_deref(), Some("f"));
        disk.sync("f").unwrap();
        // A sync with nothing to do is not a call; one with work is, and fails.
        disk.fail_at(Some(1));
        disk.sync("f").unwrap();
        disk.write_at("f", 0, &[7; 8]).unwrap();
        assert!(disk.sync("f").is_err());
        assert!(disk.sync_dir().is_err());
    }
}
