//! Within a view, a normal backup's log agrees with its primary's for the ops both hold.
//!
//! When backup B and primary P are both normal in view v, every op up to
//! min(B.op_verified, P.op) that both logs hold is the same entry. (Past its verified prefix a
//! normal backup may still hold entries of an older view, waiting to be confirmed or replaced:
//! those are not yet its log of the view.) Comparing every op on every step would cost the
//! window's length; instead the checker verifies each replica's log as a hash chain — every
//! entry's checksum covers its contents and its parent is the checksum of the entry before — and
//! then compares the two logs at their highest common op alone: equal entries there have equal
//! chains below.
//!
//! The chain is verified incrementally: the checker remembers the op and checksum of each
//! replica's head when last verified. If the log still holds that entry, only the entries after
//! it are new and verified (each against its predecessor); if not (truncated, reset, restarted)
//! the whole window is verified again. No entry is assumed valid: a break in the chain, a
//! corrupt entry or a hole in the window fails the check.

use vsr::{Entry, EntryChecksum, Op};

use super::{Inspect, Phase};

/// See the module docs.
#[derive(Debug)]
pub struct LogAgreementChecker {
    replica_count: u8,
    /// Per replica, the (op, checksum) of its head when its window was last verified.
    verified: Vec<Option<(Op, EntryChecksum)>>,
}

impl LogAgreementChecker {
    /// A checker for `replica_count` replicas.
    #[must_use]
    pub fn new(replica_count: u8) -> Self {
        Self {
            replica_count,
            verified: vec![None; usize::from(replica_count)],
        }
    }

    /// A replica (re)started: its log is verified afresh.
    pub fn on_start(&mut self, replica: u8) {
        self.verified[usize::from(replica)] = None;
    }

    /// Checks replica `index` after a step: verifies its log, then compares it with its
    /// primary's (if it is a normal backup) or with each normal backup's (if it is the normal
    /// primary). `replicas` holds every running replica, by index.
    ///
    /// # Errors
    /// A broken chain, or two logs that differ at an op both hold.
    pub fn check(&mut self, replicas: &[Option<&dyn Inspect>], index: u8) -> Result<(), String> {
        let replica = replicas[usize::from(index)].expect("the stepped replica runs");
        self.verify_chain(replica)?;
        if replica.phase() != Phase::Normal {
            return Ok(());
        }
        let view = replica.view();
        let primary = view.primary(self.replica_count);
        let normal_in_view =
            |other: &&dyn Inspect| other.phase() == Phase::Normal && other.view() == view;
        if primary != index {
            return match replicas[usize::from(primary)].filter(normal_in_view) {
                Some(primary) => compare(replica, primary),
                None => Ok(()),
            };
        }
        for backup in replicas.iter().flatten() {
            if backup.index() != index && normal_in_view(backup) {
                compare(*backup, replica)?;
            }
        }
        Ok(())
    }

    fn verify_chain(&mut self, replica: &dyn Inspect) -> Result<(), String> {
        let index = replica.index();
        let head = replica.op();
        let slot = &mut self.verified[usize::from(index)];
        let (from, mut parent) = match *slot {
            Some((op, checksum))
                if op <= head
                    && replica.entry(op).map(|entry| entry.checksum) == Some(checksum) =>
            {
                (op.next(), Some(checksum))
            }
            _ => {
                // Verify the whole window, from its lowest op (whose parent was trimmed).
                let mut lowest = head.next();
                while lowest > Op(1) && replica.entry(lowest - 1).is_some() {
                    lowest -= 1;
                }
                (lowest, None)
            }
        };
        for op in from.through(head) {
            let Some(entry) = replica.entry(op) else {
                return Err(format!(
                    "log agreement: replica {index}'s log window has no entry at op {op} below \
                     its head op {head}"
                ));
            };
            if entry.op != op || !entry.is_valid() {
                return Err(format!(
                    "log agreement: replica {index} holds a corrupt entry at op {op} (view {})",
                    entry.view
                ));
            }
            if let Some(parent) = parent
                && entry.parent != parent
            {
                return Err(format!(
                    "log agreement: replica {index}'s log breaks its hash chain at op {op} \
                     (view {}): its parent is {}, the entry at op {} is {parent}",
                    entry.view,
                    entry.parent,
                    op - 1
                ));
            }
            parent = Some(entry.checksum);
        }
        *slot = replica.entry(head).map(|entry| (head, entry.checksum));
        Ok(())
    }
}

