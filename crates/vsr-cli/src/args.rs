//! What the subcommands share: the cluster and its addresses, and value parsers for cluster
//! ids, addresses and durations.

use std::time::Duration;

use clap::Args;

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
}
