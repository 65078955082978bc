//! The primary's pipeline: the prepares in flight, the votes for them, and the requests that
//! wait for room.
//!
//! A request that finds the pipeline full waits in the queue; when a prepare commits, the queue
//! leaves as one batch (bounded by count and bytes). Under load batches grow by themselves; a
//! lone request is prepared at once.
//!
//! Votes are kept per replica, not per op: a prepare_ok for op n says the sender durably holds
//! this view's log up to n (the hash chain makes the prefix match), so the op committed is the
//! quorum-th highest vote. Each step costs O(replicas), whatever the number of ops in flight.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::{BATCH_SIZE_MAX, REPLICAS_MAX};
use crate::message::{ClientId, Operation};
use crate::numbers::Op;
use crate::wire::ENTRIES_COUNT_SIZE;

/// The room left in one prepare: at most `batch_max` entries and [`BATCH_SIZE_MAX`] encoded
/// bytes. The first entry always fits (any operation fits in a batch on its own).
#[derive(Debug)]
pub(crate) struct Batch {
    count: u64,
    size: usize,
    count_max: u64,
}

impl Batch {
    pub(crate) fn new(count_max: u64) -> Self {
        Self {
            count: 0,
            size: ENTRIES_COUNT_SIZE,
            count_max,
        }
    }

    /// Counts an entry of `entry_size` encoded bytes in, if it fits.
    pub(crate) fn take(&mut self, entry_size: usize) -> bool {
        let full = self.count >= self.count_max
            || (self.count > 0 && self.size + entry_size > BATCH_SIZE_MAX);
        if !full {
            self.count += 1;
            self.size += entry_size;
        }
        !full
    }
}

/// A client request waiting for room in the pipeline.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) client: ClientId,
    pub(crate) session: u64,
    pub(crate) request: u64,
    pub(crate) operation: Operation,
    pub(crate) body: Bytes,
}

/// One prepare in flight: a range of consecutive ops sent together.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) first: Op,
    pub(crate) last: Op,
    pub(crate) sent_tick: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    /// Prepares in flight, in op order; their ranges are consecutive.
    prepares: VecDeque<InFlight>,
    /// Per replica, the highest op of this view's log it holds durably.
    votes: [Op; REPLICAS_MAX],
    /// Requests waiting for room.
    queue: VecDeque<Queued>,
    /// The request number each client has prepared or queued (at most one per session), so a
    /// resent request is recognized in O(log clients).
    clients: BTreeMap<ClientId, u64>,
}

impl Pipeline {
    /// Asserts prepares in flight are consecutive ranges within a log ending at `op`, and
    /// that no replica voted past it.
    pub(crate) fn assert_within(&self, replica_count: u8, op: Op) {
        let mut next = None;
        for prepare in &self.prepares {
            assert!(
                prepare.first <= prepare.last && prepare.last <= op,
                "prepare past the log"
            );
            assert!(
                next.is_none_or(|next| next == prepare.first),
                "prepares not consecutive"
            );
            next = Some(prepare.last.next());
        }
        let votes = &self.votes[..usize::from(replica_count)];
        assert!(votes.iter().all(|vote| *vote <= op), "a vote past the log");
        assert!(
            self.votes[usize::from(replica_count)..]
                .iter()
                .all(|vote| *vote == Op(0))
        );
    }

    pub(crate) fn prepares(&self) -> usize {
        self.prepares.len()
    }

    /// Whether `client`'s request `request` is prepared or queued.
    pub(crate) fn contains(&self, client: ClientId, request: u64) -> bool {
        self.clients.get(&client) == Some(&request)
    }

    /// Records a prepare of ops `first..=last`, sent at `tick`.
    pub(crate) fn push(&mut self, first: Op, last: Op, tick: u64) {
        assert!(first <= last);
        if let Some(previous) = self.prepares.back() {
            assert_eq!(
                previous.last.next(),
                first,
                "prepares in flight are consecutive"
            );
        }
        self.prepares.push_back(InFlight {
            first,
            last,
            sent_tick: tick,
        });
    }

