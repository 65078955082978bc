//! What the subcommands share: the cluster and its addresses, and value parsers for cluster
//! ids, addresses and durations.
//!
//! An address is `host:port` everywhere, a host name or an IP literal: [`parse_address`] checks
//! its form when the flag is parsed and [`resolve_address`] looks it up when it is used.
//! [`duplicate_address`] and [`same_socket_address`] refuse a cluster's address list that names
//! one endpoint twice, as written or once resolved.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use vsr_server::tls::{self, Identity};
use vsr_server::{Network, TlsTransport};

/// The cluster to reach: `--cluster` and `--addresses`, as `vsr start` and `vsr client` take
/// them.
#[derive(Debug, Args)]
pub(crate) struct ClusterAddresses {
    /// The cluster id (decimal, or hex with 0x); data and messages of another cluster are
    /// refused.
    #[arg(long, env = "VSR_CLUSTER", default_value = "0", value_parser = parse_cluster)]
    pub(crate) cluster: u128,
    /// Every replica's host:port, comma-separated, the i-th for replica i. A replica listens on
    /// its own entry; each process may be given its own list (for peers behind proxies).
    #[arg(
        long,
        env = "VSR_ADDRESSES",
        value_delimiter = ',',
        required = true,
        value_parser = parse_address
    )]
    pub(crate) addresses: Vec<String>,
}

/// How a replica or a client secures its connections: `--tls DIR` or `--insecure`, one of them
/// required (secure by default: nothing falls back to plaintext silently).
#[derive(Debug, Args)]
pub(crate) struct Security {
    /// Mutual TLS with the certificates in DIR, as `vsr certs` writes them: `ca.pem`, and the
    /// replica's (`replica-I.pem`, `.key`) or a client's or operator's.
    #[arg(
        long,
        env = "VSR_TLS_DIR",
        value_name = "DIR",
        conflicts_with = "insecure"
    )]
    pub(crate) tls: Option<PathBuf>,
    /// Plain TCP without TLS: anyone who can reach a port can read traffic and forge any
    /// replica's or client's messages. For a trusted, isolated network only.
    #[arg(long)]
    pub(crate) insecure: bool,
}

impl Security {
    /// The certificate directory, `None` for `--insecure`, or an error naming both flags.
    pub(crate) fn choice(&self, command: &str) -> anyhow::Result<Option<&Path>> {
        match (&self.tls, self.insecure) {
            (Some(dir), _) => Ok(Some(dir)),
            (None, true) => Ok(None),
            (None, false) => bail!(
                "vsr {command} needs --tls DIR (mutual TLS with the certificates `vsr certs` \
                 writes; or set VSR_TLS_DIR) or --insecure (plain TCP, for a trusted network only)"
            ),
        }
    }
}

/// Which certificate a client speaks with: `--tls-identity`, with [`Security`].
#[derive(Debug, Args)]
pub(crate) struct ClientIdentity {
    /// The certificate to connect with, as its file stem in the --tls directory:
    /// `client-NAME` or `operator-NAME`. Default: the directory's only client certificate (or,
    /// if it has none, its only operator certificate).
    #[arg(long, env = "VSR_TLS_IDENTITY", value_name = "STEM")]
    pub(crate) tls_identity: Option<String>,
}

/// The network a client of cluster `cluster` connects through.
pub(crate) fn client_network(
    security: &Security,
    identity: &ClientIdentity,
    cluster: u128,
    command: &str,
) -> anyhow::Result<Network> {
    let Some(dir) = security.choice(command)? else {
        return Ok(Network::Insecure);
    };
    let holder = match &identity.tls_identity {
        Some(stem) => parse_stem(stem)?,
        None => only_holder(dir, &["client-", "operator-"]).map_err(|none| {
            none.unwrap_or_else(|| {
                anyhow!(
                    "{} holds no client or operator certificate: write one with `vsr certs \
                     --client NAME`",
                    dir.display()
                )
            })
        })?,
    };
    let transport = TlsTransport::new(dir, cluster, holder)?;
    Ok(Network::Tls(transport))
}

