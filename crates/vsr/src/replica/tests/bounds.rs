//! The jump bounds (`replica/bounds.rs`) at their edges: a view, op or commit number a message
//! may move a replica to, and what a replica does with the last views and ops there are.

use super::*;
use crate::checksum::checksum;
use crate::command::{Checkpoint, DurableState, ViewState};
use crate::limits::{NUMBER_MAX, OP_JUMP_MAX, VIEW_JUMP_MAX};
use crate::message::{DeltaChunk, DeltaEnd, DeltaTarget, StatePayload};

/// The view the jump bound allows at most.
const JUMP: View = View(VIEW_JUMP_MAX);

/// The last view a message can carry.
const LAST: View = View(NUMBER_MAX - 1);

fn start_view_change(view: View) -> Message {
    Message::StartViewChange(StartViewChange { view })
}

/// A replica restarted from a disk that says it was normal in `view` (in a view change to
/// `view` after `last_normal_view` if that is earlier).
fn opened(index: u8, view: View, last_normal_view: View) -> Replica<Sum> {
    let disk = DurableState {
        view_state: ViewState {
            view,
            last_normal_view,
            commit: Op(0),
            recovering: false,
        },
        ..DurableState::default()
    };
    Replica::open(config(3), index, Sum::default(), 1, &disk)
}

/// Persists everything `replica` wrote and returns every command it emitted.
fn settle(replica: &mut Replica<Sum>) -> Vec<Command> {
    let commands = drain(replica);
    let after = persist_all(replica, &commands);
    [commands, after].concat()
}

/// Ticks `replica` alone (its messages go nowhere) `ticks` times.
fn tick_alone(replica: &mut Replica<Sum>, ticks: u64) {
    for _ in 0..ticks {
        replica.on_tick();
        let _ = settle(replica);
    }
}

/// Asserts that `replica` dropped exactly `count` messages as too far ahead, and nothing else.
fn dropped_too_far_ahead(replica: &Replica<Sum>, count: u64) {
    let stats = replica.stats();
    assert_eq!(stats.messages_too_far_ahead, count, "{stats:?}");
    assert_eq!(stats.messages_dropped, count, "{stats:?}");
}

/// Every replica of `cluster` is normal in `view`.
fn all_normal_in(cluster: &Cluster, view: View) {
    for index in 0..cluster.replicas.len() {
        let replica = cluster.replica(index);
        assert_eq!(
            (replica.view(), replica.status_name()),
            (view, "normal"),
            "replica {index}"
        );
    }
}

/// Cuts off the primary of `cluster`, waits for the others to elect the next one, and lets the
/// old primary back in; returns the new view.
fn replace_primary(cluster: &mut Cluster) -> View {
    let old = cluster.primary();
    let view = cluster.replica(old).view();
    cluster.isolated[old] = true;
    cluster.tick(300);
    let new = cluster.primary();
    assert_ne!(new, old);
    assert_eq!(cluster.replica(new).view(), view.next());
    cluster.isolated[old] = false;
    cluster.tick(100);
    view.next()
}

#[test]
fn a_start_view_change_at_the_jump_bound_is_taken_and_view_changes_go_on_past_it() {
    let mut cluster = Cluster::new(3);
    cluster.submit(register());
    run_workload(&mut cluster, 2, 3);
    // A faulty peer claims the highest view a message may move a replica to.
    for to in [0, 2] {
        cluster
            .network
            .push_back((to, from_replica(1, start_view_change(JUMP))));
    }
    cluster.settle();
    all_normal_in(&cluster, JUMP);
    run_workload(&mut cluster, 5, 2);
    // Its primary fails: timeouts take the cluster past the bound, one view at a time.
    let mut view = JUMP;
    for request in 7..10 {
        view = replace_primary(&mut cluster);
        all_normal_in(&cluster, view);
        run_workload(&mut cluster, request, 1);
    }
    assert_eq!(view, View(VIEW_JUMP_MAX + 3));
    assert_eq!(cluster.replica(cluster.primary()).state_machine().total, 8);
    for index in 0..3 {
        assert_eq!(cluster.replica(index).stats().messages_too_far_ahead, 0);
    }
}

