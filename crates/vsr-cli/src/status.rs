//! `vsr status`: asks every replica of a cluster for its status (an administrative request,
//! answered by each replica itself: see `vsr_server::status`) and prints one row per replica.
//!
//! Exit status: 0 when a quorum of replicas is in normal status in one view that has a primary;
//! 1 when some replica answered but there is no such quorum; 2 when none answered.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use vsr_server::status::{ReplicaStatus, StatusKind, fetch_status};

use crate::args::{ClientIdentity, ClusterAddresses, Security, operator_network, parse_duration};

/// Options of `vsr status`.
#[derive(Debug, Args)]
#[command(after_help = "\
Columns: replica index, address, reachable, status (normal / view change / recovering), view, \
primary, op, commit, lag (ops behind the primary's commit), checkpoint op, log bytes, \
checkpoint bytes, uptime seconds, version. --json prints one object whose replicas array uses \
those names in snake_case.

Over TLS a status needs an operator's certificate (`vsr certs --operator NAME`); without \
--tls-identity the directory's only operator certificate is used.

Exit status: 0 when a quorum is in normal status in one view with a primary; 1 when replicas \
answer but no healthy quorum does; 2 when none answers.")]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterAddresses,
    #[command(flatten)]
    security: Security,
    #[command(flatten)]
    identity: ClientIdentity,
    /// How long to wait for each replica's answer (for example 500ms, 2s).
    #[arg(long, env = "VSR_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print one JSON object with a `replicas` array.
    #[arg(long)]
    json: bool,
}

/// One replica's row: its status, or why it gave none.
struct Row {
    index: u8,
    address: String,
    answer: Result<ReplicaStatus, String>,
}

/// Runs `vsr status`.
pub(crate) fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.cluster.cluster;
    let network = operator_network(&args.security, &args.identity, cluster, "status")?;
    let replica_count = replica_count(&args.cluster.addresses)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let rows = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, address) in args.cluster.addresses.iter().enumerate() {
            let (network, address) = (network.clone(), address.clone());
            let index = u8::try_from(index).expect("at most 7 replicas");
            let timeout = args.timeout;
            tasks.spawn(async move {
                let answer =
                    fetch_status(&network, cluster, replica_count, index, &address, timeout)
                        .await
                        .map_err(|error| error.to_string());
                Row {
                    index,
                    address,
                    answer,
                }
            });
        }
        let mut rows = Vec::new();
        while let Some(row) = tasks.join_next().await {
            rows.push(row.expect("a status task does not panic"));
        }
        rows.sort_by_key(|row| row.index);
        rows
    });
    let primary_commit = rows
        .iter()
        .filter_map(|row| row.answer.as_ref().ok())
        .filter(|status| status.primary)
        .max_by_key(|status| status.view)
        .map(|status| status.commit);
    if args.json {
        let replicas: Vec<Value> = rows
            .iter()
            .map(|row| json_row(row, primary_commit))
            .collect();
        println!("{}", json!({ "replicas": replicas }));
    } else {
        print_table(&rows, primary_commit);
    }
    Ok(ExitCode::from(verdict(&rows, replica_count)))
}

/// The number of replicas `addresses` names, if a cluster can have that many.
pub(crate) fn replica_count(addresses: &[String]) -> anyhow::Result<u8> {
    u8::try_from(addresses.len())
        .ok()
        .filter(|count| matches!(count, 1 | 3 | 5 | 7))
        .with_context(|| {
            format!(
                "--addresses names {} replicas: a cluster has 1, 3, 5 or 7",
                addresses.len()
            )
        })
}

/// The exit status: 0 healthy quorum, 1 answers without one, 2 no answer.
fn verdict(rows: &[Row], replica_count: u8) -> u8 {
    let answers: Vec<&ReplicaStatus> = rows
        .iter()
        .filter_map(|row| row.answer.as_ref().ok())
        .collect();
    if answers.is_empty() {
        return 2;
    }
    let quorum = usize::from(replica_count / 2 + 1);
    let healthy = answers
        .iter()
        .filter(|status| status.primary)
        .any(|primary| {
            answers
                .iter()
                .filter(|status| status.status == StatusKind::Normal && status.view == primary.view)
                .count()
                >= quorum
        });
    if healthy { 0 } else { 1 }
}

/// Ops `status` is behind the primary's commit, if a primary answered.
fn lag(status: &ReplicaStatus, primary_commit: Option<u64>) -> Option<u64> {
    primary_commit.map(|commit| commit.saturating_sub(status.commit))
}

