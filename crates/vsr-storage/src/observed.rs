//! A [`Disk`] that tells a [`DiskObserver`] how long each sync took and which reads failed, for
//! a runtime's metrics ([`crate::FileStorage::open_observed`]).
//!
//! It wraps the storage's own handle on the directory: the syncs open makes and those of the
//! storage thread (the WAL and its headers file after each batch, the superblock, the next WAL
//! of a rotation, the directory), which are the syncs the replica's writes wait for. Handles
//! made with [`Disk::duplicate`] for other threads (the background checkpoint writer, the
//! removal of leftover files) are not observed: their syncs hold up no write.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::disk::Disk;

/// Receives what storage's disk calls reveal, on the thread that made them (the thread opening
/// storage, then the storage thread): keep it cheap and non-blocking (atomics, say).
pub trait DiskObserver: Send + Sync {
    /// A sync (an fdatasync of a file or an fsync of the directory) returned after `elapsed`,
    /// successful or not.
    fn synced(&self, elapsed: Duration);

    /// A read failed with an I/O error other than a missing file: the range reads as damaged
    /// data. A failed read is retried sector by sector, and each sector that fails again is
    /// reported too.
    fn read_failed(&self);
}

/// A [`Disk`] that reports its syncs and failed reads to an observer.
pub(crate) struct ObservedDisk {
    inner: Box<dyn Disk>,
    observer: Arc<dyn DiskObserver>,
}

impl ObservedDisk {
    pub(crate) fn new(inner: Box<dyn Disk>, observer: Arc<dyn DiskObserver>) -> Self {
        Self { inner, observer }
    }

    fn timed(&mut self, sync: impl FnOnce(&mut dyn Disk) -> io::Result<()>) -> io::Result<()> {
        let start = Instant::now();
        let result = sync(self.inner.as_mut());
        self.observer.synced(start.elapsed());
        result
    }
}

impl Disk for ObservedDisk {
    fn list(&mut self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.inner.create(name)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        self.inner.len(name)
    }

    fn read_at(&mut self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read_at(name, offset, buffer);
        if let Err(error) = &result
            && error.kind() != io::ErrorKind::NotFound
        {
            self.observer.read_failed();
        }
        result
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(name, offset, data)
    }

    fn set_len(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.inner.set_len(name, len)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.timed(|disk| disk.sync(name))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.timed(|disk| disk.sync_dir())
    }

    /// A handle of the inner disk, not observed (see the module docs).
    fn duplicate(&self) -> io::Result<Box<dyn Disk>> {
        self.inner.duplicate()
    }

    fn close(&mut self, name: &str) {
        self.inner.close(name);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::FileStorage;
    use crate::crash_tests::formatted;
    use crate::storage::Tuning;

    #[derive(Default)]
    struct Counts {
        syncs: AtomicU64,
        failed_reads: AtomicU64,
    }

    impl DiskObserver for Counts {
        fn synced(&self, _elapsed: Duration) {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }

        fn read_failed(&self) {
            self.failed_reads.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn syncs_are_reported_and_a_missing_file_is_no_failed_read() {
        let counts = Arc::new(Counts::default());
        let mut disk = ObservedDisk::new(Box::new(formatted()), counts.clone());
        disk.sync_dir().expect("sync");
        let mut buffer = [0u8; 16];
        assert!(disk.read_at("missing", 0, &mut buffer).is_err());
        assert_eq!(counts.syncs.load(Ordering::Relaxed), 1);
        assert_eq!(counts.failed_reads.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn open_and_writes_report_their_syncs_and_unreadable_sectors() {
        let disk = formatted();
        let counts = Arc::new(Counts::default());
        let observed = ObservedDisk::new(Box::new(disk.clone()), counts.clone());
        let mut storage = FileStorage::open_disk(
            Box::new(observed),
            Path::new("sim"),
            None,
            Tuning::default(),
        )
        .expect("open")
        .storage;
        let opened = counts.syncs.load(Ordering::Relaxed);
        assert!(opened > 0, "open makes what it reads durable");
        // A view state is durable when written: a superblock update and its sync.
        let view_state = vsr::ViewState {
            view: vsr::View(1),
            ..vsr::ViewState::default()
        };
        storage
            .write(&vsr::Write::ViewState(view_state))
            .expect("write");
        assert!(counts.syncs.load(Ordering::Relaxed) > opened);
        assert_eq!(counts.failed_reads.load(Ordering::Relaxed), 0);
        drop(storage);

        // A sector of the superblock that fails every read: open uses another copy, and the
        // failed reads are reported.
        disk.make_unreadable("superblock", 0);
        let counts = Arc::new(Counts::default());
        let observed = ObservedDisk::new(Box::new(disk), counts.clone());
        FileStorage::open_disk(
            Box::new(observed),
            Path::new("sim"),
            None,
            Tuning::default(),
        )
        .expect("open with a copy unreadable");
        assert!(counts.failed_reads.load(Ordering::Relaxed) > 0);
    }
}
