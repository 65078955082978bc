//! The trace hash: a fixed function of everything a run did, in order.
//!
//! Every event the simulator processes (its time, kind and target), every delivered message's
//! encoded bytes and every command a replica emits is fed to the core's incremental checksum
//! (AEGIS-128L as a MAC, a fixed function on every platform). Two runs of one seed with the same
//! options must end with the same hash; a difference means nondeterminism crept in.

use vsr::checksum::Checksum;

/// The running hash of a simulation's events.
#[derive(Default)]
pub(crate) struct Trace {
    checksum: Checksum,
}

impl Trace {
    /// Feeds an event: its kind, its time and the node it concerns.
    pub(crate) fn event(&mut self, kind: u8, time_ns: u64, node: u64) {
        self.checksum.update(&[kind]);
        self.checksum.update(&time_ns.to_le_bytes());
        self.checksum.update(&node.to_le_bytes());
    }

    /// Feeds a number.
    pub(crate) fn number(&mut self, value: u128) {
        self.checksum.update(&value.to_le_bytes());
    }

    /// Feeds bytes, length first.
    pub(crate) fn bytes(&mut self, data: &[u8]) {
        self.checksum.update(&(data.len() as u64).to_le_bytes());
        self.checksum.update(data);
    }

    /// The hash of everything fed so far.
    pub(crate) fn finish(&mut self) -> u128 {
        std::mem::take(&mut self.checksum).finalize()
    }
}
