//! A sans-IO client: session registration, request numbers, primary discovery and retries.
//!
//! The client has at most one request in flight, as VR requires. Before its first request it
//! registers a session through the log. It sends to the replica it believes is primary; on a
//! timeout it sends to every replica (only the primary acts on a request) and backs off. Replies
//! teach it the view, hence the primary: a replica that is not the primary answers with its
//! view, and the client resends at once to the primary that view names.
//!
//! A query ([`Client::query`]) reads without the log: it needs no session, and since it
//! changes nothing it is resent as freely as any retry.

use std::collections::VecDeque;

use bytes::Bytes;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::message::{
    ClientId, Envelope, Message, Operation, Query, ReplicaIndex, Reply, ReplyResult, Request,
    Sender,
};
use crate::numbers::{Op, View};
use crate::wire::{Receiver, Verified};

/// What the client asks its driver to do or tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Send a message to a replica.
    Send {
        /// The replica.
        to: ReplicaIndex,
        /// The message.
        envelope: Envelope,
    },
    /// The submitted operation executed, at `op`, with this encoded result.
    Completed {
        /// The op at which it executed.
        op: Op,
        /// The encoded state machine result.
        result: Bytes,
    },
    /// The submitted query was answered from the state after op `commit`, with this encoded
    /// result.
    Answered {
        /// The commit number of the state that answered.
        commit: Op,
        /// The encoded state machine result.
        result: Bytes,
    },
    /// The session was evicted from the client table before the operation's outcome was known:
    /// the operation may or may not have executed. The next submit registers a new session.
    Evicted,
}

/// Retry timing of a client, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Ticks before the first retry.
    pub retry_ticks_min: u64,
    /// Largest backoff between retries.
    pub retry_ticks_max: u64,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self {
            retry_ticks_min: 20,
            retry_ticks_max: 200,
        }
    }
}

/// What a message in flight asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// Register a session.
    Register,
    /// Execute an operation through the log.
    Execute,
    /// Answer a query.
    Query,
}

#[derive(Clone, Debug)]
struct InFlight {
    request: u64,
    asked: Asked,
    body: Bytes,
    retry_at: u64,
    backoff: u64,
}

/// A VSR client session, driven by events.
#[derive(Debug)]
pub struct Client {
    cluster: u128,
    id: ClientId,
    replica_count: u8,
    timeouts: ClientTimeouts,
    prng: Xoshiro256PlusPlus,
    view: View,
    session: u64,
    request_next: u64,
    tick: u64,
    in_flight: Option<InFlight>,
    /// The operation waiting for registration to finish.
    queued: Option<Bytes>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// A client with identity `id` for a cluster of `replica_count` replicas; `seed` drives the
    /// retry jitter.
    #[must_use]
    pub fn new(cluster: u128, replica_count: u8, id: ClientId, seed: u64) -> Self {
        assert!(id != 0, "client id 0 is reserved");
        assert!(replica_count >= 1);
        Self {
            cluster,
            id,
            replica_count,
            timeouts: ClientTimeouts::default(),
            prng: Xoshiro256PlusPlus::seed_from_u64(seed),
            view: View(0),
            session: 0,
            request_next: 1,
            tick: 0,
            in_flight: None,
            queued: None,
            events: VecDeque::new(),
        }
    }

    /// Replaces the retry timing.
    pub fn set_timeouts(&mut self, timeouts: ClientTimeouts) {
        assert!(
            timeouts.retry_ticks_min >= 1 && timeouts.retry_ticks_max >= timeouts.retry_ticks_min
        );
        self.timeouts = timeouts;
    }

