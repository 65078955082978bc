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
//! one of three ways ([`Mode`]): `Reset` closes its connections and closes every new one at
//! once (a refused or reset connection); `BlackHole` keeps connections open and discards the
//! bytes, acknowledged, like a network that loses packets silently; a connection that lost
//! bytes can never pass again (its stream has a gap in the middle of a frame), so it is closed
//! when its link heals. `Stall` is a network that drops packets without acknowledging them: the
//! link stops reading from its sockets, so once the (deliberately small) socket buffers are
//! full the sender's writes block; a new connection is accepted but held, not connected onwards;
//! at the heal the same connections carry on, nothing closed, nothing lost. A sender whose
//! packets were dropped only sends again at its next retransmission, and the timeout doubles
//! after each one, so a stalled direction that had bytes waiting resumes at the next point of
//! that backoff after the heal ([`retransmission_wait`]), not at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Longest wait for a connection to the link's target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read at once.
const BUFFER_SIZE: usize = 64 * 1024;
/// The receive and send buffer size asked for every proxy socket (Linux doubles it): small, so
/// a stalled link stops taking bytes after a few tens of kilobytes.
const SOCKET_BUFFER_BYTES: u32 = 16 * 1024;
/// Connections waiting to be accepted by a link's listener.
const LISTEN_BACKLOG: u32 = 64;
/// The first retransmission timeout of a data segment (Linux's minimum, which a loopback round
/// trip never raises) and of a connection request.
const DATA_RTO: Duration = Duration::from_millis(200);
const CONNECT_RTO: Duration = Duration::from_secs(1);
/// The longest retransmission timeout (Linux's `TCP_RTO_MAX`).
const RTO_MAX: Duration = Duration::from_secs(120);
/// Retransmissions modelled; Linux gives a connection up after 15.
const RETRANSMISSIONS_MAX: u32 = 32;

