//! Damage to a stopped replica's data directory: flipped bytes in the log or the checkpoint,
//! a log cut inside a record.
//!
//! The files are found by the names docs/storage.md gives them (`wal-*.log`,
//! `checkpoint-*.bin`); log records are found through the record header layout of
//! `vsr-storage`'s record.rs. Every damage here is one the storage promises to detect (a record
//! whose header copy survives, corruption in the middle, a bad checkpoint), so the replica
//! must notice it and repair itself from its peers. An interrupted checkpoint can leave a
//! second WAL file that is not live; each WAL file is damaged, so the live one always is.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::chaos::schedule::Prng;

/// Size of a WAL record header, and where it holds its magic number, its kind, its payload
/// size and its op (`vsr-storage` record.rs).
const RECORD_HEADER_SIZE: u64 = 96;
const RECORD_MAGIC: &[u8; 4] = b"VSRW";
const RECORD_MAGIC_OFFSET: usize = 32;
const RECORD_KIND_OFFSET: usize = 36;
const RECORD_PAYLOAD_SIZE_OFFSET: usize = 40;
const RECORD_OP_OFFSET: usize = 48;
const RECORD_KIND_ENTRY: u8 = 1;
/// Bytes flipped at once.
const FLIP_BYTES: u64 = 4;

/// One entry record of a WAL file.
#[derive(Clone, Copy, Debug)]
struct Record {
    offset: u64,
    payload_size: u64,
    op: u64,
}

/// The files in `dir` whose names start with `prefix` and end with `suffix`, sorted.
fn files(dir: &Path, prefix: &str, suffix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry.context("cannot read a directory entry")?.path();
        let name = path.file_name().and_then(|name| name.to_str());
        if name.is_some_and(|name| name.starts_with(prefix) && name.ends_with(suffix)) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The entry records of the WAL file at `path`, up to the first header without the magic.
fn entry_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().context("cannot read a WAL's size")?.len();
    let mut records = Vec::new();
    let mut offset = 0;
    let mut header = [0u8; RECORD_HEADER_SIZE as usize];
    while offset + RECORD_HEADER_SIZE <= size {
        file.read_exact_at(&mut header, offset)
            .context("cannot read a WAL record")?;
        if &header[RECORD_MAGIC_OFFSET..RECORD_MAGIC_OFFSET + 4] != RECORD_MAGIC {
            break;
        }
        let payload_size = u64::from(u32::from_le_bytes(
            header[RECORD_PAYLOAD_SIZE_OFFSET..RECORD_PAYLOAD_SIZE_OFFSET + 4]
                .try_into()
                .expect("4 bytes"),
        ));
        if header[RECORD_KIND_OFFSET] == RECORD_KIND_ENTRY && payload_size > 0 {
            records.push(Record {
                offset,
                payload_size,
                op: u64::from_le_bytes(
                    header[RECORD_OP_OFFSET..RECORD_OP_OFFSET + 8]
                        .try_into()
                        .expect("8 bytes"),
                ),
            });
        }
        offset += RECORD_HEADER_SIZE + payload_size;
    }
    Ok(records)
}

/// Inverts [`FLIP_BYTES`] bytes of the file at `path` from `offset`, durably.
fn flip(path: &Path, offset: u64) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = vec![0u8; usize::try_from(FLIP_BYTES).expect("small")];
    file.read_exact_at(&mut bytes, offset)
        .context("cannot read bytes to flip")?;
    for byte in &mut bytes {
        *byte = !*byte;
    }
    file.write_all_at(&bytes, offset)
        .context("cannot write flipped bytes")?;
    file.sync_all().context("cannot sync a damaged file")
}

