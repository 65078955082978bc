//! Reads (`replica/reads.rs`): a query is answered only after a quorum confirmed the primary's
//! view after it arrived, never by a primary cut off from its backups, and never from the log.

use super::*;
use crate::message::{Confirm, Query};

const READER: u128 = 0xbead;

fn query(request: u64) -> Envelope {
    Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Client(READER),
        message: Message::Query(Query {
            request,
            body: Bytes::from(0u64.to_bytes()),
        }),
    }
}

/// The rounds of the commits and prepares among `commands`, in order.
fn rounds(commands: &[Command]) -> Vec<u64> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Send { envelope, .. } => match &envelope.message {
                Message::Commit(Commit { round, .. }) | Message::Prepare(Prepare { round, .. }) => {
                    Some(*round)
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A cluster of three that committed a register and an add of 5 (the total is 5).
fn cluster_with_a_write() -> Cluster {
    let mut cluster = Cluster::new(3);
    cluster.submit(register());
    cluster.submit(add(2, 1, 5));
    assert!(matches!(
        cluster.replies.last(),
        Some((_, 2, ReplyResult::Executed(_)))
    ));
    cluster.replies.clear();
    cluster
}

/// Hands `envelope` to replica `index` and carries out what follows.
fn deliver_to(cluster: &mut Cluster, index: usize, envelope: Envelope) {
    cluster.replicas[index]
        .as_mut()
        .expect("alive")
        .deliver(envelope);
    cluster.settle();
}

fn answered(cluster: &Cluster) -> Vec<(Op, u64, u64)> {
    cluster
        .replies
        .iter()
        .filter_map(|(op, request, result)| match result {
            ReplyResult::Answered(bytes) => {
                Some((*op, *request, u64::decode(bytes).expect("a total")))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_query_is_answered_after_a_round_and_leaves_no_trace_in_the_log() {
    let mut cluster = cluster_with_a_write();
    let (op, commit) = (cluster.replica(0).op(), cluster.replica(0).commit());
    let primary = cluster.replicas[0].as_mut().unwrap();
    primary.deliver(query(7));
    let commands = drain(primary);
    // No answer yet, no write: one commit with a fresh round to each backup.
    assert!(replies(&commands).is_empty(), "{commands:?}");
    assert!(
        !commands
            .iter()
            .any(|command| matches!(command, Command::Persist { .. }))
    );
    assert_eq!(sends(&commands), vec![(1, "commit"), (2, "commit")]);
    assert_eq!(rounds(&commands), vec![1, 1]);
    for (to, envelope) in commands.into_iter().filter_map(|command| match command {
        Command::Send { to, envelope } => Some((to, envelope)),
        _ => None,
    }) {
        cluster.network.push_back((to, envelope));
    }
    cluster.settle();
    assert_eq!(answered(&cluster), vec![(commit, 7, 5)]);
    assert_eq!(cluster.replica(0).op(), op, "a query is not logged");
    assert_eq!(cluster.replica(0).stats().reads_answered, 1);
}

#[test]
fn reads_that_arrive_while_a_round_flies_wait_for_the_next() {
    let mut cluster = cluster_with_a_write();
    let primary = cluster.replicas[0].as_mut().unwrap();
    primary.deliver(query(1));
    let first = drain(primary);
    primary.deliver(query(2));
    primary.deliver(query(3));
    // The round in flight was sent before these arrived: it cannot vouch for them.
    assert!(drain(primary).is_empty());
    // One backup confirms the first round: the first read is answered, and one new round
    // covers both later reads.
    primary.deliver(from_replica(
        2,
        Message::Confirm(Confirm {
            view: View(0),
            round: 1,
        }),
    ));
    let commands = drain(primary);
    assert_eq!(replies(&commands).len(), 1);
    assert_eq!(rounds(&commands), vec![2, 2]);
    drop(first);
    primary.deliver(from_replica(
        1,
        Message::Confirm(Confirm {
            view: View(0),
            round: 2,
        }),
    ));
    let answers: Vec<u64> = replies(&drain(primary))
        .into_iter()
        .map(|(_, request, _)| request)
        .collect();
    assert_eq!(answers, vec![2, 3]);
}

#[test]
fn a_primary_cut_off_from_its_backups_answers_no_read() {
    let mut cluster = cluster_with_a_write();
    cluster.isolated[0] = true;
    deliver_to(&mut cluster, 0, query(1));
    // The backups elect a new primary, which commits a write the old one never sees.
    cluster.tick(3 * cluster.replica(1).config.view_change_timeout_ticks);
    let primary = cluster.primary();
    assert_ne!(primary, 0);
    cluster.submit(add(3, 1, 10));
    // The old primary believes it leads view 0; asked again and again, it never answers from
    // its stale state (the total would be 5, not 15).
    for request in 2..10 {
        deliver_to(&mut cluster, 0, query(request));
        cluster.tick(5);
    }
    assert!(answered(&cluster).is_empty(), "{:?}", cluster.replies);
    // The new primary answers with the write in.
    deliver_to(&mut cluster, primary, query(20));
    cluster.tick(1);
    assert_eq!(answered(&cluster).last().map(|answer| answer.2), Some(15));
}

#[test]
fn an_overdue_round_is_superseded_and_prepares_carry_rounds() {
    let mut cluster = cluster_with_a_write();
    let retry = cluster.replica(0).config.prepare_retry_ticks;
    let primary = cluster.replicas[0].as_mut().unwrap();
    primary.deliver(query(1));
    assert_eq!(rounds(&drain(primary)), vec![1, 1]);
    // Its commits are lost: after the retry timeout a new round goes out.
    let mut resent = Vec::new();
    for _ in 0..retry {
        primary.on_tick();
        resent.extend(
            rounds(&drain(primary))
                .into_iter()
                .filter(|round| *round > 0),
        );
    }
    assert_eq!(resent, vec![2, 2]);
    // A prepare sent while a read waits carries a round of its own.
    primary.deliver(add(3, 1, 1));
    let commands = drain(primary);
    assert_eq!(prepare_sizes(&commands), vec![1, 1]);
    assert_eq!(rounds(&commands), vec![3, 3]);
}

#[test]
fn confirms_of_another_view_or_of_a_round_never_sent_count_for_nothing() {
    let mut cluster = cluster_with_a_write();
    let primary = cluster.replicas[0].as_mut().unwrap();
    primary.deliver(query(1));
    let _ = drain(primary);
    let dropped = primary.stats().messages_dropped;
    for (view, round) in [(View(1), 1), (View(0), 99)] {
        primary.deliver(from_replica(1, Message::Confirm(Confirm { view, round })));
    }
    assert!(replies(&drain(primary)).is_empty());
    assert_eq!(primary.stats().messages_dropped, dropped + 1);
}

#[test]
fn backups_confirm_rounds_at_once_and_redirect_queries() {
    let mut backup = replica(1, 3);
    backup.deliver(from_replica(
        0,
        Message::Commit(Commit {
            view: View(0),
            commit: Op(0),
            round: 4,
        }),
    ));
    let commands = drain(&mut backup);
    assert!(matches!(
        &commands[..],
        [Command::Send { to: 0, envelope }]
            if envelope.message == Message::Confirm(Confirm { view: View(0), round: 4 })
    ));
    backup.deliver(query(3));
    assert_eq!(
        replies(&drain(&mut backup)),
        vec![(Op(0), 3, ReplyResult::NotPrimary)]
    );
}

#[test]
fn a_lone_replica_answers_at_once() {
    let mut solo = replica(0, 1);
    solo.deliver(query(1));
    assert_eq!(
        replies(&drain(&mut solo)),
        vec![(
            Op(0),
            1,
            ReplyResult::Answered(Bytes::from(0u64.to_bytes()))
        )]
    );
}

#[test]
fn an_invalid_query_is_dropped_and_counted() {
    let mut primary = replica(0, 3);
    let mut envelope = query(1);
    envelope.message = Message::Query(Query {
        request: 1,
        body: Bytes::from_static(b"not a u64"),
    });
    primary.deliver(envelope);
    assert!(drain(&mut primary).is_empty());
    assert_eq!(primary.stats().messages_dropped, 1);
}

#[test]
fn a_primary_whose_reads_get_no_quorum_leaves_its_view() {
    let mut cluster = cluster_with_a_write();
    let timeout = cluster.replica(0).config.view_change_timeout_ticks;
    let primary = cluster.replicas[0].as_mut().unwrap();
    primary.deliver(query(1));
    let _ = drain(primary);
    // Its backups hear it (so none times out) but it hears none of them.
    for _ in 0..2 * timeout - 1 {
        primary.on_tick();
        let _ = drain(primary);
    }
    assert!(primary.is_primary());
    primary.on_tick();
    assert!(!primary.is_primary());
    assert_eq!(primary.view(), View(1));
    assert_eq!(primary.stats().primary_read_stalls, 1);
    assert!(
        sends(&drain(primary))
            .iter()
            .all(|(_, name)| *name != "commit")
    );
}
