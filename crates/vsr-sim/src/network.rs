//! The simulated network: loss, duplication, corruption, latency (hence reordering), slow
//! links and partitions, symmetric or one-way; messages held back for seconds, and old messages
//! delivered again.
//!
//! Loss and corruption come as weather: a seed may switch them off and on again during the
//! fault phase, so that calm spells let the liveness monitor demand progress.
//!
//! Every message goes through the real wire codec: it is encoded when sent, travels as bytes
//! (a corrupted copy has one random bit flipped) and is decoded on delivery. An intact frame
//! must decode to exactly the envelope sent; a corrupted one must be rejected, and is dropped
//! and counted. Partitions and slow links apply between replicas; loss, duplication and
//! corruption apply to client traffic too.

use std::collections::VecDeque;

use vsr::{Commit, Envelope, Message, Op, Receiver, Sender, StartViewChange, View, wire};

use crate::random::Prng;
use crate::sim::{EventKind, Frame, Node, Simulator};
use crate::swarm::{FaultProfile, MS, SECOND};

/// Per-link and global network conditions, changed by the fault injector.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    replicas: usize,
    /// `blocked[from * replicas + to]`: messages from `from` to `to` are dropped.
    blocked: Vec<bool>,
    /// `slow[from * replicas + to]`: latency multiplier of the link.
    slow: Vec<u64>,
    pub(crate) loss_ppm: u32,
    pub(crate) duplicate_ppm: u32,
    pub(crate) corrupt_ppm: u32,
    /// Whether loss and corruption are on (the weather; see the module docs).
    pub(crate) stormy: bool,
    /// Per message between replicas: chance it is held back for seconds.
    pub(crate) hold_ppm: u32,
    /// Whether sent messages are remembered (for replays and stragglers).
    remember: bool,
    /// The last messages sent between replicas, oldest first, for replays.
    recent: VecDeque<Sent>,
}

/// A message between replicas, as sent.
#[derive(Clone, Debug)]
struct Sent {
    at: u64,
    from: u8,
    to: u8,
    envelope: Envelope,
}

/// Messages kept for replays.
const RECENT_MAX: usize = 256;

impl Network {
    pub(crate) fn new(profile: &FaultProfile, replicas: u8) -> Self {
        let replicas = usize::from(replicas);
        Self {
            replicas,
            blocked: vec![false; replicas * replicas],
            slow: vec![1; replicas * replicas],
            loss_ppm: profile.loss_ppm,
            duplicate_ppm: profile.duplicate_ppm,
            corrupt_ppm: profile.corrupt_ppm,
            stormy: true,
            hold_ppm: profile.hold_ppm,
            remember: profile.replay_ppm > 0 || profile.straggle_ppm > 0,
            recent: VecDeque::new(),
        }
    }

    /// Whether messages may be lost or corrupted now.
    pub(crate) fn lossy(&self) -> bool {
        self.stormy && (self.loss_ppm > 0 || self.corrupt_ppm > 0 || self.hold_ppm > 0)
    }

    /// Whether `from` can reach `to`.
    pub(crate) fn is_blocked(&self, from: u8, to: u8) -> bool {
        self.blocked[usize::from(from) * self.replicas + usize::from(to)]
    }

    pub(crate) fn block(&mut self, from: u8, to: u8) {
        self.blocked[usize::from(from) * self.replicas + usize::from(to)] = true;
    }

    pub(crate) fn clear_partitions(&mut self) {
        self.blocked.fill(false);
    }

    pub(crate) fn slow_factor(&self, from: u8, to: u8) -> u64 {
        self.slow[usize::from(from) * self.replicas + usize::from(to)]
    }

    pub(crate) fn set_slow_factor(&mut self, from: u8, to: u8, factor: u64) {
        self.slow[usize::from(from) * self.replicas + usize::from(to)] = factor;
    }

    /// No partitions, slow links, loss, duplication or corruption.
    pub(crate) fn heal(&mut self) {
        self.clear_partitions();
        self.slow.fill(1);
        self.loss_ppm = 0;
        self.duplicate_ppm = 0;
        self.corrupt_ppm = 0;
        self.hold_ppm = 0;
        self.remember = false;
        self.recent.clear();
    }
}

impl Network {
    fn remember(&mut self, at: u64, from: u8, to: u8, envelope: &Envelope) {
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(Sent {
            at,
            from,
            to,
            envelope: envelope.clone(),
        });
    }

