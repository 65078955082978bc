//! [`StorageThread`]: group commit on a dedicated thread, checkpoints on another.
//!
//! The driver submits `(seq, write)` pairs without blocking. The thread waits for the first,
//! takes everything else already queued (at most [`BATCH_WRITES_MAX`]), writes it all, calls
//! one fdatasync, then reports the highest sequence number of the batch as durable. Writes are
//! carried out in submission order and reported in order, as `Replica::on_persisted` requires.
//!
//! A checkpoint submitted with [`StorageThread::checkpoint`] (`vsr::Command::Checkpoint`) is
//! written in the background: in order, the storage thread makes every earlier write durable
//! and hands the checkpoint to a writer thread, which encodes the snapshot into its file; the
//! storage thread goes on with later writes meanwhile. When the file is durable, the storage
//! thread makes it live between two batches (superblock, then the log's rotation) and reports
//! [`StorageEvent::Checkpoint`]. One checkpoint is written at a time: a checkpoint (in the
//! background or in order) submitted while one is being written waits for it.
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

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;

use vsr::{Checkpoint, Op, Write};

use crate::storage::WrittenCheckpoint;
use crate::{FileStorage, StorageError};

/// Most writes carried out before one fdatasync.
pub const BATCH_WRITES_MAX: usize = 1024;

/// What the storage thread reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageEvent {
    /// Every write up to this sequence number is durable (`Replica::on_persisted`).
    Durable(u64),
    /// The checkpoint at this op is durable and live (`Replica::on_checkpoint_durable`).
    Checkpoint(Op),
}

/// What reaches the storage thread.
enum Job {
    Writes(Vec<(u64, Write)>),
    Checkpoint(Box<Checkpoint>),
    /// The writer thread finished a checkpoint file (or panicked: a bug, re-raised here).
    Written(thread::Result<Result<Box<WrittenCheckpoint>, StorageError>>),
    /// The owner hangs up: finish what is queued, then stop.
    Stop,
}

/// A storage thread doing group commit. Shut down (and joined) on drop.
pub struct StorageThread {
    sender: Option<Sender<Job>>,
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
    /// Starts the thread. `on_event` runs on the storage thread for each [`StorageEvent`].
    ///
    /// # Panics
    /// If the operating system cannot start a thread.
    #[must_use]
    pub fn spawn(
        storage: FileStorage,
        on_event: Box<dyn FnMut(StorageEvent) + Send>,
    ) -> StorageThread {
        let (sender, receiver) = mpsc::channel();
        let written = sender.clone();
        let handle = thread::Builder::new()
            .name("vsr-storage".to_owned())
            .spawn(move || Worker::new(storage, written, on_event).run(&receiver))
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
        self.send(Job::Writes(writes));
    }

    /// Queues a checkpoint to be written in the background, after every write queued before it
    /// is durable; [`StorageEvent::Checkpoint`] reports it. Never blocks.
    pub fn checkpoint(&self, checkpoint: Checkpoint) {
        self.send(Job::Checkpoint(Box::new(checkpoint)));
    }

