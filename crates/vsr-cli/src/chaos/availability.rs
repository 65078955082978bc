//! Unavailability after a heal, measured on the recorded history.
//!
//! The nemesis ends every fault of a fault period at once (links pass, paused replicas
//! continue, stopped ones restart), so every heal counts, whatever faults it ended. For each
//! heal, the *gap* runs from the heal to the first operation completed at or after it: any
//! answer (ok, a value, a swap that answered true or false) means the cluster executed an
//! operation, whichever client asked (a workload session, or the checker's own progress
//! probe and final reads). Operations of unknown outcome are no answer.
//!
//! A gap is cut at the start of the next fault, so that fault's own failover is never charged
//! to the heal. The nemesis keeps the period after a heal quiet until an operation was
//! acknowledged or the bound (plus a margin) passed, so only a gap already over the bound is
//! ever cut. A heal after which nothing completes is measured to the end of the history; one
//! after the history ended (a crash restart during the last checks) is not measured.

use std::time::Duration;

use vsr_sim::history::History;

/// How a gap ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GapEnd {
    /// An operation completed.
    Acknowledged,
    /// The next fault started first.
    NextFault,
    /// The history ended with nothing completed.
    HistoryEnded,
}

/// The time from one heal to the next answer, in nanoseconds since the run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) heal_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) end: GapEnd,
}

impl Gap {
    pub(crate) fn length(&self) -> Duration {
        Duration::from_nanos(self.end_ns.saturating_sub(self.heal_ns))
    }

    /// Where the gap ended, in words.
    fn ending(&self) -> String {
        let at = seconds(self.end_ns);
        match self.end {
            GapEnd::Acknowledged => {
                format!("to the first operation acknowledged after it at {at} s")
            }
            GapEnd::NextFault => format!(
                "to the next fault at {at} s with nothing acknowledged in between (the \
                 measurement stops there)"
            ),
            GapEnd::HistoryEnded => {
                format!("to the end of the history at {at} s with nothing acknowledged")
            }
        }
    }
}

fn seconds(ns: u64) -> String {
    format!("{:.3}", Duration::from_nanos(ns).as_secs_f64())
}

/// The gap after each heal in `heals_ns`; `fault_starts_ns` are the times faults were
/// injected. Both in nanoseconds since the run started, like the history.
pub(crate) fn gaps(history: &History, heals_ns: &[u64], fault_starts_ns: &[u64]) -> Vec<Gap> {
    let mut completions: Vec<u64> = history.ops.iter().filter_map(|op| op.complete).collect();
    completions.sort_unstable();
    let mut fault_starts = fault_starts_ns.to_vec();
    fault_starts.sort_unstable();
    let history_end = history
        .ops
        .iter()
        .map(|op| op.complete.unwrap_or(op.invoke).max(op.invoke))
        .max()
        .unwrap_or(0);
    let mut found = Vec::with_capacity(heals_ns.len());
    for &heal_ns in heals_ns {
        let acknowledged = completions
            .get(completions.partition_point(|at| *at < heal_ns))
            .copied();
        let next_fault = fault_starts
            .get(fault_starts.partition_point(|at| *at <= heal_ns))
            .copied();
        let (end_ns, end) = match (acknowledged, next_fault) {
            (Some(at), Some(fault)) if fault < at => (fault, GapEnd::NextFault),
            (Some(at), _) => (at, GapEnd::Acknowledged),
            (None, Some(fault)) => (fault, GapEnd::NextFault),
            (None, None) if history_end > heal_ns => (history_end, GapEnd::HistoryEnded),
            (None, None) => continue,
        };
        found.push(Gap {
            heal_ns,
            end_ns,
            end,
        });
    }
    found
}

/// The gaps of a run and the bound they are held to (`--max-unavailable`).
#[derive(Debug)]
pub(crate) struct Unavailability {
    pub(crate) gaps: Vec<Gap>,
    pub(crate) bound: Duration,
}

impl Unavailability {
    /// The longest gap (the first of equals).
    pub(crate) fn longest(&self) -> Option<&Gap> {
        self.gaps.iter().rev().max_by_key(|gap| gap.length())
    }

    fn over_bound(&self) -> usize {
        self.gaps
            .iter()
            .filter(|gap| gap.length() > self.bound)
            .count()
    }

    /// The report: `longest unavailability after a heal: X s`, then a line of detail.
    pub(crate) fn lines(&self) -> Vec<String> {
        let Some(longest) = self.longest() else {
            return vec![
                "longest unavailability after a heal: 0.00 s".to_owned(),
                "  no heal was measured".to_owned(),
            ];
        };
        vec![
            format!(
                "longest unavailability after a heal: {:.2} s",
                longest.length().as_secs_f64()
            ),
            format!(
                "  {} heals measured, {} longer than {} s; the longest from the heal at {} s {}",
                self.gaps.len(),
                self.over_bound(),
                self.bound.as_secs_f64(),
                seconds(longest.heal_ns),
                longest.ending()
            ),
        ]
    }

