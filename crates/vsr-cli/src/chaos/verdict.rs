//! The verdict on a run: the linearizability check, the lost acknowledged writes, and the
//! lines that end the report.
//!
//! **Lost acknowledged writes.** For each key, its *final read* is the last completed get of
//! the key invoked after every acknowledged write of the key completed (the run makes one per
//! key once the faults have stopped). An acknowledged write w (a put answered ok, a
//! compare-and-swap answered true) is *kept* when the final read returned w's value, or the
//! value of a write w' that may come after w: w' is a put or a compare-and-swap, acknowledged
//! or of unknown outcome (never one that answered false), that did not complete before w was
//! invoked. Otherwise w is *lost*: the final value is absent, was never written, or was written
//! by a write that finished before w began, so no order of the operations keeps w. Every value
//! is unique, so the final value names its writer. Acknowledged writes of a key without a
//! final read are not judged (counted as unchecked; a run always reads every key).
//!
//! The rule is a necessary condition that names what was lost; the linearizability check is
//! the full one (ordering, stale reads, values from nowhere) and runs on the same history,
//! final reads included.

use std::collections::BTreeMap;

use vsr_sim::history::{History, HistoryOp, OpKind, OpResult};
use vsr_sim::linearizability::{self, CheckResult};

/// Search steps the linearizability check may spend on one run's history. Running out is a
/// failure (`linearizable: unknown`), never a pass.
pub(crate) const CHECK_BUDGET_STEPS: u64 = 500_000_000;

/// What the lost-write rule found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LostWrites {
    /// One line per lost acknowledged write.
    pub(crate) lost: Vec<String>,
    /// Acknowledged writes judged.
    pub(crate) checked: usize,
    /// Acknowledged writes of keys without a final read.
    pub(crate) unchecked: usize,
}

fn acknowledged(op: &HistoryOp) -> bool {
    matches!(
        (op.kind, &op.result),
        (OpKind::Put, Some(OpResult::Ok)) | (OpKind::Cas, Some(OpResult::Swapped(true)))
    )
}

/// A put or compare-and-swap that may have written its value.
fn may_have_written(op: &HistoryOp) -> bool {
    op.kind != OpKind::Get && !matches!(op.result, Some(OpResult::Swapped(false)))
}

/// Applies the rule in the module docs to `history`.
pub(crate) fn lost_writes(history: &History) -> LostWrites {
    let mut by_key: BTreeMap<&str, Vec<&HistoryOp>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut found = LostWrites::default();
    for (key, ops) in by_key {
        let writes: Vec<&HistoryOp> = ops.iter().copied().filter(|op| acknowledged(op)).collect();
        let Some(last_write) = writes.iter().filter_map(|op| op.complete).max() else {
            continue;
        };
        let final_read = ops
            .iter()
            .filter(|op| op.kind == OpKind::Get && op.invoke > last_write)
            .filter_map(|op| match &op.result {
                Some(OpResult::Value(value)) => Some((op.invoke, value.clone())),
                _ => None,
            })
            .max_by_key(|(invoke, _)| *invoke);
        let Some((read_at, value)) = final_read else {
            found.unchecked += writes.len();
            continue;
        };
        let writers: Vec<&HistoryOp> = ops
            .iter()
            .copied()
            .filter(|op| may_have_written(op) && op.value.is_some() && op.value == value)
            .collect();
        for write in writes {
            found.checked += 1;
            let kept = write.value == value
                || writers
                    .iter()
                    .any(|writer| writer.complete.is_none_or(|at| at >= write.invoke));
            if !kept {
                found.lost.push(format!(
                    "key {key:?}: {:?} {:?} acknowledged in [{}, {}] ns is gone: the final read \
                     at {read_at} ns returned {}",
                    write.kind,
                    write.value.as_deref().unwrap_or_default(),
                    write.invoke,
                    write.complete.unwrap_or_default(),
                    value
                        .as_deref()
                        .map_or("absent".to_owned(), |v| format!("{v:?}")),
                ));
            }
        }
    }
    found
}

