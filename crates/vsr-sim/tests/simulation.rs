//! The simulator's integration tests, one binary: bounded swarms, determinism, the checkers'
//! self-tests, scripted regression scenarios, and (behind the `bug-*` features) proof that the
//! swarm catches deliberately broken replicas:
//!
//! ```text
//! cargo test -p vsr-sim --features bug-commit-without-quorum
//! cargo test -p vsr-sim --features bug-view-change-wrong-log
//! cargo test -p vsr-sim --features bug-skip-dedup
//! ```

use vsr_sim::history::{History, OpKind, OpResult};
use vsr_sim::{Action, ClusterParams, Scenario, SimOptions, SimReport, run, run_scenario};

#[cfg(not(any(
    feature = "bug-commit-without-quorum",
    feature = "bug-view-change-wrong-log",
    feature = "bug-skip-dedup"
)))]
mod swarms {
    use super::*;

    /// Runs seeds `start..start + count` and fails listing every failed seed with its replay command.
    fn swarm(replicas: u8, start: u64, count: u64) -> Vec<SimReport> {
        let reports: Vec<SimReport> = (start..start + count)
            .map(|seed| {
                run(&SimOptions {
                    seed,
                    replicas,
                    ..SimOptions::default()
                })
            })
            .collect();
        let failures: Vec<String> = reports
            .iter()
            .filter_map(|report| {
                report.failure.as_ref().map(|failure| {
                    format!(
                        "vsr sim --seed {} --replicas {replicas}: {failure}",
                        report.seed
                    )
                })
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} seeds failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        reports
    }

    #[test]
    fn swarm_three_replicas() {
        let reports = swarm(3, 0, 1000);
        let mut totals = vsr_sim::SimStats::default();
        for report in &reports {
            totals.add(&report.stats);
        }
        // The swarm must reach the interesting paths, or passing proves little.
        assert!(totals.view_changes > 0, "{totals:?}");
        assert!(totals.recoveries > 0, "{totals:?}");
        assert!(totals.state_transfers_delta > 0, "{totals:?}");
        assert!(totals.evictions > 0, "{totals:?}");
        assert!(
            totals.crashes > 0 && totals.wipes > 0 && totals.cluster_crashes > 0,
            "{totals:?}"
        );
        assert!(totals.messages_corrupted > 0, "{totals:?}");
    }

    #[test]
    fn swarm_five_replicas() {
        swarm(5, 0, 500);
    }

    #[test]
    fn swarm_one_and_seven_replicas() {
        swarm(1, 0, 50);
        swarm(7, 0, 50);
    }

    #[test]
    fn runs_without_faults_pass() {
        for seed in 0..20 {
            let report = run(&SimOptions {
                seed,
                faults: false,
                ..SimOptions::default()
            });
            assert!(report.passed, "seed {seed}: {:?}", report.failure);
            assert_eq!(report.stats.faults_injected(), 0);
            assert!(report.stats.ops_completed > 0);
        }
    }
}

#[test]
fn same_seed_same_trace() {
    let options = SimOptions {
        seed: 7,
        ..SimOptions::default()
    };
    let first = run(&options);
    let second = run(&options);
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.history, second.history);
    assert_eq!(first.simulated_ns, second.simulated_ns);
    assert_eq!(first.stats, second.stats);
    let other = run(&SimOptions {
        seed: 8,
        ..SimOptions::default()
    });
    assert_ne!(first.trace, other.trace);
}

#[test]
fn linearizability_failure_is_reported() {
    let mut history = History::new();
    let put = history.invoke(0, OpKind::Put, "k".into(), Some("a".into()), None, 0);
    history.complete(put, OpResult::Ok, 10);
    // Reads a value nobody wrote, after the put completed.
    let get = history.invoke(1, OpKind::Get, "k".into(), None, None, 20);
    history.complete(get, OpResult::Value(Some("b".into())), 30);
    let error = vsr_sim::check_linearizable(&history, 1_000_000).unwrap_err();
    assert!(error.contains("not linearizable"), "{error}");
    // And a stale read after a completed write.
    let mut history = History::new();
    let put = history.invoke(0, OpKind::Put, "k".into(), Some("a".into()), None, 0);
    history.complete(put, OpResult::Ok, 10);
    let get = history.invoke(1, OpKind::Get, "k".into(), None, None, 20);
    history.complete(get, OpResult::Value(None), 30);
    assert!(vsr_sim::check_linearizable(&history, 1_000_000).is_err());
}

