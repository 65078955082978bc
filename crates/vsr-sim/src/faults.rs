//! Fault injection and the end-of-run checks of liveness and convergence.
//!
//! During the fault phase, a chaos step every 100 ms draws, with the seed's rates, partition
//! changes (symmetric and one-way), slow links, crashes (some aimed at the primary), crashes of
//! the whole cluster, restarts that lose state, and clock drift. The disk adds its own faults
//! where they happen ([`crate::disk_faults`]): a crash loses unsynced writes, keeps some, tears
//! one; a batch fails with a crash, EIO or ENOSPC at one of its disk calls; a write lands
//! elsewhere; a restart reads corrupt or unreadable sectors. Scripted scenarios inject the
//! same faults at fixed ticks instead. At the heal, every fault ends and every replica restarts; from then on every
//! client request must complete within the liveness timeout, and once the clients are done the
//! replicas must converge.
//!
//! **The fault budget.** A replica is impaired while a restart might not give back everything
//! it wrote (its disk carries latent damage, or says it must recover) or while it is recovering.
//! Damage — corruption, read errors, misdirected writes, crash images out of order, wipes — is
//! injected only when at most f replicas are impaired afterwards, so no committed op is ever
//! lost on a quorum. Crashes that keep the unsynced writes in order, EIO and ENOSPC are always
//! allowed: losing writes that were never reported durable is not damage.

use crate::scenario::Action;
use vsr_storage::sim_disk::{Fate, SECTOR_SIZE};

use crate::sim::{EventKind, Simulator};

impl Simulator {
    /// Runs every 100 ms: chaos before the heal, the heal, then liveness and convergence.
    pub(crate) fn monitor(&mut self) -> Result<(), String> {
        if !self.healed {
            if self.now >= self.plan.heal_at_ns {
                self.heal()?;
            } else {
                self.chaos()?;
            }
        }
        self.check_stall()?;
        if self.healed {
            self.check_liveness()?;
            if self.clients_done_at.is_some() {
                self.check_convergence()?;
            }
        }
        Ok(())
    }

    fn chaos(&mut self) -> Result<(), String> {
        let profile = self.plan.profile.clone();
        if self.prng.chance(profile.partition_ppm) {
            self.change_partitions();
        }
        if self.prng.chance(profile.slow_link_ppm) {
            self.change_slow_link(profile.slow_factor_max);
        }
        if self.prng.chance(profile.crash_all_ppm) {
            self.crash_all();
            self.schedule_restarts();
        } else if self.prng.chance(profile.crash_ppm) {
            let target = if self.prng.chance(profile.crash_primary_ppm) {
                self.primary()
            } else {
                let up: Vec<u8> = self.up_replicas();
                (!up.is_empty()).then(|| self.prng.pick(&up))
            };
            if let Some(target) = target {
                self.crash(target);
                self.schedule_restarts();
            }
        }
        if self.prng.chance(profile.wipe_ppm) {
            let longest = self
                .prng
                .chance(profile.wipe_longest_ppm)
                .then(|| self.longest_log())
                .flatten();
            let target =
                longest.unwrap_or_else(|| self.prng.below(u64::from(self.plan.replicas)) as u8);
            if self.may_damage(target) {
                self.stats.wipes_of_longest_log += u64::from(longest.is_some());
                self.wipe(target);
                self.schedule_restarts();
            }
        }
        if self.prng.chance(profile.isolate_primary_ppm) {
            let burst = self.prng.range(0, 3) as u32;
            self.isolate_primary(burst);
        }
        if self.prng.chance(profile.storm_toggle_ppm) {
            self.network.stormy = !self.network.stormy;
        }
        if self.plan.replicas > 1 && self.prng.chance(profile.forge_ppm) {
            self.forge();
        }
        if self.prng.chance(profile.replay_ppm) {
            let count = self.prng.range(1, 8) as usize;
            self.replay_old_messages(count);
        }
        if profile.tick_permille_min != profile.tick_permille_max && self.prng.chance(50_000) {
            let replica = self.prng.index(self.replicas.len());
            let permille = self
                .prng
                .range(profile.tick_permille_min, profile.tick_permille_max);
            self.replicas[replica].tick_permille = permille;
        }
        Ok(())
    }