/// The linearizability answer, as the verdict line prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Linearizable {
    Yes,
    No(String),
    Unknown(String),
}

impl Linearizable {
    pub(crate) fn check(history: &History, budget: u64) -> Self {
        match linearizability::check(history, budget) {
            CheckResult::Linearizable => Linearizable::Yes,
            CheckResult::NotLinearizable { key, reason } => {
                Linearizable::No(format!("key {key:?}: {reason}"))
            }
            CheckResult::Unknown { key } => Linearizable::Unknown(format!(
                "the search ran out of its budget of {budget} steps on key {key:?}"
            )),
        }
    }

    fn word(&self) -> &'static str {
        match self {
            Linearizable::Yes => "yes",
            Linearizable::No(_) => "no",
            Linearizable::Unknown(_) => "unknown",
        }
    }
}

/// Everything the verdict weighs.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) linearizable: Linearizable,
    pub(crate) lost: LostWrites,
    /// Other failures: crashed replicas, no progress, no convergence, bad replies, a cluster
    /// unavailable too long after a heal.
    pub(crate) failures: Vec<String>,
}

impl Verdict {
    /// Checks `history`; `failures` are what the run itself found.
    pub(crate) fn of(history: &History, budget: u64, failures: Vec<String>) -> Self {
        Self {
            linearizable: Linearizable::check(history, budget),
            lost: lost_writes(history),
            failures,
        }
    }

    /// Whether the run passed: linearizable, nothing lost, no other failure.
    pub(crate) fn passed(&self) -> bool {
        self.linearizable == Linearizable::Yes
            && self.lost.lost.is_empty()
            && self.failures.is_empty()
    }

