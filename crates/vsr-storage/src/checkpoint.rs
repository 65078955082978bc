//! Checkpoint files: a snapshot followed by a checksummed trailer.
//!
//! A checkpoint file is written once, in chunks of bounded size, then synced (file and
//! directory) before the superblock may point to it. It is never modified afterwards. A file
//! holds a whole state (`since` 0) or an increment on an earlier checkpoint file, which its
//! trailer names: the superblock points to the newest file of a chain, and each trailer leads to
//! the one before, down to a whole state.
//!
//! | offset     | size   | field               | meaning                                  |
//! |-----------:|-------:|---------------------|------------------------------------------|
//! |          0 | `size` | snapshot            | [`vsr::Checkpoint::snapshot`]            |
//! |     `size` |     16 | `checksum`          | checksum of the trailer's bytes 16..112  |
//! |  `size`+16 |      8 | `magic`             | `VSRCHKP2`                               |
//! |  `size`+24 |      8 | `op`                | [`vsr::Checkpoint::op`]                  |
//! |  `size`+32 |     16 | `op_checksum`       | [`vsr::Checkpoint::op_checksum`]         |
//! |  `size`+48 |      8 | `size`              | bytes of the snapshot                    |
//! |  `size`+56 |     16 | `snapshot_checksum` | checksum of the snapshot                 |
//! |  `size`+72 |      8 | `since`             | [`vsr::Checkpoint::since`]; 0: whole     |
//! |  `size`+80 |      8 | `previous_generation` | the previous file's generation (0 if whole) |
//! |  `size`+88 |      8 | `previous_size`     | the previous file's snapshot size        |
//! |  `size`+96 |     16 | `previous_checksum` | the previous file's snapshot checksum    |

use bytes::Bytes;
use vsr::checksum::{Checksum, checksum};
use vsr::{Checkpoint, Op};

use crate::StorageError;
use crate::disk::Disk;
use crate::superblock::CheckpointReference;

/// Bytes of the trailer after the snapshot.
pub(crate) const TRAILER_SIZE: usize = 112;

const MAGIC: [u8; 8] = *b"VSRCHKP2";

/// A checkpoint file being written is synced every this many chunks (8 MiB with the default
/// 1 MiB chunks), so its dirty pages never pile up in front of the WAL's syncs.
const CHUNKS_PER_SYNC: usize = 8;

/// How much of the disk's time a checkpoint written in the background may take: after each
/// sync, the writer rests for as long as its writes and sync took, scaled so that they fill at
/// most `share_percent` of its time. A disk that keeps up finishes the file soon; a loaded one
/// is left to the WAL's syncs in between. 100 writes flat out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pace {
    pub(crate) share_percent: u32,
}

impl Pace {
    /// No rest: a checkpoint written in order, which everything waits for anyway.
    pub(crate) const FLAT_OUT: Pace = Pace { share_percent: 100 };

    /// The rest after `busy` of writing.
    fn rest(self, busy: std::time::Duration) -> std::time::Duration {
        let share = self.share_percent.clamp(1, 100);
        (busy * (100 - share) / share).min(REST_MAX)
    }
}

/// The longest rest between two syncs of a checkpoint written in the background.
const REST_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest chain of checkpoint files open follows (a whole state and its increments).
pub(crate) const CHAIN_FILES_MAX: usize = 64;

/// A checkpoint file's trailer: the file itself, and the one it is an increment on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub(crate) reference: CheckpointReference,
    pub(crate) since: u64,
    /// The file this one is an increment on (op `since`); `None` for a whole state.
    pub(crate) previous: Option<CheckpointReference>,
}

/// Writes `checkpoint` to a new file `name` and makes it durable; returns its reference.
pub(crate) fn write(
    disk: &mut dyn Disk,
    name: &str,
    generation: u64,
    checkpoint: &Checkpoint,
    previous: Option<CheckpointReference>,
    chunk_size: usize,
    pace: Pace,
) -> Result<CheckpointReference, StorageError> {
    assert!(chunk_size > 0);
    disk.create(name)?;
    let paced = pace != Pace::FLAT_OUT;
    let mut busy = std::time::Duration::ZERO;
    let mut hasher = Checksum::default();
    let mut offset = 0;
    let mut buffer = Vec::with_capacity(chunk_size);
    let mut chunks = 0;
    let mut flush = |buffer: &mut Vec<u8>, offset: &mut u64| -> Result<(), StorageError> {
        hasher.update(buffer);
        let started = paced.then(std::time::Instant::now);
        disk.write_at(name, *offset, buffer)?;
        *offset += buffer.len() as u64;
        buffer.clear();
        chunks += 1;
        if chunks % CHUNKS_PER_SYNC == 0 {
            // Written back a little at a time: a whole state left dirty in the page cache is
            // flushed in one go, and the WAL's fdatasync waits behind it for the whole of it.
            disk.sync(name)?;
        }
        if let Some(started) = started {
            busy += started.elapsed();
            if chunks % CHUNKS_PER_SYNC == 0 {
                std::thread::sleep(pace.rest(std::mem::take(&mut busy)));
            }
        }
        Ok(())
    };
    // The snapshot is encoded here, piece by piece, and reaches the file in chunks: nothing
    // holds the whole encoding.
    for piece in checkpoint.snapshot.pieces() {
        let mut piece = &piece[..];
        while !piece.is_empty() {
            let take = piece.len().min(chunk_size - buffer.len());
            buffer.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if buffer.len() == chunk_size {
                flush(&mut buffer, &mut offset)?;
            }
        }
    }
    if !buffer.is_empty() {
        flush(&mut buffer, &mut offset)?;
    }
    let reference = CheckpointReference {
        generation,
        op: checkpoint.op.get(),
        op_checksum: checkpoint.op_checksum,
        size: offset,
        checksum: hasher.finalize(),
    };
    let trailer = Trailer {
        reference,
        since: checkpoint.since.get(),
        previous,
    };
    disk.write_at(name, offset, &encode_trailer(&trailer))?;
    if !vsr::bug!(CheckpointUnsynced) {
        disk.sync(name)?;
    }
    disk.sync_dir()?;
    Ok(reference)
}

