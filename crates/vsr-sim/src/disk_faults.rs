//! The storage events of the simulation and the disk faults injected into them.
//!
//! A replica's writes go to its [`ReplicaStorage`](crate::storage::ReplicaStorage): a
//! `StorageWrite` event writes a batch, a later `Persisted` event syncs it and reports it
//! durable. The faults, each drawn with the seed's rates during the fault phase:
//!
//! - **Crash images.** At a crash the disk's pending (unsynced) operations are lost, except
//!   what reached the platter: with `disk_cut_ppm` a random prefix in order, the next write torn
//!   at sector granularity (a prefix of its sectors); otherwise all of them. Within the fault
//!   budget, with `disk_reorder_ppm`, any subset in any order instead, writes torn in any
//!   sectors: storage may then find what looks like damage in the middle of its log.
//! - **Crashes inside a batch** (`disk_batch_crash_ppm`): the process dies at one of the
//!   batch's disk calls, in the middle of a checkpoint, a rotation or a sync; and crashes
//!   between a batch's writes and its sync (`disk_crash_ppm`).
//! - **Write errors** (`disk_eio_ppm`, `disk_enospc_ppm`): one of the batch's disk calls fails
//!   with EIO or ENOSPC. The replica stops without acknowledging anything after the failed
//!   write, and is treated as crashed: it restarts later with the disk as it is.
//! - **Misdirected writes** (`disk_misdirect_ppm`, within the budget): a write a sync carries
//!   to the platter lands some sectors away in its file.
//! - **Read faults** at a restart (within the budget): sectors read back corrupt
//!   (`disk_corrupt_ppm`, `disk_checkpoint_corrupt_ppm` for the checkpoint file) or fail every
//!   read (`disk_read_error_ppm`, latent sector errors).
//!
//! The superblock is hit by corruption or read errors at most once per disk, and never by a
//! misdirected write: it keeps two copies of each update, which survive one damaged copy but
//! not two (docs/storage.md, known limits).

use vsr::{Message, Reply, Write};
use vsr_storage::sim_disk::{Fate, Operation, SECTOR_SIZE};

use crate::sim::{EventKind, Simulator};

/// A failure armed on a replica's disk for the batch being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArmedFailure {
    /// The process dies at the armed call.
    Crash,
    /// The armed call fails with EIO.
    Eio,
    /// The armed call fails with ENOSPC.
    Enospc,
}

/// Fault bookkeeping of one replica's disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct DiskFaultState {
    /// The failure armed for the current batch, and whether the batch holds a checkpoint.
    armed: Option<(ArmedFailure, bool)>,
    /// A misdirection is armed and not yet carried out by a sync.
    pub(crate) misdirect_armed: bool,
    /// The superblock was hit by corruption or a read error already.
    superblock_hit: bool,
    /// The files on the platter when the current batch's failure was armed.
    files_before: Vec<String>,
}

impl DiskFaultState {
    /// At a crash: nothing armed survives it (the disk forgets armed failures and
    /// misdirections too); what was hit stays hit.
    pub(crate) fn crashed(&mut self) {
        self.armed = None;
        self.misdirect_armed = false;
        self.files_before.clear();
    }
}

/// Disk calls a batch makes, at most, that an armed failure is drawn among.
const ARMED_CALLS_MAX: u64 = 24;

impl Simulator {
    /// With `VSR_SIM_LOG` set, prints a disk event of replica `index` to stderr.
    pub(crate) fn log_disk(&self, index: u8, what: impl FnOnce() -> String) {
        if crate::network::log_enabled() {
            eprintln!(
                "{} ms replica {index} disk: {}",
                self.now / 1_000_000,
                what()
            );
        }
    }

    /// A replica's write: queued, and a batch started if the storage is idle.
    pub(crate) fn persist(&mut self, index: u8, seq: u64, write: Write) {
        crate::sim::trace_write(&mut self.trace, seq, &write);
        let slot = &mut self.replicas[usize::from(index)];
        slot.storage.submit(seq, write);
        if !slot.storage.busy {
            slot.storage.busy = true;
            let incarnation = slot.incarnation;
            let wake = self.prng.range(0, self.plan.profile.disk_latency_min_ns);
            self.schedule(
                self.now + wake,
                EventKind::StorageWrite {
                    replica: index,
                    incarnation,
                },
            );
        }
    }

