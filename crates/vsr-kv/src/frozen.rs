//! [`FrozenDelta`]: `delta(since)` of a frozen copy of the store, encoded in bounded pieces.
//!
//! [`KvStore::frozen_delta`](vsr::StateMachine::frozen_delta) clones the persistent map (O(1))
//! and hands it over; whoever writes the checkpoint or sends the state pulls the encoding with
//! [`DeltaSource::pieces`]. Each piece walks on from the key after the last one it examined, so
//! no piece needs a pass over the whole map, and each is bounded twice:
//!
//! - it examines at most [`PIECE_ENTRIES_MAX`] entries. A delta since a recent op skips most
//!   keys, so a piece that found nothing to emit is empty: a caller on an event loop can still
//!   stop after any piece;
//! - it holds at most [`PIECE_SIZE_MAX`] bytes.
//!
//! Concatenated, the pieces are exactly `delta(since).encode(..)` at the moment of freezing:
//! the header in the first piece, the entries in key order, the end marker in the last.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use vsr::{DeltaSource, Op};

use crate::delta::{
    END_SIZE, ENTRY_SIZE_MAX, HEADER_SIZE, encode_end, encode_entry, encode_header, entry_size,
};
use crate::key::Key;
use crate::store::Entries;

/// The most entries one piece examines, emitted or skipped.
pub(crate) const PIECE_ENTRIES_MAX: usize = 4096;

/// The largest piece, in bytes.
pub(crate) const PIECE_SIZE_MAX: usize = 256 * 1024;

// The header and the largest entry fit in one piece, so every piece makes progress.
const _: () = assert!(HEADER_SIZE + ENTRY_SIZE_MAX + END_SIZE <= PIECE_SIZE_MAX);

/// The changes after `since` in a frozen copy of a store's map.
pub(crate) struct FrozenDelta {
    /// The map at the moment of freezing; shares its nodes with the store.
    entries: Entries,
    /// Entries whose version is after this op are in the delta.
    since: Op,
    /// The last op the store had applied.
    op: Op,
}

impl FrozenDelta {
    /// The delta since `since` of `entries`, a store's map that had applied up to `op`.
    pub(crate) fn new(entries: Entries, since: Op, op: Op) -> Self {
        Self { entries, since, op }
    }
}

impl DeltaSource for FrozenDelta {
    fn pieces(self: Arc<Self>) -> Box<dyn Iterator<Item = Bytes> + Send> {
        Box::new(Pieces {
            delta: self,
            position: Position::Start,
        })
    }
}

/// Where the next piece starts.
enum Position {
    /// Before the header.
    Start,
    /// After the entry with this key (examined, and emitted if it belongs to the delta).
    After(Key),
    /// After the end marker: no piece is left.
    Done,
}

/// The iterator [`FrozenDelta::pieces`] returns.
struct Pieces {
    delta: Arc<FrozenDelta>,
    position: Position,
}

impl Iterator for Pieces {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let delta = &*self.delta;
        let mut out = Vec::new();
        let from = match &self.position {
            Position::Start => {
                encode_header(&mut out, delta.since, delta.op);
                Bound::Unbounded
            }
            Position::After(key) => Bound::Excluded(key.as_slice()),
            Position::Done => return None,
        };
        let mut entries = delta.entries.range::<_, [u8]>((from, Bound::Unbounded));
        let mut last: Option<&Key> = None;
        let mut exhausted = false;
        for _ in 0..PIECE_ENTRIES_MAX {
            let Some((key, entry)) = entries.next() else {
                exhausted = true;
                break;
            };
            let slip =
                delta.since > Op(0) && entry.value.is_none() && vsr::bug!(IncrementDropsDeletes);
            if entry.version > delta.since && !slip {
                if out.len() + entry_size(key.as_slice(), entry) > PIECE_SIZE_MAX {
                    // Left for the next piece, which starts after `last`.
                    break;
                }
                encode_entry(&mut out, key.as_slice(), entry);
            }
            last = Some(key);
        }
        if exhausted && out.len() + END_SIZE <= PIECE_SIZE_MAX {
            encode_end(&mut out);
            self.position = Position::Done;
        } else {
            // A piece that stops early has examined an entry: the first always fits.
            let last = last.expect("a piece made no progress");
            self.position = Position::After(last.clone());
        }
        debug_assert!(out.len() <= PIECE_SIZE_MAX);
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use vsr::{Codec, StateMachine};

    use super::*;
    use crate::{KvOperation, KvStore};

    fn put(index: u64, value_size: usize) -> KvOperation {
        KvOperation::Put {
            key: Bytes::copy_from_slice(&index.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes()),
            value: Bytes::from(vec![7; value_size]),
        }
    }

    fn store(keys: u64, value_size: usize) -> KvStore {
        let mut store = KvStore::new();
        for index in 0..keys {
            store.apply(Op(index + 1), put(index, value_size));
        }
        store
    }

    fn pieces(store: &KvStore, since: Op) -> Vec<Bytes> {
        store.frozen_delta(since).pieces().collect()
    }

    fn concatenated(pieces: &[Bytes]) -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|piece| piece.iter().copied())
            .collect()
    }

    #[test]
    fn an_empty_store_is_one_piece() {
        let store = KvStore::new();
        assert_eq!(
            pieces(&store, Op(0)),
            vec![Bytes::from(store.delta(Op(0)).to_bytes())]
        );
    }

    #[test]
    fn a_piece_examines_a_bounded_number_of_entries() {
        let keys = 3 * PIECE_ENTRIES_MAX as u64 + 5;
        let mut store = store(keys, 10);
        // One key written after `since`, and it sorts last.
        let since = store.op();
        store.apply(
            Op(keys + 1),
            KvOperation::Put {
                key: Bytes::from_static(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
                value: Bytes::from_static(b"last"),
            },
        );
        let pieces = pieces(&store, since);
        assert_eq!(
            pieces.len(),
            4,
            "three full pieces of entries examined, then the rest"
        );
        assert_eq!(pieces[0].len(), HEADER_SIZE, "the header alone");
        assert!(pieces[1].is_empty() && pieces[2].is_empty());
        assert_eq!(concatenated(&pieces), store.delta(since).to_bytes());
    }

    #[test]
    fn pieces_stay_within_their_size_bound() {
        let store = store(200, crate::VALUE_SIZE_MAX);
        let pieces = pieces(&store, Op(0));
        assert!(pieces.len() >= 7, "{} pieces", pieces.len());
        for piece in &pieces {
            assert!(piece.len() <= PIECE_SIZE_MAX);
            assert!(
                piece.len() + ENTRY_SIZE_MAX > PIECE_SIZE_MAX || piece == pieces.last().unwrap()
            );
        }
        assert_eq!(concatenated(&pieces), store.delta(Op(0)).to_bytes());
    }

    #[test]
    fn the_frozen_copy_ignores_later_writes_and_replays_the_same_bytes() {
        let mut store = store(5000, 20);
        let expected = store.delta(Op(100)).to_bytes();
        let frozen = store.frozen_delta(Op(100));
        for index in 0..6000 {
            store.apply(Op(6000 + index), put(index, 3));
        }
        store.apply(
            Op(20_000),
            KvOperation::Delete {
                key: put(1, 0).key().clone(),
            },
        );
        let first: Vec<Bytes> = Arc::clone(&frozen).pieces().collect();
        assert_eq!(concatenated(&first), expected);
        let again: Vec<Bytes> = frozen.pieces().collect();
        assert_eq!(first, again);
    }
}
