//! The in-memory window of the log: the entries after `base_op`, a hash chain.
//!
//! Entries at or before `base_op` were trimmed (they are committed and covered by a checkpoint);
//! `base_checksum` is the checksum of the entry at `base_op`, so the chain continues.

use std::cell::Cell;
use std::collections::VecDeque;

use crate::message::Entry;
use crate::numbers::{EntryChecksum, Op};

#[derive(Debug, Default)]
pub(crate) struct Log {
    base_op: Op,
    base_checksum: EntryChecksum,
    entries: VecDeque<Entry>,
    /// Every link up to this op has been checked by [`Log::assert_chain`]; only entries after
    /// it are checked again, so the check costs what the log grew by since the last one.
    chain_checked: Cell<Op>,
}

impl Log {
    /// The last op in the log.
    pub(crate) fn op(&self) -> Op {
        self.base_op + self.entries.len() as u64
    }

    pub(crate) fn base_op(&self) -> Op {
        self.base_op
    }

    pub(crate) fn get(&self, op: Op) -> Option<&Entry> {
        if op <= self.base_op {
            return None;
        }
        let entry = self
            .entries
            .get(usize::try_from(op - self.base_op - 1).ok()?)?;
        assert_eq!(entry.op, op);
        Some(entry)
    }

    /// Asserts the window is one hash chain of consecutive ops from `base_op`: each entry's op
    /// follows its predecessor's and its parent is its predecessor's checksum. Links checked
    /// before are not checked again (nothing but `truncate` and `reset` changes them).
    pub(crate) fn assert_chain(&self) {
        let start = self.chain_checked.get().max(self.base_op).min(self.op());
        let skip = usize::try_from(start - self.base_op).expect("log window fits in memory");
        let mut parent = self.checksum(start).expect("the window holds its start");
        for (entry, op) in self
            .entries
            .iter()
            .skip(skip)
            .zip(start.next().through(self.op()))
        {
            assert_eq!(entry.op, op, "log ops not consecutive");
            assert_eq!(entry.parent, parent, "log hash chain broken at op {op}");
            parent = entry.checksum;
        }
        self.chain_checked.set(self.op());
    }

    /// The checksum of the entry at `op`, if the chain still knows it.
    pub(crate) fn checksum(&self, op: Op) -> Option<EntryChecksum> {
        if op == self.base_op {
            Some(self.base_checksum)
        } else {
            self.get(op).map(|entry| entry.checksum)
        }
    }

    /// The checksum of the last entry: the parent of the next.
    pub(crate) fn head_checksum(&self) -> EntryChecksum {
        self.entries
            .back()
            .map_or(self.base_checksum, |entry| entry.checksum)
    }

    /// Whether `entry` continues the chain at the head.
    pub(crate) fn connects(&self, entry: &Entry) -> bool {
        entry.op == self.op().next() && entry.parent == self.head_checksum()
    }

    pub(crate) fn append(&mut self, entry: Entry) {
        assert!(
            self.connects(&entry),
            "log append breaks the hash chain at op {}",
            entry.op
        );
        self.entries.push_back(entry);
    }

    /// Removes every entry after `op`.
    pub(crate) fn truncate(&mut self, op: Op) {
        assert!(
            op >= self.base_op,
            "cannot truncate into the trimmed prefix"
        );
        let keep = usize::try_from(op - self.base_op).expect("log window fits in memory");
        self.entries.truncate(keep);
        self.chain_checked.set(self.chain_checked.get().min(op));
    }

    /// Forgets entries at or before `op` (committed and checkpointed elsewhere).
    pub(crate) fn trim(&mut self, op: Op) {
        assert!(op <= self.op());
        while self.base_op < op {
            let entry = self.entries.pop_front().expect("op is within the log");
            self.base_op = entry.op;
            self.base_checksum = entry.checksum;
        }
    }

    /// Starts the log afresh after `op` (state transfer by delta, or a checkpoint on restart).
    pub(crate) fn reset(&mut self, op: Op, checksum: EntryChecksum) {
        self.entries.clear();
        self.base_op = op;
        self.base_checksum = checksum;
        self.chain_checked.set(op);
    }

    /// Clones of the entries in `from..=to` (those the window holds).
    pub(crate) fn range(&self, from: Op, to: Op) -> Vec<Entry> {
        from.max(self.base_op.next())
            .through(to.min(self.op()))
            .map(|op| self.get(op).expect("in range").clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::Log;
    use crate::message::{Entry, Operation};
    use crate::numbers::{EntryChecksum, Op, View};

    fn chain(count: u64) -> Log {
        let mut log = Log::default();
        for op in 1..=count {
            let entry = Entry {
                op: Op(op),
                view: View(0),
                parent: log.head_checksum(),
                client: 0,
                session: 0,
                request: 0,
                operation: Operation::Noop,
                body: Bytes::new(),
                checksum: EntryChecksum(0),
            }
            .sealed();
            log.append(entry);
        }
        log
    }

    #[test]
    fn a_broken_chain_is_caught() {
        chain(3).assert_chain();
        let mut broken_link = chain(3);
        broken_link.entries[1].parent = EntryChecksum(broken_link.entries[1].parent.get() ^ 1);
        let mut broken_order = chain(3);
        broken_order.entries.swap(1, 2);
        let mut broken_after_check = chain(3);
        broken_after_check.assert_chain();
        broken_after_check.truncate(Op(1));
        broken_after_check
            .entries
            .push_back(broken_link.entries[1].clone());
        for log in [broken_link, broken_order, broken_after_check] {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| log.assert_chain()));
            assert!(result.is_err());
        }
    }
}
