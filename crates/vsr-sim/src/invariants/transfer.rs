//! A completed recovery or state transfer holds every op committed before it began, and its
//! state is the committed log's.
//!
//! A recovery begins when the checker first sees the replica recovering and completes when its
//! recovery counter grows (it is normal again). It must then hold every op committed anywhere
//! before it began: the highest op the checker knew committed then.
//!
//! A state transfer begins with the first get_state a replica outside recovery sends, and an
//! install (its state transfer counter grew) after which it asks for nothing more completes it.
//! A transfer fetches what the replica knows it lacks, so it must then hold every op the
//! replica knew committed in its view when it began (its `commit_max`), if it ends normal with
//! the whole log of that same view. It need not hold an op committed elsewhere that it had not
//! heard of: it learns of that op later and fetches again (`vsr sim --seed 111` has a backup
//! that asked knowing op 73 committed while op 76 already was, and stopped at op 75, all it
//! knew of).
//!
//! Either way the replica's verified log must reach that op and hold the committed entry there
//! (its log is a verified hash chain, see [`log_agreement`](super::log_agreement), so the ops
//! below agree too; ops it no longer holds it has executed).
//!
//! On every install and at every completed recovery the replica's state machine digest must be
//! the committed log's replayed to its commit number, at that very step — even when the state
//! came from a checkpoint delta and nothing was executed. If the reference model has not
//! replayed that far yet, the digest is kept and checked once it has.

use vsr::{Op, View};

use super::{Inspect, Phase, Step};
use crate::checker::SafetyChecker;

#[derive(Clone, Copy, Debug, Default)]
struct Watch {
    recoveries: u64,
    state_transfers: u64,
    /// The highest op known committed when the recovery in progress began.
    recovery_began: Option<Op>,
    /// A state transfer is in progress.
    transferring: bool,
    /// The highest op the replica knew committed and its view when the transfer in progress
    /// began.
    transfer_began: Option<(Op, View)>,
}

/// A digest to check once the reference model reaches its commit number.
#[derive(Clone, Copy, Debug)]
struct Pending {
    replica: u8,
    commit: Op,
    digest: u128,
    what: &'static str,
}

/// See the module docs.
#[derive(Debug)]
pub struct TransferChecker {
    watches: Vec<Watch>,
    pending: Vec<Pending>,
    /// The lowest commit number of the pending digests.
    pending_commit_min: Op,
}

impl TransferChecker {
    /// A checker for `replica_count` replicas.
    #[must_use]
    pub fn new(replica_count: u8) -> Self {
        Self {
            watches: vec![Watch::default(); usize::from(replica_count)],
            pending: Vec::new(),
            pending_commit_min: Op(u64::MAX),
        }
    }

    /// A replica (re)started: its counters start from zero, nothing is in progress.
    pub fn on_start(&mut self, replica: u8) {
        self.watches[usize::from(replica)] = Watch::default();
    }

    /// Checks `replica` after a step in which it sent `step`.
    ///
    /// # Errors
    /// A completed recovery or transfer that misses a committed op, or a state that differs
    /// from the committed log's.
    pub fn check(
        &mut self,
        replica: &dyn Inspect,
        step: &Step,
        safety: &SafetyChecker,
    ) -> Result<(), String> {
        self.check_pending(safety)?;
        let index = replica.index();
        let phase = replica.phase();
        let stats = replica.stats();
        let mut watch = self.watches[usize::from(index)];
        let recovered = stats.recoveries > watch.recoveries;
        let installed = stats.state_transfers > watch.state_transfers;
        watch.recoveries = stats.recoveries;
        watch.state_transfers = stats.state_transfers;
        if phase == Phase::Recovering {
            watch
                .recovery_began
                .get_or_insert_with(|| safety.commit_max());
            watch.transferring = false;
            watch.transfer_began = None;
        } else if recovered {
            let began = watch.recovery_began.take().unwrap_or(Op(0));
            holds_committed(replica, began, safety, "recovery")?;
            self.check_state(replica, safety, "recovery")?;
        } else if installed {
            self.check_state(replica, safety, "state transfer")?;
            if !step.get_state {
                watch.transferring = false;
                if let Some((began, view)) = watch.transfer_began.take()
                    && phase == Phase::Normal
                    && replica.view() == view
                    && replica.last_normal_view() == view
                {
                    holds_committed(replica, began, safety, "state transfer")?;
                }
            }
        }
        if step.get_state && phase != Phase::Recovering && !watch.transferring {
            watch.transferring = true;
            watch.transfer_began = Some((replica.commit_max(), replica.view()));
        }
        self.watches[usize::from(index)] = watch;
        Ok(())
    }

