//! The simulator's integration tests, one binary: bounded swarms, determinism, the checkers'
//! self-tests and scripted regression scenarios. Proof that the swarm catches each deliberate
//! slip is in `tests/bugs.rs` (with the `bugs` feature).

use vsr::{Op, View};
use vsr_sim::history::{History, OpKind, OpResult};
use vsr_sim::{Action, ClusterParams, Scenario, SimOptions, SimReport, run, run_scenario};

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
        // Every kind of disk fault, and crashes inside checkpoints and rotations.
        let disk_faults = [
            totals.disk_writes_lost,
            totals.disk_names_lost,
            totals.disk_writes_torn,
            totals.disk_reordered_crashes,
            totals.disk_misdirected_writes,
            totals.disk_corruptions,
            totals.disk_read_errors,
            totals.disk_write_eio,
            totals.disk_write_enospc,
            totals.crashes_before_sync,
            totals.crashes_in_checkpoint,
            totals.crashes_in_rotation,
            totals.damaged_restarts,
        ];
        assert!(disk_faults.iter().all(|count| *count > 0), "{totals:?}");
    }

    #[test]
    fn swarm_five_replicas() {
        swarm(5, 0, 500);
    }

    #[test]
    fn swarm_one_and_seven_replicas() {
        for report in swarm(1, 0, 50) {
            // One replica has no peer to repair from: its disk never damages data.
            let stats = report.stats;
            assert_eq!(stats.disk_corruptions + stats.disk_misdirected_writes, 0);
            assert_eq!(stats.disk_read_errors + stats.disk_reordered_crashes, 0);
            assert_eq!(stats.damaged_restarts + stats.wipes, 0);
        }
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
    use vsr::{Entry, EntryChecksum, Operation};
    let mut checker = vsr_sim::checker::SafetyChecker::new(3, 4);
    let register = Entry {
        op: Op(1),
        view: View(0),
        parent: EntryChecksum(0),
        client: 9,
        session: 0,
        request: 1,
        operation: Operation::Register,
        body: Bytes::new(),
        checksum: EntryChecksum(0),
    }
    .sealed();
    let a = Entry {
        op: Op(2),
        view: View(0),
        parent: register.checksum,
        client: 9,
        session: 1,
        request: 2,
        operation: Operation::Noop,
        body: Bytes::new(),
        checksum: EntryChecksum(0),
    }
    .sealed();
    // The same request at the same op, but prepared in another view: another entry.
    let b = Entry {
        view: View(1),
        ..a.clone()
    }
    .sealed();
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
    // Two prepares in flight of up to three ops: six busy clients fill both.
    scenario.params = ClusterParams {
        pipeline_max: 2,
        batch_max: 3,
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

#[test]
fn scenario_crash_loses_unsynced_writes() {
    let scenario = busy(Scenario::new("unsynced writes lost", 3))
        .slow_disk(30)
        .at(15, Action::CrashLosingWrites(0))
        .at(40, Action::Restart(0))
        .at(80, Action::CrashLosingWrites(0))
        .at(80, Action::CrashLosingWrites(1))
        .at(80, Action::CrashLosingWrites(2))
        .at(100, Action::RestartAll)
        .heal_at(200);
    let report = assert_passes(&scenario);
    assert_eq!(report.stats.crashes, 4);
    assert!(report.stats.disk_writes_lost >= 1, "{:?}", report.stats);
    assert_eq!(
        report.stats.damaged_restarts, 0,
        "lost unsynced writes are not damage"
    );
}

/// Protocol parameters that keep a long log after the checkpoint.
fn long_log(scenario: Scenario) -> Scenario {
    let mut scenario = busy(scenario);
    scenario.requests_per_client = 60;
    scenario.params.checkpoint_interval = 1000;
    scenario
}

/// A schedule in which the replicas in `damaged` are the only ones besides replica 0 (the
/// primary) that hold the recent committed ops: the others are cut off from the start. `damage`
/// hits them at `damage_tick` (after they crash at 31 with the primary, for damage found on
/// read); then the network heals, they restart first, and the primary only 65 ticks later. A damaged replica that voted without repairing
/// would form a view with the cut-off replicas and lose committed ops; a correct one waits in
/// recovery for the primary.
fn damage_quorum(
    mut scenario: Scenario,
    damaged: &[u8],
    damage_tick: u64,
    damage: fn(u8) -> Action,
) -> Scenario {
    let cut_off: Vec<u8> = (1..scenario.replicas)
        .filter(|index| !damaged.contains(index))
        .collect();
    scenario = scenario
        .at(2, Action::Partition(cut_off))
        .at(31, Action::Crash(0))
        .at(35, Action::HealNetwork)
        .at(100, Action::Restart(0))
        .heal_at(200);
    for &index in damaged {
        scenario = scenario
            .at(damage_tick, damage(index))
            .at(31, Action::Crash(index))
            .at(35, Action::Restart(index));
    }
    scenario
}

fn corrupt_entry_scenario() -> Scenario {
    damage_quorum(
        long_log(Scenario::new("corrupt entry", 3)),
        &[1],
        32,
        Action::CorruptEntry,
    )
}

// A corrupt checkpoint is found by its own checksum: not a scenario for the replay slip.
fn corrupt_checkpoint_scenario() -> Scenario {
    let mut scenario = damage_quorum(
        long_log(Scenario::new("corrupt checkpoint", 3)),
        &[1],
        32,
        Action::CorruptCheckpoint,
    );
    scenario.params.checkpoint_interval = 8;
    scenario.params.log_retained_max = 16;
    scenario
}

fn misdirected_write_scenario() -> Scenario {
    damage_quorum(
        long_log(Scenario::new("misdirected write", 3)),
        &[1],
        20,
        Action::MisdirectNextAppend,
    )
}

fn damage_on_f_replicas_scenario(replicas: u8) -> Scenario {
    let damaged: Vec<u8> = (1..=(replicas - 1) / 2).collect();
    damage_quorum(
        long_log(Scenario::new("damage on f replicas", replicas)),
        &damaged,
        32,
        Action::CorruptEntry,
    )
}

mod damage {
    use super::*;

    #[test]
    fn scenario_corrupt_entry_is_repaired_by_recovery() {
        let report = assert_passes(&corrupt_entry_scenario());
        assert_eq!(report.stats.disk_corruptions, 1);
        assert_eq!(report.stats.damaged_restarts, 1);
        assert!(report.stats.recoveries >= 1, "{:?}", report.stats);
    }

    #[test]
    fn scenario_corrupt_checkpoint_is_repaired_by_recovery() {
        let report = assert_passes(&corrupt_checkpoint_scenario());
        assert_eq!(report.stats.damaged_restarts, 1, "{:?}", report.stats);
        assert!(report.stats.recoveries >= 1, "{:?}", report.stats);
    }

    #[test]
    fn scenario_misdirected_write_shows_up_at_restart() {
        let report = assert_passes(&misdirected_write_scenario());
        assert_eq!(
            report.stats.disk_misdirected_writes, 1,
            "{:?}",
            report.stats
        );
        assert_eq!(report.stats.damaged_restarts, 1);
        assert!(report.stats.recoveries >= 1, "{:?}", report.stats);
    }

    #[test]
    fn scenario_damage_on_f_replicas_at_once_heals() {
        for replicas in [3u8, 5] {
            let report = assert_passes(&damage_on_f_replicas_scenario(replicas));
            let f = u64::from((replicas - 1) / 2);
            assert_eq!(report.stats.damaged_restarts, f);
            assert!(report.stats.recoveries >= f, "{:?}", report.stats);
        }
    }
}

/// With storage taking damage for a torn tail, a damaged replica comes back with a log that
/// lost entries it acknowledged: each damage scenario of the log must then fail.
#[cfg(feature = "bugs")]
mod bug_damage_as_torn_tail {
    use super::*;

    #[test]
    fn the_damage_scenarios_catch_it() {
        vsr::bugs::select(Some(vsr::bugs::Bug::DamageAsTornTail));
        // (A corrupt checkpoint is found by its own checksum, not by replaying the log.)
        let scenarios = [
            corrupt_entry_scenario(),
            misdirected_write_scenario(),
            damage_on_f_replicas_scenario(5),
        ];
        for scenario in &scenarios {
            let caught = (0..4).find_map(|seed| run_scenario(scenario, seed).failure);
            let failure = caught.unwrap_or_else(|| panic!("{} did not fail", scenario.name));
            eprintln!("{} caught the planted bug: {failure}", scenario.name);
        }
    }
}

#[test]
fn scenario_damage_beyond_the_budget_is_refused() {
    let scenario = long_log(Scenario::new("damage on f+1 replicas", 3))
        .at(30, Action::CorruptEntry(1))
        .at(30, Action::CorruptEntry(2))
        .heal_at(100);
    let report = run_scenario(&scenario, 0);
    let failure = report
        .failure
        .expect("the budget refuses the second damage");
    assert!(failure.contains("more than f replicas"), "{failure}");
}
