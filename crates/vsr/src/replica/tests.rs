//! Unit tests: feed a replica one event, assert the exact commands it emits. One module per
//! protocol phase, plus a tiny in-process cluster for multi-step scenarios.

use bytes::Bytes;

use super::{CHECKPOINT_INCREMENTS_MAX, Replica, Status};
use crate::command::{Command, DurableState, Write};
use crate::config::Config;
use crate::message::{
    Commit, DoViewChange, Entry, Envelope, GetState, Message, NewState, Operation, Prepare,
    PrepareOk, Recovery, RecoveryResponse, Reply, ReplyResult, Request, Sender, StartView,
    StartViewChange,
};
use crate::numbers::{EntryChecksum, Op, View};
use crate::state_machine::{Codec, CodecError, StateMachine};
use crate::wire::{self, DecodeError};

/// A state machine that adds numbers: result is the running sum. Its delta is the full state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Sum {
    total: u64,
    applied: u64,
}

impl Codec for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| CodecError::new("u64", "size"))?;
        Ok(u64::from_le_bytes(bytes))
    }
}

impl StateMachine for Sum {
    type Operation = u64;
    type Result = u64;
    type Delta = u64;
    /// Any number: answers the total.
    type Query = u64;
    fn apply(&mut self, _op: Op, operation: u64) -> u64 {
        self.total += operation;
        self.applied += 1;
        self.total
    }
    fn query(&self, _query: u64) -> u64 {
        self.total
    }
    fn delta(&self, _since: Op) -> u64 {
        self.total
    }
    fn apply_delta(&mut self, delta: u64) {
        self.total = delta;
    }
    fn digest(&self) -> u128 {
        u128::from(self.total)
    }
}

const CLUSTER: u128 = 7;
const CLIENT: u128 = 0xc1;

fn config(replica_count: u8) -> Config {
    let mut config = Config::new(CLUSTER, replica_count);
    config.pipeline_max = 4;
    config.log_retained_max = 4;
    config.checkpoint_interval = 4;
    config
}

fn replica(index: u8, replica_count: u8) -> Replica<Sum> {
    Replica::new(config(replica_count), index, Sum::default(), 1)
}

impl Replica<Sum> {
    /// Hands `envelope` over as a driver would: encoded, then decoded for this replica.
    /// Decoding rejects it with the error a driver would count.
    fn offer(&mut self, envelope: &Envelope) -> Result<(), DecodeError> {
        let verified = wire::decode(&wire::encode(envelope), &self.receiver())?;
        self.on_message(verified);
        self.invariants();
        Ok(())
    }

    /// [`Replica::offer`] of a message decoding must admit.
    fn deliver(&mut self, envelope: Envelope) {
        if let Err(error) = self.offer(&envelope) {
            panic!("{} rejected: {error}", envelope.message.name());
        }
    }
}

fn drain(replica: &mut Replica<Sum>) -> Vec<Command> {
    replica.drain_commands().collect()
}

fn from_replica(sender: u8, message: Message) -> Envelope {
    Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Replica(sender),
        message,
    }
}

fn request(request: u64, session: u64, operation: Operation, body: Bytes) -> Envelope {
    let message = Message::Request(Request {
        session,
        request,
        operation,
        body,
    });
    Envelope {
        cluster: CLUSTER,
        epoch: 0,
        sender: Sender::Client(CLIENT),
        message,
    }
}

fn register() -> Envelope {
    request(1, 0, Operation::Register, Bytes::new())
}

fn add(request_number: u64, session: u64, value: u64) -> Envelope {
    request(
        request_number,
        session,
        Operation::StateMachine,
        Bytes::from(value.to_bytes()),
    )
}

/// The wire size of the log entry of an [`add`] request.
fn add_entry_size() -> usize {
    let body = Bytes::from(1u64.to_bytes());
    let entry = Entry {
        op: Op(2),
        view: View(0),
        parent: EntryChecksum(0),
        client: CLIENT,
        session: 1,
        request: 2,
        operation: Operation::StateMachine,
        body,
        checksum: EntryChecksum(0),
    };
    crate::wire::entry_size(&entry.sealed())
}

/// The number of entries of each prepare in `commands`.
fn prepare_sizes(commands: &[Command]) -> Vec<usize> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Send {
                envelope:
                    Envelope {
                        message: Message::Prepare(Prepare { entries, .. }),
                        ..
                    },
                ..
            } => Some(entries.len()),
            _ => None,
        })
        .collect()
}

/// Completes every write emitted so far; returns the commands emitted before and after.
fn persist_all(replica: &mut Replica<Sum>, commands: &[Command]) -> Vec<Command> {
    let last = commands.iter().filter_map(|command| match command {
        Command::Persist { seq, .. } => Some(*seq),
        _ => None,
    });
    if let Some(seq) = last.max() {
        replica.on_persisted(seq);
    }
    for command in commands {
        if let Command::Checkpoint { checkpoint } = command {
            replica.on_checkpoint_durable(checkpoint.op);
        }
    }
    drain(replica)
}

/// Ticks `backup` up to `ticks` times, persisting what it writes, with a commit heartbeat of its
/// view at `commit` from `primary` every 5 ticks, as a live primary sends them; stops once the
/// backup leaves the view.
fn heartbeats(backup: &mut Replica<Sum>, primary: u8, commit: Op, ticks: u64) {
    let view = backup.view();
    for tick in 0..ticks {
        if tick % 5 == 0 {
            backup.deliver(from_replica(
                primary,
                Message::Commit(Commit {
                    view,
                    commit,
                    round: 0,
                }),
            ));
        }
        backup.on_tick();
        let commands = drain(backup);
        let _ = persist_all(backup, &commands);
        if backup.view() != view {
            return;
        }
    }
}

fn sends(commands: &[Command]) -> Vec<(u8, &'static str)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Send { to, envelope } => Some((*to, envelope.message.name())),
            _ => None,
        })
        .collect()
}