    /// A checkpoint handed over to be written in the background: it is written after a delay
    /// the seed draws, while the replica runs and its other writes complete.
    pub(crate) fn checkpoint_background(&mut self, index: u8, checkpoint: vsr::Checkpoint) {
        let slot = &mut self.replicas[usize::from(index)];
        // The core hands over one at a time; a checkpoint in order supersedes one in the
        // background, which the storage thread finishes first (as here: the in-order write
        // waits in the queue behind nothing but its batch).
        let incarnation = slot.incarnation;
        slot.checkpoint = Some(checkpoint);
        let profile = &self.plan.profile;
        let delay = self
            .prng
            .range(profile.disk_latency_min_ns, 8 * profile.disk_latency_max_ns)
            .max(1);
        self.schedule(
            self.now + delay,
            EventKind::CheckpointWritten {
                replica: index,
                incarnation,
            },
        );
    }

    /// The background checkpoint's file is written: storage makes it live (superblock, then
    /// rotation) between two batches, as the storage thread does, and the replica hears of it.
    /// While a batch is in flight, this waits for it.
    pub(crate) fn checkpoint_written(&mut self, index: u8) -> Result<(), String> {
        let slot = &mut self.replicas[usize::from(index)];
        let Some(checkpoint) = slot.checkpoint.take() else {
            return Ok(());
        };
        if slot.storage.busy {
            let incarnation = slot.incarnation;
            slot.checkpoint = Some(checkpoint);
            let wait = self.plan.profile.disk_latency_min_ns.max(1);
            self.schedule(
                self.now + wait,
                EventKind::CheckpointWritten {
                    replica: index,
                    incarnation,
                },
            );
            return Ok(());
        }
        let op = checkpoint.op;
        let write = Write::Checkpoint(checkpoint);
        crate::sim::trace_write(&mut self.trace, 0, &write);
        self.arm_disk_faults(index, true);
        let slot = &mut self.replicas[usize::from(index)];
        slot.storage.background_begin(write.clone());
        let storage = slot.storage.storage.as_mut().expect("a running replica");
        if let Err(error) = storage.write(&write) {
            return self.storage_failed(index, &error.to_string());
        }
        self.check_no_error_ignored(index)?;
        let slot = &mut self.replicas[usize::from(index)];
        slot.storage.disk.fail_at(None);
        slot.disk_faults.armed = None;
        slot.storage.background_done();
        self.record_durable(index, &write);
        let slot = &mut self.replicas[usize::from(index)];
        let replica = slot.replica.as_mut().expect("a running replica");
        replica.on_checkpoint_durable(op);
        self.after_replica(index)
    }

    /// Writes the next batch; its sync follows after the disk's latency.
    pub(crate) fn storage_write(&mut self, index: u8) -> Result<(), String> {
        let queued = self.replicas[usize::from(index)].storage.queued();
        let cut = (queued > 1 && self.prng.chance(self.plan.profile.storage_batch_cut_ppm))
            .then(|| self.prng.range(1, queued as u64 - 1) as usize);
        self.stats.storage_batches_cut += u64::from(cut.is_some());
        let batch = self.replicas[usize::from(index)].storage.take_batch(cut);
        let Some(&(last, _)) = batch.last() else {
            self.replicas[usize::from(index)].storage.busy = false;
            return Ok(());
        };
        let in_order = batch.iter().find_map(|(_, write)| match write {
            Write::Checkpoint(checkpoint) => Some(checkpoint.op),
            _ => None,
        });
        let checkpoint = in_order.is_some();
        let slot = &mut self.replicas[usize::from(index)];
        if let Some(op) = in_order
            && slot
                .checkpoint
                .as_ref()
                .is_some_and(|pending| pending.op <= op)
        {
            // A checkpoint in order supersedes the one in the background, which the replica
            // no longer waits for (the storage thread would finish it first; dropping it is the
            // other order a crash can also give).
            slot.checkpoint = None;
        }
        self.arm_disk_faults(index, checkpoint);
        let slot = &mut self.replicas[usize::from(index)];
        let storage = slot.storage.storage.as_mut().expect("a running replica");
        for (_, write) in &batch {
            if let Err(error) = storage.write(write) {
                return self.storage_failed(index, &error.to_string());
            }
        }
        self.check_no_error_ignored(index)?;
        let slot = &mut self.replicas[usize::from(index)];
        slot.storage.syncing = Some(last);
        let incarnation = slot.incarnation;
        let profile = &self.plan.profile;
        let latency = self
            .prng
            .range(profile.disk_latency_min_ns, profile.disk_latency_max_ns)
            .max(1);
        let done = self.now + latency;
        self.schedule(
            done,
            EventKind::Persisted {
                replica: index,
                incarnation,
                seq: last,
            },
        );
        if !self.healed && self.prng.chance(self.plan.profile.disk_crash_ppm) {
            // Between the batch's writes and its sync.
            let at = self.prng.range(self.now, done - 1);
            let crash = EventKind::Crash {
                replica: index,
                incarnation,
            };
            self.schedule(at, crash);
        }
        Ok(())
    }

