//! [`loopback_ports`]: ports for a local cluster whose replicas may be restarted on them.
//!
//! Binding port 0 and releasing it hands out a port of the kernel's *ephemeral* range, the range
//! it also draws the local port of every outgoing connection from. A replica killed and
//! restarted on such a port can find it taken by a connection made in between (a client's, a
//! peer's, another program's) and fail to listen. Ports outside the ephemeral range are never
//! chosen for outgoing connections, so this module picks ports there, checks each by binding it,
//! and never hands the same port out twice in one process.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::sync::Mutex;

/// Where the candidates start: below are well-known and registered services' usual ports.
const CANDIDATES_FROM: u16 = 10_000;
/// The ephemeral range when the kernel does not say (Linux's default).
const EPHEMERAL_DEFAULT: (u16, u16) = (32_768, 60_999);

/// Ports handed out by this process.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `count` distinct `127.0.0.1` ports that nothing listens on now, outside the ephemeral range
/// when it leaves room (from 10,000 up to it, and above it), never handed out before by this
/// process. They are free when this returns; another program could still bind one before the
/// caller does (rare: such programs choose ports the same way or explicitly). On a host whose
/// ephemeral range leaves too little room, the ports come from the kernel (port 0) instead.
///
/// # Errors
/// If `count` free ports cannot be found.
pub fn loopback_ports(count: usize) -> io::Result<Vec<SocketAddr>> {
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let candidates = candidates(ephemeral_range());
    let mut listeners = Vec::with_capacity(count);
    if !candidates.is_empty() {
        // Start at a random candidate so that processes choosing at once rarely collide.
        let start = getrandom::u32().map_or(std::process::id(), |random| random) as usize;
        for step in 0..candidates.len() {
            if listeners.len() == count {
                break;
            }
            let port = candidates[(start + step) % candidates.len()];
            if given.contains(&port) {
                continue;
            }
            if let Ok(listener) = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
                listeners.push(listener);
            }
        }
    }
    while listeners.len() < count {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        if !given.contains(&listener.local_addr()?.port()) {
            listeners.push(listener);
        }
    }
    let addresses = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()?;
    given.extend(addresses.iter().map(SocketAddr::port));
    Ok(addresses)
}

/// The ports at or above [`CANDIDATES_FROM`] outside `ephemeral` (inclusive bounds).
fn candidates(ephemeral: (u16, u16)) -> Vec<u16> {
    let (low, high) = ephemeral;
    (CANDIDATES_FROM..=u16::MAX)
        .filter(|port| *port < low || *port > high)
        .collect()
}

/// The kernel's ephemeral port range, inclusive.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut bounds = range.split_whitespace().map(str::parse::<u16>);
            Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
        })
        .unwrap_or(EPHEMERAL_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_outside_the_ephemeral_range() {
        let first = loopback_ports(8).unwrap();
        let second = loopback_ports(8).unwrap();
        let all: BTreeSet<u16> = first.iter().chain(&second).map(SocketAddr::port).collect();
        assert_eq!(
            all.len(),
            16,
            "never handed out twice: {first:?} {second:?}"
        );
        for address in first.iter().chain(&second) {
            assert!(address.ip().is_loopback(), "{address}");
            let (low, high) = ephemeral_range();
            if candidates((low, high)).len() >= 16 {
                assert!(
                    address.port() >= CANDIDATES_FROM && !(low..=high).contains(&address.port()),
                    "{address}"
                );
            }
            TcpListener::bind(address).expect("free when handed out");
        }
    }

    #[test]
    fn outgoing_connections_never_take_them() {
        let ports = loopback_ports(1).unwrap();
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let connections: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap())
            .collect();
        for connection in &connections {
            let local = connection.local_addr().unwrap().port();
            let (low, high) = ephemeral_range();
            assert!(
                (low..=high).contains(&local),
                "an outgoing connection used {local}"
            );
            assert_ne!(local, ports[0].port());
        }
    }

    #[test]
    fn candidates_skip_the_ephemeral_range_and_a_wide_range_leaves_only_the_top() {
        let default = candidates(EPHEMERAL_DEFAULT);
        assert_eq!(default.first(), Some(&CANDIDATES_FROM));
        assert!(default.contains(&32_767) && default.contains(&61_000));
        assert!(!default.contains(&32_768) && !default.contains(&60_999));
        assert_eq!(default.last(), Some(&u16::MAX));
        assert!(candidates((1024, 65_535)).is_empty());
        assert_eq!(candidates((1024, 65_000)).len(), 535);
    }
}
