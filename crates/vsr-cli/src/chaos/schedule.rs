//! The fault schedule: what the nemesis does and when, drawn from `--seed`.
//!
//! A run alternates healthy periods (no fault at all, so the workload gets definite answers)
//! with fault periods of one to three faults, each held a while (now and then long enough for
//! a replica to need state transfer); each fault period ends by healing everything.
//! Every choice — the lengths of the periods, the kind of each fault, which replica or link it
//! hits, how a link fails — is drawn from one xoshiro256++ stream seeded with the seed, in
//! order. How a link fails is drawn even when `--partition-mode` forces it, so a forced mode
//! changes the modes of a seed's partitions and nothing else. Real processes and sockets are not deterministic, so the seed fixes the sequence of
//! draws, not the run: which replica is primary when "the primary" is drawn, and whether a
//! data fault is allowed (see [`crate::chaos::nemesis`]), are decided when the fault happens.

use std::time::Duration;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::chaos::proxy::Mode;

/// Shortest and longest healthy period.
const HEALTHY_MS: (u64, u64) = (2_000, 6_000);
/// Shortest and longest wait after one fault before the next one (or the heal).
const FAULT_HOLD_MS: (u64, u64) = (500, 3_000);
/// One hold in [`LONG_HOLD_PERCENT`] is long instead: a replica down or cut off that long falls
/// further behind than its peers keep log entries, so it catches up through state transfer.
const FAULT_HOLD_LONG_MS: (u64, u64) = (10_000, 30_000);
const LONG_HOLD_PERCENT: u64 = 10;
/// Most faults in one fault period.
const FAULTS_PER_PERIOD_MAX: u64 = 3;
/// How long every replica stays down in a kill-all.
const ALL_DOWN_MS: (u64, u64) = (200, 2_000);

/// The seeded generator with the draws the schedule and the workload need.
#[derive(Clone, Debug)]
pub(crate) struct Prng(Xoshiro256PlusPlus);

impl Prng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// A number in `0..count`.
    pub(crate) fn below(&mut self, count: u64) -> u64 {
        assert!(count > 0);
        self.0.next_u64() % count
    }

    /// A number in `min..=max`.
    pub(crate) fn range(&mut self, (min, max): (u64, u64)) -> u64 {
        assert!(min <= max);
        min + self.below(max - min + 1)
    }

    /// An index into a slice of `len` elements.
    pub(crate) fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).expect("below len")
    }

    /// True with probability `percent` / 100.
    pub(crate) fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration of `min..=max` milliseconds.
    fn millis(&mut self, bounds: (u64, u64)) -> Duration {
        Duration::from_millis(self.range(bounds))
    }
}

/// How partitions fail their links (`--partition-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PartitionMode {
    /// Each partition draws reset, black hole or stall, a third each.
    Mixed,
    /// Every partition stalls: nothing read, nothing acknowledged, nothing closed.
    Stall,
    /// Every partition is a black hole: bytes acknowledged and discarded.
    Blackhole,
    /// Every partition resets: connections closed and refused.
    Reset,
}

/// Which replica a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Whichever replica is primary when the fault happens (a random one if none is).
    Primary,
    /// This replica.
    Replica(usize),
}

/// What damage a data fault does to a stopped replica's data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DamageKind {
    /// Flip bytes inside a log record's payload.
    FlipWal,
    /// Cut the log inside a record: it and every later record are gone.
    TruncateWal,
    /// Flip bytes in the middle of the checkpoint file (or of the log, without a checkpoint).
    FlipCheckpoint,
    /// Delete the data directory and format it again with `vsr format --recover`.
    Wipe,
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// SIGKILL one replica; it restarts when the fault period heals.
    Kill(Target),
    /// SIGKILL every replica, wait, restart them all.
    KillAll { down: Duration },
    /// SIGSTOP one replica; SIGCONT when the fault period heals.
    Pause(Target),
    /// Cut one replica off from every other replica, both ways.
    Isolate { target: Target, mode: Mode },
    /// Split the replicas in two sides that cannot reach each other; `side` lists one side.
    Split { side: Vec<usize>, mode: Mode },
    /// Drop what `from` sends to `to`; `to` still reaches `from`.
    OneWay { from: usize, to: usize, mode: Mode },
    /// Drop everything one replica sends to its peers; it still hears them.
    Mute { target: Target, mode: Mode },
    /// Cut the client sessions in `sessions` off from one replica, both ways.
    ClientPartition {
        target: Target,
        sessions: Vec<usize>,
        mode: Mode,
    },
    /// The replica gets the requests of every client session but its replies are dropped (a
    /// black hole, or a stall when every partition stalls).
    LostReplies { target: Target, mode: Mode },
    /// SIGKILL one replica, damage its data, restart it.
    Damage { target: Target, kind: DamageKind },
}

