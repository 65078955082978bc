//! One replica's simulated disk, at the level of the core's [`Write`]s.
//!
//! A write is issued when the replica emits it and completes after a drawn latency, in order;
//! only a completed write is durable. What the disk holds is the [`DurableState`] the completed
//! writes built up, plus damage that is latent until the next restart reads it:
//!
//! ```text
//!   Persist ──▶ pending (issued, in order) ──complete──▶ durable ──open──▶ DurableState
//!                   │ crash                                 ▲              (valid prefix,
//!                   └── a prefix kept, the next maybe torn ─┘               damaged: true)
//!                                      corrupt ops / corrupt checkpoint ─────┘
//! ```
//!
//! - **Crash**: writes not yet complete are lost, except a prefix of them the disk managed to
//!   write; the write after that prefix may be torn (a torn append is a torn tail, a torn view
//!   state leaves the previous one, a torn checkpoint is never named by the superblock), so
//!   it is lost too. Never reordered.
//! - **Corruption**: ops whose entries read back corrupt, and a checkpoint that reads back
//!   corrupt. At open the replica gets the valid prefix (entries before the first corrupt op;
//!   with a corrupt checkpoint no checkpoint and no entries) and `damaged: true`. Damage stays
//!   reported at every open until a view state write completes after it: the core's first write
//!   after a damaged open is a view state with `recovering: true`, which carries it from there.
//! - **Misdirected write**: a completed append reported durable that landed on another entry's
//!   place: both ops read corrupt at the next open.
//!
//! The fault injector (`faults.rs`) decides when, within the fault budget; this module only
//! models what each fault does to the data.

use std::collections::{BTreeSet, VecDeque};

use vsr::{DurableState, Write};

use crate::random::Prng;

/// What a crash did to the writes in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CrashLoss {
    /// Writes issued but never written.
    pub(crate) lost: u64,
    /// The write the crash interrupted (0 or 1); it is lost as well.
    pub(crate) torn: u64,
}

/// One replica's disk; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct SimDisk {
    /// The result of every completed write; `damaged` is set from a damaged open until a view
    /// state write completes.
    durable: DurableState,
    /// Writes issued and not yet complete, in order.
    pending: VecDeque<(u64, Write)>,
    /// Ops of `durable.entries` that read back corrupt.
    corrupt_ops: BTreeSet<u64>,
    /// The checkpoint reads back corrupt.
    checkpoint_corrupt: bool,
    /// The next append to complete lands on another entry's place (scripted).
    misdirect_next: bool,
    /// When the last write issued completes.
    free_ns: u64,
}

impl SimDisk {
    /// Issues a write; returns when it completes (after every earlier write).
    pub(crate) fn issue(&mut self, seq: u64, write: Write, now_ns: u64, latency_ns: u64) -> u64 {
        self.pending.push_back((seq, write));
        self.free_ns = self.free_ns.max(now_ns) + latency_ns;
        self.free_ns
    }

    /// Completes every write up to `seq`. Each completed append is misdirected with probability
    /// `misdirect_ppm` (or if scripted); returns how many were.
    pub(crate) fn complete(&mut self, seq: u64, prng: &mut Prng, misdirect_ppm: u32) -> u64 {
        let mut misdirected = 0;
        while self
            .pending
            .front()
            .is_some_and(|(issued, _)| *issued <= seq)
        {
            let (_, write) = self.pending.pop_front().expect("checked");
            let op = match &write {
                Write::Append(entry) => Some(entry.op),
                _ => None,
            };
            self.apply(&write);
            if let Some(op) = op {
                let draw = misdirect_ppm > 0 && prng.chance(misdirect_ppm);
                if (self.misdirect_next || draw) && self.misdirect(op, prng) {
                    self.misdirect_next = false;
                    misdirected += 1;
                }
            }
        }
        misdirected
    }

    /// A crash: keeps a prefix of the pending writes and drops the rest, the first dropped one
    /// torn with probability `torn_ppm`. With probability `cut_ppm` the prefix is drawn;
    /// otherwise the disk wrote everything issued.
    pub(crate) fn crash(&mut self, prng: &mut Prng, cut_ppm: u32, torn_ppm: u32) -> CrashLoss {
        let count = self.pending.len() as u64;
        if count == 0 || !prng.chance(cut_ppm) {
            return self.crash_keeping(count as usize, false);
        }
        let kept = prng.range(0, count - 1) as usize;
        let torn = prng.chance(torn_ppm);
        self.crash_keeping(kept, torn)
    }