fn encode_trailer(trailer: &Trailer) -> [u8; TRAILER_SIZE] {
    let reference = &trailer.reference;
    let previous = trailer.previous.unwrap_or_default();
    let mut bytes = [0u8; TRAILER_SIZE];
    bytes[16..24].copy_from_slice(&MAGIC);
    bytes[24..32].copy_from_slice(&reference.op.to_le_bytes());
    bytes[32..48].copy_from_slice(&reference.op_checksum.get().to_le_bytes());
    bytes[48..56].copy_from_slice(&reference.size.to_le_bytes());
    bytes[56..72].copy_from_slice(&reference.checksum.to_le_bytes());
    bytes[72..80].copy_from_slice(&trailer.since.to_le_bytes());
    bytes[80..88].copy_from_slice(&previous.generation.to_le_bytes());
    bytes[88..96].copy_from_slice(&previous.size.to_le_bytes());
    bytes[96..112].copy_from_slice(&previous.checksum.to_le_bytes());
    let sealed = checksum(&bytes[16..]);
    bytes[..16].copy_from_slice(&sealed.to_le_bytes());
    bytes
}

/// Decodes a trailer of the file `reference` names (generation, op, size, snapshot checksum
/// known; the op checksum too when `op_checksum_known`); `None` if it is not that file's.
fn decode_trailer(
    bytes: &[u8; TRAILER_SIZE],
    reference: &CheckpointReference,
    op_checksum_known: bool,
) -> Option<Trailer> {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let u128_at = |at: usize| u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"));
    if u128_at(0) != checksum(&bytes[16..]) || bytes[16..24] != MAGIC {
        return None;
    }
    let op_checksum = vsr::EntryChecksum(u128_at(32));
    let found = CheckpointReference {
        generation: reference.generation,
        op: u64_at(24),
        op_checksum,
        size: u64_at(48),
        checksum: u128_at(56),
    };
    let expected = CheckpointReference {
        op_checksum: if op_checksum_known {
            reference.op_checksum
        } else {
            op_checksum
        },
        ..*reference
    };
    if found != expected {
        return None;
    }
    let since = u64_at(72);
    let previous_generation = u64_at(80);
    let previous = (since > 0).then(|| CheckpointReference {
        generation: previous_generation,
        op: since,
        // Read from that file's own trailer.
        op_checksum: vsr::EntryChecksum(0),
        size: u64_at(88),
        checksum: u128_at(96),
    });
    // An increment continues an earlier file of an earlier op; a whole state names none.
    let chained = match previous {
        Some(previous) => {
            since < found.op && previous.generation > 0 && previous.generation < found.generation
        }
        None => previous_generation == 0 && u64_at(88) == 0 && u128_at(96) == 0,
    };
    chained.then_some(Trailer {
        reference: found,
        since,
        previous,
    })
}

/// Reads the checkpoint file `name` and verifies it against `reference` (from the superblock,
/// or from the trailer of the increment on it: then its op checksum is not known beforehand).
/// Returns the checkpoint and its trailer.
pub(crate) fn load(
    disk: &mut dyn Disk,
    name: &str,
    reference: &CheckpointReference,
    op_checksum_known: bool,
    chunk_size: usize,
) -> Result<(Checkpoint, Trailer), StorageError> {
    let corrupt = |why: &str| {
        StorageError::Corrupt(format!(
            "checkpoint file {name} (op {}) {why}",
            reference.op
        ))
    };
    if !disk.list()?.iter().any(|file| file == name) {
        return Err(corrupt("is missing"));
    }
    let size = usize::try_from(reference.size).map_err(|_| corrupt("is too large"))?;
    if disk.len(name)? != reference.size + TRAILER_SIZE as u64 {
        return Err(corrupt("has the wrong size"));
    }
    // A read error (a latent sector error) makes the checkpoint as unusable as corruption.
    let unreadable = |error: std::io::Error| corrupt(&format!("cannot be read ({error})"));
    let mut bytes = [0u8; TRAILER_SIZE];
    if disk
        .read_at(name, reference.size, &mut bytes)
        .map_err(unreadable)?
        != TRAILER_SIZE
    {
        return Err(corrupt("has a damaged trailer"));
    }
    let trailer = decode_trailer(&bytes, reference, op_checksum_known)
        .ok_or_else(|| corrupt("has a damaged trailer"))?;
    let mut snapshot = vec![0u8; size];
    let mut hasher = Checksum::default();
    let mut offset = 0;
    for chunk in snapshot.chunks_mut(chunk_size.max(1)) {
        if disk.read_at(name, offset, chunk).map_err(unreadable)? != chunk.len() {
            return Err(corrupt("is cut short"));
        }
        hasher.update(chunk);
        offset += chunk.len() as u64;
    }
    if hasher.finalize() != reference.checksum {
        return Err(corrupt("fails its checksum"));
    }
    let checkpoint = Checkpoint {
        op: Op(reference.op),
        op_checksum: trailer.reference.op_checksum,
        since: Op(trailer.since),
        snapshot: Bytes::from(snapshot).into(),
    };
    Ok((checkpoint, trailer))
}
