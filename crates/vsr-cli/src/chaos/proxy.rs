//! The fault-injecting TCP proxies that stand between every pair of processes.
//!
//! A replica dials peer j at the j-th entry of its `--addresses` list and only ever writes on
//! that connection: peers answer on connections they open themselves, and name their sender in
//! the checksummed header. So [`Network`] gives replica i a list whose entry j (j ≠ i) is the
//! listening address of the link i→j, and every byte replica i sends to j crosses that link;
//! cutting it is a one-way partition, cutting i→j and j→i a symmetric one. Each client session
//! gets its own link to each replica, which carries its requests forwards and the replies back.
//!
//! A link forwards byte streams unchanged while it passes. Each direction of a link fails in
//! one of two ways ([`Mode`]): `Reset` closes its connections and closes every new one at once
//! (a refused or reset connection); `BlackHole` keeps connections open and discards the bytes,
//! like a network that loses packets silently. A connection that lost bytes can never pass
//! again (its stream has a gap in the middle of a frame), so it is closed when its link heals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Longest wait for a connection to the link's target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read at once.
const BUFFER_SIZE: usize = 64 * 1024;

/// What one direction of a link does with bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward them.
    Pass,
    /// Close the link's connections and every new one.
    Reset,
    /// Discard them, keeping connections open.
    BlackHole,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Reset => "reset",
            Mode::BlackHole => "black hole",
        }
    }
}

/// The state of a link: one mode for the bytes from the dialing side to the target
/// (`forward`), one for the bytes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub(crate) forward: Mode,
    pub(crate) backward: Mode,
}

impl LinkState {
    pub(crate) const PASS: LinkState = LinkState {
        forward: Mode::Pass,
        backward: Mode::Pass,
    };

    fn mode(self, direction: Direction) -> Mode {
        match direction {
            Direction::Forward => self.forward,
            Direction::Backward => self.backward,
        }
    }

    fn resets(self) -> bool {
        self.forward == Mode::Reset || self.backward == Mode::Reset
    }
}

#[derive(Clone, Copy, Debug)]
enum Direction {
    Forward,
    Backward,
}

/// One link: a listener on loopback whose connections are forwarded to one target.
struct Link {
    address: SocketAddr,
    state: watch::Sender<LinkState>,
    task: JoinHandle<()>,
}

impl Link {
    async fn start(target: SocketAddr) -> anyhow::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a proxy listener on 127.0.0.1")?;
        let address = listener
            .local_addr()
            .context("cannot read a local address")?;
        let (state, receiver) = watch::channel(LinkState::PASS);
        let task = tokio::spawn(serve(listener, target, receiver));
        Ok(Link {
            address,
            state,
            task,
        })
    }

    fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }
}

/// Which processes a link joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LinkId {
    /// Replica `from` dialing replica `to`.
    Replica { from: usize, to: usize },
    /// Client session `session` dialing replica `to`.
    Client { session: usize, to: usize },
}

/// Every link of a cluster of replicas and client sessions. Dropping it stops every link.
pub(crate) struct Network {
    replicas: Vec<String>,
    sessions: usize,
    links: BTreeMap<LinkId, Link>,
}

impl Network {
    /// Starts a link from each replica to each other replica, and from each of `sessions`
    /// client sessions to each replica at `replicas` (their listening addresses).
    pub(crate) async fn start(replicas: &[String], sessions: usize) -> anyhow::Result<Network> {
        let targets: Vec<SocketAddr> = replicas
            .iter()
            .map(|address| address.parse().context("a replica's loopback address"))
            .collect::<anyhow::Result<_>>()?;
        let mut links = BTreeMap::new();
        for (to, target) in targets.iter().enumerate() {
            for from in (0..replicas.len()).filter(|from| *from != to) {
                links.insert(LinkId::Replica { from, to }, Link::start(*target).await?);
            }
            for session in 0..sessions {
                links.insert(LinkId::Client { session, to }, Link::start(*target).await?);
            }
        }
        Ok(Network {
            replicas: replicas.to_vec(),
            sessions,
            links,
        })
    }

    /// The `--addresses` list of replica `index`: its own listening address, and its links to
    /// the others.
    pub(crate) fn replica_addresses(&self, index: usize) -> Vec<String> {
        (0..self.replicas.len())
            .map(
                |to| match self.links.get(&LinkId::Replica { from: index, to }) {
                    Some(link) => link.address.to_string(),
                    None => self.replicas[index].clone(),
                },
            )
            .collect()
    }

    /// The addresses client session `session` reaches the replicas at.
    pub(crate) fn client_addresses(&self, session: usize) -> Vec<String> {
        (0..self.replicas.len())
            .map(|to| {
                self.links[&LinkId::Client { session, to }]
                    .address
                    .to_string()
            })
            .collect()
    }

