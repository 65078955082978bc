//! At most one primary per view, the one the view names.
//!
//! A replica acts as primary when it sends a prepare or a commit: it must be the replica the
//! view names (view mod n), normal in that view. A start_view (sent once durable, so possibly
//! after the sender moved on) must come from the replica its view names. Across the whole run,
//! restarts included, each view has at most one primary that acted: the checker remembers which
//! replica incarnation first sent a prepare, commit or start_view of each view, and another one
//! doing so — another replica, or the same replica after a restart, whose log may differ — is a
//! violation.
//!
//! Only acting counts. A new primary is normal in its view as soon as it holds a quorum of
//! do_view_change messages, before its view state is durable, and it sends nothing until that
//! write is (`vsr sim --seed 9100` before this rule: replica 2 became view 8's primary, crashed
//! before view 8 was on its disk, restarted in a lower view and became view 8's primary again;
//! its first incarnation had sent nothing, so no replica or client saw two logs of view 8).

use std::collections::BTreeMap;

use vsr::View;

use super::{Inspect, Phase, Step};

/// See the module docs.
#[derive(Debug)]
pub struct PrimaryChecker {
    replica_count: u8,
    /// view → (replica, incarnation) that was its normal primary.
    primaries: BTreeMap<View, (u8, u64)>,
    /// Per replica, the (view, incarnation) last recorded, to skip the map lookup.
    recorded: Vec<Option<(View, u64)>>,
}

impl PrimaryChecker {
    /// A checker for `replica_count` replicas.
    #[must_use]
    pub fn new(replica_count: u8) -> Self {
        Self {
            replica_count,
            primaries: BTreeMap::new(),
            recorded: vec![None; usize::from(replica_count)],
        }
    }

    fn primary_of(&self, view: View) -> u8 {
        view.primary(self.replica_count)
    }

    /// Checks `replica`, in its incarnation `incarnation`, after a step in which it sent `step`.
    ///
    /// # Errors
    /// A message of a primary from a replica that is not the view's normal primary, or a second
    /// normal primary of a view.
    pub fn check(
        &mut self,
        replica: &dyn Inspect,
        incarnation: u64,
        step: &Step,
    ) -> Result<(), String> {
        let index = replica.index();
        for &(view, name) in &step.primary_sends {
            let named = self.primary_of(view);
            if named != index {
                return Err(format!(
                    "primary: replica {index} sent a {name} of view {view}, whose primary is \
                     replica {named}"
                ));
            }
            if replica.phase() != Phase::Normal || replica.view() != view {
                return Err(format!(
                    "primary: replica {index} sent a {name} of view {view} while {:?} in view {}",
                    replica.phase(),
                    replica.view()
                ));
            }
        }
        for &view in &step.start_views {
            let named = self.primary_of(view);
            if named != index {
                return Err(format!(
                    "primary: replica {index} sent a start_view of view {view}, whose primary \
                     is replica {named}"
                ));
            }
        }
        let view = replica.view();
        let acted = step
            .primary_sends
            .iter()
            .map(|(view, _)| view)
            .chain(&step.start_views)
            .any(|sent| *sent == view);
        if !acted || replica.phase() != Phase::Normal || self.primary_of(view) != index {
            return Ok(());
        }
        let slot = &mut self.recorded[usize::from(index)];
        if *slot == Some((view, incarnation)) {
            return Ok(());
        }
        *slot = Some((view, incarnation));
        let first = *self.primaries.entry(view).or_insert((index, incarnation));
        if first != (index, incarnation) {
            return Err(format!(
                "primary: view {view} has two primaries that acted: replica {} (incarnation \
                 {}) and replica {index} (incarnation {incarnation})",
                first.0, first.1
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::Planted;

    fn sent(view: u64, name: &'static str) -> Step {
        Step {
            primary_sends: vec![(View(view), name)],
            ..Step::default()
        }
    }

    #[test]
    fn the_named_primaries_of_successive_views_pass() {
        let mut checker = PrimaryChecker::new(3);
        for view in 0..6 {
            let primary = Planted::normal((view % 3) as u8, View(view), &[]);
            checker.check(&primary, 1, &sent(view, "prepare")).unwrap();
            checker.check(&primary, 1, &Step::default()).unwrap();
            let backup = Planted::normal(((view + 1) % 3) as u8, View(view), &[]);
            checker.check(&backup, 1, &Step::default()).unwrap();
        }
    }

    #[test]
    fn a_prepare_from_a_replica_the_view_does_not_name_is_caught() {
        let mut checker = PrimaryChecker::new(3);
        let backup = Planted::normal(1, View(3), &[]);
        let error = checker.check(&backup, 1, &sent(3, "prepare")).unwrap_err();
        assert!(
            error.contains("replica 1 sent a prepare of view 3"),
            "{error}"
        );
    }

    #[test]
    fn a_commit_from_a_primary_in_a_view_change_is_caught() {
        let mut checker = PrimaryChecker::new(3);
        let mut primary = Planted::normal(0, View(3), &[]);
        primary.phase = Phase::ViewChange;
        let error = checker.check(&primary, 1, &sent(3, "commit")).unwrap_err();
        assert!(error.contains("while ViewChange in view 3"), "{error}");
    }

    #[test]
    fn a_second_primary_of_a_view_after_a_restart_is_caught() {
        let mut checker = PrimaryChecker::new(3);
        let primary = Planted::normal(2, View(5), &[]);
        checker.check(&primary, 1, &sent(5, "prepare")).unwrap();
        let error = checker.check(&primary, 2, &sent(5, "commit")).unwrap_err();
        assert!(
            error.contains("view 5 has two primaries that acted"),
            "{error}"
        );
        assert!(error.contains("incarnation 1") && error.contains("incarnation 2"));
        // A start_view is acting too.
        let mut checker = PrimaryChecker::new(3);
        let start_view = Step {
            start_views: vec![View(5)],
            ..Step::default()
        };
        checker.check(&primary, 1, &start_view).unwrap();
        assert!(checker.check(&primary, 2, &start_view).is_err());
    }

    /// A primary that never sent anything of its view and restarted into the same view again
    /// published one log of it at most.
    #[test]
    fn a_primary_that_never_acted_may_lead_its_view_again_after_a_restart() {
        let mut checker = PrimaryChecker::new(3);
        let primary = Planted::normal(2, View(5), &[]);
        checker.check(&primary, 1, &Step::default()).unwrap();
        checker.check(&primary, 2, &sent(5, "prepare")).unwrap();
        assert!(checker.check(&primary, 3, &sent(5, "prepare")).is_err());
    }
}