    fn send(&self, job: Job) {
        if let Some(sender) = &self.sender {
            // A send fails only when the thread has stopped; see the module docs.
            let _ = sender.send(job);
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
        self.send(Job::Stop);
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
        self.send(Job::Stop);
        self.sender = None;
        if let Some(handle) = self.handle.take()
            && let Err(panic) = handle.join()
            && !thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The storage thread's state.
struct Worker {
    storage: FileStorage,
    /// Where the writer thread reports the file it wrote.
    written: Sender<Job>,
    on_event: Box<dyn FnMut(StorageEvent) + Send>,
    seq_last: Option<u64>,
    /// The writer thread of the checkpoint being written, if any.
    writer: Option<JoinHandle<()>>,
    /// The thread removing the files the last checkpoint made leftovers, if any.
    remover: Option<JoinHandle<Result<(), StorageError>>>,
    /// Jobs received while waiting for the writer, to carry out next.
    backlog: VecDeque<Job>,
}

impl Worker {
    fn new(
        storage: FileStorage,
        written: Sender<Job>,
        on_event: Box<dyn FnMut(StorageEvent) + Send>,
    ) -> Self {
        Self {
            storage,
            written,
            on_event,
            seq_last: None,
            writer: None,
            remover: None,
            backlog: VecDeque::new(),
        }
    }

    /// Carries out jobs until the owner hangs up (`Ok`) or a write or sync fails (the error).
    fn run(mut self, receiver: &Receiver<Job>) -> Result<(), StorageError> {
        let result = self.serve(receiver);
        // Never leave the writer thread behind: it may still be writing into the directory.
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        result.and(self.join_remover())
    }

    /// Waits for the files of the last checkpoint to be removed: before a checkpoint begins
    /// (no removal may overlap the files it creates) and before stopping.
    fn join_remover(&mut self) -> Result<(), StorageError> {
        match self.remover.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(removed)) => removed,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }

    fn serve(&mut self, receiver: &Receiver<Job>) -> Result<(), StorageError> {
        loop {
            let job = match self.backlog.pop_front() {
                Some(job) => job,
                None => match receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return Ok(()),
                },
            };
            match job {
                Job::Stop => {
                    self.wait_for_writer(receiver)?;
                    return Ok(());
                }
                Job::Writes(mut batch) => {
                    // Everything else already queued joins the batch, up to a checkpoint.
                    while batch.len() < BATCH_WRITES_MAX && self.backlog.is_empty() {
                        match receiver.try_recv() {
                            Ok(Job::Writes(next)) => batch.extend(next),
                            Ok(other) => self.backlog.push_back(other),
                            Err(_) => break,
                        }
                    }
                    self.write_batch(receiver, &batch)?;
                }
                Job::Checkpoint(checkpoint) => {
                    self.wait_for_writer(receiver)?;
                    self.join_remover()?;
                    let job = self.storage.begin_checkpoint(&checkpoint)?;
                    let written = self.written.clone();
                    let writer = thread::Builder::new()
                        .name("vsr-checkpoint".to_owned())
                        .spawn(move || {
                            // A panic (a bug, say in the state machine's encoding) must reach
                            // the storage thread, which would otherwise wait for the file forever.
                            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                job.run_in_background().map(Box::new)
                            }));
                            let _ = written.send(Job::Written(result));
                        })
                        .expect("spawning the checkpoint writer");
                    self.writer = Some(writer);
                }
                Job::Written(written) => self.finish(written)?,
            }
        }
    }

    fn write_batch(
        &mut self,
        receiver: &Receiver<Job>,
        batch: &[(u64, Write)],
    ) -> Result<(), StorageError> {
        for (seq, write) in batch {
            assert!(
                self.seq_last < Some(*seq),
                "storage sequence numbers must increase"
            );
            self.seq_last = Some(*seq);
            if matches!(write, Write::Checkpoint(_)) {
                // In order, it supersedes the one in the background, which goes first.
                self.wait_for_writer(receiver)?;
                self.join_remover()?;
            }
            self.storage.write(write)?;
        }
        self.storage.sync_wal()?;
        (self.on_event)(StorageEvent::Durable(
            self.seq_last.expect("a batch is never empty"),
        ));
        // After the report: the batch's writes wait for no step of rotation.
        self.storage.step_rotation()?;
        Ok(())
    }

    /// Makes a written checkpoint live and reports it.
    fn finish(
        &mut self,
        written: thread::Result<Result<Box<WrittenCheckpoint>, StorageError>>,
    ) -> Result<(), StorageError> {
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let written = match written {
            Ok(written) => written?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let op = written.op();
        self.join_remover()?;
        let leftovers = self.storage.finish_checkpoint(*written)?;
        (self.on_event)(StorageEvent::Checkpoint(op));
        if !leftovers.is_empty() {
            // Unlinking a large file can keep the disk busy a while: not between two batches.
            let remover = thread::Builder::new()
                .name("vsr-remove".to_owned())
                .spawn(move || leftovers.remove())
                .expect("spawning the thread removing leftover files");
            self.remover = Some(remover);
        }
        Ok(())
    }

    /// Waits until no checkpoint is being written, keeping the jobs that arrive meanwhile.
    fn wait_for_writer(&mut self, receiver: &Receiver<Job>) -> Result<(), StorageError> {
        while self.writer.is_some() {
            match receiver.recv() {
                Ok(Job::Written(written)) => self.finish(written)?,
                Ok(other) => self.backlog.push_back(other),
                Err(_) => unreachable!("the worker holds a sender"),
            }
        }
        Ok(())
    }
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
            Box::new(move |event| {
                if let StorageEvent::Durable(seq) = event {
                    sender.send(seq).unwrap();
                }
            }),
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

    #[test]
    fn a_panic_while_writing_a_checkpoint_reaches_the_owner() {
        struct Panics;
        impl vsr::DeltaSource for Panics {
            fn pieces(self: std::sync::Arc<Self>) -> Box<dyn Iterator<Item = Bytes> + Send> {
                panic!("the state machine's encoding failed")
            }
        }
        let (_disk, thread, receiver) = spawn_on_formatted_disk();
        let entry = noop(1);
        let checksum = entry.checksum;
        thread.submit(1, Write::Append(entry));
        assert_eq!(receiver.recv(), Ok(1));
        thread.checkpoint(Checkpoint {
            op: Op(1),
            op_checksum: checksum,
            since: Op(0),
            snapshot: vsr::Snapshot::from_source(std::sync::Arc::new(Panics)),
        });
        // Not a hang: the writer's panic is re-raised by the storage thread, then by join.
        let joined = std::panic::catch_unwind(AssertUnwindSafe(|| thread.join()));
        assert!(joined.is_err(), "the panic was lost");
    }
}
