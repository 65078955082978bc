//! Proof that the default swarm catches every deliberate slip of `vsr::bugs`: each must fail at
//! least [`WANTED`] of the first [`SEEDS`] seeds at 3 and at 5 replicas.
//!
//! ```text
//! cargo test -p vsr-sim --features bugs --test bugs
//! vsr sim --seeds 1000 --bug NAME          # a build of vsr-cli with --features bugs
//! ```
#![cfg(feature = "bugs")]

use vsr::bugs::Bug;
use vsr_sim::{SimOptions, run};

/// Seeds each bug must fail, at each cluster size.
const WANTED: usize = 10;

/// Seeds run at most, at each cluster size.
const SEEDS: u64 = 1000;

/// Runs the default swarm with `bug` at 3 and 5 replicas until `WANTED` seeds failed.
fn assert_caught(bug: Bug) {
    for replicas in [3, 5] {
        let mut failed = 0;
        for seed in 0..SEEDS {
            let report = run(&SimOptions {
                seed,
                replicas,
                bug: Some(bug),
                ..SimOptions::default()
            });
            if let Some(failure) = report.failure {
                if failed == 0 {
                    eprintln!(
                        "{}: {replicas} replicas, seed {seed} caught it: {failure}",
                        bug.name()
                    );
                }
                failed += 1;
                if failed == WANTED {
                    break;
                }
            }
        }
        assert_eq!(
            failed,
            WANTED,
            "{}: only {failed} of {SEEDS} seeds at {replicas} replicas caught it",
            bug.name()
        );
    }
}

macro_rules! caught {
    ($($test:ident => $bug:ident,)*) => {
        $(
            #[test]
            fn $test() {
                assert_caught(Bug::$bug);
            }
        )*

        /// Every bug has its test above.
        #[test]
        fn every_bug_is_tested() {
            let tested = [$(Bug::$bug,)*];
            for bug in Bug::ALL {
                assert!(tested.contains(bug), "{} has no test", bug.name());
            }
        }
    };
}

caught! {
    commit_without_quorum => CommitWithoutQuorum,
    primary_votes_before_durable => PrimaryVotesBeforeDurable,
    batch_vote_early => BatchVoteEarly,
    timeout_reset_by_old_view => TimeoutResetByOldView,
    view_change_wrong_log => ViewChangeWrongLog,
    view_change_longest_log => ViewChangeLongestLog,
    state_transfer_takes_uncommitted => StateTransferTakesUncommitted,
    recovery_quorum_too_small => RecoveryQuorumTooSmall,
    damaged_log_rejoins => DamagedLogRejoins,
    skip_dedup => SkipDedup,
    snapshot_drops_replies => SnapshotDropsReplies,
    wal_sync_skips_flushed => WalSyncSkipsFlushed,
    headers_synced_first => HeadersSyncedFirst,
    headers_ignored => HeadersIgnored,
    superblock_unsynced => SuperblockUnsynced,
    superblock_first_copy => SuperblockFirstCopy,
    checkpoint_unsynced => CheckpointUnsynced,
    damage_as_torn_tail => DamageAsTornTail,
}
