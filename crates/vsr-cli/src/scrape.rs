//! Reads a replica's Prometheus endpoint (`vsr start --metrics`): the demo finds the primary,
//! times the view change and watches a restarted replica catch up through it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read; the metrics text is a few kilobytes.
const RESPONSE_SIZE_MAX: u64 = 1 << 20;

/// The replica state the metrics publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplicaState {
    /// `vsr_view`.
    pub(crate) view: u64,
    /// `vsr_status`: 0 normal, 1 view change, 2 recovering.
    pub(crate) status: u64,
    /// `vsr_op`.
    pub(crate) op: u64,
    /// `vsr_commit`.
    pub(crate) commit: u64,
}

/// `vsr_status` of a replica in normal status.
pub(crate) const STATUS_NORMAL: u64 = 0;

impl ReplicaState {
    /// Whether the replica is the primary of its view (`view mod replica_count`) in normal
    /// status.
    pub(crate) fn is_primary(&self, index: usize, replica_count: usize) -> bool {
        self.status == STATUS_NORMAL && self.view % replica_count as u64 == index as u64
    }
}

/// The replica's state, or `None` if its endpoint does not answer.
pub(crate) async fn replica_state(address: SocketAddr) -> Option<ReplicaState> {
    parse_state(&scrape(address).await?)
}

/// The replica state in the metrics text `text`.
pub(crate) fn parse_state(text: &str) -> Option<ReplicaState> {
    Some(ReplicaState {
        view: metric(text, "vsr_view")?,
        status: metric(text, "vsr_status")?,
        op: metric(text, "vsr_op")?,
        commit: metric(text, "vsr_commit")?,
    })
}

/// The body of `GET /metrics`, or `None` if the endpoint does not answer in time.
///
/// The request asks the server to close the connection after its response (the endpoint keeps
/// HTTP/1.1 connections open otherwise), so the response is whatever arrives until it does.
pub(crate) async fn scrape(address: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        let request = "GET /metrics HTTP/1.1\r\nHost: vsr\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        (&mut stream)
            .take(RESPONSE_SIZE_MAX)
            .read_to_string(&mut response)
            .await
            .ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// The value of the sample `name` (with its labels, if it has any) in `text`.
pub(crate) fn metric(text: &str, name: &str) -> Option<u64> {
    sample(text, name)
}

/// The value of the sample `name` in `text`, of any type that parses from it (`f64` for
/// seconds).
pub(crate) fn sample<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_by_name() {
        let text = "# HELP vsr_view v\n# TYPE vsr_view gauge\nvsr_view 4\n\
                    vsr_errors_total{kind=\"truncated\"} 2\n";
        assert_eq!(metric(text, "vsr_view"), Some(4));
        assert_eq!(
            sample::<f64>("a_seconds 0.0025\n", "a_seconds"),
            Some(0.0025)
        );
        assert_eq!(
            metric(text, "vsr_errors_total{kind=\"truncated\"}"),
            Some(2)
        );
        assert_eq!(metric(text, "vsr_op"), None);
        let state = ReplicaState {
            view: 4,
            status: STATUS_NORMAL,
            op: 0,
            commit: 0,
        };
        assert!(state.is_primary(1, 3));
        assert!(!state.is_primary(0, 3));
    }
}