fn replies(commands: &[Command]) -> Vec<(Op, u64, ReplyResult)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Reply { envelope, .. } => match &envelope.message {
                Message::Reply(Reply {
                    op,
                    request,
                    result,
                    ..
                }) => Some((*op, *request, result.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn prepared_entry(commands: &[Command]) -> Entry {
    commands
        .iter()
        .find_map(|command| match command {
            Command::Persist {
                write: Write::Append(entry),
                ..
            } => Some(entry.clone()),
            _ => None,
        })
        .expect("an append")
}

mod normal {
    use super::*;

    #[test]
    fn primary_prepares_persists_and_sends() {
        let mut primary = replica(0, 3);
        primary.deliver(register());
        let commands = drain(&mut primary);
        assert!(
            matches!(&commands[0], Command::Persist { seq: 1, write: Write::Append(entry) }
            if entry.op == Op(1) && entry.operation == Operation::Register && entry.parent == EntryChecksum(0))
        );
        assert_eq!(sends(&commands), vec![(1, "prepare"), (2, "prepare")]);
        assert!(replies(&commands).is_empty());
    }

    /// Requests that arrive while the pipeline is full leave together, in one prepare, as soon
    /// as a prepare commits; a lone request never waits for a batch to fill.
    #[test]
    fn requests_waiting_for_the_pipeline_leave_as_one_batch() {
        let mut config = config(3);
        config.pipeline_max = 1;
        config.batch_max = 2;
        let mut primary = Replica::new(config, 0, Sum::default(), 1);
        let registers: Vec<Envelope> = (1..=4u128)
            .map(|client| {
                let mut envelope = register();
                envelope.sender = Sender::Client(client);
                envelope
            })
            .collect();
        primary.deliver(registers[0].clone());
        let first = drain(&mut primary);
        assert_eq!(
            prepare_sizes(&first),
            vec![1, 1],
            "the lone request goes at once"
        );
        for envelope in &registers[1..] {
            primary.deliver(envelope.clone());
            primary.deliver(envelope.clone()); // A resend is not queued twice.
        }
        assert!(
            sends(&drain(&mut primary)).is_empty(),
            "the pipeline is full"
        );
        persist_all(&mut primary, &first);
        let ok = Message::PrepareOk(PrepareOk {
            view: View(0),
            op: Op(1),
            checksum: prepared_entry(&first).checksum,
        });
        primary.deliver(from_replica(1, ok));
        let next = drain(&mut primary);
        assert_eq!(replies(&next).len(), 1);
        assert_eq!(prepare_sizes(&next), vec![2, 2], "a batch of batch_max");
        assert_eq!(primary.op(), Op(3));
        assert_eq!(primary.stats().prepares_batched, 1);
    }

    #[test]
    fn primary_counts_itself_only_once_durable() {
        let mut primary = replica(0, 3);
        primary.deliver(register());
        let commands = drain(&mut primary);
        let entry = prepared_entry(&commands);
        let ok = Message::PrepareOk(PrepareOk {
            view: View(0),
            op: Op(1),
            checksum: entry.checksum,
        });
        primary.deliver(from_replica(1, ok));
        assert!(
            replies(&drain(&mut primary)).is_empty(),
            "one vote of two, own write pending"
        );
        let after = persist_all(&mut primary, &commands);
        assert_eq!(replies(&after), vec![(Op(1), 1, ReplyResult::Registered)]);
        assert_eq!(primary.commit(), Op(1));
    }

    #[test]
    fn prepare_ok_with_wrong_checksum_is_ignored() {
        let mut primary = replica(0, 3);
        primary.deliver(register());
        let commands = drain(&mut primary);
        persist_all(&mut primary, &commands);
        let ok = Message::PrepareOk(PrepareOk {
            view: View(0),
            op: Op(1),
            checksum: EntryChecksum(12345),
        });
        primary.deliver(from_replica(1, ok));
        assert_eq!(primary.commit(), Op(0));
    }

    #[test]
    fn backup_votes_only_after_durable() {
        let mut primary = replica(0, 3);
        let mut backup = replica(1, 3);
        primary.deliver(register());
        let entry = prepared_entry(&drain(&mut primary));
        backup.deliver(from_replica(
            0,
            Message::Prepare(Prepare {
                view: View(0),
                commit: Op(0),
                entries: vec![entry.clone()],
                round: 0,
            }),
        ));
        let commands = drain(&mut backup);
        assert!(
            sends(&commands).is_empty(),
            "no prepare_ok before the write is durable"
        );
        let after = persist_all(&mut backup, &commands);
        assert_eq!(
            after,
            vec![Command::Send {
                to: 0,
                envelope: from_replica(
                    1,
                    Message::PrepareOk(PrepareOk {
                        view: View(0),
                        op: Op(1),
                        checksum: entry.checksum
                    })
                ),
            }]
        );
    }

    /// A primary that hears nobody (its inbound links are cut) still sends heartbeats and
    /// prepare retries, which keep resetting its backups' view-change timeouts: a backup holding
    /// ops the primary never commits must still give up on the view.
    #[test]
    fn backup_leaves_a_primary_that_is_heard_but_commits_nothing() {
        let mut primary = replica(0, 3);
        let mut backup = replica(1, 3);
        primary.deliver(register());
        let entry = prepared_entry(&drain(&mut primary));
        backup.deliver(from_replica(
            0,
            Message::Prepare(Prepare {
                view: View(0),
                commit: Op(0),
                entries: vec![entry],
                round: 0,
            }),
        ));
        let commands = drain(&mut backup);
        let _ = persist_all(&mut backup, &commands);
        // The primary's commit never moves.
        let ticks = backup.config.view_change_timeout_ticks * 3;
        heartbeats(&mut backup, 0, Op(0), ticks);
        assert_eq!(
            backup.view(),
            View(1),
            "the backup stayed with a stalled primary"
        );
        assert_eq!(backup.status_name(), "view_change");
        assert_eq!(backup.stats().primary_stalls, 1);
    }

    /// The same heartbeats with nothing pending keep the view: an idle cluster does not churn.
    #[test]
    fn backup_stays_with_an_idle_primary_it_hears() {
        let mut backup = replica(1, 3);
        let ticks = backup.config.view_change_timeout_ticks * 4;
        heartbeats(&mut backup, 0, Op(0), ticks);
        assert_eq!(backup.view(), View(0));
        assert_eq!(backup.stats().primary_stalls, 0);
    }

    #[test]
    fn backup_asks_for_missing_prepares_at_once() {
        let mut primary = replica(0, 3);
        let mut backup = replica(1, 3);
        let mut entries = Vec::new();
        for client in 1..=3u128 {
            let mut envelope = register();
            envelope.sender = Sender::Client(client);
            primary.deliver(envelope);
            entries.push(prepared_entry(&drain(&mut primary)));
        }
        backup.deliver(from_replica(
            0,
            Message::Prepare(Prepare {
                view: View(0),
                commit: Op(0),
                entries: vec![entries[2].clone()],
                round: 0,
            }),
        ));
        let commands = drain(&mut backup);
        assert_eq!(
            commands,
            vec![Command::Send {
                to: 0,
                envelope: from_replica(
                    1,
                    Message::GetState(GetState {
                        view: View(0),
                        op: Op(0),
                        commit: Op(0),
                        cursor: None,
                    })
                ),
            }]
        );
    }

    #[test]
    fn idle_primary_sends_commit_heartbeats() {
        let mut primary = replica(0, 3);
        for _ in 0..primary.config.heartbeat_ticks {
            primary.on_tick();
        }
        assert_eq!(
            sends(&drain(&mut primary)),
            vec![(1, "commit"), (2, "commit")]
        );
    }

    #[test]
    fn backup_redirects_requests_and_ignores_other_clusters() {
        let mut backup = replica(1, 3);
        backup.deliver(register());
        // The backup executes nothing and tells the client its view: the primary is one hop
        // away.
        let commands = drain(&mut backup);
        assert!(
            matches!(
                &commands[..],
                [Command::Reply { client: CLIENT, envelope }]
                    if matches!(
                        &envelope.message,
                        Message::Reply(Reply { view: View(0), result: ReplyResult::NotPrimary, .. })
                    )
            ),
            "{commands:?}"
        );
        let mut envelope = register();
        envelope.cluster = 99;
        assert_eq!(
            backup.offer(&envelope),
            Err(DecodeError::WrongCluster { cluster: 99 })
        );
        assert!(drain(&mut backup).is_empty());
    }
}

/// Checkpoints come after `checkpoint_interval` ops or `checkpoint_log_size_max` bytes of
/// executed entries, whichever is first, and each bound restarts after a checkpoint.
#[test]
fn a_checkpoint_comes_at_the_op_bound_or_the_byte_bound() {
    fn checkpoint_ops(config: Config, requests: u64) -> Vec<Op> {
        let mut replica = Replica::new(config, 0, Sum::default(), 1);
        let mut checkpoints = Vec::new();
        let mut envelopes = vec![register()];
        envelopes.extend((2..=requests).map(|number| add(number, 1, number)));
        for envelope in envelopes {
            replica.deliver(envelope);
            let commands = drain(&mut replica);
            let after = persist_all(&mut replica, &commands);
            for command in commands.iter().chain(&after) {
                if let Command::Checkpoint { checkpoint } = command {
                    checkpoints.push(checkpoint.op);
                    replica.on_checkpoint_durable(checkpoint.op);
                }
            }
        }
        checkpoints
    }
    let mut by_ops = config(1);
    by_ops.checkpoint_interval = 5;
    assert_eq!(checkpoint_ops(by_ops.clone(), 12), vec![Op(5), Op(10)]);
    // A bound of one byte checkpoints after every op; a bound of three adds' bytes after every
    // third add, the first time after the (smaller) register and three adds.
    let entry_size = add_entry_size();
    let mut by_bytes = by_ops.clone();
    by_bytes.checkpoint_interval = 1_000;
    by_bytes.checkpoint_log_size_max = 1;
    assert_eq!(
        checkpoint_ops(by_bytes.clone(), 4),
        vec![Op(1), Op(2), Op(3), Op(4)]
    );
    by_bytes.checkpoint_log_size_max = 3 * entry_size;
    assert_eq!(checkpoint_ops(by_bytes, 12), vec![Op(4), Op(7), Op(10)]);
}

/// Background checkpoints: one at a time (a checkpoint due while one is being written waits,
/// and comes at the first op after it is durable), increments on the previous one, a whole one
/// after `CHECKPOINT_INCREMENTS_MAX` increments, and a restart from the chain resumes it.
#[test]
fn background_checkpoints_come_one_at_a_time_as_increments_on_a_whole_one() {
    let mut config = config(1);
    config.checkpoint_interval = 2;
    let mut replica = Replica::new(config.clone(), 0, Sum::default(), 1);
    let mut disk = crate::command::DurableState::default();
    let mut taken: Vec<(Op, Op)> = Vec::new();
    let mut writing = None;
    let mut digests = std::collections::BTreeMap::new();
    let mut envelopes = vec![register()];
    envelopes.extend((2..=60).map(|number| add(number, 1, number)));
    for (index, envelope) in envelopes.into_iter().enumerate() {
        replica.deliver(envelope);
        let commands = drain(&mut replica);
        let after = persist_all(&mut replica, &commands);
        for command in commands.iter().chain(&after) {
            match command {
                Command::Persist { write, .. } => disk.apply(write),
                Command::Checkpoint { checkpoint } => {
                    assert!(
                        writing.is_none(),
                        "a second checkpoint while one is written"
                    );
                    taken.push((checkpoint.op, checkpoint.since));
                    writing = Some(checkpoint.clone());
                }
                _ => {}
            }
        }
        digests.insert(replica.commit(), replica.state_machine().digest());
        // The driver takes three requests' time to write each checkpoint.
        if index % 3 == 2
            && let Some(checkpoint) = writing.take()
        {
            disk.apply(&Write::Checkpoint(checkpoint.clone()));
            replica.on_checkpoint_durable(checkpoint.op);
        }
    }
    assert!(taken.len() > 12, "{taken:?}");
    for pair in taken.windows(2) {
        // Every checkpoint after the first waits for the one before it to be durable, so more
        // than the interval separates them.
        assert!(pair[1].0 - pair[0].0 >= 2, "{taken:?}");
    }
    let whole: Vec<usize> = (0..taken.len()).filter(|&i| taken[i].1 == Op(0)).collect();
    assert_eq!(whole[0], 0, "the first checkpoint is whole: {taken:?}");
    let period = CHECKPOINT_INCREMENTS_MAX as usize + 1;
    assert_eq!(whole[1], period, "{taken:?}");
    for i in 1..taken.len() {
        if taken[i].1 != Op(0) {
            assert_eq!(
                taken[i].1,
                taken[i - 1].0,
                "an increment is on the one before"
            );
        }
    }
    // A restart from the chain on disk (the whole checkpoint, its increments, the log after
    // them) comes back to the state the replica had at the commit number it persisted.
    assert!(!disk.increments.is_empty());
    let restarted = Replica::open(config, 0, Sum::default(), 2, &disk);
    assert!(restarted.commit() >= disk.checkpoint_op() && disk.checkpoint_op() > Op(0));
    assert_eq!(
        Some(&restarted.state_machine().digest()),
        digests.get(&restarted.commit())
    );
}

mod client_table {
    use super::*;

    /// A single replica commits alone: convenient for client table tests.
    fn solo() -> Replica<Sum> {
        Replica::new(config(1), 0, Sum::default(), 1)
    }

    fn submit(replica: &mut Replica<Sum>, envelope: Envelope) -> Vec<(Op, u64, ReplyResult)> {
        replica.deliver(envelope);
        let commands = drain(replica);
        let mut all = replies(&commands);
        all.extend(replies(&persist_all(replica, &commands)));
        all
    }

    #[test]
    fn resent_request_gets_cached_reply_and_executes_once() {
        let mut replica = solo();
        assert_eq!(
            submit(&mut replica, register()),
            vec![(Op(1), 1, ReplyResult::Registered)]
        );
        let executed = ReplyResult::Executed(Bytes::from(5u64.to_bytes()));
        assert_eq!(
            submit(&mut replica, add(2, 1, 5)),
            vec![(Op(2), 2, executed.clone())]
        );
        assert_eq!(
            submit(&mut replica, add(2, 1, 5)),
            vec![(Op(2), 2, executed)]
        );
        assert!(
            submit(&mut replica, add(1, 1, 5)).is_empty(),
            "an older request is dropped"
        );
        assert_eq!(replica.state_machine().total, 5);
    }

    /// Found by the core review: a delayed duplicate register replaced the client's live
    /// session, so its next request was answered "session evicted".
    #[test]
    fn a_duplicate_register_keeps_the_session() {
        let mut replica = solo();
        assert_eq!(
            submit(&mut replica, register()),
            vec![(Op(1), 1, ReplyResult::Registered)]
        );
        assert_eq!(
            submit(&mut replica, register()),
            vec![(Op(1), 1, ReplyResult::Registered)]
        );
        let executed = ReplyResult::Executed(Bytes::from(5u64.to_bytes()));
        assert_eq!(
            submit(&mut replica, add(2, 1, 5)),
            vec![(Op(2), 2, executed)]
        );
        assert!(
            submit(&mut replica, register()).is_empty(),
            "an old register is dropped"
        );
        let executed = ReplyResult::Executed(Bytes::from(6u64.to_bytes()));
        assert_eq!(
            submit(&mut replica, add(3, 1, 1)),
            vec![(Op(3), 3, executed)]
        );
    }

    /// An unknown session is told at once, even while other ops are in flight; a client whose
    /// register is still uncommitted waits.
    #[test]
    fn unknown_session_is_told_even_while_the_pipeline_is_busy() {
        let mut primary = replica(0, 3);
        primary.deliver(register());
        drain(&mut primary);
        let mut stranger = add(2, 9, 5);
        stranger.sender = Sender::Client(0xbad);
        primary.deliver(stranger);
        assert_eq!(
            replies(&drain(&mut primary)),
            vec![(Op(0), 2, ReplyResult::SessionEvicted)]
        );
        primary.deliver(add(2, 1, 5));
        assert!(
            drain(&mut primary).is_empty(),
            "its register is in flight: wait for it"
        );
    }

    #[test]
    fn unknown_session_is_told_evicted() {
        let mut replica = solo();
        assert_eq!(
            submit(&mut replica, add(2, 9, 5)),
            vec![(Op(0), 2, ReplyResult::SessionEvicted)]
        );
    }

    #[test]
    fn full_table_evicts_least_recently_used_in_log_order() {
        let mut replica = Replica::new(
            Config {
                clients_max: 2,
                ..config(1)
            },
            0,
            Sum::default(),
            1,
        );
        let register_as = |client: u128| {
            let message = Message::Request(Request {
                session: 0,
                request: 1,
                operation: Operation::Register,
                body: Bytes::new(),
            });
            Envelope {
                cluster: CLUSTER,
                epoch: 0,
                sender: Sender::Client(client),
                message,
            }
        };
        submit(&mut replica, register_as(1));
        submit(&mut replica, register_as(2));
        // Client 1 is used again, so client 2 is now the least recently used.
        let mut use_one = add(2, 1, 3);
        use_one.sender = Sender::Client(1);
        submit(&mut replica, use_one);
        submit(&mut replica, register_as(3));
        assert_eq!(replica.stats().evictions, 1);
        let mut from_two = add(2, 2, 3);
        from_two.sender = Sender::Client(2);
        assert_eq!(
            submit(&mut replica, from_two),
            vec![(Op(0), 2, ReplyResult::SessionEvicted)]
        );
        assert!(replica.client_table.get(1).is_some());
    }
}

/// A tiny in-process cluster with an ideal network and disk, for multi-step scenarios.
struct Cluster {
    replicas: Vec<Option<Replica<Sum>>>,
    disks: Vec<crate::command::DurableState>,
    /// Replicas cut off from everyone.
    isolated: Vec<bool>,
    network: std::collections::VecDeque<(u8, Envelope)>,
    /// Deliver the newest message first (reordering everything sent together).
    newest_first: bool,
    replies: Vec<(Op, u64, ReplyResult)>,
    /// The whole-state snapshots handed over for backups: (request, view, checkpoint).
    snapshots: Vec<(u64, View, crate::command::Checkpoint)>,
}

impl Cluster {
    fn new(replica_count: u8) -> Self {
        Self::with_config(config(replica_count))
    }

    fn with_config(config: Config) -> Self {
        let replica_count = config.replica_count;
        let replica = |index| Some(Replica::new(config.clone(), index, Sum::default(), 1));
        Self {
            replicas: (0..replica_count).map(replica).collect(),
            disks: vec![crate::command::DurableState::default(); usize::from(replica_count)],
            isolated: vec![false; usize::from(replica_count)],
            network: std::collections::VecDeque::new(),
            newest_first: false,
            replies: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    fn collect(&mut self, index: usize) {
        let Some(replica) = self.replicas[index].as_mut() else {
            return;
        };
        let commands: Vec<Command> = replica.drain_commands().collect();
        let mut durable = None;
        let mut checkpointed = None;
        for command in commands {
            match command {
                Command::Checkpoint { checkpoint } => {
                    checkpointed = Some(checkpoint.op);
                    self.disks[index].apply(&Write::Checkpoint(checkpoint));
                }
                Command::Send { to, envelope } => self.network.push_back((to, envelope)),
                Command::Snapshot {
                    request,
                    view,
                    checkpoint,
                    ..
                } => self.snapshots.push((request, view, checkpoint)),
                Command::Reply { envelope, .. } => {
                    if let Message::Reply(Reply {
                        op,
                        request,
                        result,
                        ..
                    }) = envelope.message
                    {
                        self.replies.push((op, request, result));
                    }
                }
                Command::Persist { seq, write } => {
                    self.disks[index].apply(&write);
                    durable = Some(seq);
                }
            }
        }
        if let Some(op) = checkpointed {
            self.replicas[index]
                .as_mut()
                .expect("alive")
                .on_checkpoint_durable(op);
        }
        if let Some(seq) = durable {
            self.replicas[index]
                .as_mut()
                .expect("alive")
                .on_persisted(seq);
            self.collect(index);
        }
    }

    /// Delivers messages until the network is quiet (bounded).
    fn settle(&mut self) {
        for index in 0..self.replicas.len() {
            self.collect(index);
        }
        for _ in 0..100_000 {
            let next = if self.newest_first {
                self.network.pop_back()
            } else {
                self.network.pop_front()
            };
            let Some((to, envelope)) = next else {
                return;
            };
            let Sender::Replica(from) = envelope.sender else {
                unreachable!()
            };
            if self.isolated[usize::from(to)] || self.isolated[usize::from(from)] {
                continue;
            }
            if let Some(replica) = self.replicas[usize::from(to)].as_mut() {
                replica.deliver(envelope);
                self.collect(usize::from(to));
            }
        }
        panic!("the network never settled");
    }

    fn tick(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for index in 0..self.replicas.len() {
                if let Some(replica) = self.replicas[index].as_mut() {
                    replica.on_tick();
                }
            }
            self.settle();
        }
    }

    fn primary(&self) -> usize {
        let normal_primary =
            |replica: &&Replica<Sum>| replica.is_primary() && replica.status_name() == "normal";
        let candidates: Vec<usize> = (0..self.replicas.len())
            .filter(|&index| !self.isolated[index])
            .filter(|&index| {
                self.replicas[index]
                    .as_ref()
                    .is_some_and(|r| normal_primary(&r))
            })
            .collect();
        *candidates
            .iter()
            .max_by_key(|&&index| self.replicas[index].as_ref().unwrap().view())
            .expect("a primary")
    }

    fn submit(&mut self, envelope: Envelope) {
        let primary = self.primary();
        self.replicas[primary].as_mut().unwrap().deliver(envelope);
        self.settle();
    }

    fn replica(&self, index: usize) -> &Replica<Sum> {
        self.replicas[index].as_ref().expect("alive")
    }
}

fn run_workload(cluster: &mut Cluster, first_request: u64, count: u64) {
    for request_number in first_request..first_request + count {
        cluster.submit(add(request_number, 1, 1));
    }
}

mod view_change {
    use super::*;

    #[test]
    fn backup_timeout_persists_view_then_sends_start_view_change() {
        let mut backup = replica(1, 3);
        let mut commands = Vec::new();
        for _ in 0..backup.config.view_change_timeout_ticks * 2 + 1 {
            backup.on_tick();
            commands.extend(drain(&mut backup));
        }
        assert_eq!(backup.view(), View(1));
        assert_eq!(backup.status_name(), "view_change");
        assert!(
            matches!(&commands[0], Command::Persist { write: Write::ViewState(state), .. } if state.view == View(1) && state.last_normal_view == View(0))
        );
        assert!(
            sends(&commands).is_empty(),
            "nothing leaves before the view is durable"
        );
        let after = persist_all(&mut backup, &commands);
        assert_eq!(
            sends(&after),
            vec![(0, "start_view_change"), (2, "start_view_change")]
        );
    }

    #[test]
    fn start_view_change_quorum_sends_do_view_change_to_new_primary() {
        let mut backup = replica(2, 3);
        backup.deliver(from_replica(
            0,
            Message::StartViewChange(StartViewChange { view: View(1) }),
        ));
        let commands = drain(&mut backup);
        let after = persist_all(&mut backup, &commands);
        // f = 1: one other start_view_change is enough.
        assert_eq!(
            sends(&after),
            vec![
                (0, "start_view_change"),
                (1, "start_view_change"),
                (1, "do_view_change")
            ]
        );
    }

    #[test]
    fn primary_crash_elects_next_primary_without_losing_commits() {
        let mut cluster = Cluster::new(3);
        cluster.submit(register());
        run_workload(&mut cluster, 2, 6);
        assert_eq!(cluster.replica(0).state_machine().total, 6);
        cluster.replicas[0] = None;
        cluster.isolated[0] = true;
        cluster.tick(300);
        assert_eq!(cluster.primary(), 1);
        assert_eq!(cluster.replica(1).view(), View(1));
        assert_eq!(cluster.replica(1).stats().view_changes, 1);
        run_workload(&mut cluster, 8, 3);
        assert_eq!(cluster.replica(1).state_machine().total, 9);
        // The old primary restarts from its disk and catches up.
        let disk = cluster.disks[0].clone();
        cluster.replicas[0] = Some(Replica::open(config(3), 0, Sum::default(), 2, &disk));
        cluster.isolated[0] = false;
        cluster.tick(200);
        run_workload(&mut cluster, 11, 1);
        cluster.tick(50);
        for index in 0..3 {
            assert_eq!(
                cluster.replica(index).state_machine().total,
                10,
                "replica {index}"
            );
        }
    }

    #[test]
    fn whole_cluster_restart_keeps_every_commit() {
        let mut cluster = Cluster::new(3);
        cluster.submit(register());
        run_workload(&mut cluster, 2, 9);
        for index in 0..3 {
            let disk = cluster.disks[index].clone();
            cluster.replicas[index] = Some(Replica::open(
                config(3),
                index as u8,
                Sum::default(),
                3,
                &disk,
            ));
        }
        cluster.tick(400);
        run_workload(&mut cluster, 11, 1);
        cluster.tick(50);
        for index in 0..3 {
            assert_eq!(
                cluster.replica(index).state_machine().total,
                10,
                "replica {index}"
            );
        }
    }
}

/// A restarted replica counts the entries it replays toward the checkpoint byte bound, so it
/// checkpoints at the same ops as a peer that never stopped.
#[test]
fn a_restart_between_checkpoints_keeps_the_byte_bound() {
    let entry_size = add_entry_size();
    let mut config = config(3);
    config.checkpoint_interval = 1_000;
    config.log_retained_max = 1_000;
    config.checkpoint_log_size_max = 5 * entry_size;
    // One op per prepare: the commit number is persisted after every op, so the restart
    // replays executed entries from its disk, not only from its peers.
    config.pipeline_max = 1;
    config.batch_max = 1;
    let mut cluster = Cluster::with_config(config.clone());
    cluster.submit(register());
    run_workload(&mut cluster, 2, 8);
    let checkpoint_op = |cluster: &Cluster, index: usize| {
        Some(cluster.disks[index].checkpoint_op()).filter(|op| *op > Op(0))
    };
    assert_eq!(checkpoint_op(&cluster, 2), Some(Op(6)), "register + 5 adds");
    assert!(
        cluster.replica(2).commit() > Op(6),
        "executed past the checkpoint"
    );
    let disk = cluster.disks[2].clone();
    cluster.replicas[2] = Some(Replica::open(config, 2, Sum::default(), 2, &disk));
    run_workload(&mut cluster, 10, 8);
    cluster.tick(50);
    assert_eq!(checkpoint_op(&cluster, 1), Some(Op(16)));
    assert_eq!(checkpoint_op(&cluster, 2), checkpoint_op(&cluster, 1));
}

mod state_transfer {
    use super::*;

    #[test]
    fn lagging_backup_catches_up_by_delta_when_entries_are_gone() {
        let mut cluster = Cluster::new(3);
        cluster.submit(register());
        cluster.isolated[2] = true;
        run_workload(&mut cluster, 2, 40);
        assert_eq!(cluster.replica(2).commit(), Op(0));
        cluster.isolated[2] = false;
        cluster.tick(30);
        let lagging = cluster.replica(2);
        assert_eq!(lagging.state_machine().total, 40);
        assert!(
            lagging.stats().state_transfers_delta >= 1,
            "{:?}",
            lagging.stats()
        );
    }

    /// A delta's chunks may overtake each other: the receiver keeps those ahead aside (a
    /// window of them) until the gap fills.
    #[test]
    fn a_delta_installs_from_chunks_arriving_in_reverse_order() {
        let mut config = config(3);
        config.state_chunk_size_max = 64;
        let mut cluster = Cluster::with_config(config);
        cluster.submit(register());
        cluster.isolated[2] = true;
        run_workload(&mut cluster, 2, 40);
        cluster.isolated[2] = false;
        cluster.newest_first = true;
        cluster.tick(30);
        let lagging = cluster.replica(2);
        assert_eq!(lagging.state_machine().total, 40);
        assert!(
            lagging.stats().state_transfers_delta >= 1,
            "{:?}",
            lagging.stats()
        );
    }

    /// Delivers up to `count` messages the network holds, oldest first, to replicas that are
    /// up, unless `drop` says to lose one; returns the messages delivered.
    fn deliver_some(
        cluster: &mut Cluster,
        count: usize,
        mut drop: impl FnMut(&Envelope, u8) -> bool,
    ) -> usize {
        for index in 0..cluster.replicas.len() {
            cluster.collect(index);
        }
        let mut delivered = 0;
        for _ in 0..count {
            let Some((to, envelope)) = cluster.network.pop_front() else {
                return delivered;
            };
            if drop(&envelope, to) {
                continue;
            }
            if let Some(replica) = cluster.replicas[usize::from(to)].as_mut() {
                replica.deliver(envelope);
                cluster.collect(usize::from(to));
                delivered += 1;
            }
        }
        delivered
    }

    /// A delta many windows long is streamed: the sender holds at most a window of chunks
    /// sent and not acknowledged, a lost chunk is asked for again and the transfer resumes
    /// there, and a sender that restarts in the middle starts anew, the receiver dropping what
    /// it held.
    #[test]
    fn a_long_delta_streams_in_windows_resumes_and_restarts() {
        use crate::coverage::Mark;
        use crate::replica::state_transfer::DELTA_WINDOW_CHUNKS;
        let mut config = config(3);
        config.state_chunk_size_max = 64;
        let mut cluster = Cluster::with_config(config.clone());
        cluster.isolated[2] = true;
        // Sixty-four sessions: a client table of about 2.6 KB, some forty chunks.
        for client in 1..=64u128 {
            let mut envelope = register();
            envelope.sender = Sender::Client(client);
            cluster.submit(envelope);
        }
        assert_eq!(cluster.replica(2).commit(), Op(0));
        cluster.isolated[2] = false;
        let _ = crate::coverage::take();
        let (mut chunks_seen, mut window_max, mut restarted) = (0, 0, false);
        for _ in 0..2_000 {
            for replica in cluster.replicas.iter_mut().flatten() {
                replica.on_tick();
            }
            // A few messages a tick: the transfer spans many ticks.
            deliver_some(&mut cluster, 6, |envelope, to| {
                let Message::NewState(NewState {
                    payload: crate::message::StatePayload::Delta(_),
                    ..
                }) = &envelope.message
                else {
                    return false;
                };
                chunks_seen += 1;
                // The sixth chunk to the lagging replica is lost.
                to == 2 && chunks_seen == 6
            });
            for replica in cluster.replicas.iter().flatten() {
                for outgoing in replica.outgoing.values() {
                    assert!(outgoing.window_len() <= DELTA_WINDOW_CHUNKS);
                    window_max = window_max.max(outgoing.window_len());
                }
            }
            let received = cluster.replica(2).transfer.as_ref().map_or(0, |transfer| {
                transfer.cursor().offset / config.state_chunk_size_max as u64
            });
            if !restarted && received >= 20 {
                // The sender restarts from its disk in the middle of the transfer.
                restarted = true;
                let from = cluster.replica(2).transfer.as_ref().map(|t| t.cursor());
                assert!(from.is_some());
                let sender = usize::from(cluster.replica(2).state_request.as_ref().unwrap().to());
                let disk = cluster.disks[sender].clone();
                let sender_index = u8::try_from(sender).unwrap();
                cluster.replicas[sender] = Some(Replica::open(
                    config.clone(),
                    sender_index,
                    Sum::default(),
                    7,
                    &disk,
                ));
            }
            if cluster.replica(2).stats().state_transfers_delta > 0 && restarted {
                break;
            }
        }
        let marks = crate::coverage::take();
        let lagging = cluster.replica(2);
        assert!(
            restarted,
            "the transfer got far enough to restart its sender"
        );
        assert!(
            lagging.stats().state_transfers_delta >= 1,
            "{:?}",
            lagging.stats()
        );
        assert_eq!(
            lagging.client_table_digest(),
            cluster.replica(1).client_table_digest()
        );
        assert_eq!(window_max, DELTA_WINDOW_CHUNKS, "the window filled");
        assert!(chunks_seen > 40, "{chunks_seen} chunks");
        for mark in [
            Mark::DeltaWindowAdvanced,
            Mark::DeltaWindowFull,
            Mark::DeltaTransferResumed,
            Mark::DeltaSenderStartsAnew,
            Mark::DeltaTransferRestarted,
        ] {
            assert!(marks.get(mark) > 0, "{} never hit", mark.name());
        }
    }

    #[test]
    fn lagging_backup_catches_up_from_entries_while_peers_hold_them() {
        let mut cluster = Cluster::new(3);
        cluster.submit(register());
        cluster.isolated[2] = true;
        run_workload(&mut cluster, 2, 3);
        cluster.isolated[2] = false;
        cluster.tick(30);
        let lagging = cluster.replica(2);
        assert_eq!(lagging.state_machine().total, 3);
        assert_eq!(lagging.stats().state_transfers_delta, 0);
        assert!(lagging.stats().state_transfers >= 1);
    }
}

mod recovery {
    use super::*;

    #[test]
    fn replica_that_lost_its_state_recovers_before_voting() {
        let mut cluster = Cluster::new(3);
        cluster.submit(register());
        run_workload(&mut cluster, 2, 20);
        cluster.disks[2] = crate::command::DurableState::recovering();
        cluster.replicas[2] = Some(Replica::recover(config(3), 2, Sum::default(), 9));
        assert_eq!(cluster.replica(2).status_name(), "recovering");
        cluster.tick(50);
        let recovered = cluster.replica(2);
        assert_eq!(recovered.status_name(), "normal");
        assert_eq!(recovered.stats().recoveries, 1);
        assert_eq!(recovered.state_machine().total, 20);
        // And it votes again: with replica 1 gone, 0 and 2 still commit.
        cluster.replicas[1] = None;
        cluster.isolated[1] = true;
        run_workload(&mut cluster, 22, 2);
        assert_eq!(cluster.replica(0).state_machine().total, 22);
    }

    #[test]
    fn damaged_log_repairs_through_recovery_before_voting() {
        let mut cluster = Cluster::new(3);
        cluster.submit(register());
        run_workload(&mut cluster, 2, 10);
        // Storage found a corrupt entry in the middle of replica 2's log: it hands over only the
        // entries before it, flagged as damaged.
        let mut disk = cluster.disks[2].clone();
        let damaged_at = disk.entries.len() / 2;
        disk.entries.truncate(damaged_at);
        disk.damaged = true;
        cluster.disks[2] = disk.clone();
        let mut damaged = Replica::open(config(3), 2, Sum::default(), 5, &disk);
        assert_eq!(damaged.status_name(), "recovering");
        let commands = drain(&mut damaged);
        assert!(
            matches!(&commands[0], Command::Persist { write: Write::ViewState(state), .. } if state.recovering)
        );
        assert_eq!(sends(&commands), vec![(0, "recovery"), (1, "recovery")]);
        cluster.replicas[2] = Some(damaged);
        // The commands above were inspected, not delivered: the recovery retry resends.
        cluster.tick(250);
        let repaired = cluster.replica(2);
        assert_eq!(repaired.status_name(), "normal");
        assert_eq!(repaired.state_machine().total, 10);
        assert!(!cluster.disks[2].view_state.recovering);
    }

    /// Found by the real-process damage tests: a recovering replica asked for entries after
    /// its commit number, which does not move while recovering, so once it was more than one
    /// new_state of entries behind it asked for the same first batch forever.
    #[test]
    fn recovery_fetches_more_entries_than_one_new_state_holds() {
        let mut config = config(3);
        config.log_retained_max = 4096;
        config.checkpoint_interval = 4096;
        let mut cluster = Cluster::with_config(config.clone());
        cluster.submit(register());
        run_workload(&mut cluster, 2, 600);
        cluster.disks[2] = crate::command::DurableState::recovering();
        cluster.replicas[2] = Some(Replica::recover(config, 2, Sum::default(), 9));
        cluster.tick(100);
        let recovered = cluster.replica(2);
        assert_eq!(recovered.status_name(), "normal");
        assert_eq!(recovered.state_machine().total, 600);
        assert_eq!(
            recovered.stats().state_transfers_delta,
            0,
            "entries, not a delta"
        );
    }

    /// Found by the real-process damage tests: a log cut short (and its header copies with
    /// it) looked like a torn tail. A durable commit number beyond the last op proves the loss.
    #[test]
    fn a_commit_number_beyond_the_log_means_damage() {
        let mut cluster = Cluster::new(3);
        cluster.submit(register());
        run_workload(&mut cluster, 2, 3);
        let mut disk = cluster.disks[1].clone();
        disk.view_state.commit = disk.entries.back().expect("entries").op;
        disk.entries.pop_back();
        let replica = Replica::open(config(3), 1, Sum::default(), 5, &disk);
        assert_eq!(replica.status_name(), "recovering");
    }

    #[test]
    fn recovering_replica_ignores_normal_traffic() {
        let mut replica = Replica::recover(config(3), 2, Sum::default(), 9);
        let commands = drain(&mut replica);
        assert_eq!(sends(&commands), vec![(0, "recovery"), (1, "recovery")]);
        replica.deliver(from_replica(
            0,
            Message::Commit(Commit {
                view: View(0),
                commit: Op(5),
                round: 0,
            }),
        ));
        replica.deliver(from_replica(
            0,
            Message::StartViewChange(StartViewChange { view: View(3) }),
        ));
        assert!(drain(&mut replica).is_empty());
        assert_eq!(replica.status_name(), "recovering");
    }
}

/// Regressions for bugs the simulator found, as explicit message schedules (seeds change
/// meaning when the code changes; these do not).
mod regressions {
    use super::*;

    /// Registers a client and prepares `count` more ops on `primary`; returns the entries.
    fn prepare_ops(primary: &mut Replica<Sum>, count: u64) -> Vec<Entry> {
        let mut entries = Vec::new();
        for client in 1..=count as u128 {
            let mut envelope = register();
            envelope.sender = Sender::Client(client);
            primary.deliver(envelope);
            entries.push(prepared_entry(&drain(primary)));
        }
        entries
    }

    fn deliver_prepares(backup: &mut Replica<Sum>, entries: &[Entry]) -> Vec<Command> {
        let mut commands = Vec::new();
        for entry in entries {
            let message = Message::Prepare(Prepare {
                view: View(0),
                commit: Op(0),
                entries: vec![entry.clone()],
                round: 0,
            });
            backup.deliver(from_replica(0, message));
            commands.extend(drain(backup));
        }
        commands.extend(persist_all(backup, &commands));
        commands
    }

    /// Seed 102151 (3 replicas): a backup voted for ops 1..=3 in view 0, moved to view 1, lost
    /// the start_view and learned of view 1 from a commit. It used to truncate its log to its
    /// commit number, forgetting ops it had voted for (committed with the old primary's vote),
    /// so a later view change without the old primary lost them.
    #[test]
    fn learning_of_a_view_keeps_the_voted_suffix() {
        let mut primary = replica(0, 3);
        let mut backup = replica(2, 3);
        let entries = prepare_ops(&mut primary, 3);
        let votes = deliver_prepares(&mut backup, &entries);
        assert_eq!(sends(&votes).last(), Some(&(0, "prepare_ok")));
        backup.deliver(from_replica(
            0,
            Message::StartViewChange(StartViewChange { view: View(1) }),
        ));
        let commands = drain(&mut backup);
        persist_all(&mut backup, &commands);
        assert_eq!(backup.status_name(), "view_change");
        // The start_view of view 1 is lost; a commit from its primary arrives instead.
        backup.deliver(from_replica(
            1,
            Message::Commit(Commit {
                view: View(1),
                commit: Op(0),
                round: 0,
            }),
        ));
        assert_eq!(backup.status_name(), "normal");
        assert_eq!(backup.op(), Op(3), "the voted suffix is kept");
        assert_eq!(
            backup.last_normal_view(),
            View(0),
            "view 1's log is not held yet"
        );
        assert_eq!(backup.op_verified(), Op(0));
        // It votes for nothing in view 1 until view 1's log verifies its suffix.
        let commands = drain(&mut backup);
        let commands = [commands.clone(), persist_all(&mut backup, &commands)].concat();
        assert!(
            !sends(&commands)
                .iter()
                .any(|(_, name)| *name == "prepare_ok")
        );
        assert!(sends(&commands).contains(&(1, "get_state")));
        // A view change now presents the whole voted suffix, with the old last normal view.
        backup.deliver(from_replica(
            0,
            Message::StartViewChange(StartViewChange { view: View(3) }),
        ));
        let commands = drain(&mut backup);
        let after = persist_all(&mut backup, &commands);
        let do_view_change = after.iter().find_map(|command| match command {
            Command::Send { to: 0, envelope } => match &envelope.message {
                Message::DoViewChange(DoViewChange {
                    last_normal_view,
                    op,
                    entries,
                    ..
                }) => Some((*last_normal_view, *op, entries.len())),
                _ => None,
            },
            _ => None,
        });
        assert_eq!(do_view_change, Some((View(0), Op(3), 3)));
    }

    /// Seed 109874 (3 replicas): a backup with a stale suffix (ops 2..=3 of view 0, never
    /// committed) installs a start_view whose log ends at op 1. It used to claim the new view as
    /// its last normal view while keeping the stale suffix, so its next do_view_change presented
    /// view 0's uncommitted ops as the new view's log.
    #[test]
    fn completing_a_view_drops_the_unverified_suffix() {
        let mut primary = replica(0, 3);
        let mut backup = replica(2, 3);
        let entries = prepare_ops(&mut primary, 3);
        deliver_prepares(&mut backup, &entries);
        backup.deliver(from_replica(
            0,
            Message::Commit(Commit {
                view: View(0),
                commit: Op(1),
                round: 0,
            }),
        ));
        assert_eq!(backup.commit(), Op(1));
        // View 1 started with only op 1 (ops 2 and 3 were not in its quorum's logs).
        let start_view = Message::StartView(StartView {
            view: View(1),
            op: Op(1),
            commit: Op(1),
            entries: Vec::new(),
        });
        backup.deliver(from_replica(1, start_view));
        drain(&mut backup);
        assert_eq!(backup.last_normal_view(), View(1));
        assert_eq!(backup.op(), Op(1), "ops 2..=3 are not view 1's log");
    }

    /// Seed 1574 (5 replicas): a backup normal in view 0 asked a replica of view 1 for state
    /// and merged view 1's committed op 2 as verified, while view 0's (isolated) primary held
    /// its own op 2 there: the backup's log of view 0 was no longer view 0's log. A replica
    /// normal in an older view ignores a later view's new_state and takes that view's log from
    /// its primary once it learns of the view.
    #[test]
    fn a_new_state_from_a_later_view_is_not_this_views_log() {
        let mut primary = replica(0, 5);
        let mut backup = replica(4, 5);
        let entries = prepare_ops(&mut primary, 2);
        deliver_prepares(&mut backup, &entries[..1]);
        // View 1 (replicas 1..=3) committed another op 2.
        let op2_view1 = Entry {
            op: Op(2),
            view: View(1),
            parent: entries[0].checksum,
            client: 0,
            session: 0,
            request: 0,
            operation: Operation::Noop,
            body: Bytes::new(),
            checksum: EntryChecksum(0),
        }
        .sealed();
        let new_state = |normal| {
            Message::NewState(NewState {
                view: View(1),
                op: Op(2),
                commit: Op(2),
                normal,
                payload: crate::message::StatePayload::Entries(vec![
                    entries[0].clone(),
                    op2_view1.clone(),
                ]),
            })
        };
        backup.deliver(from_replica(2, new_state(false)));
        drain(&mut backup);
        assert_eq!((backup.view(), backup.op_verified()), (View(0), Op(1)));
        assert_eq!(backup.op(), Op(1), "view 1's op 2 is not view 0's log");
        // The primary of view 1 tells it of view 1; its log then follows view 1's.
        backup.deliver(from_replica(
            1,
            Message::Commit(Commit {
                view: View(1),
                commit: Op(2),
                round: 0,
            }),
        ));
        assert!(sends(&drain(&mut backup)).contains(&(1, "get_state")));
        backup.deliver(from_replica(1, new_state(true)));
        let commands = drain(&mut backup);
        persist_all(&mut backup, &commands);
        assert_eq!((backup.view(), backup.op_verified()), (View(1), Op(2)));
        assert_eq!(
            backup.entry(Op(2)).map(|entry| entry.checksum),
            Some(op2_view1.checksum)
        );
    }

    /// Seed 4218 (5 replicas): a new primary inherited an op that the old view had committed
    /// without telling the new view's quorum. The backups that had executed it did not vote
    /// for ops at or below their commit number, so the new primary never committed it.
    #[test]
    fn backups_vote_for_ops_they_already_executed() {
        let mut primary = replica(0, 3);
        let mut backup = replica(2, 3);
        let entries = prepare_ops(&mut primary, 3);
        deliver_prepares(&mut backup, &entries);
        backup.deliver(from_replica(
            0,
            Message::Commit(Commit {
                view: View(0),
                commit: Op(3),
                round: 0,
            }),
        ));
        assert_eq!(backup.commit(), Op(3));
        drain(&mut backup);
        let retry = Message::Prepare(Prepare {
            view: View(0),
            commit: Op(0),
            entries: vec![entries[2].clone()],
            round: 0,
        });
        backup.deliver(from_replica(0, retry));
        let commands = drain(&mut backup);
        let after = persist_all(&mut backup, &commands);
        assert_eq!(sends(&[commands, after].concat()), vec![(0, "prepare_ok")]);
    }

    /// Seed 102151 after the first fix: a backup that learned of a view from a commit and
    /// already held the primary's whole log asked for state, and the primary, having nothing to
    /// send, stayed silent, so the backup never voted again.
    #[test]
    fn primary_answers_an_up_to_date_get_state() {
        let mut primary = replica(0, 3);
        primary.deliver(from_replica(
            1,
            Message::GetState(GetState {
                view: View(0),
                op: Op(0),
                commit: Op(0),
                cursor: None,
            }),
        ));
        let commands = drain(&mut primary);
        assert!(matches!(&commands[..], [Command::Send { to: 1, envelope }]
            if matches!(&envelope.message, Message::NewState(NewState { normal: true, op: Op(0), .. }))));
    }

    /// Seed 2993 (3 replicas): the primary of view 0 committed op 1 with one backup's vote; the
    /// primary of view 1 took op 1 into its view uncommitted and then heard none of its
    /// backups. The old primary, a backup of view 1 that already knew op 1 committed, saw
    /// nothing pending past its own commit number and stayed with a primary whose heartbeats
    /// kept announcing commit 0 while a client waited.
    #[test]
    fn backup_leaves_a_primary_that_never_commits_what_the_backup_knows_committed() {
        let mut backup = replica(0, 3);
        backup.deliver(register());
        let commands = drain(&mut backup);
        let entry = prepared_entry(&commands);
        let _ = persist_all(&mut backup, &commands);
        let ok = Message::PrepareOk(PrepareOk {
            view: View(0),
            op: Op(1),
            checksum: entry.checksum,
        });
        backup.deliver(from_replica(1, ok));
        let _ = drain(&mut backup);
        assert_eq!(backup.commit(), Op(1));
        let start_view = Message::StartView(StartView {
            view: View(1),
            op: Op(1),
            commit: Op(0),
            entries: vec![entry],
        });
        backup.deliver(from_replica(1, start_view));
        let commands = drain(&mut backup);
        let _ = persist_all(&mut backup, &commands);
        assert_eq!((backup.view(), backup.status_name()), (View(1), "normal"));
        assert_eq!((backup.op_verified(), backup.commit()), (Op(1), Op(1)));
        let ticks = backup.config.view_change_timeout_ticks * 3;
        heartbeats(&mut backup, 1, Op(0), ticks);
        assert_eq!(
            backup.view(),
            View(2),
            "the backup stayed with a stalled primary"
        );
        assert_eq!(backup.stats().primary_stalls, 1);
    }

    /// Every do_view_change in `commands`: (to, op, entries carried).
    fn do_view_changes(commands: &[Command]) -> Vec<(u8, Op, usize)> {
        commands
            .iter()
            .filter_map(|command| match command {
                Command::Send { to, envelope } => match &envelope.message {
                    Message::DoViewChange(DoViewChange { op, entries, .. }) => {
                        Some((*to, *op, entries.len()))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The primary of view 0 (of 5) with ops 1..=3 appended and durable, none committed, moves
    /// to view 1 on two start_view_change votes. Its do_view_change for view 1 (carrying ops
    /// 1..=3) waits for its view state; returns the replica, its commands and the entries.
    fn old_primary_with_a_deferred_do_view_change() -> (Replica<Sum>, Vec<Command>, Vec<Entry>) {
        let mut old_primary = replica(0, 5);
        let entries = prepare_ops(&mut old_primary, 3);
        old_primary.on_persisted(3);
        drain(&mut old_primary);
        old_primary.deliver(from_replica(
            2,
            Message::StartViewChange(StartViewChange { view: View(1) }),
        ));
        old_primary.deliver(from_replica(
            3,
            Message::StartViewChange(StartViewChange { view: View(1) }),
        ));
        let commands = drain(&mut old_primary);
        assert_eq!(old_primary.status_name(), "view_change");
        assert_eq!(old_primary.view(), View(1));
        assert!(
            sends(&commands).is_empty(),
            "nothing leaves before the view state is durable"
        );
        (old_primary, commands, entries)
    }

    /// Found by the simulator (5 replicas): an old primary with an uncommitted op 23 built its
    /// do_view_change for the next view and deferred it until durable. The new primary's
    /// start_view, whose log ends at op 22, arrived first: the replica truncated op 23 and went
    /// normal. The durability report then released the stale do_view_change, vouching for an op
    /// the replica no longer held. Here op 3 plays op 23.
    #[test]
    fn a_do_view_change_deferred_past_the_start_view_is_dropped() {
        // Durable while still in the view change: the do_view_change leaves, with op 3.
        let (mut in_time, commands, _) = old_primary_with_a_deferred_do_view_change();
        let after = persist_all(&mut in_time, &commands);
        assert_eq!(in_time.status_name(), "view_change");
        assert_eq!(do_view_changes(&after), vec![(1, Op(3), 3)]);

        // The start_view of view 1 (log up to op 2) arrives before the durability report.
        let (mut overtaken, commands, entries) = old_primary_with_a_deferred_do_view_change();
        let start_view = Message::StartView(StartView {
            view: View(1),
            op: Op(2),
            commit: Op(0),
            entries: entries[..2].to_vec(),
        });
        overtaken.deliver(from_replica(1, start_view));
        let start_view_commands = drain(&mut overtaken);
        assert_eq!(overtaken.status_name(), "normal");
        assert_eq!(overtaken.last_normal_view(), View(1));
        assert_eq!(overtaken.op(), Op(2), "op 3 is not view 1's log");
        assert!(start_view_commands.iter().any(|command| matches!(
            command,
            Command::Persist {
                write: Write::Truncate { op: Op(2) },
                ..
            }
        )));
        let commands = [commands, start_view_commands].concat();
        let after = persist_all(&mut overtaken, &commands);
        assert!(
            sends(&after).contains(&(1, "prepare_ok")),
            "the durability report released the deferred actions"
        );
        assert_eq!(
            do_view_changes(&after),
            vec![],
            "a do_view_change for op 3, which the replica no longer holds"
        );
    }

    /// Seed 363 (3 replicas): view 0's primary, cut off with an uncommitted op 15, learned of
    /// view 1 from a commit and asked for state, then joined the view change to view 2 and
    /// deferred its do_view_change (carrying its op 15) until its view state was durable. The
    /// new_state answering its get_state arrived first with the ops view 1 had committed: view
    /// 1's op 15 replaced its own (a truncate, then appends). One durability report covered the
    /// view state and those writes, and released the do_view_change vouching for an op 15 its
    /// disk no longer held. Here op 2 plays op 15: that message is dropped, and one built from
    /// the log as it is now leaves instead.
    #[test]
    fn a_do_view_change_whose_log_a_new_state_replaced_is_rebuilt() {
        let mut old_primary = replica(0, 3);
        let entries = prepare_ops(&mut old_primary, 3);
        old_primary.on_persisted(3);
        drain(&mut old_primary);
        old_primary.deliver(from_replica(
            1,
            Message::Commit(Commit {
                view: View(1),
                commit: Op(1),
                round: 0,
            }),
        ));
        let mut commands = drain(&mut old_primary);
        assert!(sends(&commands).contains(&(1, "get_state")));
        old_primary.deliver(from_replica(
            1,
            Message::StartViewChange(StartViewChange { view: View(2) }),
        ));
        commands.extend(drain(&mut old_primary));
        assert_eq!(
            (old_primary.view(), old_primary.status_name()),
            (View(2), "view_change")
        );
        // View 1 committed ops 1..=3, its own ops 2 and 3 in place of the old primary's.
        let op2 = review::noop(Op(2), View(1), entries[0].checksum);
        let op3 = review::noop(Op(3), View(1), op2.checksum);
        old_primary.deliver(from_replica(
            1,
            Message::NewState(NewState {
                view: View(2),
                op: Op(3),
                commit: Op(3),
                normal: false,
                payload: crate::message::StatePayload::Entries(vec![
                    entries[0].clone(),
                    op2.clone(),
                    op3.clone(),
                ]),
            }),
        ));
        let new_state_commands = drain(&mut old_primary);
        assert!(new_state_commands.iter().any(|command| matches!(
            command,
            Command::Persist {
                write: Write::Truncate { op: Op(1) },
                ..
            }
        )));
        assert_eq!(old_primary.status_name(), "view_change");
        assert_eq!(
            old_primary.entry(Op(3)).map(|entry| entry.checksum),
            Some(op3.checksum)
        );
        let commands = [commands, new_state_commands].concat();
        let after = persist_all(&mut old_primary, &commands);
        assert!(
            sends(&after).contains(&(2, "start_view_change")),
            "the durability report released the deferred actions"
        );
        assert_eq!(
            do_view_changes(&after),
            vec![(2, Op(3), 0)],
            "only a do_view_change of the log as it is now: ops 1..=3 committed, none carried"
        );
    }
}

/// Regressions for the core review's findings, as explicit schedules.
mod review {
    use super::*;
    use crate::command::{DurableState, ViewState};

    /// A noop entry of `view` at `op`, chained on `parent`.
    pub(super) fn noop(op: Op, view: View, parent: EntryChecksum) -> Entry {
        Entry {
            op,
            view,
            parent,
            client: 0,
            session: 0,
            request: 0,
            operation: Operation::Noop,
            body: Bytes::new(),
            checksum: EntryChecksum(0),
        }
        .sealed()
    }

    fn disk(view_state: ViewState, entries: &[&Entry]) -> DurableState {
        let mut disk = DurableState {
            view_state,
            ..DurableState::default()
        };
        disk.entries
            .extend(entries.iter().map(|entry| (*entry).clone()));
        disk
    }

    fn settle(replica: &mut Replica<Sum>) -> Vec<Command> {
        let commands = drain(replica);
        let after = persist_all(replica, &commands);
        [commands, after].concat()
    }

    /// A damaged log can hold an entry a lost truncate had removed (op 3 of view 1, replaced
    /// by the committed op 3 of view 2 whose records rotted), under a durable commit number that
    /// covers the op: executing it would diverge. A damaged replica executes nothing of its log.
    #[test]
    fn a_damaged_log_is_not_executed_under_its_commit_number() {
        let e1 = noop(Op(1), View(0), EntryChecksum(0));
        let e2 = noop(Op(2), View(0), e1.checksum);
        let stale3 = noop(Op(3), View(1), e2.checksum);
        let view_state = ViewState {
            view: View(2),
            last_normal_view: View(2),
            commit: Op(3),
            recovering: false,
        };
        let mut damaged = disk(view_state, &[&e1, &e2, &stale3]);
        damaged.damaged = true;
        let replica = Replica::open(config(3), 1, Sum::default(), 5, &damaged);
        assert_eq!(replica.commit(), Op(0), "nothing executed before recovery");
        assert_eq!(replica.status_name(), "recovering");
        // The same log, whole: the commit number is trusted.
        damaged.damaged = false;
        let replica = Replica::open(config(3), 1, Sum::default(), 5, &damaged);
        assert_eq!(replica.commit(), Op(3));
    }

    /// A damaged replica kept ops 4..=5 of view 1 (never committed) past the primary's log when
    /// it finished recovery, claimed view 2 with them, and its do_view_change for view 3 beat
    /// the log holding the committed op 4 of view 2.
    #[test]
    fn a_recovered_replica_drops_the_tail_past_the_primarys_log() {
        let e1 = noop(Op(1), View(0), EntryChecksum(0));
        let e2 = noop(Op(2), View(0), e1.checksum);
        let e3 = noop(Op(3), View(0), e2.checksum);
        let stale4 = noop(Op(4), View(1), e3.checksum);
        let stale5 = noop(Op(5), View(1), stale4.checksum);
        let committed4 = noop(Op(4), View(2), e3.checksum);
        let view_state = ViewState {
            view: View(1),
            last_normal_view: View(1),
            commit: Op(0),
            recovering: false,
        };
        let mut damaged = disk(view_state, &[&e1, &e2, &e3, &stale4, &stale5]);
        damaged.damaged = true;
        let mut replica = Replica::open(config(3), 1, Sum::default(), 5, &damaged);
        let nonce = recovery_nonce(&settle(&mut replica));
        let response = |primary| {
            Message::RecoveryResponse(RecoveryResponse {
                view: View(2),
                nonce,
                op: Op(3),
                commit: Op(3),
                primary,
            })
        };
        replica.deliver(from_replica(0, response(false)));
        replica.deliver(from_replica(2, response(true)));
        settle(&mut replica);
        let payload =
            crate::message::StatePayload::Entries(vec![e1.clone(), e2.clone(), e3.clone()]);
        let new_state = Message::NewState(NewState {
            view: View(2),
            op: Op(3),
            commit: Op(3),
            normal: true,
            payload,
        });
        replica.deliver(from_replica(2, new_state));
        settle(&mut replica);
        assert_eq!(replica.status_name(), "normal");
        assert_eq!(replica.op(), Op(3), "view 1's ops 4..=5 are gone");
        // The view change to 3 now keeps the committed op 4 of view 2.
        replica.deliver(from_replica(
            2,
            Message::StartViewChange(StartViewChange { view: View(3) }),
        ));
        let do_view_change = settle(&mut replica)
            .into_iter()
            .find_map(|command| match command {
                Command::Send { to: 0, envelope } => {
                    matches!(envelope.message, Message::DoViewChange(_)).then_some(envelope.message)
                }
                _ => None,
            })
            .expect("a do_view_change");
        let view_state = ViewState {
            view: View(2),
            last_normal_view: View(2),
            commit: Op(3),
            recovering: false,
        };
        let mut primary = Replica::open(
            config(3),
            0,
            Sum::default(),
            6,
            &disk(view_state, &[&e1, &e2, &e3, &committed4]),
        );
        settle(&mut primary);
        primary.deliver(from_replica(
            1,
            Message::StartViewChange(StartViewChange { view: View(3) }),
        ));
        settle(&mut primary);
        primary.deliver(from_replica(1, do_view_change));
        settle(&mut primary);
        assert_eq!(primary.status_name(), "normal");
        assert_eq!(
            primary.entry(Op(4)).map(|entry| entry.checksum),
            Some(committed4.checksum)
        );
    }

    /// A crash after a delta's checkpoint was durable and before the truncate that dropped
    /// entries not continuing its chain left a disk that panicked on every restart.
    #[test]
    fn a_crash_inside_a_delta_install_restarts() {
        let e1 = noop(Op(1), View(0), EntryChecksum(0));
        let stale2 = noop(Op(2), View(0), e1.checksum);
        let stale3 = noop(Op(3), View(0), stale2.checksum);
        let stale4 = noop(Op(4), View(0), stale3.checksum);
        let c2 = noop(Op(2), View(1), e1.checksum);
        let c3 = noop(Op(3), View(1), c2.checksum);
        let view_state = ViewState {
            view: View(1),
            last_normal_view: View(1),
            commit: Op(1),
            recovering: false,
        };
        let on_disk = disk(view_state, &[&e1, &stale2, &stale3, &stale4]);
        let mut replica = Replica::open(config(3), 2, Sum::default(), 5, &on_disk);
        settle(&mut replica);
        let mut snapshot = Vec::new();
        snapshot.extend_from_slice(&4u32.to_le_bytes());
        snapshot.extend_from_slice(&0u32.to_le_bytes());
        0u64.encode(&mut snapshot);
        let payload = crate::message::StatePayload::Delta(Box::new(crate::message::DeltaChunk {
            target: crate::message::DeltaTarget {
                transfer: 1,
                op: Op(3),
                op_checksum: c3.checksum,
                since: Op(1),
            },
            offset: 0,
            end: Some(crate::message::DeltaEnd {
                size: snapshot.len() as u64,
                checksum: crate::checksum::checksum(&snapshot),
            }),
            chunk: Bytes::from(snapshot),
        }));
        let new_state = Message::NewState(NewState {
            view: View(1),
            op: Op(3),
            commit: Op(3),
            normal: false,
            payload,
        });
        replica.deliver(from_replica(1, new_state));
        let commands = drain(&mut replica);
        assert_eq!(replica.commit(), Op(3));
        // Crash after each prefix of the writes: every restart must work.
        let writes: Vec<&Write> = commands
            .iter()
            .filter_map(|command| match command {
                Command::Persist { write, .. } => Some(write),
                _ => None,
            })
            .collect();
        for kept in 0..=writes.len() {
            let mut crashed = on_disk.clone();
            writes[..kept].iter().for_each(|write| crashed.apply(write));
            let restarted = Replica::open(config(3), 2, Sum::default(), 5, &crashed);
            assert!(restarted.commit() >= Op(1));
        }
    }

    /// A new primary truncated its log to its commit number and appended the chosen suffix
    /// again, even where it already held it: a crash after the truncate lost entries it voted
    /// for, with nothing to show for it.
    #[test]
    fn a_new_primary_keeps_the_entries_it_holds() {
        let e1 = noop(Op(1), View(0), EntryChecksum(0));
        let e2 = noop(Op(2), View(0), e1.checksum);
        let e3 = noop(Op(3), View(0), e2.checksum);
        let view_state = ViewState {
            view: View(0),
            last_normal_view: View(0),
            commit: Op(1),
            recovering: false,
        };
        let mut replica = Replica::open(
            config(3),
            1,
            Sum::default(),
            5,
            &disk(view_state, &[&e1, &e2, &e3]),
        );
        settle(&mut replica);
        replica.deliver(from_replica(
            2,
            Message::StartViewChange(StartViewChange { view: View(1) }),
        ));
        settle(&mut replica);
        let do_view_change = Message::DoViewChange(DoViewChange {
            view: View(1),
            last_normal_view: View(0),
            op: Op(1),
            commit: Op(1),
            entries: vec![],
        });
        replica.deliver(from_replica(2, do_view_change));
        let commands = settle(&mut replica);
        assert_eq!(replica.status_name(), "normal");
        assert_eq!(replica.op(), Op(3));
        assert!(
            !commands.iter().any(|command| matches!(
                command,
                Command::Persist {
                    write: Write::Truncate { .. },
                    ..
                }
            )),
            "nothing it holds is truncated"
        );
    }

    /// Numbers near `u64::MAX` from a peer overflowed `+ 1`: they are dropped now.
    #[test]
    fn huge_numbers_from_a_peer_are_dropped() {
        let mut replica = replica(1, 3);
        let do_view_change = Message::DoViewChange(DoViewChange {
            view: View(1),
            last_normal_view: View(0),
            op: Op(u64::MAX),
            commit: Op(u64::MAX),
            entries: vec![],
        });
        let start_view_change = Message::StartViewChange(StartViewChange {
            view: View(u64::MAX),
        });
        for message in [do_view_change, start_view_change] {
            let name = message.name();
            let result = replica.offer(&from_replica(2, message));
            assert_eq!(result, Err(DecodeError::OutOfBounds), "{name}");
        }
        for _ in 0..1000 {
            replica.on_tick();
            drain(&mut replica);
        }
        assert!(replica.view() < View(1 << 62));
    }

    /// Normal-operation messages count only from the view's primary.
    #[test]
    fn a_prepare_from_a_backup_is_dropped() {
        let mut replica = replica(1, 3);
        let entry = noop(Op(1), View(0), EntryChecksum(0));
        let result = replica.offer(&from_replica(
            2,
            Message::Prepare(Prepare {
                view: View(0),
                commit: Op(0),
                entries: vec![entry],
                round: 0,
            }),
        ));
        assert_eq!(
            result,
            Err(DecodeError::NotFromPrimary {
                sender: 2,
                view: View(0),
                name: "prepare"
            })
        );
        assert_eq!(replica.op(), Op(0));
    }
}

/// `Replica::invariants` catches a replica whose own state is inconsistent.
mod invariants {
    use super::*;

    fn violated(break_it: impl FnOnce(&mut Replica<Sum>)) -> bool {
        let mut replica = replica(0, 3);
        replica.deliver(register());
        let commands = drain(&mut replica);
        persist_all(&mut replica, &commands);
        replica.invariants();
        break_it(&mut replica);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replica.invariants())).is_err()
    }

    #[test]
    fn each_broken_fact_is_caught() {
        assert!(violated(|replica| replica.commit = replica.log.op() + 1));
        assert!(violated(
            |replica| replica.last_normal_view = replica.view.next()
        ));
        assert!(violated(
            |replica| replica.op_verified = replica.log.op() + 1
        ));
        assert!(violated(|replica| replica.seq_durable = replica.seq_next));
        assert!(violated(|replica| replica.view = View(1))); // primary of a view it does not lead
        assert!(violated(|replica| replica
            .status
            .pipeline()
            .vote(2, Op(99))));
    }
}

mod bounds;
mod reads;

/// The nonce of the recovery message among `commands`.
fn recovery_nonce(commands: &[Command]) -> u64 {
    commands
        .iter()
        .find_map(|command| match command {
            Command::Send { envelope, .. } => match envelope.message {
                Message::Recovery(Recovery { nonce }) => Some(nonce),
                _ => None,
            },
            _ => None,
        })
        .expect("a recovery message")
}

/// A snapshot at the commit number, opened as a new replica's only durable state (what
/// `vsr restore` writes), comes back with the same state and client table, and the log goes
/// on from the op after it.
#[test]
fn a_snapshot_at_commit_restores_state_client_table_and_the_hash_chain() {
    let mut primary = Replica::new(config(1), 0, Sum::default(), 1);
    let mut envelopes = vec![register()];
    envelopes.extend((2..=9).map(|number| add(number, 1, number)));
    for envelope in envelopes {
        primary.deliver(envelope);
        let commands = drain(&mut primary);
        persist_all(&mut primary, &commands);
    }
    let (view, checkpoint) = primary.snapshot_at_commit().expect("normal status");
    assert_eq!(checkpoint.op, primary.commit());
    assert_eq!(checkpoint.since, Op(0));
    let durable = DurableState::restored(view, checkpoint.clone());
    let mut restored = Replica::open(config(1), 0, Sum::default(), 2, &durable);
    // A restarted primary moves to the next view; alone, it completes it once durable.
    let commands = drain(&mut restored);
    persist_all(&mut restored, &commands);
    assert_eq!(restored.commit(), primary.commit());
    assert_eq!(
        restored.state_machine().digest(),
        primary.state_machine().digest()
    );
    assert_eq!(
        restored.client_table_digest(),
        primary.client_table_digest()
    );
    // The client table came along: a resent request gets its reply again, not a second run.
    let resent = add(9, 1, 9);
    restored.deliver(resent);
    let cached = replies(&drain(&mut restored));
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(cached[0].0, checkpoint.op);
    // The next op chains onto the checkpoint's entry (the view is the restored one's).
    restored.deliver(add(10, 1, 10));
    let commands = drain(&mut restored);
    let entry = prepared_entry(&commands);
    assert_eq!(entry.op, checkpoint.op + 1);
    assert_eq!(entry.parent, checkpoint.op_checksum);
}

#[test]
fn no_snapshot_at_commit_outside_normal_status() {
    let mut backup = replica(1, 3);
    for _ in 0..1000 {
        backup.on_tick();
        if !matches!(backup.status(), Status::Normal(_)) {
            break;
        }
    }
    drain(&mut backup);
    assert!(!matches!(backup.status(), Status::Normal(_)));
    assert!(backup.snapshot_at_commit().is_none());
}

/// A snapshot for a backup is a read: the primary hands it over only once a quorum confirmed
/// its view after the request, at its commit number; a primary cut off from its backups hands
/// over nothing, and a backup replica refuses the request.
#[test]
fn a_snapshot_request_is_answered_as_a_read() {
    let mut cluster = Cluster::new(3);
    cluster.submit(register());
    for number in 2..=5 {
        cluster.submit(add(number, 1, number));
    }
    let primary = cluster.primary();
    let backup = (primary + 1) % 3;
    assert!(
        !cluster.replicas[backup]
            .as_mut()
            .unwrap()
            .request_snapshot(7, 1)
    );
    cluster.isolated[primary] = true;
    assert!(
        cluster.replicas[primary]
            .as_mut()
            .unwrap()
            .request_snapshot(7, 2)
    );
    cluster.settle();
    assert!(cluster.snapshots.is_empty(), "no quorum confirmed the view");
    cluster.isolated[primary] = false;
    cluster.tick(20);
    let commit = cluster.replica(primary).commit();
    assert_eq!(cluster.snapshots.len(), 1, "{:?}", cluster.snapshots.len());
    let (request, view, checkpoint) = cluster.snapshots[0].clone();
    assert_eq!(request, 2);
    assert_eq!(view, cluster.replica(primary).view());
    assert_eq!(checkpoint.op, commit);
    assert_eq!(checkpoint.since, Op(0));
}