/// The file name of `path`, for the timeline.
fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Calls `damage` with a random entry record of every WAL file that holds one (and the last
/// op of that file); returns what it did, one item per file.
fn damage_wal_records(
    dir: &Path,
    prng: &mut Prng,
    mut damage: impl FnMut(&Path, &Record, u64, &mut Prng) -> anyhow::Result<String>,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for wal in files(dir, "wal-", ".log")? {
        let records = entry_records(&wal)?;
        let Some(last) = records.last().map(|record| record.op) else {
            continue;
        };
        let record = records[prng.index(records.len())];
        done.push(damage(&wal, &record, last, prng)?);
    }
    Ok(done)
}

/// Flips bytes inside the payload of a random entry record of every WAL file; `None` when no
/// WAL file holds an entry.
pub(crate) fn flip_wal(dir: &Path, prng: &mut Prng) -> anyhow::Result<Option<String>> {
    let done = damage_wal_records(dir, prng, |wal, record, _, prng| {
        let span = record.payload_size.saturating_sub(FLIP_BYTES).max(1);
        flip(wal, record.offset + RECORD_HEADER_SIZE + prng.below(span))?;
        Ok(format!("op {} of {}", record.op, name(wal)))
    })?;
    Ok((!done.is_empty()).then(|| format!("flipped {FLIP_BYTES} bytes in {}", done.join(", "))))
}

/// Cuts every WAL file inside the payload of a random entry record; `None` when no WAL file
/// holds an entry.
pub(crate) fn truncate_wal(dir: &Path, prng: &mut Prng) -> anyhow::Result<Option<String>> {
    let done = damage_wal_records(dir, prng, |wal, record, last, _| {
        let length = record.offset + RECORD_HEADER_SIZE + record.payload_size / 2;
        let file = OpenOptions::new()
            .write(true)
            .open(wal)
            .with_context(|| format!("cannot open {}", wal.display()))?;
        file.set_len(length).context("cannot truncate a WAL")?;
        file.sync_all().context("cannot sync a truncated WAL")?;
        Ok(format!(
            "{} cut inside op {} (ops {}..={last} lost)",
            name(wal),
            record.op,
            record.op
        ))
    })?;
    Ok((!done.is_empty()).then(|| done.join(", ")))
}

/// Flips bytes in the middle of every checkpoint file; `None` when there is none.
pub(crate) fn flip_checkpoint(dir: &Path, prng: &mut Prng) -> anyhow::Result<Option<String>> {
    let mut done = Vec::new();
    for checkpoint in files(dir, "checkpoint-", ".bin")? {
        let size = std::fs::metadata(&checkpoint)
            .context("cannot read a checkpoint's size")?
            .len();
        if size < FLIP_BYTES {
            continue;
        }
        flip(&checkpoint, prng.below(size - FLIP_BYTES + 1))?;
        done.push(name(&checkpoint));
    }
    Ok((!done.is_empty()).then(|| format!("flipped {FLIP_BYTES} bytes in {}", done.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL file of three entry records with payloads of 10, 20 and 30 bytes, then zeros.
    fn fake_wal(dir: &Path) -> PathBuf {
        let mut bytes = Vec::new();
        for (op, payload) in [(1u64, 10u32), (2, 20), (3, 30)] {
            let mut header = [0u8; RECORD_HEADER_SIZE as usize];
            header[RECORD_MAGIC_OFFSET..RECORD_MAGIC_OFFSET + 4].copy_from_slice(RECORD_MAGIC);
            header[RECORD_KIND_OFFSET] = RECORD_KIND_ENTRY;
            header[RECORD_PAYLOAD_SIZE_OFFSET..RECORD_PAYLOAD_SIZE_OFFSET + 4]
                .copy_from_slice(&payload.to_le_bytes());
            header[RECORD_OP_OFFSET..RECORD_OP_OFFSET + 8].copy_from_slice(&op.to_le_bytes());
            bytes.extend_from_slice(&header);
            bytes.extend(std::iter::repeat_n(0xaa, payload as usize));
        }
        bytes.extend(std::iter::repeat_n(0, 4096));
        let path = dir.join("wal-1-1.log");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn damage_lands_inside_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut prng = Prng::new(3);
        assert_eq!(flip_wal(dir.path(), &mut prng).expect("flip"), None);
        assert_eq!(flip_checkpoint(dir.path(), &mut prng).expect("flip"), None);
        let wal = fake_wal(dir.path());
        let before = std::fs::read(&wal).expect("read");
        let flipped = flip_wal(dir.path(), &mut prng).expect("flip");
        assert!(flipped.is_some_and(|text| text.contains("wal-1-1.log")));
        let after = std::fs::read(&wal).expect("read");
        let changed: Vec<usize> = (0..before.len())
            .filter(|i| before[*i] != after[*i])
            .collect();
        assert_eq!(changed.len(), 4);
        // Every changed byte is payload (0xaa), none a header byte.
        assert!(
            changed
                .iter()
                .all(|i| before[*i] == 0xaa && after[*i] == 0x55)
        );
        let cut = truncate_wal(dir.path(), &mut prng)
            .expect("truncate")
            .expect("cut");
        let size = std::fs::metadata(&wal).expect("metadata").len();
        assert!(size < before.len() as u64 - 4096, "{cut}: {size}");
        assert!(cut.contains("cut inside op"), "{cut}");
    }
}