    /// Syncs the batch written last and reports it durable; starts the next one.
    pub(crate) fn storage_sync(&mut self, index: u8, seq: u64) -> Result<(), String> {
        let slot = &mut self.replicas[usize::from(index)];
        assert_eq!(slot.storage.syncing, Some(seq), "one batch at a time");
        let storage = slot.storage.storage.as_mut().expect("a running replica");
        if let Err(error) = storage.sync() {
            return self.storage_failed(index, &error.to_string());
        }
        self.check_no_error_ignored(index)?;
        let slot = &mut self.replicas[usize::from(index)];
        slot.storage.disk.fail_at(None);
        slot.disk_faults.armed = None;
        if slot.disk_faults.misdirect_armed && !slot.storage.disk.misdirect_armed() {
            slot.disk_faults.misdirect_armed = false;
            self.stats.disk_misdirected_writes += 1;
            self.trace.event(26, self.now, u64::from(index));
        }
        slot.storage.syncing = None;
        for write in slot.storage.made_durable(seq) {
            self.record_durable(index, &write);
        }
        let slot = &mut self.replicas[usize::from(index)];
        let incarnation = slot.incarnation;
        if slot.storage.has_queued() {
            self.schedule(
                self.now,
                EventKind::StorageWrite {
                    replica: index,
                    incarnation,
                },
            );
        } else {
            slot.storage.busy = false;
        }
        let slot = &mut self.replicas[usize::from(index)];
        let replica = slot.replica.as_mut().expect("a running replica");
        replica.on_persisted(seq);
        self.after_replica(index)
    }

    /// An injected failure fired, yet storage reported success: it ignored an I/O error.
    fn check_no_error_ignored(&self, index: u8) -> Result<(), String> {
        match self.replicas[usize::from(index)].storage.disk.failed_on() {
            Some(file) => Err(format!(
                "storage: replica {index}'s storage went on after an I/O error on {file:?}"
            )),
            None => Ok(()),
        }
    }

    /// Records that `write` is durable on replica `index`'s disk, for the reply check.
    pub(crate) fn record_durable(&mut self, index: u8, write: &Write) {
        match write {
            Write::Append(entry) => {
                *self
                    .ever_durable
                    .entry((entry.op, entry.checksum))
                    .or_default() |= 1 << index;
            }
            Write::Checkpoint(checkpoint) => {
                let held = &mut self.checkpoint_durable[usize::from(index)];
                *held = (*held).max(checkpoint.op);
            }
            Write::ViewState(_) | Write::Truncate { .. } => {}
        }
    }

