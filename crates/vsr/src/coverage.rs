//! Coverage marks: which decision rules a run exercised.
//!
//! Each [`Mark`] names one branch where the protocol or the storage decides differently from
//! the naive choice (the new primary takes another replica's log, a stale message is dropped, a
//! torn tail is cut, ...). Code says `vsr::mark!(Name)` exactly where that branch is taken; the
//! mark adds one to a counter of the current thread. Marks exist in every build and only count:
//! they never change what the code does, so a seed runs the same with or without anyone
//! reading them. The simulator runs each seed on one thread, calls [`take`] before and after it,
//! and so learns which branches that seed reached; a swarm that never reaches one has a hole.
//!
//! The counters are a fixed array indexed by the mark, in a thread-local: no allocation, no
//! lock, one add per hit.

use std::cell::Cell;

macro_rules! marks {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A decision branch worth seeing taken; see each variant for when it is hit.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Mark {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Mark {
            /// Every mark, in declaration order (grouped by protocol phase, storage last).
            pub const ALL: &'static [Mark] = &[$(Mark::$variant,)*];

            /// The mark's name, as `vsr sim --coverage` prints it.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $(Mark::$variant => $name,)*
                }
            }
        }
    };
}

marks! {
    // ---- Dispatch: messages that must not reach a handler ----------------------------------
    /// A message of another cluster (or epoch) is dropped.
    DropWrongCluster => "drop-wrong-cluster",
    /// A message whose sender is no replica of the cluster (or this one), or a client message
    /// that is not a request, is dropped.
    DropBadSender => "drop-bad-sender",
    /// A replica's message with a view, op or commit number beyond any honest cluster's is
    /// dropped.
    DropNumbersOutOfBounds => "drop-numbers-out-of-bounds",
    /// A prepare, commit or start_view from a replica that is not its view's primary is
    /// dropped.
    DropNotFromPrimary => "drop-not-from-primary",
    /// A recovering replica drops every message but recovery_response and new_state.
    DropWhileRecovering => "drop-while-recovering",
    /// A request, reply or recovery_response from a replica that is not recovering is dropped
    /// (a late recovery_response after recovery finished).
    DropOutOfPlace => "drop-out-of-place-message",

    // ---- Restart -----------------------------------------------------------------------------
    /// A replica starts with its durable state saying it is recovering (a wiped disk, or a
    /// crash during recovery): it runs recovery instead of rejoining with what it holds.
    RestartResumesRecovery => "restart-resumes-recovery",
    /// A replica restarts on a log its storage reported damaged: it marks itself recovering and
    /// repairs through recovery instead of rejoining with what it read.
    RestartDamagedRecovers => "restart-damaged-log-recovers",
    /// A damaged log is not executed past its checkpoint, though the durable commit number
    /// says more is committed.
    RestartDamagedNotExecuted => "restart-damaged-log-not-executed",
    /// A replica restarts as the primary of its view, or in a view it never was normal in: it
    /// starts a view change instead of resuming as a backup.
    RestartStartsViewChange => "restart-starts-view-change",

    // ---- Durability: actions released once their write is durable ----------------------------
    /// A do_view_change waited for its write to be durable and meanwhile the replica left that
    /// view change: it is not sent.
    DoViewChangeStaleAfterDurable => "do-view-change-stale-after-durable",
    /// A do_view_change waited for its write to be durable and meanwhile a new_state replaced
    /// entries it carries: one built from the log as it is now is sent instead.
    DoViewChangeRebuiltAfterLogChanged => "do-view-change-rebuilt-after-log-changed",
    /// A backup's prepare_ok waited for its write and meanwhile the entry was replaced: it is
    /// not sent.
    PrepareOkWithheldEntryReplaced => "prepare-ok-withheld-entry-replaced",
    /// A backup's prepare_ok waited for its write and meanwhile the view, its status or its
    /// verified log changed: it is not sent.
    PrepareOkWithheldViewChanged => "prepare-ok-withheld-view-changed",
    /// The primary's own vote waited for its write and meanwhile it stopped being the primary
    /// of that view: the vote is not counted.
    PrimaryVoteStaleAfterDurable => "primary-vote-stale-after-durable",
    /// A backup learns it holds its view's whole log from an entry of the view at its head,
    /// not from reaching the op the view started with (which it does not know).
    ViewCompletedByEntryOfView => "view-completed-by-entry-of-view",
    /// A backup that completed its view drops the entries of older views after its verified
    /// log.
    ViewCompleteTruncatesOldSuffix => "view-complete-truncates-old-suffix",

    // ---- Normal operation --------------------------------------------------------------------
    /// A request or query reaches a replica that is not the primary in normal status: it
    /// answers with its view, so the client goes to that view's primary.
    RequestNotPrimaryRedirected => "request-not-primary-redirected",
    /// A resent register of a live session is answered from the client table.
    RequestRegisterDuplicateAnswered => "request-register-duplicate-answered",
    /// A delayed register older than the live session's latest request is dropped.
    RequestRegisterOldDropped => "request-register-old-dropped",
    /// A request older than the session's latest is dropped.
    RequestOldDropped => "request-old-dropped",
    /// A resent request already executed is answered from the client table.
    RequestDuplicateAnswered => "request-duplicate-answered-from-table",
    /// A request of a client whose register is in the log but not committed waits for it.
    RequestWaitsForPendingRegister => "request-waits-for-pending-register",
    /// A request of a session the table no longer holds is answered "session evicted".
    RequestSessionEvicted => "request-session-evicted",
    /// A resent request already prepared or queued is ignored.
    RequestResendInPipeline => "request-resend-already-in-pipeline",
    /// A request that finds the queue full is dropped.
    RequestQueueFullDropped => "request-queue-full-dropped",
    /// A request for the whole state (a backup) is answered as a read: after a quorum
    /// confirmed the primary's view.
    SnapshotAnswered => "snapshot-answered-as-read",
    /// A resent query finds its first copy still waiting: the copy answers both.
    ReadResendWaiting => "read-resend-waiting",
    /// A query that finds the primary's read queue full is dropped.
    ReadQueueFullDropped => "read-queue-full-dropped",
    /// A read round got no quorum of confirms within the retry timeout: a new round supersedes
    /// it.
    ReadRoundRetried => "read-round-retried",
    /// A prepare carries a read round (the primary was sending one anyway).
    ReadRoundOnPrepare => "read-round-on-prepare",
    /// A confirm of another view (or reaching a replica no longer primary) is ignored.
    ConfirmOtherViewIgnored => "confirm-other-view-ignored",
    /// A primary whose oldest read waited two view-change timeouts without a quorum confirming
    /// its view (it hears no quorum) starts a view change.
    PrimaryLeavesUnconfirmedView => "primary-leaves-unconfirmed-view",
    /// Reads confirmed by a quorum wait until the log the view started with is committed.
    ReadWaitsForViewStart => "read-waits-for-view-start",
    /// A request that finds the pipeline full waits in the queue.
    RequestQueuedPipelineFull => "request-queued-pipeline-full",
    /// A prepare carries a batch of more than one op.
    PrepareBatchesSeveralOps => "prepare-batches-several-ops",
    /// A new primary takes over uncommitted ops of the chosen log as prepares in flight.
    PrimaryInheritsPrepares => "primary-inherits-prepares",
    /// A prepare_ok of another view, or reaching a replica that is no longer the primary in
    /// normal status, is ignored.
    PrepareOkOldViewIgnored => "prepare-ok-old-view-ignored",
    /// A prepare_ok for an entry the primary's log no longer holds is ignored.
    PrepareOkEntryNotHeldIgnored => "prepare-ok-entry-not-held-ignored",
    /// A backup sees a gap (or a suffix not of this view) in a prepare and requests state.
    PrepareGapRequestsState => "prepare-gap-requests-state",
    /// A prepare or commit from an older view's primary is dropped.
    PrimaryMessageOldViewDropped => "primary-message-old-view-dropped",
    /// A prepare or commit of a newer view makes the replica adopt that view.
    AdoptViewFromPrimaryMessage => "adopt-view-from-primary-message",
    /// A replica in a view change receives a prepare or commit of that view: the view started
    /// without it, and it adopts the view.
    AdoptViewEndsViewChange => "adopt-view-ends-view-change",
    /// A commit number beyond the verified log makes a backup request state.
    CommitBeyondLogRequestsState => "commit-beyond-log-requests-state",

    // ---- Client table (execution of committed entries) ---------------------------------------
    /// A committed duplicate of an executed request is not executed again; its cached reply is
    /// sent.
    ExecuteDuplicateRepliedFromTable => "execute-duplicate-replied-from-table",
    /// A committed request older than the session's latest is not executed.
    ExecuteOldRequestDropped => "execute-old-request-dropped",
    /// A committed request of a session the table no longer holds is not executed.
    ExecuteSessionEvicted => "execute-session-evicted",
    /// A committed duplicate register of a live session does not replace it.
    ExecuteRegisterDuplicate => "execute-register-duplicate",
    /// A committed register older than the live session's latest request is dropped.
    ExecuteRegisterOldDropped => "execute-register-old-dropped",
    /// A register finds the table full and evicts the least recently used session.
    ClientTableEvictsOldest => "client-table-evicts-oldest-session",

    // ---- View change -------------------------------------------------------------------------
    /// A start_view_change of a higher view makes the replica join that view change.
    StartViewChangeJoinsHigherView => "start-view-change-joins-higher-view",
    /// A backup that hears its primary but sees nothing committed for two view-change
    /// timeouts starts a view change (the primary may not hear its backups).
    BackupLeavesStalledPrimary => "backup-leaves-stalled-primary",
    /// A start_view_change of an older view, or of the current view once it started, is
    /// ignored.
    StartViewChangeStaleIgnored => "start-view-change-stale-ignored",
    /// A do_view_change of a higher view makes its new primary join that view change.
    DoViewChangeJoinsHigherView => "do-view-change-joins-higher-view",
    /// A do_view_change of an older view is ignored.
    DoViewChangeOldViewIgnored => "do-view-change-old-view-ignored",
    /// A do_view_change reaches a primary that already started the view: it resends
    /// start_view to the sender.
    DoViewChangeAnsweredWithStartView => "do-view-change-answered-with-start-view",
    /// The new primary takes another replica's log, which ranks above its own (or its own is
    /// not among the quorum's).
    ViewChangePicksAnotherLog => "view-change-picks-another-replicas-log",
    /// The new primary takes a log of a later normal view over a longer log of an older one.
    ViewChangePicksNewerViewOverLongerLog => "view-change-picks-newer-view-over-longer-log",
    /// The new primary's commit number is the quorum's highest, above the chosen log's.
    ViewChangeTakesMaxCommit => "view-change-takes-max-commit-of-quorum",
    /// The new primary lacks committed entries the chosen log's sender has: it fetches them
    /// before starting the view.
    ViewChangeFetchesCommittedFirst => "view-change-fetches-committed-entries-first",
    /// Installing the chosen log keeps entries the new primary already holds, rather than
    /// truncating to its commit number and writing them again.
    ViewChangeKeepsHeldEntries => "view-change-keeps-held-entries",
    /// Installing the chosen log replaces the new primary's divergent suffix.
    ViewChangeReplacesDivergentSuffix => "view-change-replaces-divergent-suffix",
    /// The new primary drops its entries past the end of the chosen log.
    ViewChangeTruncatesBeyondChosenLog => "view-change-truncates-beyond-chosen-log",
    /// The start_view reaches back to the lowest commit number of the quorum, below the new
    /// primary's.
    StartViewFromQuorumMinCommit => "start-view-from-quorum-min-commit",
    /// A view change that did not complete in time moves on to the next view.
    ViewChangeTimesOut => "view-change-times-out-to-next-view",
    /// A start_view of an older view, or of the view the replica already completed, is
    /// ignored.
    StartViewStaleIgnored => "start-view-stale-ignored",
    /// A start_view whose suffix begins after the replica's commit number is merged onto the
    /// replica's own entries, which are kept as the view's log, not truncated.
    StartViewKeepsOwnEntries => "start-view-keeps-own-entries",
    /// A start_view leaves the replica short of the view's log: it requests state.
    StartViewIncompleteRequestsState => "start-view-incomplete-requests-state",

    // ---- Checkpoints ---------------------------------------------------------------------------
    /// A checkpoint holds only the changes since the previous one.
    CheckpointIncremental => "checkpoint-incremental",
    /// A checkpoint is due while the previous one is still being written: it waits.
    CheckpointWaitsForPrevious => "checkpoint-waits-for-previous",

    // ---- State transfer ----------------------------------------------------------------------
    /// Entries of the view's log replace a different suffix of the replica's log.
    MergeReplacesDivergentSuffix => "merge-replaces-divergent-suffix",
    /// An unanswered get_state is retried with the next replica.
    StateRequestRetriesAnotherReplica => "state-request-retries-another-replica",
    /// A get_state from a replica not in this one's view (or from a view change) is answered
    /// with committed entries only.
    GetStateOtherViewCommittedOnly => "get-state-other-view-committed-only",
    /// The primary answers a get_state that asks for nothing new with an empty new_state: the
    /// backup holds the view's whole log.
    GetStatePrimaryConfirmsLog => "get-state-primary-confirms-log",
    /// A get_state asks for entries trimmed from the log: a delta of the state is sent.
    GetStateSendsDelta => "get-state-sends-delta",
    /// A late new_state reaches the primary of the view: ignored.
    NewStateToPrimaryIgnored => "new-state-to-primary-ignored",
    /// A new_state from a later view reaches a replica normal in an older view: ignored.
    NewStateFromNewerViewIgnored => "new-state-from-newer-view-ignored",
    /// A new_state from a sender whose log is not this view's log: its uncommitted entries are
    /// not used.
    NewStateCommittedOnly => "new-state-non-authoritative-committed-only",
    /// A delta chunk built on another commit number (or not beyond it) is dropped.
    DeltaChunkWrongBaseDropped => "delta-chunk-wrong-base-dropped",
    /// A delta chunk the receiver already holds (a duplicate, or a window sent again), or from
    /// the middle of a transfer it does not hold, is dropped.
    DeltaChunkDuplicateDropped => "delta-chunk-duplicate-dropped",
    /// A delta chunk arrives ahead of the bytes received (it overtook one before it, or that
    /// one was lost): kept aside, at most a window of them, until the gap fills.
    DeltaChunkOutOfOrderKept => "delta-chunk-out-of-order-kept",
    /// The rest of a window arrived past a gap in a delta: the receiver asks again from where
    /// it stands at once, not at the retry timeout.
    DeltaGapAskedAgain => "delta-gap-asked-again",
    /// The first chunk of another delta replaces an unfinished transfer: the receiver drops what
    /// it held (its sender started anew, or another sender answered).
    DeltaTransferRestarted => "delta-transfer-restarted",
    /// A get_state acknowledges chunks of the window: the sender encodes and sends more.
    DeltaWindowAdvanced => "delta-window-advanced",
    /// A get_state names the start of the window (a chunk was lost): the window is sent again,
    /// and the transfer resumes there.
    DeltaTransferResumed => "delta-transfer-resumed",
    /// A get_state names a transfer the sender does not hold (it restarted, or the requester's
    /// delta came from another replica) or an offset it cannot resume from: a new snapshot is
    /// frozen and sent from its start.
    DeltaSenderStartsAnew => "delta-sender-starts-anew",
    /// A get_state arrives that predates the sender's transfer (no cursor, or one naming a
    /// transfer it replaced): the window is sent again, nothing new is started.
    DeltaCursorStaleResendsWindow => "delta-cursor-stale-resends-window",
    /// A sender's window is full: it waits for the requester's acknowledgement.
    DeltaWindowFull => "delta-window-full",
    /// Installing a delta keeps the log's entries after it that continue its chain.
    DeltaKeepsEntriesOnChain => "delta-keeps-entries-on-chain",
    /// Installing a delta drops the log's entries after it that do not continue its chain.
    DeltaDropsEntriesOffChain => "delta-drops-entries-off-chain",

    // ---- Recovery ----------------------------------------------------------------------------
    /// A replica not in normal status leaves a recovery message unanswered.
    RecoveryUnansweredNotNormal => "recovery-unanswered-not-normal",
    /// A recovery_response with another nonce (an earlier attempt's) is dropped.
    RecoveryResponseStaleNonceDropped => "recovery-response-stale-nonce-dropped",
    /// A recovery_response after the target was chosen is ignored.
    RecoveryResponseAfterTargetIgnored => "recovery-response-after-target-ignored",
    /// A quorum answered, but not the primary of the latest view among them: recovery waits.
    RecoveryWaitsForLatestPrimary => "recovery-waits-for-latest-primary",
    /// A recovered replica drops its entries past the primary's log.
    RecoveryTruncatesBeyondPrimaryLog => "recovery-truncates-beyond-primary-log",
    /// A recovery that did not finish in time starts again with a fresh nonce.
    RecoveryRetriesWithFreshNonce => "recovery-retries-with-fresh-nonce",

    // ---- Storage -----------------------------------------------------------------------------
    /// One copy of the newest superblock update is damaged (or still holds an older update):
    /// its twin is used.
    SuperblockTwinCopyUsed => "superblock-twin-copy-used",
    /// A copy in the pair the next update writes is damaged (an update torn by a crash, or an
    /// older copy rotted): the newest valid copy, of the other pair, is used.
    SuperblockOtherPairDamaged => "superblock-other-pair-damaged",
    /// The live checkpoint file is damaged or missing: open returns the view state only and
    /// the log starts afresh.
    CheckpointDamagedLogReset => "checkpoint-damaged-log-reset",
    /// A read error is read as a damaged sector, not a failed open.
    DiskReadErrorReadAsDamage => "disk-read-error-read-as-damage",
    /// A valid record that does not continue the log ends the valid records.
    WalRecordOutOfSequence => "wal-record-out-of-sequence",
    /// Unreadable records with valid ones after them: the ops are reported damaged.
    WalDamagedRecordReported => "wal-damaged-record-reported",
    /// A header slot names a record past the valid log that is not there: the op is
    /// reported lost.
    WalSlotNamesLostRecord => "wal-slot-names-lost-record",
    /// A damaged slot past the valid log, with something unreadable after the valid records:
    /// a record was lost with its slot, and its op is reported lost.
    WalDamagedSlotNamesLostRecord => "wal-damaged-slot-names-lost-record",
    /// A lost record is at or before the checkpoint: not damage.
    WalLostRecordCoveredByCheckpoint => "wal-lost-record-covered-by-checkpoint",
    /// Synced records after a lost one would be cut silently: they are reported damaged.
    WalCutDiscardsSyncedRecords => "wal-cut-discards-synced-records",
    /// Unreadable records at the end that no slot names: a torn tail, cut without a report.
    WalTornTailCut => "wal-torn-tail-cut",
    /// Whatever follows the valid records is zeroed before the first write after open.
    WalDirtyTailZeroed => "wal-dirty-tail-zeroed",
    /// A valid slot whose op does not belong at its index (a misdirected write) is taken for
    /// damaged.
    HeadersMisdirectedSlotRejected => "headers-misdirected-slot-rejected",
    /// Slots naming records behind the cut, or damaged ones naming nothing, are zeroed at open.
    HeadersStaleSlotZeroed => "headers-stale-slot-zeroed",
    /// Slots missing or wrong for records the log holds are written at open.
    HeadersSlotRewritten => "headers-slot-rewritten",
    /// The live WAL's headers file is missing: it is created at the first write.
    HeadersFileRecreated => "headers-file-recreated",
    /// Open finds a checkpoint whose WAL rotation did not finish: the first write finishes it.
    OpenFinishesInterruptedRotation => "open-finishes-interrupted-rotation",
    /// The entries after a checkpoint move to a new WAL in more than one step, between batches.
    WalRotationInSteps => "wal-rotation-in-steps",
    /// A checkpoint goes live while the WAL is still moving after an earlier one: it moves
    /// after this one instead.
    WalRotationSuperseded => "wal-rotation-superseded",
    /// A truncation cuts entries already copied to the WAL taking over: that rotation stops.
    WalRotationCut => "wal-rotation-cut",
    /// A sector after the WAL's valid records cannot be read: the tail is not clean.
    WalUnreadableSectorInTail => "wal-unreadable-sector-in-tail",
    /// Open finds files of an interrupted checkpoint or rotation: they are removed.
    OpenRemovesLeftoverFiles => "open-removes-leftover-files",
}