    fn check_state(
        &mut self,
        replica: &dyn Inspect,
        safety: &SafetyChecker,
        what: &'static str,
    ) -> Result<(), String> {
        let pending = Pending {
            replica: replica.index(),
            commit: replica.commit(),
            digest: replica.state_digest(),
            what,
        };
        if safety.digest_at(pending.commit).is_some() {
            check_digest(&pending, safety)
        } else {
            self.pending_commit_min = self.pending_commit_min.min(pending.commit);
            self.pending.push(pending);
            Ok(())
        }
    }

    fn check_pending(&mut self, safety: &SafetyChecker) -> Result<(), String> {
        if safety.reference_op() < self.pending_commit_min {
            return Ok(());
        }
        let mut waiting = Vec::new();
        self.pending_commit_min = Op(u64::MAX);
        for pending in std::mem::take(&mut self.pending) {
            if safety.digest_at(pending.commit).is_some() {
                check_digest(&pending, safety)?;
            } else {
                self.pending_commit_min = self.pending_commit_min.min(pending.commit);
                waiting.push(pending);
            }
        }
        self.pending = waiting;
        Ok(())
    }
}

fn check_digest(pending: &Pending, safety: &SafetyChecker) -> Result<(), String> {
    let expected = safety.digest_at(pending.commit).expect("checked");
    if pending.digest == expected {
        return Ok(());
    }
    Err(format!(
        "transfer: replica {} after a {} at commit {} has state {:032x}, but the committed log \
         replayed to op {} gives {expected:032x}",
        pending.replica, pending.what, pending.commit, pending.digest, pending.commit
    ))
}

