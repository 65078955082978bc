//! The protocol's numbers as distinct types: a [`View`] and an [`Op`] are both 64-bit counters,
//! but adding one to the other, or passing one where the other is expected, does not compile.
//!
//! Each type offers only the arithmetic the protocol needs: an op moves forward or back by a
//! count of ops, and two ops are a distance apart; a view only moves to the next view. Both
//! are `u64` on the wire and on disk: [`View::get`] and [`Op::get`] give the number, `View(n)`
//! and `Op(n)` make one from it, and the encodings in [`crate::wire`] and storage do exactly
//! that, so no byte changes.
//!
//! Mixing them is a compile error:
//!
//! ```compile_fail
//! let _ = vsr::Op(1) + vsr::View(1);
//! ```
//!
//! ```compile_fail
//! fn commit_up_to(_op: vsr::Op) {}
//! commit_up_to(vsr::View(3));
//! ```
//!
//! An [`EntryChecksum`] identifies one log entry and is the `parent` link of the entry after
//! it. It is a `u128`, like a client id and a cluster id, but it is neither: it is a 128-bit
//! name with no arithmetic at all, only equality and order. [`EntryChecksum::get`] gives the
//! bytes' number for the encodings.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// A view number: view `v` is led by replica `v % replica_count` (see
/// [`crate::Config::primary`]). Views start at 0 and only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct View(pub u64);

impl View {
    /// The number, for encodings and for arithmetic that is not about views.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The replica that leads this view in a cluster of `replica_count`: views rotate through
    /// the replicas in index order. The one definition of "primary of a view".
    ///
    /// # Panics
    /// When `replica_count` is 0.
    #[must_use]
    pub const fn primary(self, replica_count: u8) -> u8 {
        (self.0 % replica_count as u64) as u8
    }

    /// The view after this one.
    ///
    /// # Panics
    /// At `u64::MAX` (decoding bounds views far below it).
    #[must_use]
    pub const fn next(self) -> View {
        View(self.0 + 1)
    }
}

impl fmt::Display for View {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, formatter)
    }
}

/// An op number: the position of an entry in the log, starting at 1 (op 0 is the empty log's
/// head). A commit number is an op number too — the op of the last committed entry — and so
/// is a checkpoint's op and a delta's `since`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Op(pub u64);

impl Op {
    /// The number, for encodings and for arithmetic that is not about ops.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The op after this one.
    ///
    /// # Panics
    /// At `u64::MAX` (decoding bounds ops far below it).
    #[must_use]
    pub const fn next(self) -> Op {
        Op(self.0 + 1)
    }

    /// The op `count` ops later, or `None` past `u64::MAX`.
    #[must_use]
    pub const fn checked_add(self, count: u64) -> Option<Op> {
        match self.0.checked_add(count) {
            Some(op) => Some(Op(op)),
            None => None,
        }
    }

    /// The ops from `self` through `last`, in order (none when `last` comes before `self`).
    pub fn through(self, last: Op) -> impl DoubleEndedIterator<Item = Op> {
        (self.0..=last.0).map(Op)
    }

    /// How many ops `self` lies after `earlier`, or 0 when it does not.
    #[must_use]
    pub const fn saturating_since(self, earlier: Op) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, formatter)
    }
}

/// The op `count` ops later.
impl Add<u64> for Op {
    type Output = Op;

    fn add(self, count: u64) -> Op {
        Op(self.0 + count)
    }
}

impl AddAssign<u64> for Op {
    fn add_assign(&mut self, count: u64) {
        self.0 += count;
    }
}

/// The op `count` ops earlier.
impl Sub<u64> for Op {
    type Output = Op;

    fn sub(self, count: u64) -> Op {
        Op(self.0 - count)
    }
}

impl SubAssign<u64> for Op {
    fn sub_assign(&mut self, count: u64) {
        self.0 -= count;
    }
}

/// How many ops `self` lies after `earlier` (which must not be later).
impl Sub<Op> for Op {
    type Output = u64;

    fn sub(self, earlier: Op) -> u64 {
        self.0 - earlier.0
    }
}

/// The checksum of one log entry over all its other fields (see
/// [`crate::Entry::compute_checksum`]): it names that exact entry, and it is the `parent` of the
/// entry after it, so the log is a hash chain. The empty log's head (op 0) has checksum 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct EntryChecksum(pub u128);

impl EntryChecksum {
    /// The number, for encodings.
    #[must_use]
    pub const fn get(self) -> u128 {
        self.0
    }
}

/// Lowercase hex, 32 digits: the form an operator compares by eye.
impl fmt::Display for EntryChecksum {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{EntryChecksum, Op, View};

    #[test]
    fn op_arithmetic() {
        assert_eq!(Op(3) + 2, Op(5));
        assert_eq!(Op(5) - 2, Op(3));
        assert_eq!(Op(5) - Op(3), 2);
        assert_eq!(Op(3).next(), Op(4));
        assert_eq!(Op(1).saturating_since(Op(4)), 0);
        assert_eq!(
            Op(2).through(Op(4)).collect::<Vec<_>>(),
            [Op(2), Op(3), Op(4)]
        );
        assert_eq!(Op(4).through(Op(3)).count(), 0);
        assert_eq!(Op(u64::MAX).checked_add(1), None);
        assert_eq!(View(7).next(), View(8));
        assert_eq!(format!("{} {}", View(7), Op(9)), "7 9");
    }

    #[test]
    fn entry_checksum_displays_as_hex() {
        assert_eq!(
            EntryChecksum(0xab).to_string(),
            "000000000000000000000000000000ab"
        );
        assert_eq!(EntryChecksum(0xab).get(), 0xab);
    }
}
