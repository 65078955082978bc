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

use vsr::{DoViewChange, DurableState, EntryChecksum, Message, Op, PrepareOk, Write};
use vsr_storage::sim_disk::SimDisk;
use vsr_storage::{FileStorage, Identity, Opened, Tuning};

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
    /// Latent damage the page cache may have hidden from the last open (a process crash kept
    /// it): on the platter still, it outlives the first write after a damaged open and stays
    /// latent until a power loss drops the cache.
    damage_hidden: bool,
    /// Every entry ever submitted to this disk, by op and checksum.
    written: std::collections::BTreeSet<(Op, EntryChecksum)>,
    /// The last crash was of the process alone: the page cache, which may hide damage on the
    /// platter (a misdirected write), survived it.
    pub(crate) page_cache_kept: bool,
    /// The sizes the storage runs with.
    tuning: Tuning,
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
            damage_hidden: false,
            page_cache_kept: false,
            written: std::collections::BTreeSet::new(),
            tuning,
        }
    }

    /// Opens the disk for a new incarnation and checks what it read against the oracle; returns
    /// the state to hand to the replica.
    ///
    /// # Errors
    /// A durability violation: storage returned less than it acknowledged without reporting
    /// damage, or a state no prefix of the writes gives, or damage no injected fault explains,
    /// or a disk that no longer opens (no fault the simulator injects can take every superblock
    /// copy or the live WAL's name).
    pub(crate) fn open(&mut self, cluster: u128) -> Result<DurableState, String> {
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
        } = opened.map_err(|error| format!("storage: the disk no longer opens: {error}"))?;
        if self.disk.pending_len() > 0 {
            // After a process crash the page cache still holds unsynced writes, and open reads
            // them: the replica will act on them as durable.
            return Err(format!(
                "storage: open returned data that is not durable ({} operations still unsynced)",
                self.disk.pending_len()
            ));
        }
        if durable.damaged {
            if !self.latent_damage {
                return Err(format!(
                    "storage: open reported damage ({damage:?}) though no injected fault can \
                     have damaged the disk"
                ));
            }
            self.check_damaged(&durable)?;
            self.durable = DurableState {
                damaged: false,
                ..durable.clone()
            };
            self.undurable.clear();
        } else {
            self.check_prefix(&durable)?;
            // Open made what it read durable (a crash of the process alone leaves unsynced
            // writes in the page cache, where open reads them): the replica may act on all of it.
            self.durable = durable.clone();
            self.undurable.clear();
        }
        self.storage = Some(storage);
        self.damaged_open = durable.damaged;
        // Open read what it found; what it could not see (the page cache hid the platter)
        // stays latent until a power loss drops the cache.
        self.damage_hidden = self.latent_damage && self.page_cache_kept;
        self.latent_damage = durable.damaged || self.damage_hidden;
        Ok(durable)
    }

    /// Every state the disk may hold: the oracle's durable state followed by each prefix of the
    /// writes issued after it; with whether storage marked it recovering itself, and how many
    /// of those writes it holds.
    fn candidates(&self) -> Vec<(DurableState, bool, usize)> {
        let mut bases = vec![(self.durable.clone(), false)];
        if self.damaged_open {
            // After a damaged open, storage itself marks the replica recovering before it
            // discards anything (the core's first write says the same): a crash may keep that.
            let mut marked = self.durable.clone();
            marked.view_state.recovering = true;
            bases.push((marked, true));
        }
        let mut candidates = Vec::new();
        for (mut state, marked) in bases {
            candidates.push((state.clone(), marked, 0));
            for (count, (_, write)) in self.undurable.iter().enumerate() {
                state.apply(write);
                candidates.push((state.clone(), marked, count + 1));
            }
        }
        candidates
    }

    /// What a damaged open returns must still be true: the view state of some candidate, and
    /// its checkpoint with entries this disk was once given, or (the checkpoint lost) nothing
    /// but the view state. Damage excuses losing data, never inventing it. (The entries may
    /// include ones a lost truncate had removed: the replica executes none of a damaged log
    /// and repairs through recovery.)
    fn check_damaged(&self, opened: &DurableState) -> Result<(), String> {
        let entries_known = opened
            .entries
            .iter()
            .all(|entry| self.written.contains(&(entry.op, entry.checksum)));
        let consistent = self.candidates().iter().any(|(state, _, _)| {
            state.view_state == opened.view_state
                && ((opened.checkpoint == state.checkpoint
                    && opened.increments == state.increments
                    && entries_known)
                    || (opened.checkpoint.is_none() && opened.entries.is_empty()))
        });
        if consistent {
            return Ok(());
        }
        let differs = self.durable.view_state != opened.view_state;
        Err(format!(
            "storage: a damaged open returned {} — not the valid part of what its writes built \
             ({}){}",
            describe(opened),
            describe(&self.durable),
            if differs {
                format!(
                    "; view state {:?}, expected {:?}",
                    opened.view_state, self.durable.view_state
                )
            } else {
                String::new()
            }
        ))
    }

    /// Whether `opened` is the oracle's durable state followed by a prefix of the writes issued
    /// after it.
    fn check_prefix(&self, opened: &DurableState) -> Result<(bool, usize), String> {
        if let Some((_, marked, count)) = self
            .candidates()
            .into_iter()
            .find(|(state, _, _)| same(state, opened))
        {
            return Ok((marked, count));
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
        if let Write::Append(entry) = &write {
            self.written.insert((entry.op, entry.checksum));
        }
        self.undurable.push_back((seq, write.clone()));
        self.queue.push_back((seq, write));
    }

    /// Takes the next batch, as the storage thread does: every queued write, or the first
    /// `cut` of them (the thread woke while writes were still being queued).
    pub(crate) fn take_batch(&mut self, cut: Option<usize>) -> Vec<(u64, Write)> {
        let count = self
            .queue
            .len()
            .min(vsr_storage::BATCH_WRITES_MAX)
            .min(cut.unwrap_or(usize::MAX));
        self.queue.drain(..count).collect()
    }

    /// Writes waiting for a batch.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether writes wait for a batch.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// A background checkpoint is about to be written between batches (nothing is queued or in
    /// flight): until it is durable, a restart may or may not give it back.
    pub(crate) fn background_begin(&mut self, write: Write) {
        assert!(self.queue.is_empty() && self.syncing.is_none() && !self.busy);
        assert!(
            self.undurable.is_empty(),
            "every earlier write was reported durable"
        );
        self.undurable.push_back((0, write));
    }

    /// The background checkpoint is durable.
    pub(crate) fn background_done(&mut self) {
        let (_, write) = self.undurable.pop_front().expect("begun");
        assert!(self.undurable.is_empty());
        self.durable.apply(&write);
        if self.damaged_open {
            self.damaged_open = false;
            self.latent_damage = self.damage_hidden;
        }
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
            // discards anything: the damage open found is now carried by the view state; what
            // the page cache hid from it is not.
            self.damaged_open = false;
            self.latent_damage = self.damage_hidden;
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

/// Whether `message`, sent by replica `index` whose disk durably holds `durable`, acknowledges
/// an entry that is not durable there: a prepare_ok, or a do_view_change carrying it.
pub(crate) fn acknowledgement_violation(
    durable: &DurableState,
    index: u8,
    message: &Message,
) -> Option<String> {
    let holds = |op: Op, checksum: EntryChecksum| {
        durable
            .entries
            .iter()
            .any(|entry| entry.op == op && entry.checksum == checksum)
            || durable.newest_checkpoint().is_some_and(|checkpoint| {
                checkpoint.op > op || (checkpoint.op == op && checkpoint.op_checksum == checksum)
            })
    };
    match message {
        Message::DoViewChange(DoViewChange { view, .. }) if durable.view_state.view < *view => {
            Some(format!(
                "durability: replica {index} sent do_view_change for view {view} before that view \
             was durable on its disk (durable: view {})",
                durable.view_state.view
            ))
        }
        Message::PrepareOk(PrepareOk { op, checksum, .. }) if !holds(*op, *checksum) => {
            Some(format!(
                "durability: replica {index} sent prepare_ok for op {op} before the entry was \
             durable on its disk"
            ))
        }
        Message::DoViewChange(DoViewChange { view, entries, .. }) => entries
            .iter()
            .find(|entry| !holds(entry.op, entry.checksum))
            .map(|entry| {
                format!(
                    "durability: replica {index} sent do_view_change for view {view} with op {} \
                     not durable on its disk",
                    entry.op
                )
            }),
        _ => None,
    }
}

/// Whether a reply for `op` by replica `index` comes before the op was durable on a quorum:
/// `holders` has a bit per replica whose disk held the op's entry, `checkpoints` the highest
/// checkpoint op each disk held.
pub(crate) fn reply_violation(
    holders: u8,
    checkpoints: &[Op],
    quorum: usize,
    index: u8,
    op: Op,
) -> Option<String> {
    let count = checkpoints
        .iter()
        .enumerate()
        .filter(|(replica, checkpoint)| holders & (1 << replica) != 0 || **checkpoint >= op)
        .count();
    (count < quorum).then(|| {
        format!(
            "durability: replica {index} replied for op {op}, durable on only {count} disks \
             (a quorum is {quorum})"
        )
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vsr::{Entry, Op, Operation, View};
    use vsr_storage::sim_disk::SECTOR_SIZE;

    use super::*;

    fn entry(op: u64) -> Entry {
        Entry {
            op: Op(op),
            view: View(1),
            parent: EntryChecksum(u128::from(op)),
            client: 7,
            session: 1,
            request: op,
            operation: Operation::Noop,
            body: Bytes::new(),
            checksum: EntryChecksum(0),
        }
        .sealed()
    }

    fn formatted() -> ReplicaStorage {
        let identity = Identity {
            cluster: 9,
            replica: 0,
            replica_count: 3,
        };
        let mut storage =
            ReplicaStorage::format(identity, false, crate::swarm::scenario_storage_tuning());
        assert!(!storage.open(9).unwrap().damaged);
        storage
    }

    /// Writes, syncs and reports durable `writes` with sequence numbers from `seq`.
    fn write_durably(storage: &mut ReplicaStorage, seq: u64, writes: &[Write]) {
        for (offset, write) in writes.iter().enumerate() {
            let seq = seq + offset as u64;
            storage.submit(seq, write.clone());
            storage.storage.as_mut().unwrap().write(write).unwrap();
        }
        storage.take_batch(None);
        storage.storage.as_mut().unwrap().sync().unwrap();
        storage.made_durable(seq + writes.len() as u64 - 1);
    }

    fn crash(storage: &mut ReplicaStorage) {
        storage.stop();
        storage.disk.crash(|_, _| vsr_storage::sim_disk::Fate::Lost);
    }

    #[test]
    fn a_restart_that_gives_back_every_durable_write_passes() {
        let mut storage = formatted();
        write_durably(
            &mut storage,
            1,
            &[Write::Append(entry(1)), Write::Append(entry(2))],
        );
        // Issued, written, never synced: a crash may keep or lose it.
        storage.submit(3, Write::Append(entry(3)));
        crash(&mut storage);
        let state = storage.open(9).unwrap();
        assert!(!state.damaged && state.entries.len() == 2);
    }

    #[test]
    fn the_oracle_catches_a_restart_that_lost_a_durable_write() {
        let mut storage = formatted();
        write_durably(&mut storage, 1, &[Write::Append(entry(1))]);
        // The oracle believes op 2 durable, but the disk never saw it (a storage that reports
        // a write durable before it is).
        storage.submit(2, Write::Append(entry(2)));
        storage.made_durable(2);
        crash(&mut storage);
        let error = storage.open(9).expect_err("the loss is caught");
        assert!(
            error.contains("not what its durable writes built"),
            "{error}"
        );
    }

    #[test]
    fn the_oracle_catches_damage_no_fault_explains() {
        let mut storage = formatted();
        write_durably(
            &mut storage,
            1,
            &[Write::Append(entry(1)), Write::Append(entry(2))],
        );
        crash(&mut storage);
        let wal = storage
            .disk
            .durable_files()
            .into_iter()
            .find(|(name, _)| name.ends_with(".log"))
            .unwrap();
        storage.disk.corrupt_sector(&wal.0, 0, 0xff);
        // Injected but not recorded as injected: the damage report is unexplained.
        let error = storage.open(9).expect_err("unexplained damage is caught");
        assert!(error.contains("no injected fault"), "{error}");
        // Recorded as injected: the same damage is expected.
        let mut storage = formatted();
        write_durably(
            &mut storage,
            1,
            &[Write::Append(entry(1)), Write::Append(entry(2))],
        );
        crash(&mut storage);
        storage.disk.corrupt_sector(&wal.0, 0, 0xff);
        storage.latent_damage = true;
        assert!(storage.open(9).unwrap().damaged);
    }

    #[test]
    fn damage_a_surviving_page_cache_hid_outlives_a_damaged_open() {
        let mut storage = formatted();
        write_durably(
            &mut storage,
            1,
            &[Write::Append(entry(1)), Write::Append(entry(2))],
        );
        // The checkpoint file's write lands elsewhere on the platter; the page cache shows it
        // in place.
        storage.disk.misdirect_next_in("checkpoint-", 15);
        storage.latent_damage = true;
        let checkpoint = vsr::Checkpoint {
            op: Op(2),
            op_checksum: entry(2).checksum,
            since: vsr::Op(0),
            snapshot: Bytes::from(vec![0xc4; 300]).into(),
        };
        write_durably(
            &mut storage,
            3,
            &[
                Write::Checkpoint(checkpoint),
                Write::Append(entry(3)),
                Write::Append(entry(4)),
            ],
        );
        assert!(!storage.disk.misdirect_armed());
        // The process alone crashes; at the restart a sector of the WAL fails reads. Open sees
        // that damage, not the checkpoint's.
        storage.stop();
        storage.disk.crash_process();
        storage.page_cache_kept = true;
        let wal = storage
            .disk
            .durable_files()
            .into_iter()
            .find(|(name, _)| name.ends_with(".log"))
            .unwrap();
        storage
            .disk
            .make_unreadable(&wal.0, (wal.1 - 1) / SECTOR_SIZE);
        let opened = storage.open(9).unwrap();
        assert!(opened.damaged && opened.checkpoint.is_some());
        // The first write after the damaged open marks the replica recovering; the checkpoint
        // stays live, misdirected on the platter.
        let mut view_state = opened.view_state;
        view_state.recovering = true;
        write_durably(&mut storage, 6, &[Write::ViewState(view_state)]);
        assert!(storage.is_impaired() && storage.latent_damage);
        // A power loss drops the page cache: the next open finds the checkpoint corrupt.
        crash(&mut storage);
        storage.page_cache_kept = false;
        let opened = storage.open(9).unwrap();
        assert!(opened.damaged && opened.checkpoint.is_none());
    }

    #[test]
    fn acknowledging_an_entry_not_durable_is_caught() {
        let mut durable = DurableState::default();
        durable.apply(&Write::Append(entry(1)));
        let ok = |op: u64, checksum: EntryChecksum| {
            Message::PrepareOk(PrepareOk {
                view: View(1),
                op: Op(op),
                checksum,
            })
        };
        assert_eq!(
            acknowledgement_violation(&durable, 0, &ok(1, entry(1).checksum)),
            None
        );
        assert!(acknowledgement_violation(&durable, 0, &ok(2, entry(2).checksum)).is_some());
        // Another entry at a durable op is not durable either.
        assert!(acknowledgement_violation(&durable, 0, &ok(1, EntryChecksum(12345))).is_some());
        let do_view_change = |entries: Vec<Entry>| {
            Message::DoViewChange(DoViewChange {
                view: View(2),
                last_normal_view: View(1),
                op: Op(2),
                commit: Op(0),
                entries,
            })
        };
        // The view is not durable yet.
        assert!(acknowledgement_violation(&durable, 0, &do_view_change(vec![entry(1)])).is_some());
        durable.view_state.view = View(2);
        assert_eq!(
            acknowledgement_violation(&durable, 0, &do_view_change(vec![entry(1)])),
            None
        );
        assert!(
            acknowledgement_violation(&durable, 0, &do_view_change(vec![entry(1), entry(2)]))
                .is_some()
        );
    }

    #[test]
    fn a_reply_before_a_quorum_holds_the_op_is_caught() {
        // Three replicas, quorum 2: replica 0 alone holds op 5.
        assert!(reply_violation(0b001, &[Op(0), Op(0), Op(0)], 2, 0, Op(5)).is_some());
        assert_eq!(
            reply_violation(0b101, &[Op(0), Op(0), Op(0)], 2, 0, Op(5)),
            None
        );
        // A checkpoint past the op holds it too.
        assert_eq!(
            reply_violation(0b001, &[Op(0), Op(6), Op(0)], 2, 0, Op(5)),
            None
        );
    }
}