    /// Arms, with the seed's rates, a failure at one of the batch's disk calls and a
    /// misdirection of one of its writes.
    fn arm_disk_faults(&mut self, index: u8, checkpoint: bool) {
        if self.healed {
            return;
        }
        let profile = &self.plan.profile;
        let (crash, eio, enospc) = (
            profile.disk_batch_crash_ppm,
            profile.disk_eio_ppm,
            profile.disk_enospc_ppm,
        );
        let misdirect_ppm = profile.disk_misdirect_ppm;
        let crash = if checkpoint {
            crash.max(profile.disk_checkpoint_crash_ppm)
        } else {
            crash
        };
        let failure = if self.prng.chance(crash) {
            Some(ArmedFailure::Crash)
        } else if self.prng.chance(eio) {
            Some(ArmedFailure::Eio)
        } else if self.prng.chance(enospc) {
            Some(ArmedFailure::Enospc)
        } else {
            None
        };
        if let Some(failure) = failure {
            // A checkpoint makes many more calls (its file in chunks, the rotation).
            let calls = if checkpoint {
                4 * ARMED_CALLS_MAX
            } else {
                ARMED_CALLS_MAX
            };
            let call = self.prng.below(calls);
            let disk = &self.replicas[usize::from(index)].storage.disk;
            match failure {
                ArmedFailure::Crash => disk.fail_at(Some(call)),
                ArmedFailure::Eio => disk.fail_with(call, std::io::ErrorKind::Other),
                ArmedFailure::Enospc => disk.fail_with(call, std::io::ErrorKind::StorageFull),
            }
            let slot = &mut self.replicas[usize::from(index)];
            slot.disk_faults.armed = Some((failure, checkpoint));
            // The files that exist now: a failure on a WAL file created later in the batch is
            // inside the rotation.
            slot.disk_faults.files_before = slot
                .storage
                .disk
                .durable_files()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            self.log_disk(index, || format!("armed {failure:?} at call {call}"));
        }
        let slot = &self.replicas[usize::from(index)];
        if misdirect_ppm > 0
            && !slot.disk_faults.misdirect_armed
            && !slot.storage.latent_damage
            && self.prng.chance(misdirect_ppm)
            && self.may_damage(index)
        {
            let sectors = self.prng.range(1, 16);
            let prefix = self.prng.pick(&["wal-", "wal-", ".headers", "checkpoint-"]);
            let slot = &mut self.replicas[usize::from(index)];
            slot.storage.disk.misdirect_next_in(prefix, sectors);
            slot.disk_faults.misdirect_armed = true;
            slot.storage.latent_damage = true;
            self.log_disk(index, || {
                format!("misdirect the next {prefix}* write by {sectors} sectors")
            });
        }
    }

    /// A storage call failed: by an injected failure the replica stops (it acknowledged
    /// nothing after the failed write) and restarts later with the disk as it is; with none,
    /// storage is broken.
    fn storage_failed(&mut self, index: u8, error: &str) -> Result<(), String> {
        let slot = &mut self.replicas[usize::from(index)];
        let failed_on = slot.storage.disk.failed_on();
        let armed = slot.disk_faults.armed.take();
        match (armed, failed_on) {
            (Some((failure, checkpoint)), Some(file)) => {
                self.count_armed_failure(index, failure, checkpoint, &file);
            }
            _ if slot.storage.latent_damage => self.stats.disk_read_stops += 1,
            _ => {
                return Err(format!(
                    "storage: replica {index}'s storage failed with no injected failure: {error}"
                ));
            }
        }
        self.crash(index);
        self.schedule_restarts();
        Ok(())
    }

    /// Counts a failure that fired on `file` ("" for the directory).
    fn count_armed_failure(
        &mut self,
        index: u8,
        failure: ArmedFailure,
        checkpoint: bool,
        file: &str,
    ) {
        let slot = &self.replicas[usize::from(index)];
        // A WAL file the batch created, or the directory after one was: the rotation.
        let rotation = checkpoint
            && ((file.starts_with("wal-")
                && !slot
                    .disk_faults
                    .files_before
                    .iter()
                    .any(|name| name == file))
                || (file.is_empty()
                    && slot.storage.disk.current().keys().any(|name| {
                        name.starts_with("wal-") && !slot.disk_faults.files_before.contains(name)
                    })));
        match failure {
            ArmedFailure::Eio => self.stats.disk_write_eio += 1,
            ArmedFailure::Enospc => self.stats.disk_write_enospc += 1,
            ArmedFailure::Crash if rotation => self.stats.crashes_in_rotation += 1,
            ArmedFailure::Crash
                if checkpoint && (file.starts_with("checkpoint-") || file == "superblock") =>
            {
                self.stats.crashes_in_checkpoint += 1;
            }
            ArmedFailure::Crash => self.stats.crashes_in_batch += 1,
        }
    }

