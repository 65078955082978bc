//! [`StorageThread`]: group commit on a dedicated thread.
//!
//! The driver submits `(seq, write)` pairs without blocking. The thread waits for the first,
//! takes everything else already queued (at most [`BATCH_WRITES_MAX`]), writes it all, calls
//! one fdatasync, then reports the highest sequence number of the batch as durable. Writes are
//! carried out in submission order and reported in order, as `Replica::on_persisted` requires.
//!
//! # Failure
//!
//! A storage error (disk full, EIO) panics the storage thread with a message naming the error.
//! Nothing after the failed write is ever reported durable, so the replica never acknowledges
//! a write that is not on disk; dropping the [`StorageThread`] (or [`StorageThread::join`])
//! re-raises the panic in the owner's thread, which must stop the replica. The server should
//! check [`StorageThread::is_running`] (e.g. on each tick) to stop promptly.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};

use vsr::Write;

use crate::FileStorage;

/// Most writes carried out before one fdatasync.
pub const BATCH_WRITES_MAX: usize = 1024;

/// A storage thread doing group commit. Shut down (and joined) on drop.
pub struct StorageThread {
    sender: Option<Sender<Vec<(u64, Write)>>>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StorageThread {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StorageThread")
            .field("running", &self.is_running())
            .finish()
    }
}

impl StorageThread {
    /// Starts the thread. `on_durable(seq)` runs on the storage thread after every write up to
    /// `seq` is durable.
    ///
    /// # Panics
    /// If the operating system cannot start a thread.
    #[must_use]
    pub fn spawn(storage: FileStorage, on_durable: Box<dyn FnMut(u64) + Send>) -> StorageThread {
        let (sender, receiver) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("vsr-storage".to_owned())
            .spawn(move || run(storage, &receiver, on_durable))
            .expect("spawning the storage thread");
        StorageThread {
            sender: Some(sender),
            handle: Some(handle),
        }
    }

    /// Queues a write; never blocks. Sequence numbers must increase. After the thread stopped
    /// on an error the write is dropped: it will never be reported durable.
    pub fn submit(&self, seq: u64, write: Write) {
        self.submit_all(vec![(seq, write)]);
    }

    /// Queues several writes at once (one wake-up of the thread), in order; as [`Self::submit`].
    pub fn submit_all(&self, writes: Vec<(u64, Write)>) {
        if writes.is_empty() {
            return;
        }
        if let Some(sender) = &self.sender {
            // A send fails only when the thread has stopped; see the module docs.
            let _ = sender.send(writes);
        }
    }

    /// Whether the thread is still running (false once it stopped on a storage error).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.handle
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
    }

    /// Finishes every queued write, stops the thread and returns the storage error that stopped
    /// it, if any, as its panic message.
    ///
    /// # Errors
    /// The panic message of the storage thread.
    pub fn join(mut self) -> Result<(), String> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), String> {
        self.sender = None;
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        handle.join().map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    panic
                        .downcast_ref::<&str>()
                        .map(|message| (*message).to_owned())
                })
                .unwrap_or_else(|| "the storage thread panicked".to_owned())
        })
    }
}

impl Drop for StorageThread {
    fn drop(&mut self) {
        if let Err(message) = self.stop()
            && !thread::panicking()
        {
            panic!("{message}");
        }
    }
}

fn run(
    mut storage: FileStorage,
    receiver: &Receiver<Vec<(u64, Write)>>,
    mut on_durable: Box<dyn FnMut(u64) + Send>,
) {
    let mut seq_last = None;
    while let Ok(mut batch) = receiver.recv() {
        while batch.len() < BATCH_WRITES_MAX {
            match receiver.try_recv() {
                Ok(next) => batch.extend(next),
                Err(_) => break,
            }
        }
        for (seq, write) in &batch {
            assert!(
                seq_last < Some(*seq),
                "storage sequence numbers must increase"
            );
            seq_last = Some(*seq);
            if let Err(error) = storage.write(write) {
                panic!("storage write {seq} failed, the replica must stop: {error}");
            }
        }
        if let Err(error) = storage.sync() {
            panic!("storage sync failed, the replica must stop: {error}");
        }
        on_durable(seq_last.expect("a batch is never empty"));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use vsr::{Entry, Operation};

    use super::*;
    use crate::Identity;
    use crate::sim_disk::SimDisk;
    use crate::storage::{Tuning, format_disk};

    #[test]
    fn a_failing_disk_stops_the_thread_and_nothing_is_reported_durable() {
        let identity = Identity {
            cluster: 1,
            replica: 0,
            replica_count: 1,
        };
        let disk = SimDisk::default();
        let path = Path::new("sim");
        format_disk(&mut disk.clone(), path, identity, false, Tuning::default()).unwrap();
        let opened = FileStorage::open_disk(Box::new(disk.clone()), path, None, Tuning::default());
        disk.fail_at(Some(0));
        let (sender, receiver) = mpsc::channel();
        let thread = StorageThread::spawn(
            opened.unwrap().storage,
            Box::new(move |seq| sender.send(seq).unwrap()),
        );
        let entry = Entry::new(1, 0, 0, 1, 1, 1, Operation::Noop, Bytes::new());
        thread.submit(1, Write::Append(entry));
        let message = thread.join().unwrap_err();
        assert!(message.contains("the replica must stop"), "{message}");
        assert!(
            receiver.try_recv().is_err(),
            "a failed write was reported durable"
        );
    }
}
