//! Deliberate slips that prove the simulator's checkers can fail (only with the `bugs` feature).
//!
//! Each [`Bug`] is a realistic mistake in one place of the protocol or the storage, switched on
//! at run time for the current thread by [`select`]; code asks with [`bug!`](crate::bug).
//! Without the `bugs` feature the module does not exist and `bug!(Name)` is the constant
//! `false`, so a default build carries no bug code. The simulator runs each seed on one
//! thread, which is why the selection is per thread: seeds of different bugs can run side by
//! side in one process (tests do).

use std::cell::Cell;

macro_rules! bugs {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A deliberate slip; see each variant for what it breaks.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Bug {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Bug {
            /// Every bug, in declaration order.
            pub const ALL: &'static [Bug] = &[$(Bug::$variant,)*];

            /// The bug's name on the command line (`vsr sim --bug NAME`).
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $(Bug::$variant => $name,)*
                }
            }
        }
    };
}

bugs! {
    /// Normal operation: the primary commits as soon as one replica (itself) holds an op.
    CommitWithoutQuorum => "commit-without-quorum",
    /// Pipeline: the primary counts its own vote for a prepare before its write is durable.
    PrimaryVotesBeforeDurable => "primary-votes-before-durable",
    /// Batching: a backup answers a prepare once the first write of its batch is durable,
    /// not the last.
    BatchVoteEarly => "batch-vote-early",
    /// Normal operation: a backup takes any message from a primary, even of an older view, as
    /// a sign of life and puts off its view change.
    TimeoutResetByOldView => "timeout-reset-by-old-view",
    /// View change: the new primary picks the log with the lowest (not highest) view and op.
    ViewChangeWrongLog => "view-change-wrong-log",
    /// View change: the new primary picks the longest log, ignoring the view it was last
    /// normal in.
    ViewChangeLongestLog => "view-change-longest-log",
    /// State transfer: a replica takes a sender's uncommitted entries even when the sender's
    /// log is not its view's log.
    StateTransferTakesUncommitted => "state-transfer-takes-uncommitted",
    /// Recovery: a recovering replica settles for f answers instead of f + 1.
    RecoveryQuorumTooSmall => "recovery-quorum-too-small",
    /// Recovery: a recovering replica declares itself recovered once a quorum answered,
    /// without waiting for the primary's log.
    RecoveryFinishesEarly => "recovery-finishes-early",
    /// Repair: a replica whose storage reported damage rejoins without recovering, as if its
    /// log were whole.
    DamagedLogRejoins => "damaged-log-rejoins",
    /// Client table: a duplicate request is executed again instead of answered from the table.
    SkipDedup => "skip-dedup",
    /// Client table: a checkpoint's snapshot of the client table forgets the cached results, so
    /// a replica restored from it answers a resent request with an empty result.
    SnapshotDropsReplies => "snapshot-drops-replies",
    /// WAL: a sync skips records already flushed to the file by an earlier early flush.
    WalSyncSkipsFlushed => "wal-sync-skips-flushed",
    /// Header copies: the header slots are written before the WAL records they describe are
    /// durable.
    HeadersSyncedFirst => "headers-synced-first",
    /// Header copies: open ignores what the header copies say was lost at the end of the log.
    HeadersIgnored => "headers-ignored",
    /// Superblock: an update is written without a sync.
    SuperblockUnsynced => "superblock-unsynced",
    /// Superblock: open takes the first valid copy, not the one with the highest sequence.
    SuperblockFirstCopy => "superblock-first-copy",
    /// Reads: the primary answers a query from its state without waiting for a quorum to
    /// confirm that it still leads its view.
    ReadWithoutConfirm => "read-without-confirm",
    /// Checkpoint: a checkpoint file is written without a sync.
    CheckpointUnsynced => "checkpoint-unsynced",
    /// Repair: open takes damaged records at the end of the log for a torn tail and cuts them.
    DamageAsTornTail => "damage-as-torn-tail",
    /// Checkpoint: a checkpoint persists the commit number it was taken at even when a higher
    /// one is already durable (a restart re-executing ops after an older checkpoint).
    CheckpointLowersCommit => "checkpoint-lowers-commit",
    /// Key-value store: an incremental checkpoint (a delta since an earlier op) leaves out the
    /// keys deleted since, so a replica restored from it still has them.
    IncrementDropsDeletes => "increment-drops-deletes",
    /// Key-value store: a scan's last page leaves out its last key.
    ScanSkipsLastKey => "scan-skips-last-key",
}

impl Bug {
    /// The bug named `name`, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.iter().copied().find(|bug| bug.name() == name)
    }
}

thread_local! {
    static SELECTED: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Switches `bug` on (or every bug off) for the current thread.
pub fn select(bug: Option<Bug>) {
    SELECTED.with(|selected| selected.set(bug));
}

/// The bug switched on for the current thread.
#[must_use]
pub fn selected() -> Option<Bug> {
    SELECTED.with(Cell::get)
}

/// Whether `bug` is switched on for the current thread.
#[must_use]
pub fn active(bug: Bug) -> bool {
    selected() == Some(bug)
}