    fn pick_recent(&mut self, prng: &mut Prng) -> Option<Sent> {
        if self.recent.is_empty() {
            return None;
        }
        Some(self.recent[prng.index(self.recent.len())].clone())
    }
}

impl Simulator {
    /// Sends `envelope` from one node to another, through the faults.
    pub(crate) fn send(&mut self, from: Node, to: Node, envelope: Envelope) {
        let bytes = wire::encode(&envelope);
        self.trace
            .event(30, self.now, from.trace_id() << 16 | to.trace_id());
        self.trace.bytes(&bytes);
        self.stats.messages_sent += 1;
        let mut slow = 1;
        let mut held = 0;
        if let (Node::Replica(a), Node::Replica(b)) = (from, to) {
            if self.network.remember {
                self.network.remember(self.now, a, b, &envelope);
            }
            if self.network.is_blocked(a, b) {
                self.stats.messages_partitioned += 1;
                return;
            }
            slow = self.network.slow_factor(a, b);
            if self.network.stormy && self.prng.chance(self.network.hold_ppm) {
                held = self.prng.range(SECOND, 15 * SECOND);
                self.stats.messages_held += 1;
            }
        }
        let stormy = self.network.stormy;
        if stormy && self.prng.chance(self.network.loss_ppm) {
            self.stats.messages_lost += 1;
            return;
        }
        let copies = if self.prng.chance(self.network.duplicate_ppm) {
            self.stats.messages_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut frame_bytes = bytes.clone();
            let corrupted = stormy && self.prng.chance(self.network.corrupt_ppm);
            if corrupted {
                let bit = self.prng.below(frame_bytes.len() as u64 * 8);
                frame_bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
            let profile = &self.plan.profile;
            let latency = self
                .prng
                .range(profile.latency_min_ns, profile.latency_max_ns)
                * slow
                + held;
            let frame = Frame {
                to,
                bytes: frame_bytes,
                original: envelope.clone(),
                corrupted,
                forged: false,
            };
            self.schedule(self.now + latency, EventKind::Deliver(Box::new(frame)));
        }
    }

    /// Delivers `count` old messages between replicas again, each as it was sent (a replay of
    /// the network, not a forgery): to its destination, through today's partitions.
    pub(crate) fn replay_old_messages(&mut self, count: usize) {
        for _ in 0..count {
            let Some(sent) = self.network.pick_recent(&mut self.prng) else {
                return;
            };
            self.stats.messages_replayed += 1;
            self.send(
                Node::Replica(sent.from),
                Node::Replica(sent.to),
                sent.envelope,
            );
        }
    }

    /// The messages `from` sent in the last 300 ms arrive again 1 to 10 s from now: what a
    /// primary had in flight as it was cut off straggles in after the view change. Held
    /// messages are not cut by the partitions of the moment.
    pub(crate) fn straggle(&mut self, from: u8) {
        let since = self.now.saturating_sub(300 * MS);
        let stragglers: Vec<Sent> = self
            .network
            .recent
            .iter()
            .filter(|sent| sent.from == from && sent.at >= since)
            .cloned()
            .collect();
        for sent in stragglers {
            let delay = self.prng.range(SECOND, 10 * SECOND);
            let frame = Frame {
                to: Node::Replica(sent.to),
                bytes: wire::encode(&sent.envelope),
                original: sent.envelope,
                corrupted: false,
                forged: false,
            };
            self.stats.messages_held += 1;
            self.schedule(self.now + delay, EventKind::Deliver(Box::new(frame)));
        }
    }

    /// Delivers a well-formed message no honest replica sends, which the replica must drop: one
    /// of another cluster, one claiming to come from the receiver itself or a client's
    /// replica message, numbers no cluster reaches, or a primary's message from a replica the
    /// view does not name.
    pub(crate) fn forge(&mut self) {
        let replicas = u64::from(self.plan.replicas);
        let to = self.prng.below(replicas) as u8;
        let other = (to + 1 + self.prng.below(replicas - 1) as u8) % self.plan.replicas;
        let mut envelope = Envelope {
            cluster: self.config.cluster,
            epoch: 0,
            sender: Sender::Replica(other),
            message: Message::Commit(Commit {
                view: View(0),
                commit: Op(0),
                round: 0,
            }),
        };
        match self.prng.below(5) {
            0 => envelope.cluster ^= 1 << self.prng.below(128),
            1 => envelope.sender = Sender::Replica(to),
            2 => envelope.sender = Sender::Client(u128::from(self.prng.next_u64()) | 1),
            3 => {
                envelope.message = Message::StartViewChange(StartViewChange {
                    view: View(u64::MAX),
                })
            }
            _ => {
                // A view whose primary is neither the sender nor the receiver.
                let view = (0..replicas * 2)
                    .map(|offset| View(self.prng.below(1 << 20) * replicas + offset))
                    .find(|&view| {
                        let primary = self.config.primary(view);
                        primary != other && primary != to
                    })
                    .unwrap_or(View(0));
                envelope.message = Message::Commit(Commit {
                    view,
                    commit: Op(0),
                    round: 0,
                });
            }
        }
        self.stats.messages_forged += 1;
        let latency = self.prng.range(
            self.plan.profile.latency_min_ns,
            self.plan.profile.latency_max_ns,
        );
        let frame = Frame {
            to: Node::Replica(to),
            bytes: wire::encode(&envelope),
            original: envelope,
            corrupted: false,
            forged: true,
        };
        self.schedule(self.now + latency, EventKind::Deliver(Box::new(frame)));
    }

    /// Delivers a frame: decodes it for its receiver (checking the codec) and hands it over.
    /// Decoding must reject exactly the corrupted and the forged frames.
    pub(crate) fn deliver(&mut self, frame: Frame) -> Result<(), String> {
        let receiver = match frame.to {
            Node::Replica(index) => Receiver::replica(&self.config, index),
            Node::Client(_) => Receiver::client(self.config.cluster, self.plan.replicas),
        };
        let name = frame.original.message.name();
        let verified = match (wire::decode(&frame.bytes, &receiver), frame.corrupted) {
            (Err(_), true) => {
                self.stats.messages_corrupted += 1;
                return Ok(());
            }
            (Err(_), false) if frame.forged => return self.rejected(&frame),
            (Err(error), false) => {
                return Err(format!(
                    "wire: an intact {name} frame failed to decode: {error}"
                ));
            }
            (Ok(_), true) => {
                return Err(format!("wire: a {name} frame with a flipped bit decoded"));
            }
            (Ok(_), false) if frame.forged => {
                return Err(format!("wire: a forged {name} frame was admitted"));
            }
            (Ok(verified), false) => verified,
        };
        if *verified.envelope() != frame.original {
            return Err(format!("wire: decode(encode(m)) != m for a {name} message"));
        }
        self.trace.bytes(&frame.bytes);
        match frame.to {
            Node::Replica(index) => {
                let slot = &mut self.replicas[usize::from(index)];
                let Some(replica) = slot.replica.as_mut() else {
                    self.stats.messages_lost += 1;
                    return Ok(());
                };
                self.stats.messages_delivered += 1;
                let log = log_enabled().then(|| {
                    let envelope = verified.envelope();
                    (envelope.sender, format!("{:?}", envelope.message))
                });
                replica.on_message(verified);
                if let Some((sender, message)) = log {
                    let message: String = message.chars().take(LOG_MESSAGE_CHARS).collect();
                    eprintln!(
                        "{} ms {sender:?} -> replica {index}: {message} => view {} (last normal {}) {} op {} verified {} commit {}",
                        self.now / 1_000_000,
                        replica.view(),
                        replica.last_normal_view(),
                        replica.status_name(),
                        replica.op(),
                        replica.op_verified(),
                        replica.commit(),
                    );
                }
                self.after_replica(index)
            }
            Node::Client(client) => {
                self.stats.messages_delivered += 1;
                self.clients[client].client.on_message(verified);
                self.poll_client(client)
            }
        }
    }

    /// A forged frame decoding rejected: it reached its replica's door and went no further.
    fn rejected(&mut self, frame: &Frame) -> Result<(), String> {
        self.trace.bytes(&frame.bytes);
        let Node::Replica(index) = frame.to else {
            return Err("wire: a forged frame addressed to a client".to_owned());
        };
        if self.replicas[usize::from(index)].replica.is_none() {
            self.stats.messages_lost += 1;
            return Ok(());
        }
        self.stats.messages_delivered += 1;
        self.stats.messages_rejected += 1;
        self.after_replica(index)
    }
}

/// Characters of a message shown per line of the `VSR_SIM_LOG` trace.
const LOG_MESSAGE_CHARS: usize = 160;

/// Whether `VSR_SIM_LOG` is set: then every message delivered to a replica is printed to stderr
/// with the replica's state after handling it (for debugging one seed; slow).
pub(crate) fn log_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("VSR_SIM_LOG").is_some())
}
