//! The superblock: who this replica is, its view state, and which checkpoint and WAL are live.
//!
//! The file [`SUPERBLOCK_FILE`] holds [`COPIES`] copies of [`COPY_SIZE`] bytes, [`COPY_STRIDE`]
//! bytes apart. Each update increments `sequence` and overwrites two copies, `2 * sequence % 4`
//! and the next, followed by one fdatasync: a torn update damages only its own pair, so the
//! previous sequence is intact in the other pair, and a sector that later rots in one copy of
//! the newest update leaves the other copy. On open the valid copy with the highest sequence wins.
//!
//! | offset | size | field                     | meaning                                      |
//! |-------:|-----:|---------------------------|----------------------------------------------|
//! |      0 |   16 | `checksum`                | checksum of bytes 16..256                    |
//! |     16 |    8 | `magic`                   | `VSRSUPER`                                   |
//! |     24 |    2 | `format_version`          | [`FORMAT_VERSION`]                           |
//! |     26 |    1 | `replica`                 | this replica's index                         |
//! |     27 |    1 | `replica_count`           | replicas in the cluster                      |
//! |     28 |    1 | `recovering`              | 0 or 1, [`vsr::ViewState::recovering`]       |
//! |     29 |    3 | reserved                  | 0                                            |
//! |     32 |   16 | `cluster`                 | cluster id                                   |
//! |     48 |    8 | `sequence`                | incremented by every update                  |
//! |     56 |    8 | `view`                    | [`vsr::ViewState::view`]                     |
//! |     64 |    8 | `last_normal_view`        | [`vsr::ViewState::last_normal_view`]         |
//! |     72 |    8 | `commit`                  | [`vsr::ViewState::commit`]                   |
//! |     80 |    8 | `checkpoint_op`           | [`vsr::Checkpoint::op`]                      |
//! |     88 |   16 | `checkpoint_op_checksum`  | [`vsr::Checkpoint::op_checksum`]             |
//! |    104 |    8 | `checkpoint_size`         | bytes of the snapshot                        |
//! |    112 |   16 | `checkpoint_checksum`     | checksum of the snapshot                     |
//! |    128 |    8 | `checkpoint_generation`   | names the checkpoint file; 0: no checkpoint  |
//! |    136 |    8 | `wal_start`               | first op the live WAL may hold               |
//! |    144 |    8 | `wal_generation`          | names the live WAL file                      |
//! |    152 |  104 | reserved                  | 0                                            |
//!
//! `checksum`, `magic` and `format_version` keep their place in every future format, so an old
//! build recognises data it cannot read. A copy is valid only if every number in it is below
//! `vsr::limits::NUMBER_MAX` and, without a checkpoint (generation 0), every checkpoint field
//! is 0: anything else was not written by this code.

use std::ops::Range;

use vsr::checksum::checksum;
use vsr::limits::NUMBER_MAX;
use vsr::{EntryChecksum, Op, View, ViewState};

use crate::record::{is_zero, u64_at, u128_at};
use crate::wal::WalFiles;

/// Name of the superblock file.
pub(crate) const SUPERBLOCK_FILE: &str = "superblock";

/// Copies of the superblock.
pub(crate) const COPIES: usize = 4;

/// Copies each update writes.
pub(crate) const UPDATE_COPIES: usize = 2;
const _: () = assert!(COPIES == 2 * UPDATE_COPIES);

/// Bytes of one copy.
pub(crate) const COPY_SIZE: usize = 256;

/// Distance between copies: each copy sits in its own 4 KiB block.
pub(crate) const COPY_STRIDE: u64 = 4096;

/// Size of the superblock file.
pub(crate) const SUPERBLOCK_FILE_SIZE: u64 = COPY_STRIDE * COPIES as u64;

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC: [u8; 8] = *b"VSRSUPER";

/// Where a copy holds its checksum, and the bytes the checksum covers (the rest of the copy).
pub(crate) const CHECKSUM_RANGE: Range<usize> = 0..16;
pub(crate) const SEALED_RANGE: Range<usize> = 16..COPY_SIZE;
/// Where a copy holds its magic number.
const MAGIC_RANGE: Range<usize> = 16..24;
/// Where a copy holds its format version.
pub(crate) const FORMAT_VERSION_RANGE: Range<usize> = 24..26;
/// Where a copy holds its sequence number and view state (sequence, view, last normal view,
/// commit).
pub(crate) const VIEW_STATE_RANGE: Range<usize> = 48..80;

/// The contents of one superblock copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub(crate) cluster: u128,
    pub(crate) replica: u8,
    pub(crate) replica_count: u8,
    pub(crate) sequence: u64,
    pub(crate) view_state: ViewState,
    pub(crate) checkpoint: CheckpointReference,
    pub(crate) wal_start: u64,
    pub(crate) wal_generation: u64,
}