impl Fault {
    /// The name faults are counted by in the summary.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(Target::Primary) => "kill-primary",
            Fault::Kill(Target::Replica(_)) => "kill",
            Fault::KillAll { .. } => "kill-all",
            Fault::Pause(_) => "pause",
            Fault::Isolate { .. } => "partition-isolate",
            Fault::Split { .. } => "partition-split",
            Fault::OneWay { .. } => "partition-one-way",
            Fault::Mute { .. } => "partition-mute",
            Fault::ClientPartition { .. } => "partition-clients",
            Fault::LostReplies { .. } => "lost-replies",
            Fault::Damage { .. } => "damage",
        }
    }
}

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// No fault for this long (every earlier fault has been healed).
    Healthy(Duration),
    /// Inject this fault, then wait this long.
    Fault(Fault, Duration),
    /// Heal every fault: links pass, paused replicas continue, stopped replicas restart.
    Heal,
}

/// The endless sequence of steps drawn from one seed.
pub(crate) struct Schedule {
    prng: Prng,
    replicas: usize,
    sessions: usize,
    partition_mode: PartitionMode,
    /// Steps drawn but not yet handed out.
    pending: std::collections::VecDeque<Step>,
}

impl Schedule {
    pub(crate) fn new(
        seed: u64,
        replicas: usize,
        sessions: usize,
        partition_mode: PartitionMode,
    ) -> Self {
        Self {
            prng: Prng::new(seed),
            replicas,
            sessions,
            partition_mode,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// The next step.
    pub(crate) fn next_step(&mut self) -> Step {
        if self.pending.is_empty() {
            self.draw_period();
        }
        self.pending.pop_front().expect("a period has steps")
    }

    /// A healthy period, then a fault period and its heal.
    fn draw_period(&mut self) {
        let healthy = self.prng.millis(HEALTHY_MS);
        self.pending.push_back(Step::Healthy(healthy));
        let faults = self.prng.range((1, FAULTS_PER_PERIOD_MAX));
        for _ in 0..faults {
            let fault = self.draw_fault();
            let hold = if self.prng.percent(LONG_HOLD_PERCENT) {
                self.prng.millis(FAULT_HOLD_LONG_MS)
            } else {
                self.prng.millis(FAULT_HOLD_MS)
            };
            self.pending.push_back(Step::Fault(fault, hold));
        }
        self.pending.push_back(Step::Heal);
    }

    fn draw_target(&mut self) -> Target {
        if self.prng.percent(40) {
            Target::Primary
        } else {
            Target::Replica(self.prng.index(self.replicas))
        }
    }

    /// How a partition fails its links: one draw whatever the partition mode, so that forcing
    /// a mode leaves the rest of the schedule as it is.
    fn draw_mode(&mut self) -> Mode {
        let roll = self.prng.below(3);
        match self.partition_mode {
            PartitionMode::Mixed => match roll {
                0 => Mode::Reset,
                1 => Mode::BlackHole,
                _ => Mode::Stall,
            },
            PartitionMode::Stall => Mode::Stall,
            PartitionMode::Blackhole => Mode::BlackHole,
            PartitionMode::Reset => Mode::Reset,
        }
    }

    /// Lost replies keep the requests flowing, which a reset cannot do: a black hole, or a
    /// stall when every partition stalls. No draw.
    fn lost_replies_mode(&self) -> Mode {
        match self.partition_mode {
            PartitionMode::Stall => Mode::Stall,
            _ => Mode::BlackHole,
        }
    }

    /// One fault; the weights are out of 100.
    fn draw_fault(&mut self) -> Fault {
        let roll = self.prng.below(100);
        match roll {
            0..15 => Fault::Kill(self.draw_target()),
            15..20 => Fault::KillAll {
                down: self.prng.millis(ALL_DOWN_MS),
            },
            20..32 => Fault::Pause(self.draw_target()),
            32..46 => Fault::Isolate {
                target: self.draw_target(),
                mode: self.draw_mode(),
            },
            46..56 => self.draw_split(),
            56..66 => self.draw_one_way(),
            66..72 => Fault::Mute {
                target: self.draw_target(),
                mode: self.draw_mode(),
            },
            72..82 => self.draw_client_partition(),
            82..87 => Fault::LostReplies {
                target: self.draw_target(),
                mode: self.lost_replies_mode(),
            },
            _ => Fault::Damage {
                target: self.draw_target(),
                kind: match self.prng.below(4) {
                    0 => DamageKind::FlipWal,
                    1 => DamageKind::TruncateWal,
                    2 => DamageKind::FlipCheckpoint,
                    _ => DamageKind::Wipe,
                },
            },
        }
    }

    /// A random minority side (at least one replica).
    fn draw_split(&mut self) -> Fault {
        let minority = self.prng.range((1, (self.replicas as u64 - 1) / 2));
        let mut replicas: Vec<usize> = (0..self.replicas).collect();
        let mut side = Vec::new();
        for _ in 0..minority {
            side.push(replicas.remove(self.prng.index(replicas.len())));
        }
        side.sort_unstable();
        Fault::Split {
            side,
            mode: self.draw_mode(),
        }
    }

    fn draw_one_way(&mut self) -> Fault {
        let from = self.prng.index(self.replicas);
        let to = (from + 1 + self.prng.index(self.replicas - 1)) % self.replicas;
        Fault::OneWay {
            from,
            to,
            mode: self.draw_mode(),
        }
    }

    /// Every session, or a random non-empty subset of them.
    fn draw_client_partition(&mut self) -> Fault {
        let target = self.draw_target();
        let sessions: Vec<usize> = if self.prng.percent(50) {
            (0..self.sessions).collect()
        } else {
            let chosen: Vec<usize> = (0..self.sessions)
                .filter(|_| self.prng.percent(50))
                .collect();
            if chosen.is_empty() { vec![0] } else { chosen }
        };
        Fault::ClientPartition {
            target,
            sessions,
            mode: self.draw_mode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_schedule_and_another_seed_another() {
        let draw = |seed| {
            let mut schedule = Schedule::new(seed, 5, 4, PartitionMode::Mixed);
            (0..200).map(|_| schedule.next_step()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn every_fault_period_heals_and_targets_are_in_range() {
        let mut schedule = Schedule::new(1, 3, 2, PartitionMode::Mixed);
        let mut kinds = std::collections::BTreeSet::new();
        let mut open = false;
        for _ in 0..5_000 {
            match schedule.next_step() {
                Step::Healthy(_) => assert!(!open, "a healthy period follows a heal"),
                Step::Fault(fault, _) => {
                    open = true;
                    kinds.insert(fault.kind());
                    match fault {
                        Fault::Kill(Target::Replica(index)) => assert!(index < 3),
                        Fault::Split { side, .. } => assert_eq!(side.len(), 1),
                        Fault::OneWay { from, to, .. } => assert!(from != to && to < 3),
                        Fault::ClientPartition { sessions, .. } => {
                            assert!(!sessions.is_empty() && sessions.iter().all(|s| *s < 2));
                        }
                        _ => {}
                    }
                }
                Step::Heal => open = false,
            }
        }
        assert_eq!(kinds.len(), 11, "every kind is drawn: {kinds:?}");
    }

    /// The mode of a partition step, if it is one.
    fn mode_of(step: &Step) -> Option<Mode> {
        match step {
            Step::Fault(
                Fault::Isolate { mode, .. }
                | Fault::Split { mode, .. }
                | Fault::OneWay { mode, .. }
                | Fault::Mute { mode, .. }
                | Fault::ClientPartition { mode, .. }
                | Fault::LostReplies { mode, .. },
                _,
            ) => Some(*mode),
            _ => None,
        }
    }

    /// `step` with every partition mode set to `mode`.
    fn forced(step: &Step, mode: Mode) -> Step {
        let mut step = step.clone();
        if let Step::Fault(
            Fault::Isolate { mode: m, .. }
            | Fault::Split { mode: m, .. }
            | Fault::OneWay { mode: m, .. }
            | Fault::Mute { mode: m, .. }
            | Fault::ClientPartition { mode: m, .. },
            _,
        ) = &mut step
        {
            *m = mode;
        }
        step
    }

    #[test]
    fn a_forced_partition_mode_changes_the_modes_and_nothing_else() {
        let draw = |mode| {
            let mut schedule = Schedule::new(12, 3, 5, mode);
            (0..2_000).map(|_| schedule.next_step()).collect::<Vec<_>>()
        };
        let mixed = draw(PartitionMode::Mixed);
        let modes: std::collections::BTreeSet<&str> =
            mixed.iter().filter_map(mode_of).map(Mode::name).collect();
        assert_eq!(
            modes.into_iter().collect::<Vec<_>>(),
            ["black hole", "reset", "stall"]
        );
        for (forced_mode, mode) in [
            (PartitionMode::Stall, Mode::Stall),
            (PartitionMode::Blackhole, Mode::BlackHole),
            (PartitionMode::Reset, Mode::Reset),
        ] {
            let forced_steps = draw(forced_mode);
            assert_eq!(forced_steps.len(), mixed.len());
            for (mixed_step, forced_step) in mixed.iter().zip(&forced_steps) {
                let lost_replies = matches!(forced_step, Step::Fault(Fault::LostReplies { .. }, _));
                if let Some(drawn) = mode_of(forced_step).filter(|_| !lost_replies) {
                    assert_eq!(drawn, mode, "{forced_step:?}");
                }
                let expected = match mixed_step {
                    Step::Fault(Fault::LostReplies { target, .. }, hold) => Step::Fault(
                        Fault::LostReplies {
                            target: *target,
                            mode: if mode == Mode::Stall {
                                Mode::Stall
                            } else {
                                Mode::BlackHole
                            },
                        },
                        *hold,
                    ),
                    _ => forced(mixed_step, mode),
                };
                assert_eq!(forced_step, &expected);
            }
        }
    }
}