/// Compares a normal backup's log with its normal primary's, both in the same view, at their
/// highest common op (both chains verified).
fn compare(backup: &dyn Inspect, primary: &dyn Inspect) -> Result<(), String> {
    let top = backup.op_verified().min(primary.op());
    let differs = |op| match (backup.entry(op), primary.entry(op)) {
        (Some(ours), Some(theirs)) => (ours.checksum != theirs.checksum).then_some((ours, theirs)),
        _ => None,
    };
    if top == Op(0) || differs(top).is_none() {
        return Ok(());
    }
    // Report the first op at which they differ.
    let mut op = top;
    while op > Op(1) && differs(op - 1).is_some() {
        op -= 1;
    }
    let (ours, theirs): (&Entry, &Entry) = differs(op).expect("they differ there");
    Err(format!(
        "log agreement: in view {}, backup {} and primary {} hold different entries at op {op}: \
         {} (view {}) and {} (view {}) (backup op {} verified {}, primary op {})",
        primary.view(),
        backup.index(),
        primary.index(),
        ours.checksum,
        ours.view,
        theirs.checksum,
        theirs.view,
        backup.op(),
        backup.op_verified(),
        primary.op()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::{Planted, chain};
    use vsr::View;

    fn check_all(
        checker: &mut LogAgreementChecker,
        replicas: &[Planted],
        index: u8,
    ) -> Result<(), String> {
        let views: Vec<Option<&dyn Inspect>> = replicas
            .iter()
            .map(|replica| Some(replica as &dyn Inspect))
            .collect();
        checker.check(&views, index)
    }

    #[test]
    fn a_backup_behind_its_primary_passes() {
        let log = chain(Op(1), 10, View(1), EntryChecksum(0));
        let mut checker = LogAgreementChecker::new(3);
        let mut replicas = vec![
            Planted::normal(0, View(1), &log[..6]),
            Planted::normal(1, View(1), &log),
            Planted::normal(2, View(1), &log[..8]),
        ];
        // A backup's unverified tail of an older view is not compared.
        let stale = chain(Op(9), 2, View(0), log[7].checksum);
        replicas[2].log.extend(stale);
        replicas[2].op_verified = Op(8);
        for index in [0, 2, 1] {
            check_all(&mut checker, &replicas, index).unwrap();
        }
        // The primary's log grows: only the new entries are verified, and still agree.
        let more = chain(Op(11), 3, View(1), log[9].checksum);
        replicas[1].log.extend(more);
        check_all(&mut checker, &replicas, 1).unwrap();
    }

    #[test]
    fn a_backup_that_differs_from_its_primary_is_caught() {
        let log = chain(Op(1), 10, View(1), EntryChecksum(0));
        let mut forked = log[..4].to_vec();
        forked.extend(chain(Op(5), 3, View(0), log[3].checksum));
        let mut checker = LogAgreementChecker::new(3);
        let replicas = vec![
            Planted::normal(0, View(1), &forked),
            Planted::normal(1, View(1), &log),
            Planted::normal(2, View(1), &log),
        ];
        let error = check_all(&mut checker, &replicas, 0).unwrap_err();
        assert!(
            error.contains("backup 0 and primary 1 hold different entries at op 5"),
            "{error}"
        );
        // The primary's step finds it too.
        let mut checker = LogAgreementChecker::new(3);
        let error = check_all(&mut checker, &replicas, 1).unwrap_err();
        assert!(error.contains("at op 5"), "{error}");
    }

    #[test]
    fn a_chain_broken_below_the_compared_op_is_caught() {
        // The backup's entry at op 4 was replaced by another whose successor does not name it:
        // the logs still agree at the highest common op, but the backup's chain is broken.
        let log = chain(Op(1), 8, View(1), EntryChecksum(0));
        let mut broken = log.clone();
        broken[3] = chain(Op(4), 1, View(0), log[2].checksum).remove(0);
        let mut checker = LogAgreementChecker::new(3);
        let replicas = vec![
            Planted::normal(0, View(1), &broken),
            Planted::normal(1, View(1), &log),
            Planted::normal(2, View(1), &log),
        ];
        // The primary's step compares at op 8 only: a backup's chain is verified on its own
        // steps, the only ones that change its log.
        check_all(&mut checker, &replicas, 1).unwrap();
        let error = check_all(&mut checker, &replicas, 0).unwrap_err();
        assert!(
            error.contains("replica 0's log breaks its hash chain at op 5"),
            "{error}"
        );
    }

    #[test]
    fn a_break_in_entries_appended_later_is_caught() {
        let log = chain(Op(1), 6, View(1), EntryChecksum(0));
        let mut checker = LogAgreementChecker::new(3);
        let mut replicas = vec![
            Planted::normal(0, View(1), &log),
            Planted::normal(1, View(1), &log),
            Planted::normal(2, View(1), &log),
        ];
        check_all(&mut checker, &replicas, 0).unwrap();
        // Appended after a verified head, an entry that does not continue the chain.
        replicas[0]
            .log
            .extend(chain(Op(7), 2, View(1), EntryChecksum(42)));
        let error = check_all(&mut checker, &replicas, 0).unwrap_err();
        assert!(error.contains("breaks its hash chain at op 7"), "{error}");
        // A corrupt entry (its checksum no longer covers its contents).
        let mut corrupt = Planted::normal(2, View(1), &log);
        corrupt.log[5].request = 9;
        replicas[2] = corrupt;
        let error = check_all(&mut checker, &replicas, 2).unwrap_err();
        assert!(error.contains("corrupt entry at op 6"), "{error}");
    }
}
