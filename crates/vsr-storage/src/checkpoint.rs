//! Checkpoint files: a snapshot followed by a checksummed trailer.
//!
//! A checkpoint file is written once, in chunks of bounded size, then synced (file and
//! directory) before the superblock may point to it. It is never modified afterwards.
//!
//! | offset     | size   | field               | meaning                                  |
//! |-----------:|-------:|---------------------|------------------------------------------|
//! |          0 | `size` | snapshot            | [`vsr::Checkpoint::snapshot`]            |
//! |     `size` |     16 | `checksum`          | checksum of the trailer's bytes 16..72   |
//! |  `size`+16 |      8 | `magic`             | `VSRCHKPT`                               |
//! |  `size`+24 |      8 | `op`                | [`vsr::Checkpoint::op`]                  |
//! |  `size`+32 |     16 | `op_checksum`       | [`vsr::Checkpoint::op_checksum`]         |
//! |  `size`+48 |      8 | `size`              | bytes of the snapshot                    |
//! |  `size`+56 |     16 | `snapshot_checksum` | checksum of the snapshot                 |

use bytes::Bytes;
use vsr::checksum::{Checksum, checksum};
use vsr::{Checkpoint, Op};

use crate::StorageError;
use crate::disk::Disk;
use crate::superblock::CheckpointReference;

/// Bytes of the trailer after the snapshot.
pub(crate) const TRAILER_SIZE: usize = 72;

const MAGIC: [u8; 8] = *b"VSRCHKPT";

/// Writes `checkpoint` to a new file `name` and makes it durable; returns its reference.
pub(crate) fn write(
    disk: &mut dyn Disk,
    name: &str,
    generation: u64,
    checkpoint: &Checkpoint,
    chunk_size: usize,
) -> Result<CheckpointReference, StorageError> {
    assert!(chunk_size > 0);
    disk.create(name)?;
    let mut hasher = Checksum::default();
    let mut offset = 0;
    let mut buffer = Vec::with_capacity(chunk_size);
    let mut flush = |buffer: &mut Vec<u8>, offset: &mut u64| -> Result<(), StorageError> {
        hasher.update(buffer);
        disk.write_at(name, *offset, buffer)?;
        *offset += buffer.len() as u64;
        buffer.clear();
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
    disk.write_at(name, offset, &encode_trailer(&reference))?;
    if !vsr::bug!(CheckpointUnsynced) {
        disk.sync(name)?;
    }
    disk.sync_dir()?;
    Ok(reference)
}

fn encode_trailer(reference: &CheckpointReference) -> [u8; TRAILER_SIZE] {
    let mut bytes = [0u8; TRAILER_SIZE];
    bytes[16..24].copy_from_slice(&MAGIC);
    bytes[24..32].copy_from_slice(&reference.op.to_le_bytes());
    bytes[32..48].copy_from_slice(&reference.op_checksum.get().to_le_bytes());
    bytes[48..56].copy_from_slice(&reference.size.to_le_bytes());
    bytes[56..72].copy_from_slice(&reference.checksum.to_le_bytes());
    let sealed = checksum(&bytes[16..]);
    bytes[..16].copy_from_slice(&sealed.to_le_bytes());
    bytes
}

/// Reads the checkpoint file `name` and verifies it against `reference` (from the superblock).
pub(crate) fn load(
    disk: &mut dyn Disk,
    name: &str,
    reference: &CheckpointReference,
    chunk_size: usize,
) -> Result<Checkpoint, StorageError> {
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
    let mut trailer = [0u8; TRAILER_SIZE];
    if disk
        .read_at(name, reference.size, &mut trailer)
        .map_err(unreadable)?
        != TRAILER_SIZE
        || trailer != encode_trailer(reference)
    {
        return Err(corrupt("has a damaged trailer"));
    }
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
        op_checksum: reference.op_checksum,
        since: Op(0),
        snapshot: Bytes::from(snapshot).into(),
    };
    Ok(checkpoint)
}