#[test]
fn safety_checker_catches_a_divergent_commit() {
    use bytes::Bytes;
    use vsr::{Entry, Operation};
    let mut checker = vsr_sim::checker::SafetyChecker::new(3, 4);
    let register = Entry::new(1, 0, 0, 9, 0, 1, Operation::Register, Bytes::new());
    let a = Entry::new(
        2,
        0,
        register.checksum,
        9,
        1,
        2,
        Operation::Noop,
        Bytes::new(),
    );
    let b = Entry::new(
        2,
        1,
        register.checksum,
        9,
        1,
        2,
        Operation::Noop,
        Bytes::new(),
    );
    checker.record_committed(0, &register).unwrap();
    checker.record_committed(0, &a).unwrap();
    let error = checker.record_committed(1, &b).unwrap_err();
    assert!(error.contains("divergence at op 2"), "{error}");
}

fn assert_passes(scenario: &Scenario) -> SimReport {
    for seed in 0..4 {
        let report = run_scenario(scenario, seed);
        assert!(
            report.passed,
            "scenario {} seed {seed}: {:?}",
            scenario.name, report.failure
        );
        if seed == 3 {
            return report;
        }
    }
    unreachable!()
}

fn busy(mut scenario: Scenario) -> Scenario {
    scenario.clients = 6;
    scenario.think_ticks_max = 1;
    scenario.params = ClusterParams {
        pipeline_max: 4,
        ..ClusterParams::roomy(6)
    };
    scenario
}

#[test]
fn scenario_primary_crash_mid_pipeline() {
    let scenario = busy(Scenario::new("primary crash mid-pipeline", 3))
        .at(10, Action::CrashPrimary)
        .at(80, Action::Restart(0))
        .heal_at(150);
    let report = assert_passes(&scenario);
    assert!(report.stats.view_changes >= 1, "{:?}", report.stats);
    assert_eq!(report.stats.crashes, 1);
}

#[test]
fn scenario_primary_partitioned_then_healed() {
    for replicas in [3, 5] {
        let scenario = busy(Scenario::new("primary partitioned", replicas))
            .at(10, Action::Isolate(0))
            .at(120, Action::HealNetwork)
            .heal_at(200);
        let report = assert_passes(&scenario);
        assert!(report.stats.view_changes >= 1, "{:?}", report.stats);
    }
}

#[test]
fn scenario_whole_cluster_crash_and_restart() {
    let scenario = busy(Scenario::new("whole cluster crash", 3))
        .at(15, Action::CrashAll)
        .at(40, Action::RestartAll)
        .heal_at(120);
    let report = assert_passes(&scenario);
    assert_eq!(report.stats.crashes, 3);
}

#[test]
fn scenario_replica_loses_state_and_recovers() {
    let scenario = busy(Scenario::new("wipe and recover", 3))
        .at(15, Action::Wipe(1))
        .heal_at(100);
    let report = assert_passes(&scenario);
    assert_eq!(report.stats.wipes, 1);
    assert!(report.stats.recoveries >= 1, "{:?}", report.stats);
}

#[test]
fn scenario_far_behind_replica_catches_up_by_delta() {
    let mut scenario = Scenario::new("far behind", 3)
        .at(2, Action::Isolate(2))
        .at(400, Action::HealNetwork)
        .heal_at(450);
    scenario.requests_per_client = 60;
    scenario.think_ticks_max = 2;
    scenario.params = ClusterParams {
        pipeline_max: 4,
        log_retained_max: 16,
        checkpoint_interval: 16,
        state_chunk_size_max: 256,
        ..ClusterParams::roomy(3)
    };
    let report = assert_passes(&scenario);
    assert!(
        report.stats.state_transfers_delta >= 1,
        "{:?}",
        report.stats
    );
}

#[cfg(feature = "bug-commit-without-quorum")]
mod bug_commit_without_quorum {
    #[test]
    fn the_swarm_catches_it() {
        super::assert_some_seed_fails();
    }
}

#[cfg(feature = "bug-view-change-wrong-log")]
mod bug_view_change_wrong_log {
    #[test]
    fn the_swarm_catches_it() {
        super::assert_some_seed_fails();
    }
}

#[cfg(feature = "bug-skip-dedup")]
mod bug_skip_dedup {
    #[test]
    fn the_swarm_catches_it() {
        super::assert_some_seed_fails();
    }
}

/// Runs the default swarm until a seed fails; at most 1000 seeds.
#[cfg(any(
    feature = "bug-commit-without-quorum",
    feature = "bug-view-change-wrong-log",
    feature = "bug-skip-dedup"
))]
fn assert_some_seed_fails() {
    for seed in 0..1000 {
        let report = run(&SimOptions {
            seed,
            ..SimOptions::default()
        });
        if let Some(failure) = report.failure {
            eprintln!("seed {seed} caught the planted bug: {failure}");
            return;
        }
    }
    panic!("no seed of 1000 caught the planted bug");
}
