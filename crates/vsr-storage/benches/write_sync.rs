//! Micro-benchmarks of the storage path without the thread: encoding and writing a batch of
//! entries, and the batch made durable (two fdatasyncs: the WAL, then its header copies).
//! `cargo bench -p vsr-storage --bench write_sync` (files under the current directory, so the
//! filesystem measured is the one under test, not a tmpfs `/tmp`).

use bytes::Bytes;
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use vsr::{EntryChecksum, Write};
use vsr_storage::{FileStorage, Identity, format};

mod common;

fn main() {
    divan::main();
}

/// A formatted, opened storage in a fresh directory under the current directory, and the op
/// and checksum its next append continues from.
struct Fixture {
    storage: FileStorage,
    next: (u64, EntryChecksum),
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir_in(std::env::current_dir().expect("cwd")).expect("tempdir");
        let path = dir.path().join("replica");
        let identity = Identity {
            cluster: 1,
            replica: 0,
            replica_count: 1,
        };
        format(&path, identity, false).expect("format");
        let storage = FileStorage::open(&path, Some(1)).expect("open").storage;
        Self {
            storage,
            next: (1, EntryChecksum(0)),
            _dir: dir,
        }
    }

    /// Appends `count` entries of a 124-byte body (a 16-byte key, 100-byte value put).
    fn append(&mut self, count: usize, body: &Bytes) {
        for _ in 0..count {
            let entry = common::next_entry(&mut self.next, body);
            self.storage.write(&Write::Append(entry)).expect("write");
        }
    }
}

/// Encoding and writing a batch (page cache only, no sync).
#[divan::bench(args = [1, 64, 512])]
fn write_batch(bencher: Bencher, entries: usize) {
    let mut fixture = Fixture::new();
    let body = Bytes::from(vec![7u8; 124]);
    bencher
        .counter(ItemsCount::new(entries))
        .bench_local(|| fixture.append(black_box(entries), &body));
    fixture.storage.sync().expect("sync");
}

/// A batch written and made durable: what one group commit of the storage thread costs.
#[divan::bench(args = [1, 64, 512], sample_count = 30, sample_size = 1)]
fn write_and_sync_batch(bencher: Bencher, entries: usize) {
    let mut fixture = Fixture::new();
    let body = Bytes::from(vec![7u8; 124]);
    bencher.counter(ItemsCount::new(entries)).bench_local(|| {
        fixture.append(entries, &body);
        fixture.storage.sync().expect("sync");
    });
}
