//! Liveness: progress demanded during the faults, after a heal that leaves up to f replicas
//! out, and convergence at the end.
//!
//! **During faults.** VR promises progress whenever f + 1 replicas are up and can talk. The
//! monitor tracks, at every step (100 ms), since when each replica has been up and healthy (its
//! storage not impaired, not recovering) and since when each link between replicas has been
//! clean (neither cut nor slowed), and since when the weather has been calm (no loss,
//! corruption or held-back messages; duplicates and replays of old messages stay, as the
//! protocol must shrug them off). Once some quorum has been healthy and pairwise connected for
//! the stall window — 10 view-change timeouts at the slowest clock of the seed — and a client
//! request has been pending all that while, the highest commit number must have advanced
//! within it: otherwise the seed fails, naming the quorum that was connected.
//!
//! **The heal.** On a share of seeds the heal is partial: up to f replicas (the impaired ones,
//! which could not serve, first; then, half the time, the primary; then any) stay crashed,
//! isolated, or cut one way (unable to send, or to receive), until the clients are done. The
//! f + 1 others must complete every request within the liveness timeout. Then everything heals
//! and every replica must converge: the same commit number, state equal to the committed log.

use vsr::{Op, StateMachine};

use crate::sim::Simulator;
use crate::swarm::MS;

/// How a replica left out of a partial heal is kept out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeftOut {
    /// Down until the full heal.
    Crashed,
    /// Cut off from the other replicas both ways.
    Isolated,
    /// Its messages to the other replicas are dropped; it hears them.
    Mute,
    /// Messages to it from the other replicas are dropped; it can send.
    Deaf,
}

/// What the liveness monitor remembers between steps.
#[derive(Debug)]
pub(crate) struct Monitor {
    /// Per replica: the incarnation and since when it has been up and healthy.
    healthy_since: Vec<Option<(u64, u64)>>,
    /// `clean_since[from * n + to]`: since when the link has been neither cut nor slowed.
    clean_since: Vec<Option<u64>>,
    /// Since when no message may be lost, corrupted or held back.
    calm_since: Option<u64>,
    /// The highest commit number seen, and when it last went up.
    commit_max: Op,
    commit_advanced_at: u64,
    /// The stall window.
    pub(crate) window_ns: u64,
    /// Replicas a partial heal left out, and how.
    pub(crate) left_out: Vec<(u8, LeftOut)>,
    /// When the partial heal ended and everything healed, if it did.
    pub(crate) full_heal_at: Option<u64>,
}

impl Monitor {
    pub(crate) fn new(replicas: u8, window_ns: u64) -> Self {
        let replicas = usize::from(replicas);
        Self {
            healthy_since: vec![None; replicas],
            clean_since: vec![Some(0); replicas * replicas],
            calm_since: None,
            commit_max: Op(0),
            commit_advanced_at: 0,
            window_ns,
            left_out: Vec::new(),
            full_heal_at: None,
        }
    }

    /// Whether `replica` must stay down: a partial heal left it out crashed.
    pub(crate) fn held_down(&self, replica: u8) -> bool {
        self.full_heal_at.is_none() && self.left_out.contains(&(replica, LeftOut::Crashed))
    }

    /// A quorum of `quorum` replicas that has been healthy and pairwise connected since
    /// `since` or earlier, if any (the first in subset order).
    fn connected_quorum(&self, quorum: usize, since: u64) -> Option<Vec<u8>> {
        let replicas = self.healthy_since.len();
        let ready: Vec<u8> = (0..replicas)
            .filter(|&replica| self.healthy_since[replica].is_some_and(|(_, at)| at <= since))
            .map(|replica| replica as u8)
            .collect();
        let clean = |a: u8, b: u8| {
            self.clean_since[usize::from(a) * replicas + usize::from(b)]
                .is_some_and(|at| at <= since)
        };
        // Subsets of the ready replicas, smallest bitmask first: few replicas, few subsets.
        (0u32..1 << ready.len()).find_map(|mask| {
            if mask.count_ones() as usize != quorum {
                return None;
            }
            let members: Vec<u8> = (0..ready.len())
                .filter(|bit| mask & (1 << bit) != 0)
                .map(|bit| ready[bit])
                .collect();
            let connected = members
                .iter()
                .all(|&a| members.iter().all(|&b| a == b || clean(a, b)));
            connected.then_some(members)
        })
    }
}

