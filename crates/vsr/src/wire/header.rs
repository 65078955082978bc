//! The 128-byte header every frame starts with.
//!
//! The first 77 bytes are the same for every message: checksums, cluster, size, version, the
//! message's kind and its sender. The last 51 are [`Fields`]: slots each message file gives its
//! own meaning (and must leave 0 when it has none for them), so that one fixed layout serves
//! every message.
//!
//! | offset | size | field           | meaning                                                  |
//! |-------:|-----:|-----------------|----------------------------------------------------------|
//! |      0 |   16 | `checksum`      | checksum of header bytes 16..128                         |
//! |     16 |   16 | `checksum_body` | checksum of the body (also when empty)                   |
//! |     32 |   16 | `cluster`       | the cluster                                              |
//! |     48 |   16 | `client`        | the sender's client id when `sender_kind` is 1; else a [`Fields`] slot |
//! |     64 |    4 | `size`          | header + body, in bytes                                  |
//! |     68 |    4 | `epoch`         | reserved for reconfiguration                             |
//! |     72 |    2 | `version`       | the protocol version                                     |
//! |     74 |    1 | `kind`          | which message, see [`super::MessageKind`]                |
//! |     75 |    1 | `sender_kind`   | 0: a replica, 1: a client                                |
//! |     76 |    1 | `replica`       | the sender's replica index when `sender_kind` is 0, else 0 |
//! |     77 |    1 | `tag`           | a [`Fields`] slot                                        |
//! |     78 |    1 | `flag`          | a [`Fields`] slot, 0 or 1                                |
//! |     79 |    1 | `reserved`      | 0                                                        |
//! |     80 |    8 | `view`          | a [`Fields`] slot                                        |
//! |     88 |    8 | `op`            | a [`Fields`] slot                                        |
//! |     96 |    8 | `commit`        | a [`Fields`] slot                                        |
//! |    104 |    8 | `word`          | a [`Fields`] slot                                        |
//! |    112 |   16 | `wide`          | a [`Fields`] slot                                        |

use bytes::{Buf, BufMut};

use crate::checksum::checksum;
use crate::limits::HEADER_SIZE;

const _: () = assert!(HEADER_SIZE == 128);

/// The header slots a message fills with its own fields; all integers little-endian. Each
/// message's file says what it puts in which slot; a slot it does not use is 0, and decoding
/// checks that by re-encoding (see [`super::decode`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    /// At offset 48, when the sender is a replica.
    pub(crate) client: u128,
    pub(crate) tag: u8,
    pub(crate) flag: u8,
    pub(crate) view: u64,
    pub(crate) op: u64,
    pub(crate) commit: u64,
    pub(crate) word: u64,
    pub(crate) wide: u128,
}

/// Every header field, in wire order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) checksum: u128,
    pub(crate) checksum_body: u128,
    pub(crate) cluster: u128,
    pub(crate) size: u32,
    pub(crate) epoch: u32,
    pub(crate) version: u16,
    pub(crate) kind: u8,
    pub(crate) sender_kind: u8,
    pub(crate) replica: u8,
    pub(crate) reserved: u8,
    /// Offset 48 holds `fields.client`; the rest of the slots follow `replica`.
    pub(crate) fields: Fields,
}

impl Header {
    pub(crate) fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut bytes = [0; HEADER_SIZE];
        let mut out = &mut bytes[..];
        out.put_u128_le(self.checksum);
        out.put_u128_le(self.checksum_body);
        out.put_u128_le(self.cluster);
        out.put_u128_le(self.fields.client);
        out.put_u32_le(self.size);
        out.put_u32_le(self.epoch);
        out.put_u16_le(self.version);
        out.put_slice(&[
            self.kind,
            self.sender_kind,
            self.replica,
            self.fields.tag,
            self.fields.flag,
            self.reserved,
        ]);
        out.put_u64_le(self.fields.view);
        out.put_u64_le(self.fields.op);
        out.put_u64_le(self.fields.commit);
        out.put_u64_le(self.fields.word);
        out.put_u128_le(self.fields.wide);
        assert!(out.is_empty(), "header fields add up to HEADER_SIZE");
        bytes
    }

    pub(crate) fn from_bytes(bytes: &[u8; HEADER_SIZE]) -> Header {
        let mut input = &bytes[..];
        let checksum = input.get_u128_le();
        let checksum_body = input.get_u128_le();
        let cluster = input.get_u128_le();
        let client = input.get_u128_le();
        let size = input.get_u32_le();
        let epoch = input.get_u32_le();
        let version = input.get_u16_le();
        let kind = input.get_u8();
        let sender_kind = input.get_u8();
        let replica = input.get_u8();
        let tag = input.get_u8();
        let flag = input.get_u8();
        let reserved = input.get_u8();
        let fields = Fields {
            client,
            tag,
            flag,
            view: input.get_u64_le(),
            op: input.get_u64_le(),
            commit: input.get_u64_le(),
            word: input.get_u64_le(),
            wide: input.get_u128_le(),
        };
        assert!(input.is_empty(), "header fields add up to HEADER_SIZE");
        Header {
            checksum,
            checksum_body,
            cluster,
            size,
            epoch,
            version,
            kind,
            sender_kind,
            replica,
            reserved,
            fields,
        }
    }

    /// The checksum of a header's bytes after the checksum field.
    pub(crate) fn compute_checksum(bytes: &[u8; HEADER_SIZE]) -> u128 {
        checksum(&bytes[16..])
    }
}
