//! [`Key`]: a stored key, kept inline when it is short.
//!
//! The ordered map compares keys at every level of a lookup. A key held as [`Bytes`] lives in
//! its own allocation, so each comparison would be a pointer chase (a cache miss in a large
//! store) and each key would cost an allocation. Keys of up to [`KEY_INLINE_SIZE_MAX`] bytes
//! (the common case) are copied into the map's node instead; longer ones stay shared. Either
//! way a key compares, and orders, as its bytes.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;

/// The longest key kept inline; chosen so that a [`Key`] is no larger than a [`Bytes`].
pub(crate) const KEY_INLINE_SIZE_MAX: usize = 22;

const _: () = assert!(size_of::<Key>() <= size_of::<Bytes>());
const _: () = assert!(KEY_INLINE_SIZE_MAX <= u8::MAX as usize);

/// A key in the store. Equality, order and [`Borrow<[u8]>`] all follow the key's bytes, so a
/// lookup by `&[u8]` needs no conversion.
#[derive(Clone)]
pub(crate) enum Key {
    /// A short key, copied: its first `size` bytes.
    Inline {
        /// How many of `bytes` are the key.
        size: u8,
        /// The key, padded with zeros.
        bytes: [u8; KEY_INLINE_SIZE_MAX],
    },
    /// A long key, shared with whoever else holds it.
    Shared(Bytes),
}

impl Key {
    /// The key's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { size, bytes } => &bytes[..usize::from(*size)],
            Self::Shared(bytes) => bytes,
        }
    }

    /// The key's bytes as [`Bytes`] (a copy for an inline key).
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Self::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            Self::Shared(bytes) => bytes.clone(),
        }
    }
}

impl From<Bytes> for Key {
    fn from(key: Bytes) -> Self {
        match u8::try_from(key.len()) {
            Ok(size) if usize::from(size) <= KEY_INLINE_SIZE_MAX => {
                let mut bytes = [0; KEY_INLINE_SIZE_MAX];
                bytes[..key.len()].copy_from_slice(&key);
                Self::Inline { size, bytes }
            }
            _ => Self::Shared(key),
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Bytes::copy_from_slice(self.as_slice()), formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_shared_keys_order_as_their_bytes() {
        let long = vec![b'a'; KEY_INLINE_SIZE_MAX + 1];
        let at_limit = vec![b'a'; KEY_INLINE_SIZE_MAX];
        let mut keys: Vec<Key> = [&b"b"[..], &long, b"a", &at_limit, b"a\0", b"\xff"]
            .into_iter()
            .map(|key| Key::from(Bytes::copy_from_slice(key)))
            .collect();
        assert!(matches!(keys[1], Key::Shared(_)));
        assert!(matches!(keys[3], Key::Inline { .. }));
        keys.sort();
        let sorted: Vec<&[u8]> = keys.iter().map(Key::as_slice).collect();
        let expected: Vec<&[u8]> = vec![b"a", b"a\0", &at_limit, &long, b"b", b"\xff"];
        assert_eq!(sorted, expected);
        for key in &keys {
            assert_eq!(Key::from(key.to_bytes()), *key);
            assert_eq!(key.to_bytes(), key.as_slice());
        }
    }
}
