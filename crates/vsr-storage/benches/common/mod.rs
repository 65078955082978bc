//! Shared by the storage benchmarks.

use bytes::Bytes;
use vsr::{Entry, Operation};

/// The entry that continues the log at `next` (its op and the previous entry's checksum), and
/// moves `next` past it.
pub(crate) fn next_entry(next: &mut (u64, u128), body: &Bytes) -> Entry {
    let (op, parent) = *next;
    let entry = Entry::new(
        op,
        0,
        parent,
        1,
        1,
        op,
        Operation::StateMachine,
        body.clone(),
    );
    *next = (op + 1, entry.checksum);
    entry
}
