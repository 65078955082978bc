//! Backups under simulation: every so often the primary is asked for its whole state
//! (`Replica::request_snapshot`, what `vsr backup` asks for), and the snapshot it hands back is
//! checked against what the run knows:
//!
//! * it is taken at the replica's commit number;
//! * it holds every op acknowledged to any client before it was asked for (a backup is a read
//!   of the whole state, and reads are linearizable);
//! * restored as `vsr restore` restores it (a whole checkpoint at its op, the view state of its
//!   view, no log), a replica comes up with the committed log's state at that op and the
//!   asking replica's client table.

use std::collections::BTreeMap;

use vsr::{Checkpoint, DurableState, Message, Op, Replica, Reply, StateMachine as _, View};
use vsr_kv::KvStore;

use crate::sim::Simulator;

/// The client id backups are asked for with (no simulated client has it: theirs are random and
/// odd).
pub(crate) const BACKUP_CLIENT: u128 = 2;

/// A backup is asked for on every this many ticks of a primary (about 20 simulated seconds):
/// rare, as backups are. Each one is a read, which changes what a primary does (a read waiting
/// two view-change timeouts makes an unconfirmed primary leave its view), so asking often
/// would make every run a run with reads in flight.
const TICKS_PER_BACKUP: u64 = 2048;

/// The backups asked for and what they must hold.
#[derive(Debug, Default)]
pub(crate) struct Backups {
    /// Ticks of primaries counted so far.
    ticks: u64,
    /// The last request number used.
    request_last: u64,
    /// Requests not answered yet: the highest op acknowledged when each was asked for.
    pending: BTreeMap<u64, Op>,
    /// The highest op any reply sent so far named.
    acknowledged_max: Op,
}

impl Backups {
    /// A reply went out: its op is committed, and a backup asked for from now on must hold it.
    pub(crate) fn on_reply(&mut self, message: &Message) {
        if let Message::Reply(Reply { op, .. }) = message {
            self.acknowledged_max = self.acknowledged_max.max(*op);
        }
    }
}

impl Simulator {
    /// Counts a tick of replica `index`; asks it for a backup if it is primary and one is due.
    pub(crate) fn maybe_ask_backup(&mut self, index: u8) {
        let Some(replica) = self.replicas[usize::from(index)].replica.as_mut() else {
            return;
        };
        if !replica.is_primary() {
            return;
        }
        let backups = &mut self.backups;
        backups.ticks += 1;
        if !backups.ticks.is_multiple_of(TICKS_PER_BACKUP) {
            return;
        }
        backups.request_last += 1;
        let request = backups.request_last;
        if replica.request_snapshot(BACKUP_CLIENT, request) {
            backups.pending.insert(request, backups.acknowledged_max);
        }
    }

    /// Checks the snapshot replica `index` handed back for backup request `request`.
    pub(crate) fn check_backup(
        &mut self,
        index: u8,
        request: u64,
        view: View,
        checkpoint: &Checkpoint,
    ) -> Result<(), String> {
        let asked_acknowledged = self.backups.pending.remove(&request).ok_or_else(|| {
            format!("replica {index} answered backup request {request}, never asked")
        })?;
        let replica = self.replicas[usize::from(index)]
            .replica
            .as_ref()
            .expect("a running replica");
        let restored = restore(&self.config, view, checkpoint);
        let found = Restored {
            commit: replica.commit(),
            digest: restored.state_machine().digest(),
            expected_digest: self.checker.digest_at(checkpoint.op),
            client_table: restored.client_table_digest(),
            expected_client_table: replica.client_table_digest(),
        };
        match backup_violation(checkpoint.op, asked_acknowledged, &found) {
            Some(violation) => Err(format!("replica {index}: {violation}")),
            None => Ok(()),
        }
    }
}

/// A replica opened from `checkpoint` alone, as `vsr restore` leaves a data directory.
fn restore(config: &vsr::Config, view: View, checkpoint: &Checkpoint) -> Replica<KvStore> {
    let durable = DurableState::restored(view, checkpoint.clone());
    Replica::open(config.clone(), 0, KvStore::new(), 0, &durable)
}

/// What a backup's restore came up with, and what it should have.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Restored {
    /// The asking replica's commit number when it answered.
    pub(crate) commit: Op,
    /// The restored state's digest.
    pub(crate) digest: u128,
    /// The committed log's digest at the backup's op, if the reference model got that far.
    pub(crate) expected_digest: Option<u128>,
    /// The restored client table's digest.
    pub(crate) client_table: u128,
    /// The asking replica's.
    pub(crate) expected_client_table: u128,
}

/// Why a backup at `op`, asked for when ops up to `asked_acknowledged` were acknowledged, is
/// wrong, if it is.
pub(crate) fn backup_violation(
    op: Op,
    asked_acknowledged: Op,
    restored: &Restored,
) -> Option<String> {
    if op != restored.commit {
        return Some(format!(
            "a backup at op {op}, not at its commit number {}",
            restored.commit
        ));
    }
    if op < asked_acknowledged {
        return Some(format!(
            "a backup at op {op} lacks op {asked_acknowledged}, acknowledged before it was asked for"
        ));
    }
    if restored
        .expected_digest
        .is_some_and(|expected| expected != restored.digest)
    {
        return Some(format!(
            "a backup at op {op} restores to a state other than the committed log's"
        ));
    }
    if restored.client_table != restored.expected_client_table {
        return Some(format!(
            "a backup at op {op} restores another client table than the replica's"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Restored {
        Restored {
            commit: Op(10),
            digest: 7,
            expected_digest: Some(7),
            client_table: 3,
            expected_client_table: 3,
        }
    }

    #[test]
    fn each_planted_fault_of_a_backup_is_reported() {
        assert_eq!(backup_violation(Op(10), Op(9), &good()), None);
        assert_eq!(backup_violation(Op(10), Op(10), &good()), None);
        let unknown = Restored {
            expected_digest: None,
            ..good()
        };
        assert_eq!(backup_violation(Op(10), Op(10), &unknown), None);
        let stale = backup_violation(Op(10), Op(11), &good()).expect("stale");
        assert!(stale.contains("lacks op 11"), "{stale}");
        let elsewhere = backup_violation(Op(9), Op(0), &good()).expect("not at commit");
        assert!(elsewhere.contains("not at its commit"), "{elsewhere}");
        let state = Restored {
            digest: 8,
            ..good()
        };
        assert!(backup_violation(Op(10), Op(0), &state).is_some());
        let table = Restored {
            client_table: 4,
            ..good()
        };
        assert!(backup_violation(Op(10), Op(0), &table).is_some());
    }
}