/// Where the live checkpoint is and how to verify it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct CheckpointReference {
    /// 0 when there is no checkpoint; otherwise names the file.
    pub(crate) generation: u64,
    pub(crate) op: u64,
    pub(crate) op_checksum: EntryChecksum,
    pub(crate) size: u64,
    pub(crate) checksum: u128,
}

/// What reading one copy found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Copy {
    /// A valid copy of this format.
    Valid(Superblock),
    /// A sealed copy written by a newer format.
    Newer(u16),
    /// Our magic but a bad checksum or bad fields: damaged.
    Damaged,
    /// Not a superblock at all.
    Foreign,
}

impl Superblock {
    /// The live WAL's files: the WAL, its headers file, and its start.
    pub(crate) fn wal_files(&self) -> WalFiles {
        wal_files(self.wal_start, self.wal_generation)
    }

    /// The name of the live checkpoint file, if there is one.
    pub(crate) fn checkpoint_file(&self) -> Option<String> {
        let reference = &self.checkpoint;
        (reference.generation > 0).then(|| checkpoint_file_name(reference.op, reference.generation))
    }

    /// Where the two copies of this superblock's sequence go: the update with sequence `s` writes
    /// copies `2s mod 4` and `2s + 1 mod 4`, so the previous update stays whole in the other
    /// pair while this one is written, and one rotten copy of the newest update leaves the other.
    pub(crate) fn copy_offsets(&self) -> [u64; UPDATE_COPIES] {
        let first = (self.sequence * UPDATE_COPIES as u64) % COPIES as u64;
        [first * COPY_STRIDE, (first + 1) * COPY_STRIDE]
    }

    /// Encodes one sealed copy.
    pub(crate) fn encode(&self) -> [u8; COPY_SIZE] {
        let mut bytes = [0u8; COPY_SIZE];
        bytes[MAGIC_RANGE].copy_from_slice(&MAGIC);
        bytes[FORMAT_VERSION_RANGE].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[26] = self.replica;
        bytes[27] = self.replica_count;
        bytes[28] = u8::from(self.view_state.recovering);
        let fields: [(usize, &[u8]); 12] = [
            (32, &self.cluster.to_le_bytes()),
            (VIEW_STATE_RANGE.start, &self.sequence.to_le_bytes()),
            (56, &self.view_state.view.get().to_le_bytes()),
            (64, &self.view_state.last_normal_view.get().to_le_bytes()),
            (72, &self.view_state.commit.get().to_le_bytes()),
            (80, &self.checkpoint.op.to_le_bytes()),
            (88, &self.checkpoint.op_checksum.get().to_le_bytes()),
            (104, &self.checkpoint.size.to_le_bytes()),
            (112, &self.checkpoint.checksum.to_le_bytes()),
            (128, &self.checkpoint.generation.to_le_bytes()),
            (136, &self.wal_start.to_le_bytes()),
            (144, &self.wal_generation.to_le_bytes()),
        ];
        for (offset, field) in fields {
            bytes[offset..offset + field.len()].copy_from_slice(field);
        }
        let sealed = checksum(&bytes[SEALED_RANGE]);
        bytes[CHECKSUM_RANGE].copy_from_slice(&sealed.to_le_bytes());
        bytes
    }

    /// Verifies and decodes one copy.
    pub(crate) fn decode(bytes: &[u8]) -> Copy {
        let Some(bytes) = bytes.first_chunk::<COPY_SIZE>() else {
            return Copy::Foreign;
        };
        if bytes[MAGIC_RANGE] != MAGIC {
            return Copy::Foreign;
        }
        if u128_at(bytes, CHECKSUM_RANGE.start) != checksum(&bytes[SEALED_RANGE]) {
            return Copy::Damaged;
        }
        let version = format_version(bytes);
        if version > FORMAT_VERSION {
            return Copy::Newer(version);
        }
        Self::decode_fields(bytes).map_or(Copy::Damaged, Copy::Valid)
    }

