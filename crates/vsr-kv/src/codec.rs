//! Byte-level helpers shared by every encoding in this crate.
//!
//! Writers append little-endian integers and `u32` length-prefixed byte strings to a `Vec<u8>`.
//! A [`Reader`] consumes a borrowed slice and checks every length against both the bytes left and
//! the documented maximum *before* copying, so a hostile length never drives an allocation.

use bytes::Bytes;
use vsr::CodecError;

use crate::{KEY_SIZE_MAX, VALUE_SIZE_MAX};

/// Tag byte of an absent optional value (or a tombstone).
pub(crate) const OPTION_NONE: u8 = 0;
/// Tag byte of a present optional value.
pub(crate) const OPTION_SOME: u8 = 1;

pub(crate) fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `u32` length prefix and the bytes themselves.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let size = u32::try_from(bytes.len()).expect("byte string longer than u32::MAX");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an optional value: a tag byte, then the value when present.
pub(crate) fn put_option(out: &mut Vec<u8>, value: Option<&Bytes>) {
    match value {
        None => put_u8(out, OPTION_NONE),
        Some(value) => {
            put_u8(out, OPTION_SOME);
            put_bytes(out, value);
        }
    }
}

/// Whether `key` may be stored: non-empty and at most [`KEY_SIZE_MAX`] bytes.
pub(crate) fn key_valid(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= KEY_SIZE_MAX
}

/// Whether `value` may be stored: at most [`VALUE_SIZE_MAX`] bytes.
pub(crate) fn value_valid(value: &[u8]) -> bool {
    value.len() <= VALUE_SIZE_MAX
}

/// A cursor over bytes being decoded as a `what`.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    /// An error about the value being decoded.
    pub(crate) fn error(&self, reason: &'static str) -> CodecError {
        CodecError::new(self.what, reason)
    }

    fn take(&mut self, size: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < size {
            return Err(self.error("truncated"));
        }
        let (head, tail) = self.bytes.split_at(size);
        self.bytes = tail;
        Ok(head)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let head = self.take(N)?;
        Ok(head.try_into().expect("take returned N bytes"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take_array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A length-prefixed byte string of at most `size_max` bytes.
    fn bytes(&mut self, size_max: usize, reason: &'static str) -> Result<Bytes, CodecError> {
        let size = usize::try_from(self.u32()?).map_err(|_| self.error(reason))?;
        if size > size_max {
            return Err(self.error(reason));
        }
        Ok(Bytes::copy_from_slice(self.take(size)?))
    }

    /// A non-empty key of at most [`KEY_SIZE_MAX`] bytes.
    pub(crate) fn key(&mut self) -> Result<Bytes, CodecError> {
        let key = self.bytes(KEY_SIZE_MAX, "key longer than KEY_SIZE_MAX")?;
        if key.is_empty() {
            return Err(self.error("empty key"));
        }
        Ok(key)
    }

    /// A value of at most [`VALUE_SIZE_MAX`] bytes.
    pub(crate) fn value(&mut self) -> Result<Bytes, CodecError> {
        self.bytes(VALUE_SIZE_MAX, "value longer than VALUE_SIZE_MAX")
    }

    /// An optional value written by [`put_option`].
    pub(crate) fn option(&mut self) -> Result<Option<Bytes>, CodecError> {
        match self.u8()? {
            OPTION_NONE => Ok(None),
            OPTION_SOME => Ok(Some(self.value()?)),
            _ => Err(self.error("unknown option tag")),
        }
    }

    /// Succeeds only when every byte has been consumed.
    pub(crate) fn finish(self) -> Result<(), CodecError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.error("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_checked_before_copy() {
        let mut out = Vec::new();
        out.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut reader = Reader::new(&out, "test");
        assert_eq!(
            reader.value().unwrap_err().reason,
            "value longer than VALUE_SIZE_MAX"
        );

        let mut out = Vec::new();
        put_bytes(&mut out, b"abc");
        out.pop();
        assert_eq!(
            Reader::new(&out, "test").key().unwrap_err().reason,
            "truncated"
        );
    }

    #[test]
    fn option_round_trip_and_bad_tag() {
        let mut out = Vec::new();
        put_option(&mut out, Some(&Bytes::from_static(b"v")));
        put_option(&mut out, None);
        let mut reader = Reader::new(&out, "test");
        assert_eq!(reader.option().unwrap(), Some(Bytes::from_static(b"v")));
        assert_eq!(reader.option().unwrap(), None);
        reader.finish().unwrap();
        assert!(Reader::new(&[2], "test").option().is_err());
    }
}
