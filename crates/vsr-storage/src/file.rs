//! [`GrowingFile`]: a preallocated file written in place, the piece the WAL file and its
//! headers file share.
//!
//! The file grows in fixed steps ahead of its writes, so most writes do not change its size,
//! and it remembers whether it holds writes not yet synced, so making it durable costs an
//! fdatasync only when there is something to make durable. Its owner decides what to write
//! and when: the WAL flushes its record buffer, the headers file its pending slots.

use crate::StorageError;
use crate::disk::Disk;

/// A file of a [`Disk`] that grows in steps and knows whether it has unsynced writes.
#[derive(Debug)]
pub(crate) struct GrowingFile {
    /// File name.
    pub(crate) name: String,
    /// Size of the file.
    pub(crate) allocated: u64,
    /// Whether the file has writes not yet synced.
    unsynced: bool,
    /// The step the file grows in.
    grow_bytes: u64,
}

impl GrowingFile {
    /// The existing file `name`, `allocated` bytes long, with nothing unsynced.
    pub(crate) fn new(name: String, allocated: u64, grow_bytes: u64) -> Self {
        assert!(grow_bytes > 0);
        Self {
            name,
            allocated,
            unsynced: false,
            grow_bytes,
        }
    }

    /// Creates the file empty and preallocated to one step (not yet synced).
    pub(crate) fn create(
        disk: &mut dyn Disk,
        name: String,
        grow_bytes: u64,
    ) -> Result<Self, StorageError> {
        disk.create(&name)?;
        disk.set_len(&name, grow_bytes)?;
        let mut file = Self::new(name, grow_bytes, grow_bytes);
        file.unsynced = true;
        Ok(file)
    }

    /// The step the file grows in.
    pub(crate) fn grow_bytes(&self) -> u64 {
        self.grow_bytes
    }

    /// Grows the file, in whole steps, to hold at least `end` bytes.
    pub(crate) fn reserve(&mut self, disk: &mut dyn Disk, end: u64) -> Result<(), StorageError> {
        if end > self.allocated {
            let allocated = end.div_ceil(self.grow_bytes) * self.grow_bytes;
            disk.set_len(&self.name, allocated)?;
            self.allocated = allocated;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` (inside what [`Self::reserve`] allocated, or growing the file
    /// as [`Disk::write_at`] does); durable after [`Self::sync`].
    pub(crate) fn write_at(
        &mut self,
        disk: &mut dyn Disk,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        disk.write_at(&self.name, offset, bytes)?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every write so far durable: one fdatasync, if anything is unsynced.
    pub(crate) fn sync(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        if self.unsynced {
            self.sync_now(disk)?;
        }
        Ok(())
    }

    /// One fdatasync even if nothing was written through this handle: writes a dead process
    /// left in the page cache, which open read, become durable.
    pub(crate) fn sync_now(&mut self, disk: &mut dyn Disk) -> Result<(), StorageError> {
        disk.sync(&self.name)?;
        self.unsynced = false;
        Ok(())
    }

    /// Cuts the file to `len` bytes, durably.
    pub(crate) fn cut(&mut self, disk: &mut dyn Disk, len: u64) -> Result<(), StorageError> {
        disk.set_len(&self.name, len)?;
        disk.sync(&self.name)?;
        self.allocated = len;
        Ok(())
    }
}