    /// The running replica holding the most ops past the highest commit number, if any holds
    /// one: possibly the only copy of uncommitted ops.
    fn longest_log(&self) -> Option<u8> {
        let commit_max = self.checker.commit_max();
        self.replicas
            .iter()
            .filter_map(|slot| slot.replica.as_ref())
            .filter(|replica| replica.op() > commit_max)
            .max_by_key(|replica| replica.op())
            .map(vsr::Replica::index)
    }

    /// Cuts off the primary of the moment (and, in clusters of 5 or more, half the time one
    /// more replica): the rest elect another, whom the next isolation cuts off in turn,
    /// `remaining` more times, soon after it may have started its view.
    pub(crate) fn isolate_primary(&mut self, remaining: u32) {
        let Some(primary) = self.primary() else {
            return;
        };
        let mut group = vec![primary];
        if self.config.faults_max() >= 2 && self.prng.chance(500_000) {
            let other = self.prng.below(u64::from(self.plan.replicas)) as u8;
            if other != primary {
                group.push(other);
            }
        }
        self.cut_off(&group);
        if self.prng.chance(self.plan.profile.straggle_ppm) {
            self.straggle(primary);
        }
        self.stats.primary_isolations += 1;
        // Back to back: the next primary is cut off too, once it may have started its view.
        if remaining > 0 {
            let timeout = self.config.view_change_timeout_ticks * crate::sim::TICK_NS;
            let at = self.now + self.prng.range(timeout / 2, 3 * timeout);
            self.schedule(
                at,
                EventKind::IsolatePrimary {
                    remaining: remaining - 1,
                },
            );
        }
    }

    /// Crashes the primary of the moment, or cuts it off alone, or cuts it off together with
    /// the replica that just restarted (which then recovers or catches up from a deposed
    /// primary): a view change racing the restart (see `race_ppm`).
    pub(crate) fn race(&mut self, restarted: u8) {
        let Some(primary) = self.primary() else {
            return;
        };
        self.stats.races += 1;
        if self.prng.chance(self.plan.profile.straggle_ppm) {
            self.straggle(primary);
        }
        match self.prng.below(3) {
            0 => {
                self.crash(primary);
                self.schedule_restarts();
            }
            1 => self.cut_off(&[primary]),
            _ => {
                // A primary of an older view that does not know it was deposed, if any, and
                // the replicas still in its view are those the restarted replica ends up with.
                let deposed = self.deposed_primary().unwrap_or(primary);
                let view = self.replicas[usize::from(deposed)]
                    .replica
                    .as_ref()
                    .map(vsr::Replica::view);
                let mut group: Vec<u8> = self
                    .replicas
                    .iter()
                    .filter_map(|slot| slot.replica.as_ref())
                    .filter(|replica| {
                        replica.status_name() == "normal" && Some(replica.view()) == view
                    })
                    .map(vsr::Replica::index)
                    .collect();
                if !group.contains(&restarted) {
                    group.push(restarted);
                }
                self.cut_off(&group);
            }
        }
    }

    /// A running replica, normal and primary of a view older than the latest primary's.
    fn deposed_primary(&self) -> Option<u8> {
        let latest = self.primary()?;
        let latest_view = self.replicas[usize::from(latest)].replica.as_ref()?.view();
        self.replicas
            .iter()
            .filter_map(|slot| slot.replica.as_ref())
            .find(|replica| {
                replica.status_name() == "normal"
                    && replica.is_primary()
                    && replica.view() < latest_view
            })
            .map(vsr::Replica::index)
    }

    fn up_replicas(&self) -> Vec<u8> {
        (0..self.plan.replicas)
            .filter(|&r| self.replicas[usize::from(r)].replica.is_some())
            .collect()
    }