    /// A crash that keeps the first `kept` pending writes; the next one is torn if `torn`.
    pub(crate) fn crash_keeping(&mut self, kept: usize, torn: bool) -> CrashLoss {
        let kept = kept.min(self.pending.len());
        for _ in 0..kept {
            let (_, write) = self.pending.pop_front().expect("counted");
            self.apply(&write);
        }
        let dropped = self.pending.len() as u64;
        self.pending.clear();
        self.misdirect_next = false;
        let torn = u64::from(torn && dropped > 0);
        CrashLoss {
            lost: dropped - torn,
            torn,
        }
    }

    /// Reads the disk at a restart: what the replica opens with. Latent damage shows up here
    /// (and only the valid prefix stays on the disk, as the real storage's first write does).
    pub(crate) fn open(&mut self, now_ns: u64) -> &DurableState {
        assert!(self.pending.is_empty(), "a crash settled every write");
        if self.checkpoint_corrupt && self.durable.checkpoint.is_some() {
            self.durable.checkpoint = None;
            self.durable.entries.clear();
            self.durable.damaged = true;
        } else if let Some(&first) = self.corrupt_ops.first() {
            while self.durable.entries.back().is_some_and(|e| e.op >= first) {
                self.durable.entries.pop_back();
            }
            self.durable.damaged = true;
        }
        self.corrupt_ops.clear();
        self.checkpoint_corrupt = false;
        if cfg!(feature = "bug-ignore-disk-damage") {
            // A storage layer that hides damage: no flag, and a commit number that does not
            // give the lost entries away (the core treats a commit beyond the log as damage).
            self.durable.damaged = false;
            let last_op = self
                .durable
                .entries
                .back()
                .map_or(self.durable.checkpoint_op(), |entry| entry.op);
            self.durable.view_state.commit = self.durable.view_state.commit.min(last_op);
        }
        self.free_ns = now_ns;
        &self.durable
    }

    /// The disk of a replica that lost its state: empty, marked recovering.
    pub(crate) fn wipe(&mut self) {
        *self = Self {
            durable: DurableState::recovering(),
            ..Self::default()
        };
    }

    /// Whether a restart now would not give back everything written: damage waiting to be read,
    /// or a replica that must recover (wiped, damaged, or interrupted in recovery).
    pub(crate) fn is_impaired(&self) -> bool {
        self.durable.damaged
            || self.durable.view_state.recovering
            || !self.corrupt_ops.is_empty()
            || self.checkpoint_corrupt
    }

    /// Whether the disk holds exactly the state of a wiped replica.
    pub(crate) fn is_wiped(&self) -> bool {
        self.durable == DurableState::recovering()
    }

    /// Number of entries on the disk.
    pub(crate) fn entries(&self) -> usize {
        self.durable.entries.len()
    }

    /// Marks the entry at `index` (0 = the first after the checkpoint) as reading back corrupt.
    /// Returns its op, or `None` if the disk holds no such entry.
    pub(crate) fn corrupt_entry(&mut self, index: usize) -> Option<u64> {
        let op = self.durable.entries.get(index)?.op;
        self.corrupt_ops.insert(op);
        Some(op)
    }

    /// Marks the checkpoint as reading back corrupt; false if there is none.
    pub(crate) fn corrupt_checkpoint(&mut self) -> bool {
        self.checkpoint_corrupt = self.checkpoint_corrupt || self.durable.checkpoint.is_some();
        self.checkpoint_corrupt
    }

    /// The next append to complete will land on another entry's place.
    pub(crate) fn misdirect_next_append(&mut self) {
        self.misdirect_next = true;
    }

    /// The append of `op` (just completed) landed on another entry's place: `op` is missing
    /// and the other entry is corrupt. False if there is no other entry to hit.
    fn misdirect(&mut self, op: u64, prng: &mut Prng) -> bool {
        let count = self.durable.entries.len();
        if count < 2 {
            return false;
        }
        // Any entry but the last, which is `op` itself.
        let victim = self.durable.entries[prng.index(count - 1)].op;
        self.corrupt_ops.insert(op);
        self.corrupt_ops.insert(victim);
        true
    }