fn json_row(row: &Row, primary_commit: Option<u64>) -> Value {
    match &row.answer {
        Ok(status) => json!({
            "index": row.index,
            "address": row.address,
            "reachable": true,
            "status": status.status.name(),
            "view": status.view,
            "primary": status.primary,
            "op": status.op,
            "commit": status.commit,
            "lag": lag(status, primary_commit),
            "checkpoint_op": status.checkpoint_op,
            "log_bytes": status.log_bytes,
            "checkpoint_bytes": status.checkpoint_bytes,
            "uptime_seconds": status.uptime_seconds,
            "version": status.version,
        }),
        Err(error) => json!({
            "index": row.index,
            "address": row.address,
            "reachable": false,
            "status": null,
            "view": null,
            "primary": null,
            "op": null,
            "commit": null,
            "lag": null,
            "checkpoint_op": null,
            "log_bytes": null,
            "checkpoint_bytes": null,
            "uptime_seconds": null,
            "version": null,
            "error": error,
        }),
    }
}

fn print_table(rows: &[Row], primary_commit: Option<u64>) {
    let header = [
        "INDEX",
        "ADDRESS",
        "REACHABLE",
        "STATUS",
        "VIEW",
        "PRIMARY",
        "OP",
        "COMMIT",
        "LAG",
        "CHECKPOINT OP",
        "LOG BYTES",
        "CHECKPOINT BYTES",
        "UPTIME SECONDS",
        "VERSION",
    ];
    let mut lines: Vec<Vec<String>> =
        vec![header.iter().map(|title| (*title).to_owned()).collect()];
    let mut errors = Vec::new();
    for row in rows {
        let mut line = vec![row.index.to_string(), row.address.clone()];
        match &row.answer {
            Ok(status) => line.extend([
                "yes".to_owned(),
                status.status.name().to_owned(),
                status.view.to_string(),
                if status.primary { "yes" } else { "no" }.to_owned(),
                status.op.to_string(),
                status.commit.to_string(),
                lag(status, primary_commit).map_or("-".to_owned(), |lag| lag.to_string()),
                status.checkpoint_op.to_string(),
                status.log_bytes.to_string(),
                status.checkpoint_bytes.to_string(),
                status.uptime_seconds.to_string(),
                status.version.clone(),
            ]),
            Err(error) => {
                line.push("no".to_owned());
                line.extend(std::iter::repeat_n("-".to_owned(), header.len() - 3));
                errors.push(format!("replica {} at {}: {error}", row.index, row.address));
            }
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    for error in errors {
        eprintln!("{error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(replica: u8, kind: StatusKind, view: u64, primary: bool, commit: u64) -> Row {
        Row {
            index: replica,
            address: format!("127.0.0.1:{}", 3000 + u16::from(replica)),
            answer: Ok(ReplicaStatus {
                replica,
                status: kind,
                primary,
                view,
                op: commit,
                commit,
                checkpoint_op: 0,
                log_bytes: 0,
                checkpoint_bytes: 0,
                uptime_seconds: 1,
                version: "0.1.0".to_owned(),
            }),
        }
    }

    fn unreachable(replica: u8) -> Row {
        Row {
            index: replica,
            address: "127.0.0.1:1".to_owned(),
            answer: Err("unreachable".to_owned()),
        }
    }

    #[test]
    fn the_verdict_needs_a_quorum_in_normal_status_in_the_primary_s_view() {
        use StatusKind::{Normal, ViewChange};
        let healthy = [
            status(0, Normal, 4, false, 10),
            status(1, Normal, 4, true, 12),
            unreachable(2),
        ];
        assert_eq!(verdict(&healthy, 3), 0);
        let split = [
            status(0, Normal, 3, false, 10),
            status(1, Normal, 4, true, 12),
            unreachable(2),
        ];
        assert_eq!(verdict(&split, 3), 1, "one replica of view 4 is no quorum");
        let changing = [
            status(0, ViewChange, 5, false, 10),
            status(1, ViewChange, 5, false, 12),
            status(2, ViewChange, 5, false, 12),
        ];
        assert_eq!(verdict(&changing, 3), 1);
        assert_eq!(
            verdict(&[unreachable(0), unreachable(1), unreachable(2)], 3),
            2
        );
        let Ok(backup) = &healthy[0].answer else {
            unreachable!()
        };
        assert_eq!(lag(backup, Some(12)), Some(2));
        let row = json_row(&healthy[0], Some(12));
        for name in [
            "index",
            "address",
            "reachable",
            "status",
            "view",
            "primary",
            "op",
            "commit",
            "lag",
            "checkpoint_op",
            "log_bytes",
            "checkpoint_bytes",
            "uptime_seconds",
            "version",
        ] {
            assert!(row.get(name).is_some(), "{name} missing from {row}");
        }
    }
}