    /// What a crash leaves of the disk's pending operations; see the module docs.
    pub(crate) fn crash_disk(&mut self, index: u8) {
        let pending = self.replicas[usize::from(index)].storage.disk.pending();
        if pending.is_empty() {
            // Nothing unsynced; the page cache and any failed call are gone all the same.
            self.replicas[usize::from(index)]
                .storage
                .disk
                .crash(|_, _| Fate::Kept);
            return;
        }
        self.stats.crashes_before_sync += 1;
        let profile = &self.plan.profile;
        let (cut, reorder, torn) = (
            profile.disk_cut_ppm,
            profile.disk_reorder_ppm,
            profile.disk_torn_ppm,
        );
        let fates: Vec<Fate> = if !self.prng.chance(cut) {
            vec![Fate::Kept; pending.len()]
        } else if reorder > 0 && self.prng.chance(reorder) && self.may_damage(index) {
            self.stats.disk_reordered_crashes += 1;
            self.replicas[usize::from(index)].storage.latent_damage = true;
            pending
                .iter()
                .map(|operation| self.any_fate(operation, torn))
                .collect()
        } else {
            let kept = self.prng.index(pending.len());
            let mut fates = vec![Fate::Kept; kept];
            let next = &pending[kept];
            fates.push(if next.sectors() > 1 && self.prng.chance(torn) {
                let reached = self.prng.index(next.sectors());
                Fate::Torn((0..next.sectors()).map(|sector| sector < reached).collect())
            } else {
                Fate::Lost
            });
            fates.resize(pending.len(), Fate::Lost);
            fates
        };
        self.log_disk(index, || {
            let fates: Vec<String> = pending
                .iter()
                .zip(&fates)
                .map(|(operation, fate)| format!("{} {fate:?}", describe_operation(operation)))
                .collect();
            format!("crash image: {}", fates.join(", "))
        });
        let report = self.replicas[usize::from(index)]
            .storage
            .disk
            .crash(|position, _| fates[position].clone());
        self.stats.disk_writes_lost += report.lost;
        self.stats.disk_names_lost += report.names_lost;
        self.stats.disk_writes_torn += report.torn;
        self.trace.event(
            25,
            self.now,
            u64::from(index) | report.lost << 8 | report.torn << 40,
        );
    }

    /// Any fate: kept or lost, a write maybe torn in any of its sectors.
    fn any_fate(&mut self, operation: &Operation, torn_ppm: u32) -> Fate {
        if operation.sectors() > 0 && self.prng.chance(torn_ppm) {
            Fate::Torn(
                (0..operation.sectors())
                    .map(|_| self.prng.chance(500_000))
                    .collect(),
            )
        } else if self.prng.chance(500_000) {
            Fate::Kept
        } else {
            Fate::Lost
        }
    }

    /// At a restart before the heal, within the budget: sectors that read back corrupt, a
    /// corrupt checkpoint, latent sector errors.
    pub(crate) fn read_faults(&mut self, index: u8) {
        if self.healed {
            return;
        }
        let profile = &self.plan.profile;
        let (corrupt_ppm, checkpoint_ppm, read_error_ppm) = (
            profile.disk_corrupt_ppm,
            profile.disk_checkpoint_corrupt_ppm,
            profile.disk_read_error_ppm,
        );
        let corrupt = self.prng.chance(corrupt_ppm);
        let checkpoint = self.prng.chance(checkpoint_ppm);
        let unreadable = self.prng.chance(read_error_ppm);
        if !(corrupt || checkpoint || unreadable) || !self.may_damage(index) {
            return;
        }
        // Header copies exist to survive damage to the WAL: losing both at once is beyond what
        // a disk promises (like both superblock copies), so a lost headers file comes alone, on
        // a disk without other damage.
        let storage = &self.replicas[usize::from(index)].storage;
        let clean = !storage.latent_damage && !storage.page_cache_kept;
        if clean && self.prng.chance(self.plan.profile.disk_headers_lost_ppm) {
            self.lose_headers_file(index);
            return;
        }
        // Aimed at the newest records of the log: those fewest replicas may hold yet.
        let newest = self.prng.chance(self.plan.profile.disk_damage_newest_ppm);
        let prefix = newest.then_some("wal-");
        if corrupt {
            for _ in 0..self.prng.range(1, 3) {
                self.damage_sector(index, prefix, false, newest);
            }
        }
        if checkpoint {
            self.damage_sector(index, Some("checkpoint-"), false, false);
        }
        if unreadable {
            for _ in 0..self.prng.range(1, 2) {
                self.damage_sector(index, prefix, true, newest);
            }
        }

        self.trace.event(27, self.now, u64::from(index));
    }