    /// Client sessions with links.
    pub(crate) fn client_sessions(&self) -> usize {
        self.sessions
    }

    /// Sets what happens to the bytes replica `from` sends to replica `to`.
    pub(crate) fn set_replica_link(&self, from: usize, to: usize, mode: Mode) {
        self.links[&LinkId::Replica { from, to }].set(LinkState {
            forward: mode,
            backward: mode,
        });
    }

    /// Sets the state of the link from client session `session` to replica `to`.
    pub(crate) fn set_client_link(&self, session: usize, to: usize, state: LinkState) {
        self.links[&LinkId::Client { session, to }].set(state);
    }

    /// Every link passes again.
    pub(crate) fn heal(&self) {
        for link in self.links.values() {
            link.set(LinkState::PASS);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.task.abort();
        }
    }
}

/// Accepts connections and forwards each to `target`, until aborted (which closes them all).
async fn serve(listener: TcpListener, target: SocketAddr, state: watch::Receiver<LinkState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) if state.borrow().resets() => drop(socket),
                Ok((socket, _)) => {
                    connections.spawn(forward(socket, target, state.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards one connection both ways until either side closes or the link's state ends it.
async fn forward(inbound: TcpStream, target: SocketAddr, state: watch::Receiver<LinkState>) {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let Ok(Ok(outbound)) = connect else {
        // The target is down: close the dialer's connection, as a refused one would be.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    tokio::select! {
        () = pump(inbound_read, outbound_write, state.clone(), Direction::Forward) => {}
        () = pump(outbound_read, inbound_write, state, Direction::Backward) => {}
    }
}

/// Copies bytes one way as the link's state says; returns when the connection must close.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<LinkState>,
    direction: Direction,
) {
    let mut buffer = vec![0u8; BUFFER_SIZE];
    // Set once bytes were discarded: the stream can never pass again.
    let mut gap = false;
    loop {
        let current = *state.borrow_and_update();
        if current.resets() || (gap && current.mode(direction) == Mode::Pass) {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let size = match read {
            Ok(0) | Err(_) => return,
            Ok(size) => size,
        };
        let current = *state.borrow_and_update();
        match current.mode(direction) {
            Mode::Reset => return,
            Mode::BlackHole => gap = true,
            Mode::Pass if current.resets() => return,
            Mode::Pass => {
                // A state change during a write ends the connection unless the link still
                // passes this way: the rest of the bytes cannot be dropped without a gap.
                let write = to.write_all(&buffer[..size]);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        written = &mut write => {
                            if written.is_err() {
                                return;
                            }
                            break;
                        }
                        changed = state.changed() => {
                            let passes = *state.borrow_and_update() == current;
                            if changed.is_err() || !passes {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(link: &Link, payload: &[u8]) -> Option<Vec<u8>> {
        let mut stream = TcpStream::connect(link.address).await.ok()?;
        stream.write_all(payload).await.ok()?;
        let mut back = vec![0u8; payload.len()];
        let read = tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut back));
        match read.await {
            Ok(Ok(_)) => Some(back),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_link_forwards_drops_one_way_and_heals() {
        let link = Link::start(echo_server().await).await.expect("link");
        assert_eq!(
            round_trip(&link, b"hello").await.as_deref(),
            Some(&b"hello"[..])
        );
        for (forward, backward) in [
            (Mode::Reset, Mode::Pass),
            (Mode::BlackHole, Mode::Pass),
            (Mode::Pass, Mode::BlackHole),
            (Mode::Pass, Mode::Reset),
        ] {
            link.set(LinkState { forward, backward });
            assert_eq!(
                round_trip(&link, b"lost").await,
                None,
                "{forward:?} {backward:?}"
            );
            link.set(LinkState::PASS);
            assert_eq!(
                round_trip(&link, b"back").await.as_deref(),
                Some(&b"back"[..])
            );
        }
    }

    #[tokio::test]
    async fn a_connection_that_lost_bytes_is_closed_when_its_link_heals() {
        let link = Link::start(echo_server().await).await.expect("link");
        let mut stream = TcpStream::connect(link.address).await.expect("connect");
        stream.write_all(b"one").await.expect("write");
        let mut back = [0u8; 3];
        stream.read_exact(&mut back).await.expect("echo");
        link.set(LinkState {
            forward: Mode::BlackHole,
            backward: Mode::Pass,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(b"two").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        link.set(LinkState::PASS);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest));
        assert!(
            matches!(read.await, Ok(Ok(0))),
            "closed without the lost bytes: {rest:?}"
        );
    }
}