    /// The closing lines of the report; the last two are the linearizability verdict and the
    /// lost write count.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for failure in &self.failures {
            lines.push(format!("FAILURE: {failure}"));
        }
        match &self.linearizable {
            Linearizable::Yes => {}
            Linearizable::No(reason) | Linearizable::Unknown(reason) => {
                lines.push(format!("FAILURE: linearizability: {reason}"));
            }
        }
        const SHOWN: usize = 10;
        for line in self.lost.lost.iter().take(SHOWN) {
            lines.push(format!("FAILURE: lost write: {line}"));
        }
        if self.lost.lost.len() > SHOWN {
            lines.push(format!(
                "  ... and {} more lost writes",
                self.lost.lost.len() - SHOWN
            ));
        }
        lines.push(format!(
            "acknowledged writes judged against the final reads: {} ({} unchecked)",
            self.lost.checked, self.lost.unchecked
        ));
        lines.push(format!(
            "result: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        ));
        lines.push(format!("linearizable: {}", self.linearizable.word()));
        lines.push(format!(
            "lost acknowledged writes: {}",
            self.lost.lost.len()
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        process: u64,
        kind: OpKind,
        value: Option<&str>,
        result: Option<OpResult>,
        invoke: u64,
        complete: Option<u64>,
    ) -> HistoryOp {
        HistoryOp {
            process,
            kind,
            key: "k".to_owned(),
            value: value.map(str::to_owned),
            expected: None,
            result,
            invoke,
            complete,
        }
    }

    fn put(process: u64, value: &str, invoke: u64, complete: Option<u64>) -> HistoryOp {
        let result = complete.map(|_| OpResult::Ok);
        op(process, OpKind::Put, Some(value), result, invoke, complete)
    }

    fn get(process: u64, read: Option<&str>, invoke: u64, complete: u64) -> HistoryOp {
        let result = Some(OpResult::Value(read.map(str::to_owned)));
        op(process, OpKind::Get, None, result, invoke, Some(complete))
    }

    fn verdict(ops: Vec<HistoryOp>) -> Verdict {
        Verdict::of(&History { ops }, 1_000_000, Vec::new())
    }

    #[test]
    fn a_lost_acknowledged_write_fails_the_verdict() {
        // "b" was acknowledged after "a"; the final read still returns "a".
        let verdict = verdict(vec![
            put(0, "a", 0, Some(10)),
            put(1, "b", 20, Some(30)),
            get(9, Some("a"), 40, 50),
        ]);
        assert!(!verdict.passed());
        assert_eq!(verdict.lost.lost.len(), 1, "{:?}", verdict.lost);
        assert!(verdict.lost.lost[0].contains("\"b\""), "{:?}", verdict.lost);
        let lines = verdict.lines();
        assert_eq!(lines[lines.len() - 2], "linearizable: no");
        assert_eq!(lines[lines.len() - 1], "lost acknowledged writes: 1");
        assert!(lines.contains(&"result: FAIL".to_owned()));
    }

    #[test]
    fn an_absent_final_value_loses_every_acknowledged_write() {
        let verdict = verdict(vec![
            put(0, "a", 0, Some(10)),
            put(1, "b", 5, Some(30)),
            get(9, None, 40, 50),
        ]);
        assert_eq!(verdict.lost.lost.len(), 2);
        assert_eq!(verdict.linearizable.word(), "no");
    }

    #[test]
    fn a_later_write_of_unknown_outcome_explains_the_final_value() {
        // "c" timed out, but may have executed after "b": nothing is lost.
        let verdict = verdict(vec![
            put(0, "a", 0, Some(10)),
            put(1, "b", 20, Some(30)),
            put(2, "c", 25, None),
            get(9, Some("c"), 40, 50),
        ]);
        assert!(verdict.passed(), "{:?}", verdict.lines());
        assert_eq!(verdict.lost.checked, 2);
        let lines = verdict.lines();
        assert_eq!(lines[lines.len() - 2], "linearizable: yes");
        assert_eq!(lines[lines.len() - 1], "lost acknowledged writes: 0");
    }

    #[test]
    fn a_stale_read_during_the_run_is_not_linearizable_though_nothing_is_lost() {
        let verdict = verdict(vec![
            put(0, "a", 0, Some(10)),
            put(1, "b", 20, Some(30)),
            get(2, Some("a"), 40, 50),
            get(9, Some("b"), 60, 70),
        ]);
        assert_eq!(verdict.lost.lost.len(), 0);
        assert!(matches!(verdict.linearizable, Linearizable::No(_)));
        assert!(!verdict.passed());
    }

    #[test]
    fn a_swap_that_failed_explains_nothing_and_a_budget_overrun_is_unknown() {
        let failed_swap = HistoryOp {
            expected: Some("x".to_owned()),
            ..op(
                2,
                OpKind::Cas,
                Some("c"),
                Some(OpResult::Swapped(false)),
                35,
                Some(38),
            )
        };
        let ops = vec![
            put(0, "a", 0, Some(10)),
            failed_swap,
            get(9, Some("c"), 40, 50),
        ];
        let verdict = verdict(ops.clone());
        assert_eq!(verdict.lost.lost.len(), 1);
        let starved = Verdict::of(&History { ops }, 1, Vec::new());
        assert!(
            matches!(starved.linearizable, Linearizable::Unknown(_)),
            "{starved:?}"
        );
        assert!(!starved.passed());
        let lines = starved.lines();
        assert_eq!(lines[lines.len() - 2], "linearizable: unknown");
    }

    #[test]
    fn other_failures_fail_a_clean_history() {
        let ops = vec![put(0, "a", 0, Some(10)), get(9, Some("a"), 20, 30)];
        let verdict = Verdict::of(
            &History { ops },
            1_000,
            vec!["replica 1 crashed".to_owned()],
        );
        assert_eq!(verdict.linearizable, Linearizable::Yes);
        assert!(!verdict.passed());
        assert!(
            verdict
                .lines()
                .contains(&"FAILURE: replica 1 crashed".to_owned())
        );
    }
}
