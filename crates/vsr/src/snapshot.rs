//! [`Snapshot`]: the replicated state at an op, frozen, encoded later and elsewhere.
//!
//! A checkpoint or a state transfer needs the state as it was at one op, while the replica goes
//! on executing. Encoding a large state takes long, so the core never does it on its own event
//! loop when the state machine can help: [`StateMachine::frozen_delta`] hands over a frozen copy
//! (for a persistent structure, a clone that shares everything), and whoever writes or sends the
//! snapshot pulls its encoding in [`pieces`](Snapshot::pieces), on its own thread and at its own
//! pace. Concatenated, the pieces are the snapshot's bytes:
//!
//! ```text
//!   client table size: u32 | client table | the state machine's delta (Codec of S::Delta)
//! ```
//!
//! The client table is small (bounded by `clients_max`) and is encoded when the snapshot is
//! taken; only the state machine's part is deferred.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

#[cfg(doc)]
use crate::state_machine::StateMachine;

/// A state machine's delta, frozen, whose encoding is produced on demand.
///
/// Implementations must be immutable once built: every call of [`DeltaSource::pieces`] yields
/// the same bytes, whatever the state machine has done since.
pub trait DeltaSource: Send + Sync + 'static {
    /// The encoding of the delta (what `S::Delta::encode` would append), in order, in pieces.
    /// A piece may be empty (work was done but nothing is ready yet): a caller bounding the
    /// work of one step can stop after any piece. Pieces should stay small (a few hundred KiB)
    /// so that nobody has to hold the whole encoding at once.
    fn pieces(self: Arc<Self>) -> Box<dyn Iterator<Item = Bytes> + Send>;

    /// The encoded size in bytes, if known without encoding.
    fn size_hint(&self) -> Option<u64> {
        None
    }
}

/// A delta encoded up front: the default of [`StateMachine::frozen_delta`].
#[derive(Debug)]
pub struct EncodedDelta(pub Bytes);

impl DeltaSource for EncodedDelta {
    fn pieces(self: Arc<Self>) -> Box<dyn Iterator<Item = Bytes> + Send> {
        Box::new(std::iter::once(self.0.clone()))
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
}

/// The replicated state (client table and state machine) at an op, or the changes after an
/// earlier op; see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Snapshot {
    /// The client table's size and encoding.
    head: Bytes,
    /// The state machine's part.
    delta: Arc<dyn DeltaSource>,
}

impl Snapshot {
    /// A snapshot of an encoded client table and a frozen delta.
    #[must_use]
    pub(crate) fn new(table: &[u8], delta: Arc<dyn DeltaSource>) -> Self {
        let size = u32::try_from(table.len()).expect("the client table is bounded");
        let mut head = Vec::with_capacity(table.len() + 4);
        head.extend_from_slice(&size.to_le_bytes());
        head.extend_from_slice(table);
        Self {
            head: Bytes::from(head),
            delta,
        }
    }

    /// A snapshot whose bytes are already known (read from a disk, received from a peer).
    #[must_use]
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self {
            head: Bytes::new(),
            delta: Arc::new(EncodedDelta(bytes)),
        }
    }

    /// A snapshot whose bytes are exactly what `source` yields (no client table is added).
    #[must_use]
    pub fn from_source(source: Arc<dyn DeltaSource>) -> Self {
        Self {
            head: Bytes::new(),
            delta: source,
        }
    }

    /// The encoding, in order, in pieces (some may be empty); see [`DeltaSource::pieces`].
    #[must_use]
    pub fn pieces(&self) -> Box<dyn Iterator<Item = Bytes> + Send> {
        let head = (!self.head.is_empty()).then(|| self.head.clone());
        Box::new(head.into_iter().chain(Arc::clone(&self.delta).pieces()))
    }

    /// The whole encoding in one buffer. Costs what encoding the state costs: meant for tests,
    /// the simulator and small states.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut pieces = self.pieces().filter(|piece| !piece.is_empty());
        let first = pieces.next().unwrap_or_default();
        let Some(second) = pieces.next() else {
            return first;
        };
        let mut out = Vec::with_capacity(first.len() + second.len());
        out.extend_from_slice(&first);
        out.extend_from_slice(&second);
        for piece in pieces {
            out.extend_from_slice(&piece);
        }
        Bytes::from(out)
    }

    /// The encoded size, if known without encoding.
    #[must_use]
    pub fn size_hint(&self) -> Option<u64> {
        self.delta
            .size_hint()
            .map(|size| size + self.head.len() as u64)
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Snapshot")
            .field("table_bytes", &self.head.len())
            .field("size_hint", &self.delta.size_hint())
            .finish_non_exhaustive()
    }
}

/// Equal when the encodings are: comparing encodes both (tests and the simulator only).
impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.delta, &other.delta) && self.head == other.head)
            || self.to_bytes() == other.to_bytes()
    }
}

impl Eq for Snapshot {}

// A snapshot is immutable once taken (see [`DeltaSource`]): a panic cannot leave one half
// changed.
impl std::panic::UnwindSafe for Snapshot {}
impl std::panic::RefUnwindSafe for Snapshot {}

impl From<Bytes> for Snapshot {
    fn from(bytes: Bytes) -> Self {
        Self::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pieces(Vec<&'static [u8]>);

    impl DeltaSource for Pieces {
        fn pieces(self: Arc<Self>) -> Box<dyn Iterator<Item = Bytes> + Send> {
            let pieces: Vec<Bytes> = self.0.iter().map(|p| Bytes::from_static(p)).collect();
            Box::new(pieces.into_iter())
        }
    }

    #[test]
    fn the_pieces_concatenate_to_the_bytes_and_equality_follows_the_bytes() {
        let snapshot = Snapshot::new(b"tab", Arc::new(Pieces(vec![b"ab", b"", b"cd"])));
        let bytes = snapshot.to_bytes();
        assert_eq!(&bytes[..], b"\x03\x00\x00\x00tababcd");
        assert_eq!(snapshot, Snapshot::from_bytes(bytes.clone()));
        assert_ne!(snapshot, Snapshot::from_bytes(bytes.slice(1..)));
        assert_eq!(Snapshot::from_bytes(bytes.clone()).to_bytes(), bytes);
        assert_eq!(Snapshot::from_bytes(Bytes::new()).to_bytes(), Bytes::new());
    }
}
