//! The file operations storage needs, behind a small trait so tests can inject crashes.
//!
//! A [`Disk`] is one data directory: files are addressed by name. [`RealDisk`] maps each call to
//! one system call on a cached file handle (`pwrite`, `pread`, `fdatasync`, `ftruncate`);
//! `crate::sim_disk::SimDisk` (feature `simulation`) keeps files in memory, remembers which
//! writes are not yet durable and fails the way real disks do.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StorageError;
use crate::lock::DirectoryLock;

/// A directory of files with positional I/O and explicit durability.
///
/// Contents become durable with [`Disk::sync`]; creating and removing names becomes durable with
/// [`Disk::sync_dir`].
pub trait Disk: Send {
    /// Names of the regular files in the directory, sorted.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// Creates `name` empty, truncating it if it exists.
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// Removes `name`.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// The size of `name` in bytes.
    fn len(&mut self, name: &str) -> io::Result<u64>;
    /// Reads from `offset` until `buffer` is full or the file ends; returns the bytes read.
    fn read_at(&mut self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, growing the file if needed.
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Sets the size of `name`; growing fills with zeros.
    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Makes the contents and size of `name` durable (`fdatasync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Makes the creation and removal of names durable (`fsync` of the directory).
    fn sync_dir(&mut self) -> io::Result<()>;
    /// Another handle on the same directory, for another thread (a checkpoint written in the
    /// background touches only its own file).
    ///
    /// # Errors
    /// If the handle cannot be made.
    fn duplicate(&self) -> io::Result<Box<dyn Disk>>;
    /// Drops any handle this disk keeps on `name` (a file about to be removed elsewhere, whose
    /// space a handle left open would keep).
    fn close(&mut self, _name: &str) {}
}

/// Bytes that stand for a sector that could not be read: never all zeros (which read as "never
/// written"), so records, slots and copies there fail their checksums like corrupt ones.
pub(crate) const UNREADABLE_FILL: u8 = 0xE5;

/// Bytes of the unit a failed read is retried in.
const SECTOR_BYTES: u64 = 512;

/// Reads like [`Disk::read_at`], but a read error other than a missing file does not fail: the
/// range is read again sector by sector and every sector that fails is filled with
/// [`UNREADABLE_FILL`], so the caller sees it as corrupt data and reports damage rather than
/// stopping. Returns the bytes read (the file may end early).
pub(crate) fn read_tolerant(
    disk: &mut dyn Disk,
    name: &str,
    offset: u64,
    buffer: &mut [u8],
) -> io::Result<usize> {
    read_noting_unreadable(disk, name, offset, buffer, &mut None)
}

/// As [`read_tolerant`], also setting `unreadable` to the offset of the first sector that could
/// not be read, if it is not set yet.
pub(crate) fn read_noting_unreadable(
    disk: &mut dyn Disk,
    name: &str,
    offset: u64,
    buffer: &mut [u8],
    unreadable: &mut Option<u64>,
) -> io::Result<usize> {
    match disk.read_at(name, offset, buffer) {
        Ok(read) => return Ok(read),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(error),
        Err(_) => {}
    }
    let mut done = 0;
    while done < buffer.len() {
        let position = offset + done as u64;
        let piece = usize::try_from(SECTOR_BYTES - position % SECTOR_BYTES)
            .expect("small")
            .min(buffer.len() - done);
        let target = &mut buffer[done..done + piece];
        match disk.read_at(name, position, target) {
            Ok(read) if read < piece => return Ok(done + read),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(error),
            Err(_) => {
                vsr::mark!(DiskReadErrorReadAsDamage);
                target.fill(UNREADABLE_FILL);
                unreadable.get_or_insert(position);
            }
        }
        done += piece;
    }
    Ok(done)
}

/// A [`Disk`] backed by a real directory, which it holds locked (see [`DirectoryLock`]) for as
/// long as it lives.
#[derive(Debug)]
pub(crate) struct RealDisk {
    directory: PathBuf,
    files: BTreeMap<String, File>,
    /// Held until every handle on the disk, and so the storage that owns it, is dropped.
    _lock: std::sync::Arc<DirectoryLock>,
}

impl RealDisk {
    /// A disk over `directory`, which must exist, once it has taken the directory's lock.
    ///
    /// # Errors
    /// As [`DirectoryLock::acquire`].
    pub(crate) fn lock(directory: &Path) -> Result<Self, StorageError> {
        let lock = DirectoryLock::acquire(directory)?;
        Ok(Self {
            directory: directory.to_path_buf(),
            files: BTreeMap::new(),
            _lock: std::sync::Arc::new(lock),
        })
    }

    fn file(&mut self, name: &str) -> io::Result<&File> {
        if !self.files.contains_key(name) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.directory.join(name))?;
            self.files.insert(name.to_owned(), file);
        }
        Ok(&self.files[name])
    }
}

impl Disk for RealDisk {
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in fs::read_dir(&self.directory)? {
            let item = item?;
            if item.file_type()?.is_file()
                && let Some(name) = item.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.directory.join(name))?;
        self.files.insert(name.to_owned(), file);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        fs::remove_file(self.directory.join(name))
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        Ok(self.file(name)?.metadata()?.len())
    }

    fn read_at(&mut self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        read_up_to(self.file(name)?, offset, buffer)
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file(name)?.write_all_at(data, offset)
    }

    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.file(name)?.set_len(len)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.file(name)?.sync_data()
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.directory)?.sync_all()
    }

    fn close(&mut self, name: &str) {
        self.files.remove(name);
    }

    fn duplicate(&self) -> io::Result<Box<dyn Disk>> {
        Ok(Box::new(RealDisk {
            directory: self.directory.clone(),
            files: BTreeMap::new(),
            _lock: std::sync::Arc::clone(&self._lock),
        }))
    }
}

/// Reads `file` from `offset` until `buffer` is full or the file ends; returns the bytes read.
pub(crate) fn read_up_to(file: &File, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        match file.read_at(&mut buffer[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(count) => done += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}