/// Number of marks.
pub const MARK_COUNT: usize = Mark::ALL.len();

thread_local! {
    static HITS: [Cell<u32>; MARK_COUNT] = const { [const { Cell::new(0) }; MARK_COUNT] };
}

/// Counts a hit of `mark` on this thread. Use [`mark!`](crate::mark).
#[inline]
pub fn hit(mark: Mark) {
    HITS.with(|hits| {
        let count = &hits[mark as usize];
        count.set(count.get().saturating_add(1));
    });
}

/// Hits per mark on one thread since the last [`take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    hits: [u32; MARK_COUNT],
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            hits: [0; MARK_COUNT],
        }
    }
}

impl Counts {
    /// How often `mark` was hit.
    #[must_use]
    pub fn get(&self, mark: Mark) -> u32 {
        self.hits[mark as usize]
    }

    /// Every mark with its hits, in [`Mark::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Mark, u32)> + '_ {
        Mark::ALL.iter().map(|&mark| (mark, self.get(mark)))
    }

    /// The marks never hit, in [`Mark::ALL`] order.
    pub fn missed(&self) -> impl Iterator<Item = Mark> + '_ {
        self.iter()
            .filter(|&(_, hits)| hits == 0)
            .map(|(mark, _)| mark)
    }
}

/// The hits counted on this thread since the last call; the counters start again from zero.
#[must_use]
pub fn take() -> Counts {
    HITS.with(|hits| {
        let mut counts = Counts::default();
        for (count, hit) in counts.hits.iter_mut().zip(hits) {
            *count = hit.replace(0);
        }
        counts
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_kebab_case_and_in_order() {
        let mut names: Vec<&str> = Mark::ALL.iter().map(|mark| mark.name()).collect();
        for name in &names {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name} is not kebab-case"
            );
        }
        for (index, mark) in Mark::ALL.iter().enumerate() {
            assert_eq!(*mark as usize, index, "ALL is in declaration order");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MARK_COUNT, "mark names are unique");
    }

    #[test]
    fn take_returns_the_hits_and_resets_them() {
        let _ = take();
        crate::mark!(WalTornTailCut);
        crate::mark!(WalTornTailCut);
        crate::mark!(DropWrongCluster);
        let counts = take();
        assert_eq!(counts.get(Mark::WalTornTailCut), 2);
        assert_eq!(counts.get(Mark::DropWrongCluster), 1);
        assert_eq!(counts.get(Mark::ViewChangeTimesOut), 0);
        assert_eq!(counts.missed().count(), MARK_COUNT - 2);
        assert_eq!(take(), Counts::default(), "take resets the counters");
    }

    #[test]
    fn each_thread_counts_its_own_hits() {
        let _ = take();
        crate::mark!(RecoveryRetriesWithFreshNonce);
        let other = std::thread::spawn(|| {
            crate::mark!(DropBadSender);
            take()
        })
        .join()
        .expect("the thread does not panic");
        assert_eq!(other.get(Mark::DropBadSender), 1);
        assert_eq!(other.get(Mark::RecoveryRetriesWithFreshNonce), 0);
        let counts = take();
        assert_eq!(counts.get(Mark::RecoveryRetriesWithFreshNonce), 1);
        assert_eq!(counts.get(Mark::DropBadSender), 0);
    }
}