    /// Removes a header-copies file from the disk (an operator's slip, a file system losing an
    /// inode): storage rebuilds it from its WAL at open.
    fn lose_headers_file(&mut self, index: u8) {
        let slot = &mut self.replicas[usize::from(index)];
        let headers: Vec<String> = slot
            .storage
            .disk
            .durable_files()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.ends_with(".headers"))
            .collect();
        if headers.is_empty() {
            return;
        }
        let name = headers[self.prng.index(headers.len())].clone();
        let slot = &mut self.replicas[usize::from(index)];
        // A failure armed for the replica's next run may take the call: the file may then be
        // gone or not, damage either way.
        slot.storage.latent_damage = true;
        let disk: &mut dyn vsr_storage::Disk = &mut slot.storage.disk;
        if disk.remove(&name).and_then(|()| disk.sync_dir()).is_err() {
            return;
        }
        self.stats.disk_headers_lost += 1;
        self.log_disk(index, || format!("lost {name}"));
    }

    /// Corrupts (or makes unreadable) one written sector of a random file of the replica's
    /// disk, among those whose name starts with `prefix` if given: any sector, or one of the
    /// last four written (`newest`). Returns whether it hit.
    pub(crate) fn damage_sector(
        &mut self,
        index: u8,
        prefix: Option<&str>,
        unreadable: bool,
        newest: bool,
    ) -> bool {
        let slot = &self.replicas[usize::from(index)];
        let superblock_hit = slot.disk_faults.superblock_hit;
        let files: Vec<(String, u64)> = slot
            .storage
            .disk
            .durable_files()
            .into_iter()
            .filter(|(name, written)| {
                *written > 0
                    && prefix.is_none_or(|prefix| name.starts_with(prefix))
                    && !(superblock_hit && name == "superblock")
            })
            .collect();
        if files.is_empty() {
            return false;
        }
        let (name, written) = files[self.prng.index(files.len())].clone();
        let sectors = written.div_ceil(SECTOR_SIZE);
        let sector = if newest {
            sectors - 1 - self.prng.below(sectors.min(4))
        } else {
            self.prng.below(sectors)
        };
        let pattern = self.prng.next_u64();
        let slot = &mut self.replicas[usize::from(index)];
        if unreadable {
            slot.storage.disk.make_unreadable(&name, sector);
            self.stats.disk_read_errors += 1;
        } else {
            slot.storage.disk.corrupt_sector(&name, sector, pattern);
            self.stats.disk_corruptions += 1;
        }
        slot.disk_faults.superblock_hit |= name == "superblock";
        slot.storage.latent_damage = true;
        self.log_disk(index, || {
            let what = if unreadable { "unreadable" } else { "corrupt" };
            format!("{what} sector {sector} of {name}")
        });
        true
    }

    /// Checks a message a replica sends against what its disk holds: a prepare_ok, or a
    /// do_view_change, only for entries durable on its disk.
    pub(crate) fn check_acknowledgement(&self, index: u8, message: &Message) -> Result<(), String> {
        let durable = &self.replicas[usize::from(index)].storage.durable;
        match crate::storage::acknowledgement_violation(durable, index, message) {
            Some(violation) => Err(violation),
            None => Ok(()),
        }
    }

    /// Checks a reply: its op must have been durable on a quorum of disks.
    pub(crate) fn check_reply_durable(&self, index: u8, message: &Message) -> Result<(), String> {
        let Message::Reply(Reply { op, .. }) = message else {
            return Ok(());
        };
        let replica = self.replicas[usize::from(index)]
            .replica
            .as_ref()
            .expect("a running replica");
        let Some(entry) = replica.entry(*op) else {
            // A reply to a retried request, from the client table: checked when first sent.
            return Ok(());
        };
        let holders = self
            .ever_durable
            .get(&(entry.op, entry.checksum))
            .copied()
            .unwrap_or(0);
        let quorum = self.config.quorum();
        match crate::storage::reply_violation(holders, &self.checkpoint_durable, quorum, index, *op)
        {
            Some(violation) => Err(violation),
            None => Ok(()),
        }
    }
}

fn describe_operation(operation: &Operation) -> String {
    match operation {
        Operation::Create(name) => format!("create {name}"),
        Operation::Link(name) => format!("link {name}"),
        Operation::Remove(name) => format!("remove {name}"),
        Operation::Write { name, offset, data } => {
            format!("write {name} @{offset}+{}", data.len())
        }
        Operation::SetLen { name, len } => format!("set_len {name} {len}"),
    }
}