#[test]
fn a_view_above_the_jump_bound_that_is_not_a_single_step_is_dropped_and_counted() {
    // View JUMP + 2 is led by replica 1; replicas 1 and 2 are backups of view 0.
    let view = View(VIEW_JUMP_MAX + 2);
    assert_eq!(view.primary(3), 1);
    let entry = Entry {
        op: Op(1),
        view,
        parent: EntryChecksum(0),
        client: CLIENT,
        session: 0,
        request: 1,
        operation: Operation::Register,
        body: Bytes::new(),
        checksum: EntryChecksum(0),
    }
    .sealed();
    let messages = [
        (0, 1, start_view_change(view)),
        (
            2,
            1,
            Message::DoViewChange(DoViewChange {
                view,
                last_normal_view: View(0),
                op: Op(0),
                commit: Op(0),
                entries: Vec::new(),
            }),
        ),
        (
            1,
            2,
            Message::StartView(StartView {
                view,
                op: Op(0),
                commit: Op(0),
                entries: Vec::new(),
            }),
        ),
        (
            1,
            2,
            Message::Prepare(Prepare {
                view,
                commit: Op(0),
                entries: vec![entry],
                round: 0,
            }),
        ),
        (
            1,
            2,
            Message::Commit(Commit {
                view,
                commit: Op(0),
                round: 0,
            }),
        ),
    ];
    for (from, to, message) in messages {
        let name = message.name();
        let mut replica = replica(to, 3);
        replica.deliver(from_replica(from, message));
        assert!(drain(&mut replica).is_empty(), "{name}");
        assert_eq!(
            (replica.view(), replica.status_name()),
            (View(0), "normal"),
            "{name}"
        );
        dropped_too_far_ahead(&replica, 1);
    }
    // A primary, which has no timeout to take it out of a view its peers have left, starts a
    // view change to the next view at once.
    let mut primary = replica(0, 3);
    primary.deliver(from_replica(1, start_view_change(view)));
    assert_eq!(
        (primary.view(), primary.status_name()),
        (View(1), "view_change")
    );
    dropped_too_far_ahead(&primary, 1);
}

#[test]
fn above_the_jump_bound_a_single_step_is_taken_and_two_are_not() {
    let view = View(VIEW_JUMP_MAX + 1);
    // Replica 1 is a backup of that view, waiting for its primary.
    let mut backup = opened(1, view, view);
    let _ = settle(&mut backup);
    backup.deliver(from_replica(2, start_view_change(View(VIEW_JUMP_MAX + 3))));
    assert_eq!(backup.view(), view);
    dropped_too_far_ahead(&backup, 1);
    backup.deliver(from_replica(2, start_view_change(view.next())));
    assert_eq!(
        (backup.view(), backup.status_name()),
        (view.next(), "view_change")
    );
    dropped_too_far_ahead(&backup, 1);
}

#[test]
fn a_replica_at_the_jump_bound_times_out_past_it_but_not_on_alone() {
    // Replica 1 is a backup of view JUMP (replica 2 leads it) and hears nobody.
    assert_eq!(JUMP.primary(3), 2);
    let mut backup = opened(1, JUMP, JUMP);
    let _ = settle(&mut backup);
    let timeout = backup.config.view_change_timeout_ticks;
    tick_alone(&mut backup, timeout * 2 + 1);
    assert_eq!(
        (backup.view(), backup.status_name()),
        (View(VIEW_JUMP_MAX + 1), "view_change")
    );
    // Alone, it does not run ahead of its peers above the bound: it waits in that view.
    tick_alone(&mut backup, timeout * 40);
    assert_eq!(backup.view(), View(VIEW_JUMP_MAX + 1));
    // A message of a later view it cannot take yet says the peers moved on: it climbs one view
    // per timeout towards them.
    let ahead = View(VIEW_JUMP_MAX + 6);
    let primary = ahead.primary(3);
    let commit = Message::Commit(Commit {
        view: ahead,
        commit: Op(0),
        round: 0,
    });
    backup.deliver(from_replica(primary, commit.clone()));
    dropped_too_far_ahead(&backup, 1);
    tick_alone(&mut backup, timeout * 4 + 1);
    assert_eq!(backup.view(), View(VIEW_JUMP_MAX + 2));
    for _ in 0..3 {
        backup.deliver(from_replica(primary, commit.clone()));
        tick_alone(&mut backup, timeout * 4 + 1);
    }
    assert_eq!(backup.view(), View(VIEW_JUMP_MAX + 5));
    // Now the primary's message is a single step: the backup joins its view.
    backup.deliver(from_replica(primary, commit));
    assert_eq!((backup.view(), backup.status_name()), (ahead, "normal"));
    dropped_too_far_ahead(&backup, 4);
}