    /// The client's identity.
    #[must_use]
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The current session (0 before registration).
    #[must_use]
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Whether an operation is outstanding (submitted and not yet completed or evicted).
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.queued.is_some()
            || self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.asked != Asked::Register)
    }

    /// Submits an encoded state machine operation. Panics if one is already outstanding.
    pub fn submit(&mut self, body: Bytes) {
        assert!(
            !self.is_busy(),
            "a client has at most one request in flight"
        );
        if self.session == 0 {
            self.queued = Some(body);
            if self.in_flight.is_none() {
                self.send_new(Asked::Register, Bytes::new());
            }
        } else {
            self.send_new(Asked::Execute, body);
        }
    }

    /// Submits an encoded state machine query: answered by the primary from its state, with
    /// no log entry and no session. Panics if a request or query is already outstanding.
    pub fn query(&mut self, body: Bytes) {
        assert!(
            !self.is_busy(),
            "a client has at most one request in flight"
        );
        self.send_new(Asked::Query, body);
    }

    /// Gives up on the query in flight, if one is: it changed nothing, so the session stays
    /// usable and a late answer is ignored (its request number is never reused). A request in
    /// flight cannot be given up this way: its outcome decides what the session may do next.
    pub fn abandon_query(&mut self) {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|in_flight| in_flight.asked == Asked::Query)
        {
            self.in_flight = None;
        }
    }

    /// Takes the next event for the driver.
    pub fn poll(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Advances time by one tick; retries a request that timed out.
    pub fn on_tick(&mut self) {
        self.tick += 1;
        let Some(in_flight) = &self.in_flight else {
            return;
        };
        if self.tick < in_flight.retry_at {
            return;
        }
        let backoff = (in_flight.backoff * 2).min(self.timeouts.retry_ticks_max);
        let jitter = self.prng.next_u64() % (backoff / 2 + 1);
        let in_flight = self.in_flight.as_mut().expect("checked above");
        in_flight.backoff = backoff;
        in_flight.retry_at = self.tick + backoff + jitter;
        // The primary may have changed: ask everyone; only the primary acts on a request.
        for replica in 0..self.replica_count {
            self.send_in_flight(replica);
        }
    }

    /// What a driver decodes this client's frames for: [`crate::wire::decode`] with it admits
    /// only replies from this cluster's replicas.
    #[must_use]
    pub fn receiver(&self) -> Receiver {
        Receiver::client(self.cluster, self.replica_count)
    }

    /// Handles a reply decoded for [`Client::receiver`]. A reply to another session or another
    /// request is ignored, and so is a wrong-cluster reply: it tells the driver that the
    /// replica at that address serves another cluster, which no retry changes (the driver
    /// decides what to report).
    pub fn on_message(&mut self, verified: Verified) {
        let Message::Reply(Reply {
            client,
            view,
            op,
            request,
            result,
        }) = verified.into_envelope().message
        else {
            unreachable!("decoding for a client admits only replies");
        };
        if client != self.id {
            return; // Another session's reply, on a shared connection.
        }
        let Some(in_flight) = &self.in_flight else {
            return;
        };
        let expected = matches!(
            (in_flight.asked, &result),
            (Asked::Register, ReplyResult::Registered)
                | (Asked::Execute, ReplyResult::Executed(_))
                | (Asked::Query, ReplyResult::Answered(_))
                | (
                    Asked::Register | Asked::Execute,
                    ReplyResult::SessionEvicted
                )
                | (_, ReplyResult::NotPrimary)
        );
        // A reply to another request, or of the wrong kind (a faulty replica): keep waiting.
        if request != in_flight.request || !expected {
            return;
        }
        if result == ReplyResult::NotPrimary {
            // Only a newer view is news: resending on an older or equal one could bounce
            // between replicas; the retry timeout covers the rest.
            if view > self.view {
                self.view = view;
                let primary = self.view.primary(self.replica_count);
                self.send_in_flight(primary);
            }
            return;
        }
        self.view = self.view.max(view);
        self.in_flight = None;
        match result {
            ReplyResult::Registered => {
                // A session number is the op of its register entry.
                self.session = op.get();
                if let Some(body) = self.queued.take() {
                    self.send_new(Asked::Execute, body);
                }
            }
            ReplyResult::Executed(result) => {
                self.events.push_back(ClientEvent::Completed { op, result });
            }
            ReplyResult::Answered(result) => {
                self.events
                    .push_back(ClientEvent::Answered { commit: op, result });
            }
            ReplyResult::SessionEvicted => {
                self.session = 0;
                self.queued = None;
                self.events.push_back(ClientEvent::Evicted);
            }
            ReplyResult::NotPrimary => unreachable!("handled above"),
            ReplyResult::WrongCluster { .. } => unreachable!("never expected"),
        }
    }

    fn send_new(&mut self, asked: Asked, body: Bytes) {
        let request = self.request_next;
        self.request_next += 1;
        self.in_flight = Some(InFlight {
            request,
            asked,
            body,
            retry_at: self.tick + self.timeouts.retry_ticks_min,
            backoff: self.timeouts.retry_ticks_min,
        });
        let primary = self.view.primary(self.replica_count);
        self.send_in_flight(primary);
    }

    fn send_in_flight(&mut self, to: ReplicaIndex) {
        let in_flight = self.in_flight.as_ref().expect("a request is in flight");
        let (request, body) = (in_flight.request, in_flight.body.clone());
        let message = match in_flight.asked {
            Asked::Register => Message::Request(Request {
                session: 0,
                request,
                operation: Operation::Register,
                body,
            }),
            Asked::Execute => Message::Request(Request {
                session: self.session,
                request,
                operation: Operation::StateMachine,
                body,
            }),
            Asked::Query => Message::Query(Query { request, body }),
        };
        let envelope = Envelope {
            cluster: self.cluster,
            epoch: 0,
            sender: Sender::Client(self.id),
            message,
        };
        self.events.push_back(ClientEvent::Send { to, envelope });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    const CLUSTER: u128 = 3;

    /// The replicas each of the client's pending sends goes to.
    fn sent_to(client: &mut Client) -> Vec<ReplicaIndex> {
        let mut to = Vec::new();
        while let Some(event) = client.poll() {
            match event {
                ClientEvent::Send { to: replica, .. } => to.push(replica),
                other => panic!("unexpected {other:?}"),
            }
        }
        to
    }

    fn reply(client: &mut Client, from: ReplicaIndex, view: u64, result: ReplyResult) {
        let envelope = Envelope {
            cluster: CLUSTER,
            epoch: 0,
            sender: Sender::Replica(from),
            message: Message::Reply(Reply {
                client: client.id(),
                view: View(view),
                op: Op(0),
                request: 1,
                result,
            }),
        };
        let verified = wire::decode(&wire::encode(&envelope), &client.receiver()).unwrap();
        client.on_message(verified);
    }

    #[test]
    fn a_redirect_to_a_newer_view_goes_straight_to_its_primary() {
        let mut client = Client::new(CLUSTER, 3, 0xc1, 1);
        client.query(Bytes::from_static(b"q"));
        assert_eq!(sent_to(&mut client), vec![0]);
        reply(&mut client, 0, 2, ReplyResult::NotPrimary);
        assert_eq!(sent_to(&mut client), vec![2], "view 2's primary, at once");
        // The same view again, or an older one, is no news: no bouncing between replicas.
        reply(&mut client, 0, 2, ReplyResult::NotPrimary);
        reply(&mut client, 1, 1, ReplyResult::NotPrimary);
        assert!(sent_to(&mut client).is_empty());
        reply(
            &mut client,
            2,
            2,
            ReplyResult::Answered(Bytes::from_static(b"a")),
        );
        assert_eq!(
            client.poll(),
            Some(ClientEvent::Answered {
                commit: Op(0),
                result: Bytes::from_static(b"a")
            })
        );
        assert!(!client.is_busy());
    }

    #[test]
    fn a_wrong_cluster_reply_is_left_to_the_driver() {
        let mut client = Client::new(CLUSTER, 3, 0xc1, 1);
        client.query(Bytes::from_static(b"q"));
        assert_eq!(sent_to(&mut client), vec![0]);
        reply(&mut client, 0, 0, ReplyResult::WrongCluster { cluster: 4 });
        assert_eq!(client.poll(), None, "no event, no resend");
        assert!(
            client.is_busy(),
            "still in flight: the driver gives up on it"
        );
    }

    #[test]
    fn a_query_needs_no_session_and_can_be_abandoned() {
        let mut client = Client::new(CLUSTER, 3, 0xc1, 1);
        client.query(Bytes::from_static(b"q"));
        let Some(ClientEvent::Send { envelope, .. }) = client.poll() else {
            panic!("a send");
        };
        assert!(matches!(
            envelope.message,
            Message::Query(Query { request: 1, .. })
        ));
        assert!(client.is_busy());
        client.abandon_query();
        assert!(!client.is_busy());
        // A late answer to the abandoned query is ignored.
        reply(&mut client, 0, 0, ReplyResult::Answered(Bytes::new()));
        assert_eq!(client.poll(), None);
        client.submit(Bytes::from_static(b"w"));
        let _ = sent_to(&mut client);
        assert_eq!(client.session(), 0, "the request registers first");
    }
}