    fn apply(&mut self, write: &Write) {
        self.durable.apply(write);
        match write {
            // The view state carries `recovering` from here on.
            Write::ViewState(_) => self.durable.damaged = false,
            Write::Checkpoint(_) => self.checkpoint_corrupt = false,
            Write::Append(_) | Write::Truncate { .. } => {}
        }
        // Damage goes with the entries a truncate or checkpoint removed.
        let entries = &self.durable.entries;
        match (entries.front(), entries.back()) {
            (Some(first), Some(last)) => {
                let range = first.op..=last.op;
                self.corrupt_ops.retain(|op| range.contains(op));
            }
            _ => self.corrupt_ops.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vsr::{Checkpoint, Entry, Operation, ViewState};

    use super::*;

    fn append(op: u64) -> Write {
        Write::Append(Entry::new(
            op,
            0,
            0,
            1,
            1,
            op,
            Operation::Noop,
            Bytes::new(),
        ))
    }

    fn view(view: u64) -> Write {
        Write::ViewState(ViewState {
            view,
            ..ViewState::default()
        })
    }

    fn ops(disk: &SimDisk) -> Vec<u64> {
        disk.durable.entries.iter().map(|entry| entry.op).collect()
    }

    fn disk_with(writes: Vec<Write>) -> SimDisk {
        let mut disk = SimDisk::default();
        let mut seq = 0;
        for write in writes {
            seq += 1;
            disk.issue(seq, write, 0, 1);
        }
        disk
    }

    #[test]
    fn only_completed_writes_survive_a_crash_that_keeps_nothing() {
        let mut disk = disk_with(vec![append(1), append(2), view(1), append(3)]);
        assert_eq!(disk.complete(2, &mut Prng::new(0), 0), 0);
        let loss = disk.crash_keeping(0, false);
        assert_eq!(loss, CrashLoss { lost: 2, torn: 0 });
        let opened = disk.open(0);
        assert_eq!(opened.view_state.view, 0);
        assert!(!opened.damaged);
        assert_eq!(ops(&disk), [1, 2]);
    }

    #[test]
    fn a_crash_keeps_a_prefix_in_order_and_tears_the_next() {
        let mut disk = disk_with(vec![append(1), view(1), append(2), view(2)]);
        let loss = disk.crash_keeping(2, true);
        assert_eq!(loss, CrashLoss { lost: 1, torn: 1 });
        assert_eq!(disk.open(0).view_state.view, 1);
        assert_eq!(ops(&disk), [1]);
    }

    #[test]
    fn a_corrupt_entry_leaves_the_valid_prefix_and_damage_until_a_view_state() {
        let mut disk = disk_with((1..=5).map(append).collect());
        disk.complete(5, &mut Prng::new(0), 0);
        assert_eq!(disk.corrupt_entry(2), Some(3));
        assert!(disk.is_impaired());
        let opened = disk.open(0);
        assert!(opened.damaged);
        assert_eq!(ops(&disk), [1, 2]);
        // Crashing before the recovering view state is durable: still damaged.
        disk.issue(6, view(0), 0, 1);
        disk.crash_keeping(0, false);
        assert!(disk.open(0).damaged);
        disk.issue(7, view(0), 0, 1);
        disk.complete(7, &mut Prng::new(0), 0);
        assert!(!disk.is_impaired());
    }

    #[test]
    fn a_corrupt_checkpoint_leaves_the_view_state_only() {
        let checkpoint = Write::Checkpoint(Checkpoint {
            op: 2,
            op_checksum: 0,
            snapshot: Bytes::new(),
        });
        let mut disk = disk_with(vec![append(1), append(2), checkpoint, append(3), view(4)]);
        disk.complete(5, &mut Prng::new(0), 0);
        assert!(disk.corrupt_checkpoint());
        let opened = disk.open(0);
        assert!(opened.damaged && opened.checkpoint.is_none() && opened.entries.is_empty());
        assert_eq!(opened.view_state.view, 4);
    }

    #[test]
    fn a_misdirected_append_damages_itself_and_another_entry() {
        let mut disk = disk_with((1..=4).map(append).collect());
        disk.complete(3, &mut Prng::new(0), 0);
        disk.misdirect_next_append();
        assert_eq!(disk.complete(4, &mut Prng::new(0), 0), 1);
        assert_eq!(disk.corrupt_ops.len(), 2);
        assert!(disk.corrupt_ops.contains(&4));
        let opened = disk.open(0);
        assert!(opened.damaged);
        assert!(ops(&disk).len() < 3);
    }

    #[test]
    fn damage_goes_with_truncated_entries() {
        let mut disk = disk_with(vec![append(1), append(2), append(3)]);
        disk.complete(3, &mut Prng::new(0), 0);
        disk.corrupt_entry(2);
        disk.issue(4, Write::Truncate { op: 2 }, 0, 1);
        disk.complete(4, &mut Prng::new(0), 0);
        assert!(!disk.is_impaired());
        assert!(!disk.open(0).damaged);
    }
}