    fn decode_fields(bytes: &[u8; COPY_SIZE]) -> Option<Superblock> {
        let version = format_version(bytes);
        let (replica, replica_count, recovering) = (bytes[26], bytes[27], bytes[28]);
        let fields_ok = version == FORMAT_VERSION
            && replica < replica_count
            && recovering <= 1
            && is_zero(&bytes[29..32])
            && is_zero(&bytes[152..]);
        let superblock = Superblock {
            cluster: u128_at(bytes, 32),
            replica,
            replica_count,
            sequence: u64_at(bytes, VIEW_STATE_RANGE.start),
            view_state: ViewState {
                view: View(u64_at(bytes, 56)),
                last_normal_view: View(u64_at(bytes, 64)),
                commit: Op(u64_at(bytes, 72)),
                recovering: recovering == 1,
            },
            checkpoint: CheckpointReference {
                op: u64_at(bytes, 80),
                op_checksum: EntryChecksum(u128_at(bytes, 88)),
                size: u64_at(bytes, 104),
                checksum: u128_at(bytes, 112),
                generation: u64_at(bytes, 128),
            },
            wal_start: u64_at(bytes, 136),
            wal_generation: u64_at(bytes, 144),
        };
        (fields_ok && superblock.wal_start >= 1 && superblock.numbers_reachable())
            .then_some(superblock)
    }

    /// Whether the copy says what this code can have written: every number below
    /// [`NUMBER_MAX`] (ops and views are bounded there, and sequence numbers, generations and
    /// sizes grow by far less), and no checkpoint fields without a checkpoint. Open does
    /// arithmetic on these numbers, so a sealed copy that breaks this is damaged, not trusted.
    fn numbers_reachable(&self) -> bool {
        let checkpoint = &self.checkpoint;
        let numbers = [
            self.sequence,
            self.view_state.view.get(),
            self.view_state.last_normal_view.get(),
            self.view_state.commit.get(),
            checkpoint.op,
            checkpoint.size,
            checkpoint.generation,
            self.wal_start,
            self.wal_generation,
        ];
        numbers.iter().all(|number| *number < NUMBER_MAX)
            && (checkpoint.generation > 0 || *checkpoint == CheckpointReference::default())
    }
}

fn format_version(bytes: &[u8; COPY_SIZE]) -> u16 {
    u16::from_le_bytes(bytes[FORMAT_VERSION_RANGE].try_into().expect("2 bytes"))
}

/// The name of a WAL file.
pub(crate) fn wal_file_name(start: u64, generation: u64) -> String {
    format!("wal-{start}-{generation}.log")
}

/// The files of a WAL: the WAL file and its headers file.
pub(crate) fn wal_files(start: u64, generation: u64) -> WalFiles {
    WalFiles {
        name: wal_file_name(start, generation),
        headers_name: format!("wal-{start}-{generation}.headers"),
        start,
    }
}

/// The name of a checkpoint file.
pub(crate) fn checkpoint_file_name(op: u64, generation: u64) -> String {
    format!("checkpoint-{op}-{generation}.bin")
}

/// The start and generation of the WAL file named `name`, if it is one.
pub(crate) fn parse_wal_file_name(name: &str) -> Option<(u64, u64)> {
    parse_name(name, "wal-", ".log")
}

/// The op and generation of the checkpoint file named `name`, if it is one.
pub(crate) fn parse_checkpoint_file_name(name: &str) -> Option<(u64, u64)> {
    parse_name(name, "checkpoint-", ".bin")
}

/// The two numbers of `<prefix><a>-<b><suffix>`, as [`wal_file_name`] and
/// [`checkpoint_file_name`] write them.
fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<(u64, u64)> {
    let numbers = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let (first, second) = numbers.split_once('-')?;
    Some((first.parse().ok()?, second.parse().ok()?))
}

/// Whether `name` is a file this crate creates besides the superblock.
pub(crate) fn is_data_file(name: &str) -> bool {
    (name.starts_with("wal-") && (name.ends_with(".log") || name.ends_with(".headers")))
        || (name.starts_with("checkpoint-") && name.ends_with(".bin"))
}

/// Picks the winner among the copies read from the superblock file.
pub(crate) fn best(copies: &[Copy]) -> Copy {
    let mut valid = copies.iter().filter_map(|copy| match copy {
        Copy::Valid(superblock) => Some(*superblock),
        _ => None,
    });
    let valid = if vsr::bug!(SuperblockFirstCopy) {
        valid.next()
    } else {
        valid.max_by_key(|superblock| superblock.sequence)
    };
    if let Some(winner) = valid {
        mark_skipped_copies(copies, winner);
    }
    let newer = copies.iter().find(|copy| matches!(copy, Copy::Newer(_)));
    let damaged = copies.contains(&Copy::Damaged);
    match (newer, valid) {
        // A sealed copy of a newer format means an upgrade already wrote here.
        (Some(newer), _) => *newer,
        (None, Some(superblock)) => Copy::Valid(superblock),
        (None, None) if damaged => Copy::Damaged,
        (None, None) => Copy::Foreign,
    }
}