#[test]
fn lagging_and_isolated_replicas_rejoin_a_cluster_past_the_jump_bound() {
    let mut cluster = Cluster::new(5);
    cluster.submit(register());
    for to in [0, 2, 3, 4] {
        cluster
            .network
            .push_back((to, from_replica(1, start_view_change(JUMP))));
    }
    cluster.settle();
    all_normal_in(&cluster, JUMP);
    // A backup cut off for long moves one view on, and no further.
    let lagging = (cluster.primary() + 1) % 5;
    cluster.isolated[lagging] = true;
    cluster.tick(2000);
    assert_eq!(cluster.replica(lagging).view(), JUMP.next());
    // Meanwhile the others replace their primary three times; each old primary, left behind
    // by more than one view when it is let back in, climbs after them.
    for _ in 0..3 {
        let old = cluster.primary();
        cluster.isolated[old] = true;
        cluster.tick(300);
        cluster.isolated[old] = false;
        cluster.tick(300);
    }
    let view = cluster.replica(cluster.primary()).view();
    assert!(view > View(VIEW_JUMP_MAX + 3), "{view}");
    for index in (0..5).filter(|index| *index != lagging) {
        assert_eq!(cluster.replica(index).view(), view, "replica {index}");
    }
    // The lagging backup climbs to them too.
    cluster.isolated[lagging] = false;
    cluster.tick(2000);
    all_normal_in(&cluster, view);
    run_workload(&mut cluster, 2, 3);
    cluster.tick(50);
    assert_eq!(cluster.replica(lagging).state_machine().total, 3);
    assert!(cluster.replica(lagging).stats().messages_too_far_ahead > 0);
}

#[test]
fn in_the_last_view_a_replica_stays_and_goes_on_serving() {
    assert_eq!(LAST.primary(3), 0);
    // A backup of the last view times out and has nowhere to go: it stays a backup.
    let mut backup = opened(1, LAST, LAST);
    let timeout = backup.config.view_change_timeout_ticks;
    tick_alone(&mut backup, timeout * 20);
    assert_eq!((backup.view(), backup.status_name()), (LAST, "normal"));
    // One in a view change to the last view keeps it going.
    let mut changing = opened(2, LAST, View(NUMBER_MAX - 2));
    assert_eq!(
        (changing.view(), changing.status_name()),
        (LAST, "view_change")
    );
    let commands: Vec<Command> = (0..timeout * 20)
        .flat_map(|_| {
            changing.on_tick();
            settle(&mut changing)
        })
        .collect();
    assert_eq!(changing.view(), LAST);
    assert!(sends(&commands).contains(&(1, "start_view_change")));
    // And the cluster in the last view elects its primary and commits.
    let mut cluster = Cluster::new(3);
    for index in 0..3 {
        cluster.replicas[usize::from(index)] = Some(opened(index, LAST, View(NUMBER_MAX - 2)));
    }
    cluster.tick(300);
    all_normal_in(&cluster, LAST);
    cluster.submit(register());
    run_workload(&mut cluster, 2, 2);
    assert_eq!(cluster.replica(0).state_machine().total, 2);
}

#[test]
fn a_lost_replica_recovers_into_a_cluster_past_the_jump_bound() {
    let mut cluster = Cluster::new(3);
    cluster.submit(register());
    run_workload(&mut cluster, 2, 2);
    for to in [0, 2] {
        cluster
            .network
            .push_back((to, from_replica(1, start_view_change(JUMP))));
    }
    cluster.settle();
    let _ = replace_primary(&mut cluster);
    let view = replace_primary(&mut cluster);
    assert_eq!(view, View(VIEW_JUMP_MAX + 2));
    // Replica 2 loses its disk: its view is 0, two jumps' worth below the cluster's.
    cluster.disks[2] = DurableState::recovering();
    cluster.replicas[2] = Some(Replica::recover(config(3), 2, Sum::default(), 9));
    cluster.tick(100);
    all_normal_in(&cluster, view);
    let recovered = cluster.replica(2);
    assert_eq!(recovered.stats().recoveries, 1);
    assert_eq!(recovered.state_machine().total, 2);
}

#[test]
fn one_recovery_response_too_far_ahead_is_dropped_and_counted() {
    let mut recovering = Replica::recover(config(3), 0, Sum::default(), 9);
    let nonce = recovery_nonce(&drain(&mut recovering));
    let response = |view: View, primary: bool| {
        Message::RecoveryResponse(RecoveryResponse {
            view,
            nonce,
            op: Op(0),
            commit: Op(0),
            primary,
        })
    };
    // Replica 1 claims view JUMP + 2, which it would lead; replica 2 is normal in view 2,
    // which it leads. Only one response vouches for the view beyond reach.
    let far = View(VIEW_JUMP_MAX + 2);
    assert_eq!((far.primary(3), View(2).primary(3)), (1, 2));
    recovering.deliver(from_replica(1, response(far, true)));
    recovering.deliver(from_replica(2, response(View(2), true)));
    dropped_too_far_ahead(&recovering, 1);
    assert_eq!(recovering.view(), View(0));
    // Replica 1 answers again from view 2: a quorum, led by view 2's primary.
    recovering.deliver(from_replica(1, response(View(2), false)));
    let _ = settle(&mut recovering);
    assert_eq!(
        (recovering.view(), recovering.status_name()),
        (View(2), "normal")
    );
    assert_eq!(recovering.stats().recoveries, 1);
    dropped_too_far_ahead(&recovering, 1);
}

