//! [`StorageThread`]: group commit on a dedicated thread.
//!
//! The driver submits `(seq, write)` pairs without blocking. The thread waits for the first,
//! takes everything else already queued (at most [`BATCH_WRITES_MAX`]), writes it all, calls
//! one fdatasync, then reports the highest sequence number of the batch as durable. Writes are
//! carried out in submission order and reported in order, as `Replica::on_persisted` requires.
//!
//! # Failure
//!
//! A storage error (disk full, EIO) stops the storage thread: it carries out nothing after the
//! failed write and reports nothing after it durable, so the replica never acknowledges a write
//! that is not on disk. The thread drops `on_durable` as it stops (a channel behind it closes),
//! and [`StorageThread::join`] returns the [`StorageError`], typed, to the owner, which must
//! stop the replica. The owner can also poll [`StorageThread::is_running`] (e.g. on each tick).
//! A panic on the storage thread is a bug, not a storage error: `join` (or drop) re-raises it
//! in the owner's thread.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};

use vsr::Write;

use crate::{FileStorage, StorageError};

/// Most writes carried out before one fdatasync.
pub const BATCH_WRITES_MAX: usize = 1024;

/// A storage thread doing group commit. Shut down (and joined) on drop.
pub struct StorageThread {
    sender: Option<Sender<Vec<(u64, Write)>>>,
    handle: Option<JoinHandle<Result<(), StorageError>>>,
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
    /// it, if any.
    ///
    /// # Errors
    /// The [`StorageError`] of the write or sync that failed: the replica must stop.
    ///
    /// # Panics
    /// If the storage thread panicked (a bug): the panic is re-raised here.
    pub fn join(mut self) -> Result<(), StorageError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StorageError> {
        self.sender = None;
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for StorageThread {
    /// Stops the thread after its queued writes. A storage error is dropped with it: an owner
    /// that must learn of one calls [`StorageThread::join`]. A panic of the thread is re-raised
    /// unless this thread is already panicking.
    fn drop(&mut self) {
        self.sender = None;
        if let Some(handle) = self.handle.take()
            && let Err(panic) = handle.join()
            && !thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Carries out batches until the owner hangs up (`Ok`) or a write or sync fails (the error).
fn run(
    mut storage: FileStorage,
    receiver: &Receiver<Vec<(u64, Write)>>,
    mut on_durable: Box<dyn FnMut(u64) + Send>,
) -> Result<(), StorageError> {
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
            storage.write(write)?;
        }
        storage.sync()?;
        on_durable(seq_last.expect("a batch is never empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use vsr::{Entry, EntryChecksum, Op, Operation, View};

    use super::*;
    use crate::Identity;
    use crate::sim_disk::SimDisk;
    use crate::storage::{Tuning, format_disk};

    /// A storage thread over a freshly formatted simulated disk, and the channel its
    /// completions arrive on.
    fn spawn_on_formatted_disk() -> (SimDisk, StorageThread, mpsc::Receiver<u64>) {
        let identity = Identity {
            cluster: 1,
            replica: 0,
            replica_count: 1,
        };
        let disk = SimDisk::default();
        let path = Path::new("sim");
        format_disk(&mut disk.clone(), path, identity, false, Tuning::default()).unwrap();
        let opened = FileStorage::open_disk(Box::new(disk.clone()), path, None, Tuning::default());
        let (sender, receiver) = mpsc::channel();
        let thread = StorageThread::spawn(
            opened.unwrap().storage,
            Box::new(move |seq| sender.send(seq).unwrap()),
        );
        (disk, thread, receiver)
    }

    /// A no-op entry at `op` (its request number too).
    fn noop(op: u64) -> Entry {
        Entry {
            op: Op(op),
            view: View(0),
            parent: EntryChecksum(0),
            client: 1,
            session: 1,
            request: op,
            operation: Operation::Noop,
            body: Bytes::new(),
            checksum: EntryChecksum(0),
        }
        .sealed()
    }

    #[test]
    fn a_failing_disk_stops_the_thread_and_nothing_is_reported_durable() {
        let (disk, thread, receiver) = spawn_on_formatted_disk();
        disk.fail_at(Some(0));
        let entry = noop(1);
        thread.submit(1, Write::Append(entry));
        let error = thread.join().unwrap_err();
        assert!(matches!(error, StorageError::Io(_)), "{error:?}");
        assert!(
            error.to_string().contains("the replica must stop"),
            "{error}"
        );
        assert!(
            receiver.try_recv().is_err(),
            "a failed write was reported durable"
        );
    }

    #[test]
    fn a_full_disk_reaches_the_owner_as_a_typed_error() {
        let (disk, thread, receiver) = spawn_on_formatted_disk();
        let entry = noop(1);
        thread.submit(1, Write::Append(entry));
        assert_eq!(receiver.recv(), Ok(1));
        disk.fail_with(0, std::io::ErrorKind::StorageFull);
        let entry = noop(2);
        thread.submit(2, Write::Append(entry));
        // The thread stops on the error and drops `on_durable`: the channel closes, unreported.
        assert!(
            receiver.recv().is_err(),
            "a failed write was reported durable"
        );
        match thread.join() {
            Err(StorageError::Io(error)) => {
                assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
            }
            other => panic!("expected the disk's error, got {other:?}"),
        }
    }
}
