//! One replica's storage under simulation: the real `vsr-storage` over a [`SimDisk`], driven the
//! way `StorageThread` drives it, and the durability oracle that checks it.
//!
//! ```text
//!   Persist ──▶ queue ──StorageWrite──▶ FileStorage::write (each) ──StorageSync──▶ sync
//!                                          │ disk calls                │ then on_persisted(last)
//!                                          ▼                           ▼
//!                                  SimDisk: page cache + pending ──▶ platter ──crash/open──▶ check
//! ```
//!
//! A batch takes every queued write (at most `BATCH_WRITES_MAX`), as the storage thread does;
//! its writes reach the disk at one event and its sync at a later one, so crashes land between
//! a write and its sync. Completions are reported in order, only after the sync returned.
//!
//! **The oracle.** `durable` is the [`DurableState`] an ideal disk would hold after every write
//! reported durable since the last open; `undurable` the writes issued after those. When the
//! replica opens its disk again, what storage returns must be `durable` followed by a prefix of
//! `undurable` (prefix-consistent, nothing acknowledged missing), unless a fault that can
//! damage data was injected since, and then storage must report the damage: it may never
//! return less than it acknowledged without saying so. Damage reported with no such fault is a
//! storage bug too.

use std::collections::VecDeque;
use std::path::Path;

use vsr::{DurableState, Write};
use vsr_storage::sim_disk::SimDisk;
use vsr_storage::{FileStorage, Identity, Opened, StorageError, Tuning};

/// One replica's disk, the storage open on it (while the replica runs), and the oracle.
pub(crate) struct ReplicaStorage {
    pub(crate) disk: SimDisk,
    pub(crate) storage: Option<FileStorage>,
    /// Writes submitted and not yet taken by a batch.
    queue: VecDeque<(u64, Write)>,
    /// The last sequence number of the batch written and waiting for its sync.
    pub(crate) syncing: Option<u64>,
    /// A `StorageWrite` event is scheduled or a batch is in progress.
    pub(crate) busy: bool,
    /// The oracle: the state every write reported durable since the last open built.
    pub(crate) durable: DurableState,
    /// Writes issued after those, in order, with their sequence numbers.
    undurable: VecDeque<(u64, Write)>,
    /// A fault that can damage data (corruption, a latent read error, a misdirected write, a
    /// reordered crash image) was injected, or open found damage the replica has not yet
    /// overwritten: open may report damage, and a restart may not give back every write.
    pub(crate) latent_damage: bool,
    /// Open reported damage, and no write has been durable since.
    damaged_open: bool,
    pub(crate) tuning: Tuning,
}

/// What opening the disk gave.
pub(crate) enum OpenOutcome {
    /// The state to hand to the replica; whether storage reported damage.
    Opened(DurableState, bool),
    /// Storage refused to open (no readable superblock, a missing live WAL): an operator must
    /// rebuild the replica.
    Unopenable(StorageError),
}

impl ReplicaStorage {
    /// A freshly formatted disk; `recovering` for a replica that lost its state.
    pub(crate) fn format(identity: Identity, recovering: bool, tuning: Tuning) -> Self {
        let disk = SimDisk::new();
        vsr_storage::format_disk(
            &mut disk.clone(),
            Path::new("sim"),
            identity,
            recovering,
            tuning,
        )
        .expect("formatting an empty simulated disk");
        let durable = if recovering {
            DurableState::recovering()
        } else {
            DurableState::default()
        };
        Self {
            disk,
            storage: None,
            queue: VecDeque::new(),
            syncing: None,
            busy: false,
            durable,
            undurable: VecDeque::new(),
            latent_damage: false,
            damaged_open: false,
            tuning,
        }
    }