impl Simulator {
    /// Updates what the monitor knows of replicas, links and weather, then fails when a
    /// connected quorum made no progress for the stall window while a request was pending.
    pub(crate) fn check_stall(&mut self) -> Result<(), String> {
        let now = self.now;
        let replicas = usize::from(self.plan.replicas);
        for index in 0..replicas {
            let slot = &self.replicas[index];
            let healthy = slot.replica.is_some() && !slot.is_impaired();
            let since = &mut self.monitor.healthy_since[index];
            *since = match (*since, healthy) {
                (Some((incarnation, at)), true) if incarnation == slot.incarnation => {
                    Some((incarnation, at))
                }
                (_, true) => Some((slot.incarnation, now)),
                (_, false) => None,
            };
        }
        for from in 0..replicas {
            for to in 0..replicas {
                let (a, b) = (from as u8, to as u8);
                let clean = !self.network.is_blocked(a, b) && self.network.slow_factor(a, b) == 1;
                let since = &mut self.monitor.clean_since[from * replicas + to];
                *since = match (*since, clean) {
                    (Some(at), true) => Some(at),
                    (None, true) => Some(now),
                    (_, false) => None,
                };
            }
        }
        self.monitor.calm_since = match (self.monitor.calm_since, self.network.lossy()) {
            (Some(at), false) => Some(at),
            (None, false) => Some(now),
            (_, true) => None,
        };
        let commit_max = self.checker.commit_max();
        if commit_max > self.monitor.commit_max {
            self.monitor.commit_max = commit_max;
            self.monitor.commit_advanced_at = now;
        }

        let Some(window_start) = now.checked_sub(self.monitor.window_ns) else {
            return Ok(());
        };
        if self.monitor.calm_since.is_none_or(|at| at > window_start) {
            return Ok(());
        }
        let Some(quorum) = self
            .monitor
            .connected_quorum(self.config.quorum(), window_start)
        else {
            return Ok(());
        };
        self.stats.stall_windows += 1;
        let waiting = self.clients.iter().enumerate().find(|(_, client)| {
            client
                .pending
                .as_ref()
                .is_some_and(|pending| pending.invoke_ns <= window_start)
        });
        let Some((client, sim_client)) = waiting else {
            return Ok(());
        };
        if self.monitor.commit_advanced_at > window_start {
            return Ok(());
        }
        let invoked = sim_client.pending.as_ref().expect("pending").invoke_ns;
        Err(format!(
            "liveness: stalled: commit stayed at {commit_max} for {} ms while replicas {quorum:?} \
             were up, healthy and connected (no loss, no cut or slow link) and client {client}'s \
             request sent at {} ms was pending; {}",
            self.monitor.window_ns / MS,
            invoked / MS,
            self.describe_replicas()
        ))
    }

    /// The heal: every fault ends, except that a partial heal leaves up to f replicas out.
    pub(crate) fn heal(&mut self) -> Result<(), String> {
        self.healed = true;
        self.trace.event(23, self.now, 0);
        self.network.heal();
        if self.plan.profile.partial_heal {
            self.leave_out();
        }
        for index in 0..self.plan.replicas {
            let down = self.replicas[usize::from(index)].replica.is_none();
            if down && !self.monitor.held_down(index) {
                self.start_replica(index)?;
            }
        }
        Ok(())
    }

    /// Chooses the replicas a partial heal leaves out, and cuts or crashes them.
    fn leave_out(&mut self) {
        let f = self.config.faults_max();
        let impaired: Vec<u8> = (0..self.plan.replicas)
            .filter(|&index| self.replicas[usize::from(index)].is_impaired())
            .collect();
        if f == 0 || impaired.len() > f {
            return;
        }
        let count = (self.prng.range(1, f as u64) as usize).max(impaired.len());
        let mut left = impaired;
        if let Some(primary) = self.primary()
            && left.len() < count
            && !left.contains(&primary)
            && self.prng.chance(500_000)
        {
            left.push(primary);
        }
        while left.len() < count {
            let index = self.prng.below(u64::from(self.plan.replicas)) as u8;
            if !left.contains(&index) {
                left.push(index);
            }
        }
        left.sort_unstable();
        self.stats.partial_heals += 1;
        for index in left {
            let how = self.prng.pick(&[
                LeftOut::Crashed,
                LeftOut::Isolated,
                LeftOut::Mute,
                LeftOut::Deaf,
            ]);
            self.stats.replicas_left_out += 1;
            self.trace.event(25, self.now, u64::from(index));
            for other in 0..self.plan.replicas {
                if other == index {
                    continue;
                }
                if matches!(how, LeftOut::Isolated | LeftOut::Mute) {
                    self.network.block(index, other);
                }
                if matches!(how, LeftOut::Isolated | LeftOut::Deaf) {
                    self.network.block(other, index);
                }
            }
            if how == LeftOut::Crashed {
                self.crash(index);
            }
            self.monitor.left_out.push((index, how));
        }
    }

