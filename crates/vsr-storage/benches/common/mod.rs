//! Shared by the storage benchmarks.

use bytes::Bytes;
use vsr::{Entry, EntryChecksum, Op, Operation, View};

/// The entry that continues the log at `next` (its op and the previous entry's checksum), and
/// moves `next` past it.
pub(crate) fn next_entry(next: &mut (u64, EntryChecksum), body: &Bytes) -> Entry {
    let (op, parent) = *next;
    let entry = Entry {
        op: Op(op),
        view: View(0),
        parent,
        client: 1,
        session: 1,
        request: op,
        operation: Operation::StateMachine,
        body: body.clone(),
        checksum: EntryChecksum(0),
    }
    .sealed();
    *next = (op + 1, entry.checksum);
    entry
}
