//! The replicas' final state, read back from their data directories once they stopped.
//!
//! After the faults stop, every replica reports the same commit number C and is stopped with
//! SIGTERM. Each data directory is then opened with `vsr_storage` and handed to the protocol
//! core ([`vsr::Replica::open`]) with its commit number set to C, which rebuilds the state
//! machine from the checkpoint and the log up to op C exactly as a restarted replica would.
//! "Identical state" means, for every replica: it holds ops up to C; the checksum of its entry
//! at C (the head of the log's hash chain, which covers every op before it) is the same; and
//! its key-value store has the same digest. The store is also what the final reads are
//! compared with.

use std::path::Path;

use anyhow::Context;
use vsr::{Config, EntryChecksum, Op, Replica, StateMachine};
use vsr_kv::KvStore;
use vsr_storage::FileStorage;

/// One replica's state at commit C.
pub(crate) struct Image {
    /// The last op it could execute (C when it holds the whole committed log).
    pub(crate) executed: Op,
    /// The checksum of its entry at C, when it has one.
    pub(crate) head: Option<EntryChecksum>,
    /// The digest of its key-value store.
    pub(crate) digest: u128,
    /// Whether its storage reported damage on open.
    pub(crate) damaged: bool,
    pub(crate) store: KvStore,
}

/// Reads replica `index`'s state at op `commit` from its stopped data directory `dir`.
pub(crate) fn read(
    dir: &Path,
    cluster: u128,
    replica_count: usize,
    index: usize,
    commit: Op,
) -> anyhow::Result<Image> {
    let opened = FileStorage::open(dir, Some(cluster))
        .with_context(|| format!("cannot open {} after the run", dir.display()))?;
    let mut durable = opened.durable;
    let damaged = durable.damaged || !opened.damage.is_clean();
    let checkpoint = durable
        .newest_checkpoint()
        .map(|checkpoint| (checkpoint.op, checkpoint.op_checksum));
    durable.view_state.commit = commit;
    let config = Config::new(
        cluster,
        u8::try_from(replica_count).context("replica count")?,
    );
    let index = u8::try_from(index).context("replica index")?;
    let replica = Replica::open(config, index, KvStore::new(), 0, &durable);
    let head = replica
        .entry(commit)
        .map(|entry| entry.checksum)
        .or(checkpoint
            .filter(|(op, _)| *op == commit)
            .map(|(_, checksum)| checksum));
    let store = replica.state_machine().clone();
    Ok(Image {
        executed: replica.commit(),
        head,
        digest: store.digest(),
        damaged,
        store,
    })
}