    /// Marks `client`'s request as prepared or queued.
    pub(crate) fn track(&mut self, client: ClientId, request: u64) {
        self.clients.insert(client, request);
    }

    /// Forgets `client`'s request `request` once it committed.
    pub(crate) fn untrack(&mut self, client: ClientId, request: u64) {
        if self.clients.get(&client) == Some(&request) {
            self.clients.remove(&client);
        }
    }

    /// Replica `from` durably holds the view's log up to `op`.
    pub(crate) fn vote(&mut self, from: u8, op: Op) {
        let vote = &mut self.votes[usize::from(from)];
        *vote = (*vote).max(op);
    }

    /// The highest op at least `quorum` of `replica_count` replicas hold.
    pub(crate) fn quorum_op(&self, replica_count: u8, quorum: usize) -> Op {
        let mut votes = self.votes;
        let votes = &mut votes[..usize::from(replica_count)];
        votes.sort_unstable_by(|a, b| b.cmp(a));
        votes[quorum - 1]
    }

    /// Whether replica `to` has voted for every op up to `op`.
    pub(crate) fn has_voted(&self, to: u8, op: Op) -> bool {
        self.votes[usize::from(to)] >= op
    }

    /// Drops prepares whose every op is committed.
    pub(crate) fn pop_committed(&mut self, commit: Op) {
        while self
            .prepares
            .front()
            .is_some_and(|prepare| prepare.last <= commit)
        {
            self.prepares.pop_front();
        }
    }

    /// The prepares last sent at or before `sent_before`, as op ranges; they count as sent
    /// again at `tick`.
    pub(crate) fn take_due(&mut self, sent_before: u64, tick: u64) -> Vec<(Op, Op)> {
        let mut due = Vec::new();
        for prepare in &mut self.prepares {
            if prepare.sent_tick <= sent_before {
                prepare.sent_tick = tick;
                due.push((prepare.first, prepare.last));
            }
        }
        due
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn enqueue(&mut self, queued: Queued) {
        self.track(queued.client, queued.request);
        self.queue.push_back(queued);
    }

    pub(crate) fn queue_front(&self) -> Option<&Queued> {
        self.queue.front()
    }

    pub(crate) fn dequeue(&mut self) -> Option<Queued> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_op_is_the_quorum_th_highest_vote() {
        let mut pipeline = Pipeline::default();
        pipeline.vote(0, Op(9));
        pipeline.vote(1, Op(4));
        pipeline.vote(2, Op(7));
        assert_eq!(pipeline.quorum_op(3, 2), Op(7));
        assert_eq!(pipeline.quorum_op(3, 3), Op(4));
        pipeline.vote(2, Op(3)); // A stale vote never lowers one.
        assert_eq!(pipeline.quorum_op(3, 2), Op(7));
        assert_eq!(pipeline.quorum_op(5, 3), Op(4));
    }

    #[test]
    fn a_prepare_leaves_only_when_all_its_ops_committed() {
        let mut pipeline = Pipeline::default();
        pipeline.push(Op(1), Op(4), 0);
        pipeline.push(Op(5), Op(5), 0);
        pipeline.pop_committed(Op(3));
        assert_eq!(pipeline.prepares(), 2);
        pipeline.pop_committed(Op(4));
        assert_eq!(pipeline.prepares(), 1);
        assert_eq!(pipeline.take_due(0, 9), vec![(Op(5), Op(5))]);
        assert!(pipeline.take_due(0, 10).is_empty(), "sent again at tick 9");
    }

    #[test]
    fn a_request_is_tracked_until_it_commits() {
        let mut pipeline = Pipeline::default();
        pipeline.track(7, 1);
        assert!(pipeline.contains(7, 1));
        pipeline.untrack(7, 0); // An older request of the same client leaves it tracked.
        assert!(pipeline.contains(7, 1));
        pipeline.untrack(7, 1);
        assert!(!pipeline.contains(7, 1));
    }
}
