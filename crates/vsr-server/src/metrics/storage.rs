//! What storage reveals: the duration of its syncs (`vsr_fsync_seconds`), the damage it found
//! and handled (`vsr_storage_faults_total`), and the size of the data directory's files
//! (`vsr_log_bytes`, `vsr_checkpoint_bytes`, read when scraped).
//!
//! [`StorageMetrics`] exists before storage is opened: it is the [`DiskObserver`] that open and
//! the storage thread report each sync and failed read to, and it takes the damage open found
//! ([`StorageMetrics::damage_found`]). The damage open found is counted once per process: a
//! restarted replica starts its counters with what its open found.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vsr_storage::{Damage, DiskObserver};

use super::histogram::{Histogram, header, metric};

/// Upper bounds, in seconds, of the sync-duration buckets: from a device that acknowledges a
/// flush from its cache (tens of microseconds) to a disk in trouble (seconds).
const FSYNC_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Storage damage detected and handled, by kind: the label of `vsr_storage_faults_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageFault {
    /// A WAL record found corrupt or lost at open (damage in the log's middle, or a synced
    /// record the header copies name but the WAL no longer holds), one per op: the replica
    /// repairs it from its peers through recovery.
    WalRecord,
    /// A record of an unfinished write cut off the log's tail at open: a crash, not
    /// necessarily a faulty disk; never acknowledged, so nothing to repair.
    WalTornTail,
    /// The live checkpoint found damaged or missing at open: repaired from peers.
    Checkpoint,
    /// A read that failed with an I/O error (a latent sector error): the range reads as
    /// damaged data, which the kinds above then report.
    ReadError,
}

impl StorageFault {
    const ALL: [StorageFault; 4] = [
        StorageFault::WalRecord,
        StorageFault::WalTornTail,
        StorageFault::Checkpoint,
        StorageFault::ReadError,
    ];

    fn name(self) -> &'static str {
        match self {
            StorageFault::WalRecord => "wal_record",
            StorageFault::WalTornTail => "wal_torn_tail",
            StorageFault::Checkpoint => "checkpoint",
            StorageFault::ReadError => "read_error",
        }
    }
}

/// The storage's metrics, shared by open, the storage thread and the metrics endpoint.
#[derive(Debug)]
pub(crate) struct StorageMetrics {
    fsync: Histogram<{ FSYNC_BUCKETS.len() }>,
    faults: [AtomicU64; StorageFault::ALL.len()],
    /// The data directory whose files the scrape measures; `None` renders no sizes.
    data_dir: Option<PathBuf>,
}

impl StorageMetrics {
    /// Metrics of the storage in `data_dir` (`None`: no file sizes).
    pub(crate) fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            fsync: Histogram::new(&FSYNC_BUCKETS),
            faults: Default::default(),
            data_dir,
        }
    }

    /// Counts `count` faults of `kind`.
    pub(crate) fn fault(&self, kind: StorageFault, count: u64) {
        let index = StorageFault::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("listed");
        self.faults[index].fetch_add(count, Ordering::Relaxed);
    }

    /// Counts the damage open found.
    pub(crate) fn damage_found(&self, damage: &Damage) {
        self.fault(StorageFault::WalRecord, damage.corrupt_ops.len() as u64);
        self.fault(StorageFault::WalTornTail, damage.torn_tail_records as u64);
        self.fault(
            StorageFault::Checkpoint,
            u64::from(damage.checkpoint_corrupt),
        );
    }

    /// The sync histogram and the fault counters: atomics only.
    pub(super) fn render(&self, out: &mut String) {
        self.fsync.render(
            out,
            "vsr_fsync_seconds",
            "Each fdatasync or fsync storage made on its own handle of the data directory (the \
             WAL and its header copies after each batch, the superblock, the directory): the \
             syncs writes wait for. A background checkpoint's syncs are not included.",
        );
        let name = "vsr_storage_faults_total";
        header(
            out,
            name,
            "Storage damage detected and handled, by kind: wal_record (a WAL record corrupt or \
             lost, found at open; repaired from peers), wal_torn_tail (an unfinished write cut \
             off the log's tail at open: a crash), checkpoint (the live checkpoint damaged or \
             missing at open; repaired from peers), read_error (a read failed with an I/O \
             error). Counted from the process's start.",
            "counter",
        );
        for (kind, value) in StorageFault::ALL.iter().zip(&self.faults) {
            let value = value.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{kind=\"{}\"}} {value}", kind.name());
        }
    }

    /// The sizes of the data directory's files, listed now: blocking, for the scrape's thread.
    pub(super) fn render_sizes(&self, out: &mut String) {
        let Some(dir) = &self.data_dir else { return };
        let (log, checkpoint) = crate::status::data_file_bytes(dir);
        metric(
            out,
            "vsr_log_bytes",
            "Bytes of the WAL files (and their header copies) in the data directory, \
             preallocated space included.",
            "gauge",
            log,
        );
        metric(
            out,
            "vsr_checkpoint_bytes",
            "Bytes of the checkpoint files in the data directory.",
            "gauge",
            checkpoint,
        );
    }
}

impl DiskObserver for StorageMetrics {
    fn synced(&self, elapsed: Duration) {
        self.fsync.observe(elapsed);
    }

    fn read_failed(&self) {
        self.fault(StorageFault::ReadError, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_faults_and_sizes_render() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("wal-1-0.log"), [0u8; 300]).expect("write");
        std::fs::write(dir.path().join("wal-1-0.headers"), [0u8; 20]).expect("write");
        std::fs::write(dir.path().join("checkpoint-5-1.bin"), [0u8; 7]).expect("write");
        std::fs::write(dir.path().join("superblock"), [0u8; 9]).expect("write");
        let metrics = StorageMetrics::new(Some(dir.path().to_owned()));
        metrics.synced(Duration::from_micros(700));
        metrics.synced(Duration::from_secs(3));
        metrics.read_failed();
        metrics.damage_found(&Damage {
            corrupt_ops: vec![4, 5],
            torn_tail_records: 1,
            checkpoint_corrupt: true,
        });
        let mut text = String::new();
        metrics.render(&mut text);
        metrics.render_sizes(&mut text);
        for sample in [
            "# TYPE vsr_fsync_seconds histogram\n",
            "vsr_fsync_seconds_bucket{le=\"0.0005\"} 0\n",
            "vsr_fsync_seconds_bucket{le=\"0.001\"} 1\n",
            "vsr_fsync_seconds_bucket{le=\"2.5\"} 1\n",
            "vsr_fsync_seconds_bucket{le=\"+Inf\"} 2\n",
            "vsr_fsync_seconds_count 2\n",
            "# TYPE vsr_storage_faults_total counter\n",
            "vsr_storage_faults_total{kind=\"wal_record\"} 2\n",
            "vsr_storage_faults_total{kind=\"wal_torn_tail\"} 1\n",
            "vsr_storage_faults_total{kind=\"checkpoint\"} 1\n",
            "vsr_storage_faults_total{kind=\"read_error\"} 1\n",
            "# TYPE vsr_log_bytes gauge\nvsr_log_bytes 320\n",
            "# TYPE vsr_checkpoint_bytes gauge\nvsr_checkpoint_bytes 7\n",
        ] {
            assert!(text.contains(sample), "{sample:?} missing from {text}");
        }
        let mut without = String::new();
        StorageMetrics::new(None).render_sizes(&mut without);
        assert_eq!(without, "");
    }
}