    /// The failure when the longest gap exceeds the bound.
    pub(crate) fn failure(&self) -> Option<String> {
        let longest = self.longest().filter(|gap| gap.length() > self.bound)?;
        Some(format!(
            "longest unavailability after a heal is {:.2} s, more than --max-unavailable {} s: \
             from the heal at {} s {} ({} of {} heals over the bound)",
            longest.length().as_secs_f64(),
            self.bound.as_secs_f64(),
            seconds(longest.heal_ns),
            longest.ending(),
            self.over_bound(),
            self.gaps.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use vsr_sim::history::{HistoryOp, OpKind, OpResult};

    use super::*;
    use crate::chaos::verdict::Verdict;

    const S: u64 = 1_000_000_000;

    /// A put of key "k" by `process`, invoked at `invoke` ns, answered ok at `complete`.
    fn put(process: u64, invoke: u64, complete: Option<u64>) -> HistoryOp {
        HistoryOp {
            process,
            kind: OpKind::Put,
            key: "k".to_owned(),
            value: Some(format!("{process}.{invoke}")),
            expected: None,
            result: complete.map(|_| OpResult::Ok),
            invoke,
            complete,
        }
    }

    #[test]
    fn each_heal_is_measured_to_the_next_answer_the_next_fault_or_the_end() {
        let history = History {
            ops: vec![
                put(0, 0, Some(S)),
                put(1, S, Some(2 * S)),
                put(2, 2 * S, None),
                put(3, 3 * S, Some(5 * S)),
                put(4, 6 * S, None),
                put(5, 7 * S, None),
            ],
        };
        let heals = [S + S / 2, 2 * S + S / 2, 5 * S + S / 2, 9 * S];
        let gaps = gaps(&history, &heals, &[2 * S + S / 4, 4 * S]);
        assert_eq!(
            gaps,
            vec![
                Gap {
                    heal_ns: S + S / 2,
                    end_ns: 2 * S,
                    end: GapEnd::Acknowledged
                },
                // A fault started before the answer at 5 s: the gap stops there.
                Gap {
                    heal_ns: 2 * S + S / 2,
                    end_ns: 4 * S,
                    end: GapEnd::NextFault
                },
                // Nothing completed after 5.5 s; the history ends at 7 s.
                Gap {
                    heal_ns: 5 * S + S / 2,
                    end_ns: 7 * S,
                    end: GapEnd::HistoryEnded
                },
                // The heal at 9 s came after the history: not measured.
            ]
        );
        let unavailability = Unavailability {
            gaps,
            bound: Duration::from_secs(5),
        };
        let lines = unavailability.lines();
        assert_eq!(lines[0], "longest unavailability after a heal: 1.50 s");
        assert!(lines[1].contains("the heal at 2.500 s"), "{lines:?}");
        assert!(lines[1].contains("the next fault at 4.000 s"), "{lines:?}");
        assert_eq!(unavailability.failure(), None);
    }

    #[test]
    fn a_gap_over_the_bound_fails_the_run() {
        // Answers every half second, except for 7.25 s after the heal at 10 s.
        let mut ops: Vec<HistoryOp> = (0..20)
            .map(|step| put(step, step * S / 2, Some(step * S / 2 + S / 4)))
            .collect();
        ops.push(put(20, 10 * S, None));
        ops.push(put(21, 17 * S, Some(17 * S + S / 4)));
        let history = History { ops };
        let heals = [3 * S, 10 * S];
        let unavailability = Unavailability {
            gaps: gaps(&history, &heals, &[]),
            bound: Duration::from_secs(5),
        };
        assert_eq!(
            unavailability.lines()[0],
            "longest unavailability after a heal: 7.25 s"
        );
        let failure = unavailability.failure().expect("over the bound");
        assert!(
            failure.starts_with(
                "longest unavailability after a heal is 7.25 s, more than --max-unavailable 5 s"
            ),
            "{failure}"
        );
        let verdict = Verdict::of(&history, 1_000_000, vec![failure]);
        assert!(!verdict.passed());
        let lines = verdict.lines();
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with("FAILURE: longest unavailability after a heal")),
            "{lines:?}"
        );
        assert!(lines.contains(&"result: FAIL".to_owned()), "{lines:?}");
        // The same history passes a bound above its gap.
        let relaxed = Unavailability {
            bound: Duration::from_secs(8),
            ..unavailability
        };
        assert_eq!(relaxed.failure(), None);
    }

    #[test]
    fn a_run_without_heals_reports_zero() {
        let unavailability = Unavailability {
            gaps: Vec::new(),
            bound: Duration::from_secs(5),
        };
        assert_eq!(
            unavailability.lines()[0],
            "longest unavailability after a heal: 0.00 s"
        );
        assert_eq!(unavailability.failure(), None);
    }
}
