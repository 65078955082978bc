//! Byte-level helpers shared by every encoding in this crate.
//!
//! Writers append little-endian integers ([`bytes::BufMut`] on a `Vec<u8>`) and `u32`
//! length-prefixed byte strings ([`put_bytes`]). A [`Reader`] consumes a borrowed slice through
//! [`bytes::Buf`] and checks every length against both the bytes left and the documented maximum
//! *before* copying, so a hostile length never drives an allocation (and never reaches one of
//! `Buf`'s panicking reads).

use bytes::{Buf, BufMut, Bytes};
use vsr::CodecError;

use crate::{KEY_SIZE_MAX, VALUE_SIZE_MAX};

/// Tag byte of an absent optional value (or a tombstone).
pub(crate) const OPTION_NONE: u8 = 0;
/// Tag byte of a present optional value.
pub(crate) const OPTION_SOME: u8 = 1;

/// Appends a `u32` length prefix and the bytes themselves.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let size = u32::try_from(bytes.len()).expect("byte string longer than u32::MAX");
    out.put_u32_le(size);
    out.put_slice(bytes);
}

/// Appends an optional value: a tag byte, then the value when present.
pub(crate) fn put_option(out: &mut Vec<u8>, value: Option<&Bytes>) {
    match value {
        None => out.put_u8(OPTION_NONE),
        Some(value) => {
            out.put_u8(OPTION_SOME);
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

    /// Fails unless `size` more bytes are left.
    fn need(&self, size: usize) -> Result<(), CodecError> {
        if self.bytes.remaining() < size {
            return Err(self.error("truncated"));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.bytes.get_u8())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.bytes.get_u32_le())
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        self.need(8)?;
        Ok(self.bytes.get_u64_le())
    }

    /// A length-prefixed byte string of at most `size_max` bytes.
    fn bytes(&mut self, size_max: usize, reason: &'static str) -> Result<Bytes, CodecError> {
        let size = usize::try_from(self.u32()?).map_err(|_| self.error(reason))?;
        if size > size_max {
            return Err(self.error(reason));
        }
        self.need(size)?;
        Ok(self.bytes.copy_to_bytes(size))
    }

    /// A non-empty key of at most [`KEY_SIZE_MAX`] bytes.
    pub(crate) fn key(&mut self) -> Result<Bytes, CodecError> {
        let key = self.bytes(KEY_SIZE_MAX, "key longer than KEY_SIZE_MAX")?;
        if key.is_empty() {
            return Err(self.error("empty key"));
        }
        Ok(key)
    }

    /// A non-empty key as [`Reader::key`] reads it, or `None` for a zero length (which no key
    /// has, so it can mark the end of a list of keyed entries).
    pub(crate) fn key_or_end(&mut self) -> Result<Option<Bytes>, CodecError> {
        let size =
            usize::try_from(self.u32()?).map_err(|_| self.error("key longer than KEY_SIZE_MAX"))?;
        if size == 0 {
            return Ok(None);
        }
        if size > KEY_SIZE_MAX {
            return Err(self.error("key longer than KEY_SIZE_MAX"));
        }
        self.need(size)?;
        Ok(Some(self.bytes.copy_to_bytes(size)))
    }

    /// A key prefix: at most [`KEY_SIZE_MAX`] bytes, possibly empty.
    pub(crate) fn prefix(&mut self) -> Result<Bytes, CodecError> {
        self.bytes(KEY_SIZE_MAX, "prefix longer than KEY_SIZE_MAX")
    }

    /// An optional key written by [`put_option`].
    pub(crate) fn option_key(&mut self) -> Result<Option<Bytes>, CodecError> {
        match self.u8()? {
            OPTION_NONE => Ok(None),
            OPTION_SOME => Ok(Some(self.key()?)),
            _ => Err(self.error("unknown option tag")),
        }
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
        if !self.bytes.has_remaining() {
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
        out.put_u32_le(u32::MAX);
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