/// A delta of the empty state at `op`, as one new_state from replica 0.
fn delta_at(op: Op) -> Envelope {
    let bytes = replica(0, 3).snapshot(Op(0)).to_bytes();
    let chunk = DeltaChunk {
        target: DeltaTarget {
            transfer: 1,
            op,
            op_checksum: EntryChecksum(0xabc),
            since: Op(0),
        },
        offset: 0,
        end: Some(DeltaEnd {
            size: bytes.len() as u64,
            checksum: checksum(&bytes),
        }),
        chunk: bytes,
    };
    from_replica(
        0,
        Message::NewState(NewState {
            view: View(0),
            op,
            commit: op,
            normal: false,
            payload: StatePayload::Delta(Box::new(chunk)),
        }),
    )
}

#[test]
fn a_delta_is_taken_up_to_the_op_jump_bound_and_no_further() {
    let mut backup = replica(1, 3);
    backup.deliver(delta_at(Op(OP_JUMP_MAX + 1)));
    assert_eq!((backup.commit(), backup.op()), (Op(0), Op(0)));
    dropped_too_far_ahead(&backup, 1);
    backup.deliver(delta_at(Op(OP_JUMP_MAX)));
    let jump = Op(OP_JUMP_MAX);
    assert_eq!((backup.commit(), backup.op()), (jump, jump));
    assert_eq!(backup.stats().state_transfers_delta, 1);
    dropped_too_far_ahead(&backup, 1);
}

#[test]
fn a_commit_number_is_taken_up_to_the_op_jump_bound_then_one_past_the_log() {
    let commit = |commit: u64| {
        from_replica(
            0,
            Message::Commit(Commit {
                view: View(0),
                commit: Op(commit),
                round: 0,
            }),
        )
    };
    let mut backup = replica(1, 3);
    backup.deliver(commit(OP_JUMP_MAX + 1));
    assert_eq!(backup.commit_max(), Op(0));
    dropped_too_far_ahead(&backup, 1);
    backup.deliver(commit(OP_JUMP_MAX));
    assert_eq!(backup.commit_max(), Op(OP_JUMP_MAX));
    assert_eq!(sends(&drain(&mut backup)), vec![(0, "get_state")]);
    // A backup whose log is at the bound takes a commit number one past it, not two.
    let mut backup = replica(1, 3);
    backup.deliver(delta_at(Op(OP_JUMP_MAX)));
    backup.deliver(commit(OP_JUMP_MAX + 2));
    assert_eq!(backup.commit_max(), Op(OP_JUMP_MAX));
    dropped_too_far_ahead(&backup, 1);
    backup.deliver(commit(OP_JUMP_MAX + 1));
    assert_eq!(backup.commit_max(), Op(OP_JUMP_MAX + 1));
    dropped_too_far_ahead(&backup, 1);
}

#[test]
fn a_primary_at_the_last_op_prepares_nothing_more() {
    let snapshot = replica(0, 1).snapshot(Op(0));
    let disk = DurableState {
        checkpoint: Some(Checkpoint {
            op: Op(NUMBER_MAX - 2),
            op_checksum: EntryChecksum(0xabc),
            since: Op(0),
            snapshot,
        }),
        view_state: ViewState {
            commit: Op(NUMBER_MAX - 2),
            ..ViewState::default()
        },
        ..DurableState::default()
    };
    let mut solo = Replica::open(config(1), 0, Sum::default(), 1, &disk);
    let _ = settle(&mut solo);
    assert!(solo.is_primary());
    solo.deliver(register());
    let _ = settle(&mut solo);
    assert_eq!((solo.op(), solo.commit()), (LAST_OP, LAST_OP));
    solo.deliver(add(2, LAST_OP.get(), 5));
    let commands = settle(&mut solo);
    assert!(commands.is_empty(), "{commands:?}");
    assert_eq!(solo.op(), LAST_OP);
}

/// The last op a message can carry.
const LAST_OP: Op = Op(NUMBER_MAX - 1);
