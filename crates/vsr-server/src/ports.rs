//! [`loopback_ports`]: ports for a local cluster whose replicas may be restarted on them.
//!
//! Binding port 0 and releasing it hands out a port of the kernel's *ephemeral* range, the range
//! it also draws the local port of every outgoing connection from. A replica killed and
//! restarted on such a port can find it taken by a connection made in between (a client's, a
//! peer's, another program's) and fail to listen. Ports below the ephemeral range are never
//! chosen for outgoing connections, so this module picks ports there, checks each by binding it,
//! and never hands the same port out twice in one process.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::sync::Mutex;

/// Where the candidates start: below are well-known and registered services' usual ports.
const CANDIDATES_FROM: u16 = 10_000;
/// The ephemeral range's first port when the kernel does not say (Linux's default).
const EPHEMERAL_FROM_DEFAULT: u16 = 32_768;

/// Ports handed out by this process.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `count` distinct `127.0.0.1` ports that nothing listens on now, below the ephemeral range,
/// never handed out before by this process. They are free when this returns; another program
/// could still bind one before the caller does (rare: such programs choose ports the same way
/// or explicitly).
///
/// # Errors
/// If fewer than `count` such ports are free.
pub fn loopback_ports(count: usize) -> io::Result<Vec<SocketAddr>> {
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ephemeral_from = ephemeral_from();
    let candidates = ephemeral_from.saturating_sub(CANDIDATES_FROM);
    if candidates == 0 {
        return Err(io::Error::other(format!(
            "the ephemeral port range starts at {ephemeral_from}: no room below it"
        )));
    }
    // Start at a random candidate so that processes choosing at once rarely collide.
    let start = getrandom::u32().unwrap_or(0) % u32::from(candidates);
    let mut listeners = Vec::with_capacity(count);
    for step in 0..u32::from(candidates) {
        if listeners.len() == count {
            break;
        }
        let offset = u16::try_from((start + step) % u32::from(candidates)).expect("below u16");
        let port = CANDIDATES_FROM + offset;
        if given.contains(&port) {
            continue;
        }
        let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        if let Ok(listener) = TcpListener::bind(address) {
            listeners.push(listener);
        }
    }
    if listeners.len() < count {
        return Err(io::Error::other(format!(
            "only {} of {count} loopback ports below {ephemeral_from} are free",
            listeners.len()
        )));
    }
    let addresses = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()?;
    given.extend(addresses.iter().map(SocketAddr::port));
    Ok(addresses)
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_from() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_FROM_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
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
            assert!(
                (CANDIDATES_FROM..ephemeral_from()).contains(&address.port()),
                "{address}"
            );
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
            assert!(
                local >= ephemeral_from(),
                "an outgoing connection used {local}"
            );
            assert_ne!(local, ports[0].port());
        }
    }
}