    /// After a partial heal, once the clients are done: everything heals.
    fn end_partial_heal(&mut self) -> Result<(), String> {
        self.monitor.full_heal_at = Some(self.now);
        self.trace.event(26, self.now, 0);
        self.network.clear_partitions();
        for index in 0..self.plan.replicas {
            if self.replicas[usize::from(index)].replica.is_none() {
                self.start_replica(index)?;
            }
        }
        Ok(())
    }

    /// After the heal, every request completes within the liveness timeout.
    pub(crate) fn check_liveness(&self) -> Result<(), String> {
        for (index, client) in self.clients.iter().enumerate() {
            let Some(pending) = &client.pending else {
                continue;
            };
            let deadline =
                pending.invoke_ns.max(self.plan.heal_at_ns) + self.plan.liveness_timeout_ns;
            if self.now > deadline {
                let left_out = if self.monitor.left_out.is_empty() {
                    String::new()
                } else {
                    format!(" (which left out {:?})", self.monitor.left_out)
                };
                return Err(format!(
                    "liveness: client {index}'s request sent at {} ms did not complete within {} s \
                     after the heal at {} ms{left_out}; {}",
                    pending.invoke_ns / 1_000_000,
                    self.plan.liveness_timeout_ns / 1_000_000_000,
                    self.plan.heal_at_ns / 1_000_000,
                    self.describe_replicas()
                ));
            }
        }
        Ok(())
    }

    /// Finishes the run once every replica is normal with the same commit and state, equal to
    /// the committed log's; fails when that takes longer than the convergence timeout.
    pub(crate) fn check_convergence(&mut self) -> Result<(), String> {
        if !self.monitor.left_out.is_empty() && self.monitor.full_heal_at.is_none() {
            self.end_partial_heal()?;
        }
        let commit_max = self.checker.commit_max();
        let expected = self.checker.digest_at(commit_max);
        let converged = self.replicas.iter().all(|slot| {
            slot.replica.as_ref().is_some_and(|replica| {
                replica.status_name() == "normal"
                    && replica.commit() == commit_max
                    && Some(replica.state_machine().digest()) == expected
            })
        });
        if converged {
            self.finished = true;
            return Ok(());
        }
        let since = self
            .clients_done_at
            .expect("clients done")
            .max(self.plan.heal_at_ns)
            .max(self.monitor.full_heal_at.unwrap_or(0));
        if self.now > since + self.plan.convergence_timeout_ns {
            return Err(format!(
                "convergence: replicas did not reach commit {commit_max} with equal state within \
                 {} s after the clients finished; {}",
                self.plan.convergence_timeout_ns / 1_000_000_000,
                self.describe_replicas()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_needs_members_healthy_and_links_clean_both_ways_for_the_window() {
        let mut monitor = Monitor::new(3, 1000);
        monitor.healthy_since = vec![Some((1, 0)), Some((1, 0)), Some((1, 500))];
        assert_eq!(monitor.connected_quorum(2, 100), Some(vec![0, 1]));
        // 0 → 1 cut: 0 and 1 are not connected; 2 has not been healthy long enough.
        monitor.clean_since[1] = None;
        assert_eq!(monitor.connected_quorum(2, 100), None);
        assert_eq!(monitor.connected_quorum(2, 600), Some(vec![0, 2]));
        // A link clean only since after the window start does not count.
        monitor.clean_since[2] = Some(700);
        assert_eq!(monitor.connected_quorum(2, 600), Some(vec![1, 2]));
        monitor.healthy_since[1] = None;
        assert_eq!(monitor.connected_quorum(2, 600), None);
    }

    #[test]
    fn a_replica_left_out_crashed_stays_down_until_the_full_heal() {
        let mut monitor = Monitor::new(3, 1000);
        monitor.left_out = vec![(1, LeftOut::Crashed), (2, LeftOut::Deaf)];
        assert!(monitor.held_down(1));
        assert!(!monitor.held_down(2));
        monitor.full_heal_at = Some(5);
        assert!(!monitor.held_down(1));
    }
}