/// Whether `replica` holds every op up to `began`, the highest op known committed when its
/// recovery or transfer began.
fn holds_committed(
    replica: &dyn Inspect,
    began: Op,
    safety: &SafetyChecker,
    what: &str,
) -> Result<(), String> {
    let index = replica.index();
    let describe = || {
        format!(
            "view {}, op {}, verified {}, commit {}",
            replica.view(),
            replica.op(),
            replica.op_verified(),
            replica.commit()
        )
    };
    if replica.op_verified() < began {
        return Err(format!(
            "transfer: replica {index} completed a {what} ({}) without op {began}, committed \
             before the {what} began",
            describe()
        ));
    }
    let held = replica.entry(began).map(|entry| entry.checksum);
    match (held, safety.committed_checksum(began)) {
        (Some(held), Some(committed)) if held != committed => Err(format!(
            "transfer: replica {index} completed a {what} ({}) holding entry {held} at op \
             {began}, where entry {committed} was committed before the {what} began",
            describe()
        )),
        (None, _) if began > replica.commit() => Err(format!(
            "transfer: replica {index} completed a {what} ({}) neither holding nor having \
             executed op {began}, committed before the {what} began",
            describe()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vsr::{Codec, Entry, EntryChecksum, Operation, StateMachine};
    use vsr_kv::{KvOperation, KvStore};

    use super::*;
    use crate::invariants::{Planted, chain};

    /// A safety checker that knows `log` committed; returns it and the digest after it.
    fn committed(log: &[Entry]) -> (SafetyChecker, u128) {
        let mut safety = SafetyChecker::new(3, 4);
        for entry in log {
            safety.record_committed(0, entry).unwrap();
        }
        let digest = safety.digest_at(Op(log.len() as u64)).unwrap();
        (safety, digest)
    }

    fn recovering(index: u8, view: u64) -> Planted {
        let mut replica = Planted::normal(index, View(view), &[]);
        replica.phase = Phase::Recovering;
        replica
    }

    #[test]
    fn a_recovery_that_reaches_every_committed_op_passes() {
        let log = chain(Op(1), 6, View(1), EntryChecksum(0));
        let (safety, digest) = committed(&log);
        let mut checker = TransferChecker::new(3);
        checker
            .check(&recovering(2, 0), &Step::default(), &safety)
            .unwrap();
        let mut recovered = Planted::normal(2, View(1), &log);
        recovered.stats.recoveries = 1;
        recovered.state_digest = digest;
        checker
            .check(&recovered, &Step::default(), &safety)
            .unwrap();
    }

    #[test]
    fn a_recovery_that_misses_a_committed_op_is_caught() {
        let log = chain(Op(1), 6, View(1), EntryChecksum(0));
        let (safety, digest) = committed(&log);
        let mut checker = TransferChecker::new(3);
        checker
            .check(&recovering(2, 0), &Step::default(), &safety)
            .unwrap();
        let mut recovered = Planted::normal(2, View(1), &log[..5]);
        recovered.stats.recoveries = 1;
        recovered.state_digest = digest;
        let error = checker
            .check(&recovered, &Step::default(), &safety)
            .unwrap_err();
        assert!(
            error.contains(
                "replica 2 completed a recovery (view 1, op 5, verified 5, commit 5) \
                            without op 6"
            ),
            "{error}"
        );
        // Holding a different entry at that op is no better.
        let mut other = log[..5].to_vec();
        other.extend(chain(Op(6), 1, View(0), log[4].checksum));
        let mut recovered = Planted::normal(2, View(1), &other);
        recovered.stats.recoveries = 1;
        checker.on_start(2);
        checker
            .check(&recovering(2, 0), &Step::default(), &safety)
            .unwrap();
        let error = checker
            .check(&recovered, &Step::default(), &safety)
            .unwrap_err();
        assert!(error.contains("holding entry"), "{error}");
    }

    #[test]
    fn a_transfer_that_stops_short_of_the_commit_is_caught() {
        let log = chain(Op(1), 6, View(1), EntryChecksum(0));
        let (safety, digest) = committed(&log);
        let mut checker = TransferChecker::new(3);
        let mut behind = Planted::normal(1, View(1), &log[..2]);
        behind.commit_max = Op(6);
        let get_state = Step {
            get_state: true,
            ..Step::default()
        };
        checker.check(&behind, &get_state, &safety).unwrap();
        // An install that asks for more is not the end of the transfer.
        behind.log = log[..4].to_vec();
        behind.stats.state_transfers = 1;
        (behind.op_verified, behind.commit) = (Op(4), Op(0));
        behind.state_digest = safety.digest_at(Op(0)).unwrap();
        checker.check(&behind, &get_state, &safety).unwrap();
        behind.stats.state_transfers = 2;
        let error = checker
            .check(&behind, &Step::default(), &safety)
            .unwrap_err();
        assert!(
            error.contains(
                "completed a state transfer (view 1, op 4, verified 4, commit 0) \
                            without op 6"
            ),
            "{error}"
        );
        // The same transfer reaching op 6 passes.
        let mut checker = TransferChecker::new(3);
        let mut behind = Planted::normal(1, View(1), &log[..2]);
        behind.commit_max = Op(6);
        checker.check(&behind, &get_state, &safety).unwrap();
        behind.log = log.clone();
        behind.op_verified = Op(6);
        behind.stats.state_transfers = 1;
        behind.state_digest = digest;
        checker.check(&behind, &Step::default(), &safety).unwrap();
        // A backup that asked knowing only op 4 committed may stop there.
        let mut checker = TransferChecker::new(3);
        let mut behind = Planted::normal(1, View(1), &log[..2]);
        behind.commit_max = Op(4);
        checker.check(&behind, &get_state, &safety).unwrap();
        behind.log = log[..4].to_vec();
        behind.op_verified = Op(4);
        behind.stats.state_transfers = 1;
        behind.state_digest = safety.digest_at(Op(2)).unwrap();
        checker.check(&behind, &Step::default(), &safety).unwrap();
    }

    #[test]
    fn a_delta_installing_the_wrong_state_is_caught_at_once_or_later() {
        let register = crate::invariants::register_of_client_7();
        let put = KvOperation::Put {
            key: Bytes::from("k"),
            value: Bytes::from("v"),
        }
        .to_bytes();
        let body = Bytes::from(put);
        let put = Entry {
            op: Op(2),
            view: View(0),
            parent: register.checksum,
            client: 7,
            session: 1,
            request: 2,
            operation: Operation::StateMachine,
            body,
            checksum: EntryChecksum(0),
        }
        .sealed();
        let (mut safety, _) = committed(std::slice::from_ref(&register));
        let mut checker = TransferChecker::new(3);
        // A delta brought the replica to commit 2 (its log window starts after op 2) with the
        // empty store's state: wrong, but the reference has not replayed op 2 yet.
        let mut installed = Planted::normal(0, View(0), &[]);
        (installed.base, installed.op_verified, installed.commit) = (Op(2), Op(2), Op(2));
        installed.stats.state_transfers = 1;
        installed.state_digest = KvStore::new().digest();
        checker
            .check(&installed, &Step::default(), &safety)
            .unwrap();
        safety.record_committed(1, &put).unwrap();
        let error = checker
            .check(&installed, &Step::default(), &safety)
            .unwrap_err();
        assert!(
            error.contains("replica 0 after a state transfer at commit 2 has state"),
            "{error}"
        );
        // Checked at the step itself when the reference is there already.
        let mut checker = TransferChecker::new(3);
        let error = checker
            .check(&installed, &Step::default(), &safety)
            .unwrap_err();
        assert!(
            error.contains("after a state transfer at commit 2"),
            "{error}"
        );
        installed.state_digest = safety.digest_at(Op(2)).unwrap();
        installed.stats.state_transfers = 2;
        checker
            .check(&installed, &Step::default(), &safety)
            .unwrap();
    }
}
