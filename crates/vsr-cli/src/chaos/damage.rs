//! Damage to a stopped replica's data directory: flipped bytes in the log or the checkpoint,
//! a log cut inside a record.
//!
//! The files and the byte ranges of their records come from [`vsr_storage::layout`], built
//! from the definitions the storage itself reads and writes with, so damage lands where it is
//! meant to whatever the layout. Every damage here is one the storage promises to detect (a
//! record whose header copy survives, corruption in the middle, a bad checkpoint), so the
//! replica must notice it and repair itself from its peers. An interrupted checkpoint can leave
//! a second WAL file that is not live; each WAL file is damaged, so the live one always is.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::Context;
use vsr_storage::layout::{self, WalRecord, WalRecordKind};

use crate::chaos::schedule::Prng;

/// Bytes flipped at once.
const FLIP_BYTES: u64 = 4;

/// The entry records of a WAL file that carry a payload.
fn entry_records(wal: &layout::WalFile) -> anyhow::Result<Vec<WalRecord>> {
    let records = wal
        .records()
        .with_context(|| format!("cannot read the records of {}", wal.path.display()))?;
    Ok(records
        .into_iter()
        .filter(|record| record.kind == WalRecordKind::Entry && !record.payload.is_empty())
        .collect())
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
    mut damage: impl FnMut(&Path, &WalRecord, u64, &mut Prng) -> anyhow::Result<String>,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let wals = layout::wal_files(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for wal in wals {
        let records = entry_records(&wal)?;
        let Some(last) = records.last().map(|record| record.op) else {
            continue;
        };
        let record = &records[prng.index(records.len())];
        done.push(damage(&wal.path, record, last, prng)?);
    }
    Ok(done)
}

/// Flips bytes inside the payload of a random entry record of every WAL file; `None` when no
/// WAL file holds an entry.
pub(crate) fn flip_wal(dir: &Path, prng: &mut Prng) -> anyhow::Result<Option<String>> {
    let done = damage_wal_records(dir, prng, |wal, record, _, prng| {
        let payload = &record.payload;
        let span = (payload.end - payload.start)
            .saturating_sub(FLIP_BYTES)
            .max(1);
        flip(wal, payload.start + prng.below(span))?;
        Ok(format!("op {} of {}", record.op, name(wal)))
    })?;
    Ok((!done.is_empty()).then(|| format!("flipped {FLIP_BYTES} bytes in {}", done.join(", "))))
}

/// Cuts every WAL file inside the payload of a random entry record; `None` when no WAL file
/// holds an entry.
pub(crate) fn truncate_wal(dir: &Path, prng: &mut Prng) -> anyhow::Result<Option<String>> {
    let done = damage_wal_records(dir, prng, |wal, record, last, _| {
        let payload = &record.payload;
        let length = payload.start + (payload.end - payload.start) / 2;
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
    let checkpoints =
        layout::checkpoint_files(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for checkpoint in checkpoints {
        let file = checkpoint.range();
        let size = file.end - file.start;
        if size < FLIP_BYTES {
            continue;
        }
        flip(
            &checkpoint.path,
            file.start + prng.below(size - FLIP_BYTES + 1),
        )?;
        done.push(name(&checkpoint.path));
    }
    Ok((!done.is_empty()).then(|| format!("flipped {FLIP_BYTES} bytes in {}", done.join(", "))))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vsr::{Entry, EntryChecksum, Op, Operation, View, Write};
    use vsr_storage::{FileStorage, Identity, format};

    use super::*;

    /// A data directory whose WAL holds three entries with bodies of 10, 20 and 30 bytes.
    fn data_directory(dir: &Path) -> std::path::PathBuf {
        let identity = Identity {
            cluster: 1,
            replica: 0,
            replica_count: 1,
        };
        format(dir, identity, false).expect("format");
        let mut storage = FileStorage::open(dir, None).expect("open").storage;
        let mut parent = EntryChecksum(0);
        for (op, size) in [(Op(1), 10usize), (Op(2), 20), (Op(3), 30)] {
            let body = Bytes::from(vec![0xaa; size]);
            let entry = Entry {
                op,
                view: View(1),
                parent,
                client: 5,
                session: 1,
                request: op.get(),
                operation: Operation::StateMachine,
                body,
                checksum: EntryChecksum(0),
            }
            .sealed();
            parent = entry.checksum;
            storage.write(&Write::Append(entry)).expect("append");
        }
        storage.sync().expect("sync");
        let wals = layout::wal_files(dir).expect("list");
        assert_eq!(wals.len(), 1, "{wals:?}");
        wals[0].path.clone()
    }

    #[test]
    fn damage_lands_inside_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut prng = Prng::new(3);
        assert_eq!(flip_wal(dir.path(), &mut prng).expect("flip"), None);
        assert_eq!(flip_checkpoint(dir.path(), &mut prng).expect("flip"), None);
        let wal = data_directory(dir.path());
        let records = layout::wal_files(dir.path()).expect("list")[0]
            .records()
            .expect("records");
        let in_payload = |offset: usize| {
            records
                .iter()
                .any(|record| record.payload.contains(&(offset as u64)))
        };
        let before = std::fs::read(&wal).expect("read");
        let flipped = flip_wal(dir.path(), &mut prng).expect("flip");
        assert!(flipped.is_some_and(|text| text.contains(&name(&wal))));
        let after = std::fs::read(&wal).expect("read");
        let changed: Vec<usize> = (0..before.len())
            .filter(|i| before[*i] != after[*i])
            .collect();
        assert_eq!(changed.len(), 4);
        // Every changed byte is inverted payload, none a header byte.
        assert!(
            changed
                .iter()
                .all(|i| in_payload(*i) && after[*i] == !before[*i])
        );
        let end = records.last().expect("records").range().end;
        let cut = truncate_wal(dir.path(), &mut prng)
            .expect("truncate")
            .expect("cut");
        let size = std::fs::metadata(&wal).expect("metadata").len();
        assert!(
            size < end && in_payload(usize::try_from(size).expect("small")),
            "{cut}: {size}"
        );
        assert!(cut.contains("cut inside op"), "{cut}");
    }
}