    /// Opens the disk for a new incarnation and checks what it read against the oracle.
    ///
    /// # Errors
    /// A durability violation: storage returned less than it acknowledged without reporting
    /// damage, or a state no prefix of the writes gives, or damage no injected fault explains.
    pub(crate) fn open(&mut self, cluster: u128) -> Result<OpenOutcome, String> {
        assert!(self.storage.is_none() && self.queue.is_empty());
        let opened = FileStorage::open_disk(
            Box::new(self.disk.clone()),
            Path::new("sim"),
            Some(cluster),
            self.tuning,
        );
        let Opened {
            storage,
            durable,
            damage,
            ..
        } = match opened {
            Ok(opened) => opened,
            Err(error) if self.latent_damage => return Ok(OpenOutcome::Unopenable(error)),
            Err(error) => {
                return Err(format!(
                    "storage: the disk no longer opens after faults that damage nothing: {error}"
                ));
            }
        };
        if durable.damaged {
            if !self.latent_damage {
                return Err(format!(
                    "storage: open reported damage ({damage:?}) though no injected fault can \
                     have damaged the disk"
                ));
            }
        } else {
            self.check_prefix(&durable)?;
        }
        self.storage = Some(storage);
        self.damaged_open = durable.damaged;
        self.latent_damage = durable.damaged;
        self.durable = DurableState {
            damaged: false,
            ..durable.clone()
        };
        self.undurable.clear();
        Ok(OpenOutcome::Opened(durable, self.damaged_open))
    }

    /// Whether `opened` is the oracle's durable state followed by a prefix of the writes issued
    /// after it.
    fn check_prefix(&self, opened: &DurableState) -> Result<(), String> {
        let mut state = self.durable.clone();
        if same(&state, opened) {
            return Ok(());
        }
        for (_, write) in &self.undurable {
            state.apply(write);
            if same(&state, opened) {
                return Ok(());
            }
        }
        Err(format!(
            "storage: after a restart the replica read back {} — not what its durable writes \
             built ({}) nor any later prefix of its writes{}",
            describe(opened),
            describe(&self.durable),
            if self.latent_damage {
                ", and storage reported no damage"
            } else {
                ""
            }
        ))
    }

    /// Queues a write the replica emitted.
    pub(crate) fn submit(&mut self, seq: u64, write: Write) {
        self.undurable.push_back((seq, write.clone()));
        self.queue.push_back((seq, write));
    }

    /// Takes the next batch, as the storage thread does.
    pub(crate) fn take_batch(&mut self) -> Vec<(u64, Write)> {
        let count = self.queue.len().min(vsr_storage::BATCH_WRITES_MAX);
        self.queue.drain(..count).collect()
    }

    /// Whether writes wait for a batch.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Every write up to `seq` is durable: moves those writes into the oracle's durable state
    /// and returns them.
    pub(crate) fn made_durable(&mut self, seq: u64) -> Vec<Write> {
        let mut made = Vec::new();
        while self
            .undurable
            .front()
            .is_some_and(|(issued, _)| *issued <= seq)
        {
            let (_, write) = self.undurable.pop_front().expect("checked");
            self.durable.apply(&write);
            made.push(write);
        }
        if !made.is_empty() && self.damaged_open {
            // The first write after a damaged open marks the replica recovering before it
            // discards anything: the damage is now carried by the view state.
            self.damaged_open = false;
            self.latent_damage = false;
        }
        made
    }

    /// The replica stopped: its storage and queued writes are gone; the disk keeps what it
    /// keeps (the caller crashes the disk).
    pub(crate) fn stop(&mut self) {
        self.storage = None;
        self.queue.clear();
        self.syncing = None;
        self.busy = false;
        self.disk.fail_at(None);
    }

    /// Whether a restart now might not give back everything written, or the replica must
    /// recover: it counts against the fault budget.
    pub(crate) fn is_impaired(&self) -> bool {
        self.latent_damage || self.durable.view_state.recovering
    }
}

/// Equality of the parts of a durable state storage must give back exactly.
fn same(a: &DurableState, b: &DurableState) -> bool {
    a.view_state == b.view_state && a.checkpoint == b.checkpoint && a.entries == b.entries
}

fn describe(state: &DurableState) -> String {
    let view = state.view_state;
    let ops = match (state.entries.front(), state.entries.back()) {
        (Some(first), Some(last)) => format!("ops {}..={}", first.op, last.op),
        _ => "no entries".to_owned(),
    };
    format!(
        "view {} (last normal {}, commit {}{}), checkpoint at op {}, {ops}",
        view.view,
        view.last_normal_view,
        view.commit,
        if view.recovering { ", recovering" } else { "" },
        state.checkpoint_op(),
    )
}
