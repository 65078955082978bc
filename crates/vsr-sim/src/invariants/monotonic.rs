//! A replica's view never goes back: within one incarnation it only grows, and a restarted
//! replica's view is never below the view its disk had made durable before the restart.
//!
//! A recovering replica is exempt until it leaves recovery: it learns its view from its peers
//! and takes part in no quorum meanwhile (a wiped disk made nothing durable, so its floor is
//! view 0). A damaged disk that recovers must end up at least in the last view it was normal
//! in; it may settle below a view it had only started a view change for: recovery takes the
//! latest view of f + 1 peers, and a view that completed with this replica's vote has f other
//! members, one of whom answers among any f + 1 of its peers, so a view it settles below never
//! completed (its promise there bound nobody). A replica restarted without recovering also resumes at least at the commit number
//! its disk made durable. Within an incarnation the commit number's monotonicity is the
//! [`SafetyChecker`](crate::checker::SafetyChecker)'s check.

use vsr::{Op, View, ViewState};

use super::{Inspect, Phase};

#[derive(Clone, Copy, Debug, Default)]
struct Watch {
    /// The view last seen outside recovery in this incarnation.
    view: Option<View>,
    /// The view the disk made durable before this incarnation started.
    view_durable: View,
    /// The last view the disk says the replica was normal in.
    last_normal_durable: View,
    /// The commit number the disk made durable, until checked (none for a recovering disk).
    commit_durable: Option<Op>,
}

/// See the module docs.
#[derive(Debug)]
pub struct MonotonicChecker {
    watches: Vec<Watch>,
}

impl MonotonicChecker {
    /// A checker for `replica_count` replicas.
    #[must_use]
    pub fn new(replica_count: u8) -> Self {
        Self {
            watches: vec![Watch::default(); usize::from(replica_count)],
        }
    }

    /// A replica (re)started from a disk whose durable view state was `durable`.
    pub fn on_start(&mut self, replica: u8, durable: ViewState) {
        self.watches[usize::from(replica)] = Watch {
            view: None,
            view_durable: durable.view,
            last_normal_durable: durable.last_normal_view,
            commit_durable: (!durable.recovering).then_some(durable.commit),
        };
    }

    /// Checks `replica` after a step.
    ///
    /// # Errors
    /// A view that went back or below the durable view, or a restart below the durable commit.
    pub fn check(&mut self, replica: &dyn Inspect) -> Result<(), String> {
        let index = replica.index();
        let watch = &mut self.watches[usize::from(index)];
        if replica.phase() == Phase::Recovering {
            watch.commit_durable = None;
            watch.view_durable = watch.last_normal_durable;
            return Ok(());
        }
        let view = replica.view();
        if view < watch.view_durable {
            return Err(format!(
                "monotonic: replica {index} is in view {view} ({:?}), below view {} its disk \
                 had made durable before it restarted",
                replica.phase(),
                watch.view_durable
            ));
        }
        if let Some(previous) = watch.view
            && view < previous
        {
            return Err(format!(
                "monotonic: replica {index}: view went back from {previous} to {view}"
            ));
        }
        watch.view = Some(view);
        if let Some(commit_durable) = watch.commit_durable.take()
            && replica.commit() < commit_durable
        {
            return Err(format!(
                "monotonic: replica {index} restarted at commit {}, below commit \
                 {commit_durable} its disk had made durable",
                replica.commit()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::Planted;

    fn durable(view: u64, commit: u64) -> ViewState {
        ViewState {
            view: View(view),
            last_normal_view: View(view),
            commit: Op(commit),
            recovering: false,
        }
    }

    #[test]
    fn views_that_grow_across_restarts_pass() {
        let mut checker = MonotonicChecker::new(3);
        checker.on_start(1, ViewState::default());
        checker.check(&Planted::normal(1, View(0), &[])).unwrap();
        checker.check(&Planted::normal(1, View(2), &[])).unwrap();
        checker.on_start(1, durable(2, 0));
        checker.check(&Planted::normal(1, View(3), &[])).unwrap();
        // A wiped disk recovers from view 0 into whatever view its peers are in.
        checker.on_start(1, vsr::DurableState::recovering().view_state);
        let mut recovering = Planted::normal(1, View(0), &[]);
        recovering.phase = Phase::Recovering;
        checker.check(&recovering).unwrap();
        checker.check(&Planted::normal(1, View(4), &[])).unwrap();
    }

    #[test]
    fn a_view_going_back_in_one_incarnation_is_caught() {
        let mut checker = MonotonicChecker::new(3);
        checker.on_start(0, ViewState::default());
        checker.check(&Planted::normal(0, View(4), &[])).unwrap();
        let error = checker
            .check(&Planted::normal(0, View(3), &[]))
            .unwrap_err();
        assert!(
            error.contains("replica 0: view went back from 4 to 3"),
            "{error}"
        );
    }

    #[test]
    fn a_restart_below_the_durable_view_is_caught_after_recovery_too() {
        let mut checker = MonotonicChecker::new(3);
        checker.on_start(2, durable(7, 0));
        let error = checker
            .check(&Planted::normal(2, View(6), &[]))
            .unwrap_err();
        assert!(
            error.contains("below view 7 its disk had made durable"),
            "{error}"
        );
        // A damaged disk recovers, but must not end up below the last view it was normal in.
        let mut damaged = durable(7, 0);
        damaged.recovering = true;
        checker.on_start(2, damaged);
        let mut recovering = Planted::normal(2, View(5), &[]);
        recovering.phase = Phase::Recovering;
        checker.check(&recovering).unwrap();
        recovering.phase = Phase::Normal;
        let error = checker.check(&recovering).unwrap_err();
        assert!(error.contains("view 5 (Normal), below view 7"), "{error}");
    }

    #[test]
    fn a_recovery_may_settle_below_a_view_only_started() {
        let mut checker = MonotonicChecker::new(3);
        let mut started = durable(3, 0);
        started.last_normal_view = View(1);
        started.recovering = true;
        checker.on_start(0, started);
        let mut recovering = Planted::normal(0, View(1), &[]);
        recovering.phase = Phase::Recovering;
        checker.check(&recovering).unwrap();
        recovering.phase = Phase::Normal;
        checker.check(&recovering).unwrap();
        // Below the last normal view it is caught.
        checker.on_start(0, started);
        let mut recovering = Planted::normal(0, View(0), &[]);
        recovering.phase = Phase::Recovering;
        checker.check(&recovering).unwrap();
        recovering.phase = Phase::Normal;
        let error = checker.check(&recovering).unwrap_err();
        assert!(error.contains("below view 1"), "{error}");
    }

    #[test]
    fn a_restart_below_the_durable_commit_is_caught() {
        let mut checker = MonotonicChecker::new(3);
        checker.on_start(0, durable(1, 5));
        let mut restarted = Planted::normal(0, View(1), &[]);
        restarted.commit = Op(4);
        let error = checker.check(&restarted).unwrap_err();
        assert!(
            error.contains("restarted at commit 4, below commit 5"),
            "{error}"
        );
    }
}