/// The network an operator of cluster `cluster` connects through: as [`client_network`], but
/// without `--tls-identity` the directory's only operator certificate.
pub(crate) fn operator_network(
    security: &Security,
    identity: &ClientIdentity,
    cluster: u128,
    command: &str,
) -> anyhow::Result<Network> {
    let Some(dir) = security.choice(command)? else {
        return Ok(Network::Insecure);
    };
    let holder = match &identity.tls_identity {
        Some(stem) => parse_stem(stem)?,
        None => only_holder(dir, &["operator-"]).map_err(|none| {
            none.unwrap_or_else(|| {
                anyhow!(
                    "{} holds no operator certificate: vsr {command} needs one (`vsr certs \
                     --operator NAME`), or pass --tls-identity",
                    dir.display()
                )
            })
        })?,
    };
    let transport = TlsTransport::new(dir, cluster, holder)?;
    Ok(Network::Tls(transport))
}

fn parse_stem(stem: &str) -> anyhow::Result<Identity> {
    let identity = if let Some(name) = stem.strip_prefix("client-") {
        Identity::Client(name.to_owned())
    } else if let Some(name) = stem.strip_prefix("operator-") {
        Identity::Operator(name.to_owned())
    } else {
        bail!("--tls-identity {stem:?}: expected client-NAME or operator-NAME");
    };
    match &identity {
        Identity::Client(name) | Identity::Operator(name) if tls::valid_name(name) => Ok(identity),
        _ => bail!("--tls-identity {stem:?}: not a valid client or operator name"),
    }
}

/// The directory's only certificate whose stem starts with the first of `prefixes` that any
/// does. `Err(None)`: none does; `Err(Some(error))`: it cannot be read, or several do.
fn only_holder(dir: &Path, prefixes: &[&str]) -> Result<Identity, Option<anyhow::Error>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))
        .map_err(Some)?;
    let mut stems: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_suffix(".pem").map(str::to_owned)
        })
        .collect();
    stems.sort();
    for prefix in prefixes {
        let found: Vec<&String> = stems
            .iter()
            .filter(|stem| stem.starts_with(prefix))
            .collect();
        match found.as_slice() {
            [] => {}
            [stem] => return parse_stem(stem).map_err(Some),
            many => {
                let names: Vec<&str> = many.iter().map(|stem| stem.as_str()).collect();
                return Err(Some(anyhow!(
                    "{} holds several certificates ({}): choose one with --tls-identity",
                    dir.display(),
                    names.join(", ")
                )));
            }
        }
    }
    Err(None)
}

/// Parses a cluster id: decimal, or hexadecimal with a `0x` prefix.
pub(crate) fn parse_cluster(text: &str) -> Result<u128, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u128::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| {
        format!("{text:?} is not a cluster id (a 128-bit number, decimal or 0x-prefixed hex)")
    })
}

/// Parses one `host:port` address (resolved later, when it is used).
pub(crate) fn parse_address(text: &str) -> Result<String, String> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not an address of the form host:port"))
    }
}

/// Most socket addresses kept from one host name's lookup (a name may resolve to many).
const RESOLVED_ADDRESSES_MAX: usize = 16;

/// Resolves `text` (`host:port`, as [`parse_address`] accepts it) to its socket addresses, the
/// first one the one to use; `flag` names where it came from in the error.
pub(crate) fn resolve_address(flag: &str, text: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let resolved: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|error| {
            anyhow!(
                "{flag} {text}: cannot resolve the host name ({error}): give a host:port this \
                 machine can resolve, or an IP address and port"
            )
        })?
        .take(RESOLVED_ADDRESSES_MAX)
        .collect();
    if resolved.is_empty() {
        bail!("{flag} {text}: the host name resolves to no address: give an IP address and port");
    }
    Ok(resolved)
}

/// The first address that `addresses` lists twice, written the same, as the two replicas
/// (positions in the list, from 0) that it is given for.
pub(crate) fn duplicate_address(addresses: &[String]) -> Option<(usize, usize)> {
    addresses.iter().enumerate().find_map(|(second, address)| {
        addresses[..second]
            .iter()
            .position(|earlier| earlier == address)
            .map(|first| (first, second))
    })
}