    /// The primary of the highest view among replicas in normal status.
    pub(crate) fn primary(&self) -> Option<u8> {
        self.replicas
            .iter()
            .filter_map(|slot| slot.replica.as_ref())
            .filter(|replica| replica.status_name() == "normal" && replica.is_primary())
            .max_by_key(|replica| replica.view())
            .map(vsr::Replica::index)
    }

    pub(crate) fn crash(&mut self, index: u8) {
        let slot = &mut self.replicas[usize::from(index)];
        if let Some(replica) = slot.replica.take() {
            self.stats.add_replica(&replica.stats());
            self.stats.crashes += 1;
            self.trace.event(21, self.now, u64::from(index));
            slot.storage.stop();
            slot.checkpoint = None;
            slot.disk_faults.crashed();
            if self.prng.chance(self.plan.profile.process_crash_ppm) {
                // The machine stays up: the page cache keeps every write, synced or not.
                slot.storage.disk.crash_process();
                slot.storage.page_cache_kept = true;
                self.stats.process_crashes += 1;
                self.log_disk(index, || {
                    "process crash: the page cache survives".to_owned()
                });
            } else {
                slot.storage.page_cache_kept = false;
                self.crash_disk(index);
            }
        }
    }

    /// Crashes `index` losing every write not yet durable (scripted).
    fn crash_losing_writes(&mut self, index: u8) {
        let slot = &mut self.replicas[usize::from(index)];
        if let Some(replica) = slot.replica.take() {
            self.stats.add_replica(&replica.stats());
            self.stats.crashes += 1;
            self.trace.event(21, self.now, u64::from(index));
            slot.storage.stop();
            slot.disk_faults.crashed();
            slot.storage.page_cache_kept = false;
            let report = slot.storage.disk.crash(|_, _| Fate::Lost);
            self.stats.disk_writes_lost += report.lost;
            self.stats.disk_names_lost += report.names_lost;
        }
    }

    fn crash_all(&mut self) {
        self.stats.cluster_crashes += 1;
        for index in 0..self.plan.replicas {
            self.crash(index);
        }
    }

    /// Schedules a restart, after a random downtime, of every replica that is down and has none.
    pub(crate) fn schedule_restarts(&mut self) {
        for index in 0..self.plan.replicas {
            let slot = &self.replicas[usize::from(index)];
            if slot.replica.is_none() {
                let incarnation = slot.incarnation;
                let profile = &self.plan.profile;
                let downtime = self
                    .prng
                    .range(profile.downtime_min_ns, profile.downtime_max_ns);
                self.schedule(
                    self.now + downtime,
                    EventKind::Restart {
                        replica: index,
                        incarnation,
                    },
                );
            }
        }
    }