/// What one direction of a link does with bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward them.
    Pass,
    /// Close the link's connections and every new one.
    Reset,
    /// Discard them, keeping connections open.
    BlackHole,
    /// Leave them unread (unacknowledged once the buffers fill) and hold new connections;
    /// forward them again at the heal.
    Stall,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Reset => "reset",
            Mode::BlackHole => "black hole",
            Mode::Stall => "stall",
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

    fn stalls(self) -> bool {
        self.forward == Mode::Stall || self.backward == Mode::Stall
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
        let listener = listen().context("cannot open a proxy listener on 127.0.0.1")?;
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

/// A socket with small buffers, for `target`'s address family.
fn small_socket(target: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    Ok(socket)
}

/// A listener on a free loopback port whose accepted sockets inherit its small buffers (set
/// before `listen`, so the window offered in the handshake is already small).
fn listen() -> std::io::Result<TcpListener> {
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    let socket = small_socket(address)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Opens a connection with small buffers to `target`.
async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    small_socket(target)?.connect(target).await
}

/// How long after `stalled_for` a sender whose packets went unanswered since it first sent
/// (with the timeout `first`, doubled after every retransmission up to [`RTO_MAX`]) sends again.
fn retransmission_wait(stalled_for: Duration, first: Duration) -> Duration {
    let mut next = Duration::ZERO;
    let mut timeout = first;
    for _ in 0..RETRANSMISSIONS_MAX {
        next += timeout;
        if next >= stalled_for {
            return next - stalled_for;
        }
        timeout = (timeout * 2).min(RTO_MAX);
    }
    Duration::ZERO
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
async fn forward(inbound: TcpStream, target: SocketAddr, mut state: watch::Receiver<LinkState>) {
    if !admit(&mut state, Instant::now()).await {
        return;
    }
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, connect(target)).await;
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

/// Holds a connection accepted at `accepted` while the link stalls either way (its connection
/// request is lost), then until the dialer's next retransmission of it; false when the link
/// resets meanwhile.
async fn admit(state: &mut watch::Receiver<LinkState>, accepted: Instant) -> bool {
    let mut held = false;
    loop {
        let current = *state.borrow_and_update();
        if current.resets() {
            return false;
        }
        if current.stalls() {
            held = true;
            if state.changed().await.is_err() {
                return false;
            }
            continue;
        }
        if !held {
            return true;
        }
        let wait = retransmission_wait(accepted.elapsed(), CONNECT_RTO);
        tokio::select! {
            () = tokio::time::sleep(wait) => return true,
            changed = state.changed() => if changed.is_err() {
                return false;
            },
        }
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
    // When bytes first waited on this direction while it stalled: the sender's
    // retransmissions count from then.
    let mut stalled_since: Option<Instant> = None;
    loop {
        let current = *state.borrow_and_update();
        let mode = current.mode(direction);
        if current.resets() || (gap && mode == Mode::Pass) {
            return;
        }
        if mode == Mode::Stall {
            // Nothing is read: the bytes stay in the kernel's buffers, unacknowledged once
            // they are full.
            tokio::select! {
                ready = from.readable(), if stalled_since.is_none() => {
                    if ready.is_err() {
                        return;
                    }
                    stalled_since = Some(Instant::now());
                }
                changed = state.changed() => if changed.is_err() {
                    return;
                },
            }
            continue;
        }
        if let Some(since) = stalled_since.filter(|_| mode == Mode::Pass) {
            let wait = retransmission_wait(since.elapsed(), DATA_RTO);
            tokio::select! {
                () = tokio::time::sleep(wait) => stalled_since = None,
                changed = state.changed() => if changed.is_err() {
                    return;
                },
            }
            continue;
        }
        stalled_since = None;
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
            Mode::Pass | Mode::Stall if current.resets() => return,
            Mode::Pass | Mode::Stall => {
                if !deliver(&mut to, &buffer[..size], &mut state, direction).await {
                    return;
                }
            }
        }
    }
}

/// Writes `bytes` on, pausing while this direction stalls; false when the connection must
/// close: the write failed, or the link now resets or discards this way (the rest of the bytes
/// cannot be dropped without a gap).
async fn deliver(
    to: &mut OwnedWriteHalf,
    bytes: &[u8],
    state: &mut watch::Receiver<LinkState>,
    direction: Direction,
) -> bool {
    let write = to.write_all(bytes);
    tokio::pin!(write);
    loop {
        let current = *state.borrow_and_update();
        if current.resets() {
            return false;
        }
        match current.mode(direction) {
            Mode::Reset | Mode::BlackHole => return false,
            Mode::Stall => {
                if state.changed().await.is_err() {
                    return false;
                }
            }
            Mode::Pass => tokio::select! {
                written = &mut write => return written.is_ok(),
                changed = state.changed() => if changed.is_err() {
                    return false;
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
            (Mode::Stall, Mode::Pass),
            (Mode::Pass, Mode::Stall),
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

    /// A target that echoes every byte back and counts the connections it accepted.
    async fn counting_echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        (address, accepted)
    }

    /// Reads `expected.len()` bytes within `timeout`; `None` when they do not come in time.
    async fn read_within(
        stream: &mut TcpStream,
        size: usize,
        timeout: Duration,
    ) -> Option<Vec<u8>> {
        let mut back = vec![0u8; size];
        match tokio::time::timeout(timeout, stream.read_exact(&mut back)).await {
            Ok(Ok(_)) => Some(back),
            _ => None,
        }
    }

    const BOTH_STALL: LinkState = LinkState {
        forward: Mode::Stall,
        backward: Mode::Stall,
    };

    #[test]
    fn a_stalled_sender_resumes_at_its_next_retransmission() {
        let ms = Duration::from_millis;
        // Retransmissions 200 ms, 600 ms, 1.4 s, 3 s, 6.2 s, 12.6 s after the first send.
        assert_eq!(retransmission_wait(ms(0), DATA_RTO), ms(200));
        assert_eq!(retransmission_wait(ms(300), DATA_RTO), ms(300));
        assert_eq!(retransmission_wait(ms(3_000), DATA_RTO), ms(0));
        assert_eq!(retransmission_wait(ms(12_000), DATA_RTO), ms(600));
        // Connection requests: 1 s, 3 s, 7 s after the first.
        assert_eq!(retransmission_wait(ms(5_000), CONNECT_RTO), ms(2_000));
        // The timeout stops doubling at RTO_MAX.
        let late = retransmission_wait(Duration::from_secs(1_000), DATA_RTO);
        assert!(late <= RTO_MAX, "{late:?}");
    }

    #[tokio::test]
    async fn a_stalled_link_delivers_the_held_bytes_on_the_same_connection_at_the_heal() {
        let (target, accepted) = counting_echo_server().await;
        let link = Link::start(target).await.expect("link");
        let mut stream = TcpStream::connect(link.address).await.expect("connect");
        stream.write_all(b"one").await.expect("write");
        let one = read_within(&mut stream, 3, Duration::from_secs(2)).await;
        assert_eq!(one.as_deref(), Some(&b"one"[..]));
        link.set(BOTH_STALL);
        stream.write_all(b"two").await.expect("write");
        let stalled = read_within(&mut stream, 3, Duration::from_millis(400)).await;
        assert_eq!(stalled, None, "nothing passes a stalled link");
        link.set(LinkState::PASS);
        let two = read_within(&mut stream, 3, Duration::from_secs(3)).await;
        assert_eq!(two.as_deref(), Some(&b"two"[..]), "the held bytes arrive");
        stream.write_all(b"three").await.expect("write");
        let three = read_within(&mut stream, 5, Duration::from_secs(2)).await;
        assert_eq!(three.as_deref(), Some(&b"three"[..]));
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "no reconnection");
    }

    #[tokio::test]
    async fn a_connection_opened_through_a_stalled_link_is_held_until_the_heal() {
        let (target, accepted) = counting_echo_server().await;
        let link = Link::start(target).await.expect("link");
        link.set(BOTH_STALL);
        let mut stream = TcpStream::connect(link.address).await.expect("connect");
        stream.write_all(b"held").await.expect("write");
        let stalled = read_within(&mut stream, 4, Duration::from_millis(400)).await;
        assert_eq!(stalled, None);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "not connected onwards yet"
        );
        link.set(LinkState::PASS);
        // The connection request is "retransmitted" 1 s after it was first sent.
        let held = read_within(&mut stream, 4, Duration::from_secs(3)).await;
        assert_eq!(held.as_deref(), Some(&b"held"[..]));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stalled_link_blocks_the_writer_and_loses_nothing() {
        // A target that counts the bytes of each connection.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = listener.local_addr().expect("address");
        let (sizes, mut received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let sizes = sizes.clone();
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = socket.read_to_end(&mut sink).await;
                    let _ = sizes.send(sink);
                });
            }
        });
        let link = Link::start(target).await.expect("link");
        let stream = connect(link.address).await.expect("connect");
        link.set(BOTH_STALL);
        let payload: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let writer = tokio::spawn(async move {
            let mut stream = stream;
            stream.write_all(&payload).await.expect("write");
            stream.shutdown().await.expect("shutdown");
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !writer.is_finished(),
            "the writer is blocked while the link stalls"
        );
        link.set(LinkState::PASS);
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer finishes after the heal")
            .expect("the writer");
        let bytes = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("the target saw the connection end")
            .expect("one connection");
        assert!(bytes == expected, "{} bytes arrived in order", bytes.len());
        assert!(received.try_recv().is_err(), "on one connection");
    }
}