/// The first two entries of `resolved` (each entry's socket addresses, empty for one that did
/// not resolve) that share a socket address: the two replicas, and the address.
pub(crate) fn same_socket_address(
    resolved: &[Vec<SocketAddr>],
) -> Option<(usize, usize, SocketAddr)> {
    resolved.iter().enumerate().find_map(|(second, addresses)| {
        resolved[..second]
            .iter()
            .enumerate()
            .find_map(|(first, earlier)| {
                let shared = addresses.iter().find(|address| earlier.contains(address))?;
                Some((first, second, *shared))
            })
    })
}

/// The message for an address list that gives `address` for replicas `first` and `second`.
pub(crate) fn duplicate_message(address: &str, first: usize, second: usize) -> String {
    format!(
        "--addresses gives {address} for both replica {first} and replica {second} (entries {} \
         and {} of the list): every replica needs its own host:port, the i-th for replica i",
        first + 1,
        second + 1
    )
}

/// Parses a duration: a number with a unit `ms`, `s` or `m` (`500ms`, `5s`, `1m`); a bare
/// number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let error = || format!("{text:?} is not a duration (for example 500ms, 5s or 1m)");
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| error())?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(error()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clusters_addresses_and_durations() {
        assert_eq!(parse_cluster("0"), Ok(0));
        assert_eq!(parse_cluster("0x1f"), Ok(31));
        assert!(parse_cluster("cluster").is_err());
        assert!(parse_address("127.0.0.1:3001").is_ok());
        assert!(parse_address("localhost:3001").is_ok());
        assert!(parse_address("127.0.0.1").is_err());
        assert!(parse_address(":3001").is_err());
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }

    fn strings(addresses: &[&str]) -> Vec<String> {
        addresses
            .iter()
            .map(|&address| address.to_owned())
            .collect()
    }

    #[test]
    fn finds_an_address_written_twice() {
        assert_eq!(duplicate_address(&strings(&["a:1", "b:1", "c:1"])), None);
        assert_eq!(
            duplicate_address(&strings(&["a:1", "b:1", "a:1"])),
            Some((0, 2))
        );
        assert_eq!(
            duplicate_address(&strings(&["a:1", "b:1", "b:1", "a:1"])),
            Some((1, 2))
        );
        assert_eq!(duplicate_address(&strings(&["a:1", "a:2"])), None);
        assert_eq!(duplicate_address(&[]), None);
        let message = duplicate_message("a:1", 0, 2);
        assert!(
            message.contains("a:1 for both replica 0 and replica 2"),
            "{message}"
        );
        assert!(message.contains("entries 1 and 3"), "{message}");
    }

    #[test]
    fn finds_two_entries_that_resolve_to_one_socket_address() {
        let v4: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let v6: SocketAddr = "[::1]:3000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:3001".parse().unwrap();
        assert_eq!(same_socket_address(&[vec![v4], vec![other]]), None);
        assert_eq!(
            same_socket_address(&[vec![other], vec![v6, v4], vec![v4]]),
            Some((1, 2, v4))
        );
        // An entry that did not resolve shares nothing.
        assert_eq!(same_socket_address(&[vec![], vec![], vec![v4]]), None);
    }

    #[test]
    fn resolves_host_names_and_ip_literals() {
        let resolved = resolve_address("--metrics", "localhost:9100").unwrap();
        assert!(resolved.iter().all(|address| address.port() == 9100));
        assert!(resolved.iter().all(|address| address.ip().is_loopback()));
        assert_eq!(
            resolve_address("--metrics", "127.0.0.1:9100").unwrap(),
            vec!["127.0.0.1:9100".parse::<SocketAddr>().unwrap()]
        );
        let error = resolve_address("--metrics", "no-such-host.invalid:9100").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("--metrics no-such-host.invalid:9100: cannot resolve"),
            "{message}"
        );
    }
}