    /// Whether `index` may be damaged now: at most f replicas impaired afterwards (see the module
    /// docs), never with one replica.
    pub(crate) fn may_damage(&self, index: u8) -> bool {
        let impaired = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(other, slot)| *other != usize::from(index) && slot.is_impaired())
            .count();
        self.plan.replicas > 1 && impaired < self.config.faults_max()
    }

    fn wipe(&mut self, index: u8) {
        self.crash(index);
        self.rebuild_storage(index);
        self.stats.wipes += 1;
        self.trace.event(22, self.now, u64::from(index));
    }

    fn change_partitions(&mut self) {
        let replicas = self.plan.replicas;
        if replicas == 1 {
            return;
        }
        self.network.clear_partitions();
        match self.prng.below(4) {
            0 => return,
            1 => {
                let isolated = self.prng.below(u64::from(replicas)) as u8;
                self.partition(&[isolated]);
            }
            2 => {
                let group: Vec<u8> = (0..replicas)
                    .filter(|_| self.prng.chance(500_000))
                    .collect();
                self.partition(&group);
            }
            _ => {
                for _ in 0..self.prng.range(1, u64::from(replicas)) {
                    let from = self.prng.below(u64::from(replicas)) as u8;
                    let to = self.prng.below(u64::from(replicas)) as u8;
                    if from != to {
                        self.network.block(from, to);
                    }
                }
            }
        }
        self.stats.partitions += 1;
    }

    /// Replaces the partitions of the moment with one cutting `group` off, and counts it.
    fn cut_off(&mut self, group: &[u8]) {
        self.network.clear_partitions();
        self.partition(group);
        self.stats.partitions += 1;
    }

    /// Cuts `group` off from the other replicas, both ways.
    fn partition(&mut self, group: &[u8]) {
        for a in 0..self.plan.replicas {
            for b in 0..self.plan.replicas {
                if group.contains(&a) != group.contains(&b) {
                    self.network.block(a, b);
                }
            }
        }
    }

    fn change_slow_link(&mut self, factor_max: u64) {
        let replicas = u64::from(self.plan.replicas);
        if replicas == 1 {
            return;
        }
        let from = self.prng.below(replicas) as u8;
        let to = self.prng.below(replicas) as u8;
        if from == to {
            return;
        }
        if self.network.slow_factor(from, to) == 1 {
            let factor = self.prng.range(2, factor_max.max(2));
            self.network.set_slow_factor(from, to, factor);
            self.stats.slow_links += 1;
        } else {
            self.network.set_slow_factor(from, to, 1);
        }
    }

    /// Carries out a scripted action.
    pub(crate) fn script_step(&mut self, step: usize) -> Result<(), String> {
        let action = self.plan.script[step].1.clone();
        match action {
            Action::Crash(index) => self.crash(index),
            Action::CrashPrimary => {
                if let Some(primary) = self.primary() {
                    self.crash(primary);
                }
            }
            Action::Restart(index) => {
                if self.replicas[usize::from(index)].replica.is_none() {
                    self.start_replica(index)?;
                }
            }
            Action::CrashAll => self.crash_all(),
            Action::RestartAll => {
                for index in 0..self.plan.replicas {
                    if self.replicas[usize::from(index)].replica.is_none() {
                        self.start_replica(index)?;
                    }
                }
            }
            Action::Wipe(index) => {
                self.assert_budget(index);
                self.wipe(index);
                self.start_replica(index)?;
            }
            Action::CrashLosingWrites(index) => self.crash_losing_writes(index),
            Action::CorruptEntry(index) => {
                self.assert_budget(index);
                let slot = &self.replicas[usize::from(index)];
                assert!(
                    slot.storage.durable.entries.len() >= 3,
                    "the scenario corrupts an entry of a short log"
                );
                let wal = slot
                    .storage
                    .disk
                    .durable_files()
                    .into_iter()
                    .find(|(name, _)| name.ends_with(".log"))
                    .expect("a live WAL");
                // A sector in the middle of the written log: a record with valid ones after it.
                let sector = wal.1 / SECTOR_SIZE / 2;
                let slot = &mut self.replicas[usize::from(index)];
                assert!(slot.storage.disk.corrupt_sector(&wal.0, sector, 0x5a5a));
                slot.storage.latent_damage = true;
                self.stats.disk_corruptions += 1;
            }
            Action::CorruptCheckpoint(index) => {
                self.assert_budget(index);
                assert!(
                    self.damage_sector(index, Some("checkpoint-"), false, false),
                    "the scenario corrupts a missing checkpoint"
                );
            }
            Action::MisdirectNextAppend(index) => {
                self.assert_budget(index);
                let slot = &mut self.replicas[usize::from(index)];
                slot.storage.disk.misdirect_next_in("wal-", 1);
                slot.storage.latent_damage = true;
                slot.disk_faults.misdirect_armed = true;
            }
            Action::Isolate(index) => self.partition(&[index]),
            Action::Partition(group) => self.partition(&group),
            Action::OneWay { from, to } => self.network.block(from, to),
            Action::HealNetwork => self.network.clear_partitions(),
        }
        Ok(())
    }

    fn assert_budget(&self, index: u8) {
        assert!(
            self.may_damage(index),
            "the scenario damages more than f replicas at once"
        );
    }
}
