//! Log append throughput with group commit, under concurrent writers.
//!
//! Each writer appends an entry and waits until the storage thread reports it durable, like a
//! replica waiting to send prepare_ok; the storage thread covers every write that arrived while
//! the previous fdatasync ran with the next one. Prints entries/s, MB/s and the mean number of
//! entries per sync, for several writer counts and entry sizes. Compare with the disk's raw
//! limit measured in the same sitting: `../shared/anchors/fsync.sh DIR`.
//!
//! `cargo bench -p vsr-storage --bench append [-- DIR]` (default: a temporary directory under
//! the current directory, so the filesystem is the one under test, not tmpfs).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vsr::{EntryChecksum, Write};
use vsr_storage::{FileStorage, Identity, StorageThread, format};

mod common;

const RUN: Duration = Duration::from_secs(3);

/// Orders appends (ops must be consecutive) and tracks what is durable.
struct Log {
    next: Mutex<(u64, EntryChecksum)>,
    durable: Mutex<u64>,
    became_durable: Condvar,
    syncs: Mutex<u64>,
}

fn run(dir: &std::path::Path, writers: usize, body_size: usize) -> (f64, f64, f64) {
    let path = dir.join(format!("bench-{writers}-{body_size}"));
    format(
        &path,
        Identity {
            cluster: 1,
            replica: 0,
            replica_count: 1,
        },
        false,
    )
    .expect("format");
    let opened = FileStorage::open(&path, Some(1)).expect("open");
    let log = Arc::new(Log {
        next: Mutex::new((1, EntryChecksum(0))),
        durable: Mutex::new(0),
        became_durable: Condvar::new(),
        syncs: Mutex::new(0),
    });
    let notify = Arc::clone(&log);
    let thread = Arc::new(StorageThread::spawn(
        opened.storage,
        Box::new(move |event| {
            let vsr_storage::StorageEvent::Durable(seq) = event else {
                return;
            };
            *notify.syncs.lock().unwrap() += 1;
            *notify.durable.lock().unwrap() = seq;
            notify.became_durable.notify_all();
        }),
    ));
    let body = Bytes::from(vec![7u8; body_size]);
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (log, thread, body) = (Arc::clone(&log), Arc::clone(&thread), body.clone());
            std::thread::spawn(move || {
                let mut appended = 0u64;
                while start.elapsed() < RUN {
                    let seq = {
                        let mut next = log.next.lock().unwrap();
                        let entry = common::next_entry(&mut next, &body);
                        let op = entry.op.get();
                        // The seq equals the op: one write per append.
                        thread.submit(op, Write::Append(entry));
                        op
                    };
                    let mut durable = log.durable.lock().unwrap();
                    while *durable < seq {
                        durable = log.became_durable.wait(durable).unwrap();
                    }
                    appended += 1;
                }
                appended
            })
        })
        .collect();
    let entries: u64 = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .sum();
    let seconds = start.elapsed().as_secs_f64();
    let syncs = *log.syncs.lock().unwrap();
    drop(thread);
    let _ = std::fs::remove_dir_all(&path);
    let per_second = entries as f64 / seconds;
    let megabytes = per_second * (body_size + 85) as f64 / 1e6;
    (per_second, megabytes, entries as f64 / syncs.max(1) as f64)
}

fn main() {
    let parent = std::env::args()
        .skip(1)
        .find(|argument| !argument.starts_with('-'))
        .map_or_else(|| std::env::current_dir().expect("cwd"), PathBuf::from);
    let dir = tempfile::tempdir_in(&parent).expect("a temporary directory");
    println!(
        "log append with group commit, {} s per row, in {}",
        RUN.as_secs(),
        parent.display()
    );
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>16}",
        "writers", "entry B", "entries/s", "MB/s", "entries/sync"
    );
    for body_size in [100, 4096] {
        for writers in [1, 4, 16, 64] {
            let (per_second, megabytes, batch) = run(dir.path(), writers, body_size);
            println!(
                "{writers:>8} {:>10} {per_second:>12.0} {megabytes:>10.2} {batch:>16.1}",
                body_size + 85
            );
        }
    }
}