/// Counts the coverage marks of a winner chosen over copies that are not whole: its twin (the
/// other copy its update wrote) is not it, or a copy of the other pair is not valid.
fn mark_skipped_copies(copies: &[Copy], winner: Superblock) {
    let pair = winner
        .copy_offsets()
        .map(|offset| usize::try_from(offset / COPY_STRIDE).expect("a copy index"));
    for (index, copy) in copies.iter().enumerate() {
        if pair.contains(&index) {
            if *copy != Copy::Valid(winner) {
                vsr::mark!(SuperblockTwinCopyUsed);
            }
        } else if !matches!(copy, Copy::Valid(_)) {
            vsr::mark!(SuperblockOtherPairDamaged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arbitrary_superblock() -> impl Strategy<Value = Superblock> {
        (
            any::<(u128, u8, u64, u64, u64, u64, bool)>(),
            any::<(u64, u128, u64, u128, u64, u64, u64)>(),
        )
            .prop_map(|(a, b)| {
                let reachable = |number: u64| number % NUMBER_MAX;
                let checkpoint = CheckpointReference {
                    op: reachable(b.0),
                    op_checksum: EntryChecksum(b.1),
                    size: reachable(b.2),
                    checksum: b.3,
                    generation: reachable(b.4),
                };
                Superblock {
                    cluster: a.0,
                    replica: a.1 % 7,
                    replica_count: 7,
                    sequence: reachable(a.2),
                    view_state: ViewState {
                        view: View(reachable(a.3)),
                        last_normal_view: View(reachable(a.4)),
                        commit: Op(reachable(a.5)),
                        recovering: a.6,
                    },
                    checkpoint: if checkpoint.generation > 0 {
                        checkpoint
                    } else {
                        CheckpointReference::default()
                    },
                    wal_start: reachable(b.5).max(1),
                    wal_generation: reachable(b.6),
                }
            })
    }

    #[test]
    fn unreachable_numbers_and_stray_checkpoint_fields_are_damage() {
        let superblock = Superblock {
            cluster: 9,
            replica: 0,
            replica_count: 3,
            sequence: 4,
            view_state: ViewState::default(),
            checkpoint: CheckpointReference::default(),
            wal_start: 1,
            wal_generation: 0,
        };
        assert_eq!(
            Superblock::decode(&superblock.encode()),
            Copy::Valid(superblock)
        );
        let unreachable = [
            Superblock {
                sequence: u64::MAX,
                ..superblock
            },
            Superblock {
                wal_generation: NUMBER_MAX,
                ..superblock
            },
            Superblock {
                checkpoint: CheckpointReference {
                    op: 30,
                    ..CheckpointReference::default()
                },
                ..superblock
            },
            Superblock {
                checkpoint: CheckpointReference {
                    generation: 1,
                    size: u64::MAX - 8,
                    ..CheckpointReference::default()
                },
                ..superblock
            },
        ];
        for copy in unreachable {
            assert_eq!(
                Superblock::decode(&copy.encode()),
                Copy::Damaged,
                "{copy:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn copies_round_trip_and_detect_every_flip_and_truncation(
            superblock in arbitrary_superblock()
        ) {
            let bytes = superblock.encode();
            prop_assert_eq!(Superblock::decode(&bytes), Copy::Valid(superblock));
            for bit in 0..COPY_SIZE * 8 {
                let mut flipped = bytes;
                flipped[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(
                    !matches!(Superblock::decode(&flipped), Copy::Valid(_)),
                    "bit {} flipped went unnoticed", bit
                );
            }
            for size in 0..COPY_SIZE {
                prop_assert!(!matches!(Superblock::decode(&bytes[..size]), Copy::Valid(_)));
            }
        }
    }

    #[test]
    fn the_highest_valid_sequence_wins_and_newer_formats_are_recognised() {
        let mut superblock = Superblock {
            cluster: 9,
            replica: 0,
            replica_count: 3,
            sequence: 5,
            view_state: ViewState::default(),
            checkpoint: CheckpointReference::default(),
            wal_start: 1,
            wal_generation: 0,
        };
        let older = superblock;
        superblock.sequence = 6;
        let copies = [
            Copy::Valid(older),
            Copy::Damaged,
            Copy::Valid(superblock),
            Copy::Foreign,
        ];
        assert_eq!(best(&copies), Copy::Valid(superblock));
        assert_eq!(best(&[Copy::Damaged, Copy::Foreign]), Copy::Damaged);
        assert_eq!(best(&[Copy::Foreign; 4]), Copy::Foreign);
        assert_eq!(best(&[Copy::Valid(older), Copy::Newer(2)]), Copy::Newer(2));

        let mut bytes = superblock.encode();
        bytes[24] = 2;
        let sealed = checksum(&bytes[16..]);
        bytes[..16].copy_from_slice(&sealed.to_le_bytes());
        assert_eq!(Superblock::decode(&bytes), Copy::Newer(2));
    }
}
