//! Replicas at the same commit number have identical client tables.
//!
//! The client table is replicated state, changed only by executing committed entries in log
//! order (or replaced by a checkpoint's, taken at a commit number), so it is a function of the
//! commit number. The first replica seen at a commit number fixes the table's digest there
//! ([`vsr::Replica::client_table_digest`]); any other replica at that commit with another digest
//! is a violation. A replica's table is read again only when its commit number or its count of
//! installed state transfers changed.

use std::collections::BTreeMap;

use vsr::Op;

use super::Inspect;

/// See the module docs.
#[derive(Debug)]
pub struct ClientTableChecker {
    /// commit → (first replica seen there, its client table's digest).
    digests: BTreeMap<Op, (u8, u128)>,
    /// Per replica, the (commit, state transfers) last checked.
    checked: Vec<Option<(Op, u64)>>,
}

impl ClientTableChecker {
    /// A checker for `replica_count` replicas.
    #[must_use]
    pub fn new(replica_count: u8) -> Self {
        Self {
            digests: BTreeMap::new(),
            checked: vec![None; usize::from(replica_count)],
        }
    }

    /// A replica (re)started: its table is read again.
    pub fn on_start(&mut self, replica: u8) {
        self.checked[usize::from(replica)] = None;
    }

    /// Checks `replica` after a step.
    ///
    /// # Errors
    /// A client table that differs from another replica's at the same commit number.
    pub fn check(&mut self, replica: &dyn Inspect) -> Result<(), String> {
        let index = replica.index();
        let commit = replica.commit();
        let key = (commit, replica.stats().state_transfers);
        let checked = &mut self.checked[usize::from(index)];
        if *checked == Some(key) {
            return Ok(());
        }
        *checked = Some(key);
        let digest = replica.client_table_digest();
        let (first, known) = *self.digests.entry(commit).or_insert((index, digest));
        if known != digest {
            return Err(format!(
                "client tables: at commit {commit} replica {first} has client table \
                 {known:032x}, replica {index} has {digest:032x} (view {}, {:?})",
                replica.view(),
                replica.phase()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::Planted;
    use vsr::View;

    fn at(index: u8, commit: u64, digest: u128) -> Planted {
        let mut replica = Planted::normal(index, View(1), &[]);
        replica.commit = Op(commit);
        replica.client_table_digest = digest;
        replica
    }

    #[test]
    fn equal_tables_at_equal_commits_pass() {
        let mut checker = ClientTableChecker::new(3);
        checker.check(&at(0, 3, 30)).unwrap();
        checker.check(&at(1, 3, 30)).unwrap();
        checker.check(&at(0, 4, 40)).unwrap();
        checker.check(&at(2, 4, 40)).unwrap();
    }

    #[test]
    fn a_different_table_at_the_same_commit_is_caught() {
        let mut checker = ClientTableChecker::new(3);
        checker.check(&at(0, 3, 30)).unwrap();
        checker.check(&at(1, 2, 20)).unwrap();
        let error = checker.check(&at(1, 3, 31)).unwrap_err();
        assert!(
            error.contains("at commit 3 replica 0 has client table"),
            "{error}"
        );
        // A state transfer that replaces the table without moving the commit is read again.
        let mut checker = ClientTableChecker::new(3);
        let mut replica = at(2, 5, 50);
        checker.check(&replica).unwrap();
        checker.check(&at(0, 5, 50)).unwrap();
        replica.client_table_digest = 51;
        checker.check(&replica).unwrap();
        replica.stats.state_transfers = 1;
        let error = checker.check(&replica).unwrap_err();
        assert!(error.contains("replica 2 has"), "{error}");
    }
}
