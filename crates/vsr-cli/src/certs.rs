//! `vsr certs`: writes a cluster's certificate authority and the certificates of its replicas,
//! clients and operators ([`vsr_server::tls::generate`]).
//!
//! Run it again on the same directory to issue more certificates, or fresh ones for rotation:
//! the authority found there (`ca.pem`, `ca.key`) signs them, so replicas and clients holding
//! older certificates still trust the new ones. Copy to each machine only what it needs:
//! `ca.pem` and its own `.pem`/`.key`; `ca.key` stays with whoever issues certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use vsr::config::REPLICAS_MAX;
use vsr_server::tls::{Issue, generate};

use crate::args::parse_cluster;

/// Options of `vsr certs`.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// The cluster id the certificates belong to (decimal, or hex with 0x).
    #[arg(long, env = "VSR_CLUSTER", value_parser = parse_cluster)]
    cluster: u128,
    /// Replicas in the cluster: certificates for replicas 0 to N-1.
    #[arg(long, value_name = "N", value_parser = parse_replica_count)]
    replica_count: u8,
    /// A client's certificate: may send requests (repeat for more clients).
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// An operator's certificate: may send requests and administrative requests (repeat for
    /// more).
    #[arg(long = "operator", value_name = "NAME")]
    operators: Vec<String>,
    /// Days the issued certificates stay valid (the authority: ten years).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    days: u32,
    /// Where to write the files (created if missing, with owner-only permissions).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

fn parse_replica_count(text: &str) -> Result<u8, String> {
    let count: u8 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a replica count"))?;
    if usize::from(count) > REPLICAS_MAX || count.is_multiple_of(2) {
        return Err(format!(
            "{count} replicas: a cluster has an odd number of replicas, at most {REPLICAS_MAX}"
        ));
    }
    Ok(count)
}

/// Runs `vsr certs`: prints each file written, one per line.
pub(crate) fn run(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let issue = Issue {
        cluster: args.cluster,
        replica_count: args.replica_count,
        clients: args.clients.clone(),
        operators: args.operators.clone(),
        validity: Duration::from_secs(u64::from(args.days) * 24 * 3600),
    };
    let written = generate(&args.dir, &issue)
        .with_context(|| format!("cannot write certificates to {}", args.dir.display()))?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
