//! The 128-bit checksum used for every header, body and log entry.
//!
//! AEGIS-128L used as a MAC with an all-zero key and nonce: fast with AES instructions, and
//! strong enough that a random corruption passing it is not a concern. The same function guards
//! the wire and (later) the disk, so a prepare can be stored exactly as received.

use aegis::aegis128l::Aegis128LMac;

/// Checksum of `data`.
#[must_use]
pub fn checksum(data: &[u8]) -> u128 {
    let mut mac = Aegis128LMac::<16>::new(&[0u8; 16]);
    mac.update(data);
    u128::from_le_bytes(mac.finalize())
}

/// Incremental checksum over several slices, equal to [`checksum`] of their concatenation.
pub struct Checksum(Aegis128LMac<16>);

impl Default for Checksum {
    fn default() -> Self {
        Self(Aegis128LMac::<16>::new(&[0u8; 16]))
    }
}

impl Checksum {
    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The checksum of everything fed so far.
    #[must_use]
    pub fn finalize(self) -> u128 {
        u128::from_le_bytes(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut incremental = Checksum::default();
        incremental.update(&data[..317]);
        incremental.update(&data[317..]);
        assert_eq!(incremental.finalize(), checksum(&data));
        assert_ne!(checksum(b"a"), checksum(b"b"));
        assert_ne!(checksum(b""), 0);
    }
}
