//! Shared by the process tests: a cluster of real `vsr start` processes in a temporary
//! directory, `vsr client` runs against it, and its metrics.
//!
//! [`Cluster`] kills every process it started and removes its directory when dropped, so a
//! failing test leaves nothing behind. Every wait is bounded.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The cluster id the tests use.
pub(crate) const CLUSTER: u128 = 0x7e57;

/// The `--checkpoint-interval` replicas are started with: the default (65,536 ops) is more than
/// a test writes.
pub(crate) const CHECKPOINT_INTERVAL: u64 = 4096;

/// Runs the `vsr` binary to completion.
pub(crate) fn vsr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vsr"))
        .args(args)
        .env_remove("VSR_CLUSTER")
        .env_remove("VSR_ADDRESSES")
        .env_remove("VSR_METRICS")
        .stdin(Stdio::null())
        .output()
        .expect("the vsr binary runs")
}

/// stdout of a run, lossily decoded.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a run, lossily decoded.
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `count` distinct free loopback ports ([`vsr_server::loopback_ports`]).
pub(crate) fn free_addresses(count: usize) -> Vec<SocketAddr> {
    vsr_server::loopback_ports(count).expect("free loopback ports")
}

/// Replicas as child processes, each with a data directory and a metrics endpoint.
pub(crate) struct Cluster {
    dir: TempDir,
    pub(crate) replica_count: usize,
    pub(crate) addresses: Vec<String>,
    pub(crate) metrics: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
    /// Mutual TLS with the certificates in [`Cluster::tls_dir`]; else `--insecure`.
    secure: bool,
}

impl Cluster {
    /// Formats and starts `replica_count` replicas; all of them serve metrics when it returns.
    /// Starts over on fresh ports if a replica could not start (a port taken in between).
    pub(crate) fn start(replica_count: usize) -> Self {
        Self::start_with(replica_count, true)
    }

    /// [`Cluster::start`] over plain TCP (`--insecure`): for tests of what reaches the frame
    /// decoder, which TLS would stop first.
    pub(crate) fn start_insecure(replica_count: usize) -> Self {
        Self::start_with(replica_count, false)
    }

    fn start_with(replica_count: usize, secure: bool) -> Self {
        Self::start_prepared(replica_count, secure, None)
    }

    /// Restores the backup at `backup` into `replica_count` new data directories
    /// (`vsr restore`) and starts them.
    pub(crate) fn start_restored(replica_count: usize, backup: &std::path::Path) -> Self {
        Self::start_prepared(replica_count, true, Some(backup))
    }

    fn start_prepared(
        replica_count: usize,
        secure: bool,
        backup: Option<&std::path::Path>,
    ) -> Self {
        for _ in 0..3 {
            let mut cluster = Self::prepare(replica_count, secure, backup);
            for index in 0..replica_count {
                cluster.spawn(index);
            }
            if cluster.wait_metrics(Duration::from_secs(10)) {
                return cluster;
            }
        }
        panic!("the cluster did not start");
    }

    /// Formats the data directories without starting anything.
    pub(crate) fn format(replica_count: usize) -> Self {
        Self::prepare(replica_count, true, None)
    }

    /// Certificates and data directories: formatted, or restored from `backup`.
    fn prepare(replica_count: usize, secure: bool, backup: Option<&std::path::Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vsr-cli-test-")
            .tempdir()
            .expect("temp dir");
        let ports = free_addresses(2 * replica_count);
        let cluster = Self {
            dir,
            replica_count,
            addresses: ports[..replica_count]
                .iter()
                .map(ToString::to_string)
                .collect(),
            metrics: ports[replica_count..].to_vec(),
            children: (0..replica_count).map(|_| None).collect(),
            secure,
        };
        let output = vsr(&[
            "certs",
            &format!("--cluster={CLUSTER}"),
            &format!("--replica-count={replica_count}"),
            "--client=test",
            "--operator=ops",
            cluster.tls_dir().to_str().expect("utf-8 path"),
        ]);
        assert!(output.status.success(), "certs: {}", stderr(&output));
        if let Some(backup) = backup {
            let dirs: Vec<PathBuf> = (0..replica_count).map(|i| cluster.data_dir(i)).collect();
            let mut args = vec![
                "restore".to_owned(),
                backup.to_str().expect("utf-8 path").to_owned(),
                format!("--cluster={CLUSTER}"),
                format!("--replica-count={replica_count}"),
            ];
            args.extend(
                dirs.iter()
                    .map(|dir| dir.to_str().expect("utf-8 path").to_owned()),
            );
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = vsr(&args);
            assert!(output.status.success(), "restore: {}", stderr(&output));
            return cluster;
        }
        for index in 0..replica_count {
            let path = cluster.data_dir(index);
            let output = vsr(&[
                "format",
                &format!("--cluster={CLUSTER}"),
                &format!("--replica={index}"),
                &format!("--replica-count={replica_count}"),
                path.to_str().expect("utf-8 path"),
            ]);
            assert!(output.status.success(), "format: {}", stderr(&output));
        }
        cluster
    }

    /// The cluster's certificates (`vsr certs`): replicas, client `test`, operator `ops`.
    pub(crate) fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// `--tls=DIR` for this cluster's certificates, or `--insecure`.
    pub(crate) fn security_flag(&self) -> String {
        if self.secure {
            format!("--tls={}", self.tls_dir().display())
        } else {
            "--insecure".to_owned()
        }
    }

    /// How an in-process client reaches this cluster: as client `test`, or over plain TCP.
    pub(crate) fn network(&self) -> vsr_server::Network {
        if !self.secure {
            return vsr_server::Network::Insecure;
        }
        let identity = vsr_server::Identity::Client("test".to_owned());
        let transport = vsr_server::TlsTransport::new(&self.tls_dir(), CLUSTER, identity)
            .expect("the cluster's client certificate");
        vsr_server::Network::Tls(transport)
    }

    pub(crate) fn data_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{index}"))
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{index}.log"))
    }

    /// The comma-separated address list.
    pub(crate) fn address_list(&self) -> String {
        self.addresses.join(",")
    }

    /// Starts replica `index` (its log appended to a file in the cluster's directory).
    pub(crate) fn spawn(&mut self, index: usize) {
        self.spawn_with(index, |_| {});
    }

    /// [`Cluster::spawn`], its command first changed by `adjust` (more flags, environment).
    pub(crate) fn spawn_with(&mut self, index: usize, adjust: impl FnOnce(&mut Command)) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(index))
            .expect("log file");
        let mut command = self.start_command(index);
        adjust(&mut command);
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("vsr start runs");
        self.children[index] = Some(child);
    }

    /// The `vsr start` command of replica `index`, its output not yet directed anywhere.
    pub(crate) fn start_command(&self, index: usize) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vsr"));
        command
            .arg("start")
            .arg(format!("--cluster={CLUSTER}"))
            .arg(format!("--addresses={}", self.address_list()))
            .arg(format!("--metrics={}", self.metrics[index]))
            // Checkpoints and log rotations within the few thousand ops a test writes.
            .arg(format!("--checkpoint-interval={CHECKPOINT_INTERVAL}"))
            // A killed test binary leaves no replica behind.
            .arg(format!("--exit-with-parent={}", std::process::id()))
            .arg(self.security_flag())
            .arg(self.data_dir(index))
            .env_remove("VSR_CLUSTER")
            .env_remove("VSR_ADDRESSES")
            .env_remove("VSR_METRICS")
            .stdin(Stdio::null());
        command
    }

    /// Restarts replica `index` and waits for its metrics endpoint.
    pub(crate) fn restart(&mut self, index: usize) {
        self.restart_with(index, |_| {});
    }

    /// [`Cluster::restart`], the command first changed by `adjust` (more flags, environment).
    pub(crate) fn restart_with(&mut self, index: usize, adjust: impl FnOnce(&mut Command)) {
        self.spawn_with(index, adjust);
        assert!(
            self.wait_metrics(Duration::from_secs(10)),
            "replica {index} restarted:\n{}",
            self.log(index)
        );
    }

    /// Waits until every running replica answers on its metrics endpoint; `false` if one
    /// exited or the time ran out.
    fn wait_metrics(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if (0..self.replica_count).any(|index| self.exited(index)) {
                return false;
            }
            let up = (0..self.replica_count)
                .filter(|index| self.children[*index].is_some())
                .all(|index| self.metric(index, "vsr_view").is_some());
            if up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills replica `index` with SIGKILL.
    pub(crate) fn kill(&mut self, index: usize) {
        let mut child = self.children[index].take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// The process id of replica `index`.
    pub(crate) fn pid(&self, index: usize) -> u32 {
        self.children[index].as_ref().expect("running").id()
    }

    /// Waits for replica `index` to exit on its own; its status, or `None` after `timeout`.
    pub(crate) fn wait_exit(
        &mut self,
        index: usize,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.children[index].as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.children[index] = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether replica `index` was started and has exited since.
    pub(crate) fn exited(&mut self, index: usize) -> bool {
        match self.children[index].as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_some(),
            None => false,
        }
    }

    /// Whether replica `index` runs.
    pub(crate) fn running(&mut self, index: usize) -> bool {
        self.children[index].is_some() && !self.exited(index)
    }

    /// Replica `index`'s log so far.
    pub(crate) fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.log_path(index)).unwrap_or_default()
    }

    /// Runs `vsr client` against this cluster with `args` after the common flags.
    pub(crate) fn client(&self, args: &[&str]) -> Output {
        let security = [
            self.security_flag(),
            "--tls-identity=client-test".to_owned(),
        ];
        self.client_with(&security, args)
    }

    /// Runs `vsr client` against this cluster with the security flags `security` (for
    /// example other certificates) and `args` after them.
    pub(crate) fn client_with(&self, security: &[String], args: &[&str]) -> Output {
        let mut all = vec![
            "client".to_owned(),
            format!("--cluster={CLUSTER}"),
            format!("--addresses={}", self.address_list()),
        ];
        all.extend_from_slice(security);
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        vsr(&all)
    }

    /// Runs `vsr client` against this cluster with `args`, writing `input` to its stdin, and
    /// waits for it (at most `timeout`).
    pub(crate) fn client_fed(&self, args: &[&str], input: &[u8], timeout: Duration) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vsr"))
            .args([
                "client".to_owned(),
                format!("--cluster={CLUSTER}"),
                format!("--addresses={}", self.address_list()),
                self.security_flag(),
                "--tls-identity=client-test".to_owned(),
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vsr client runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write the client's input");
        drop(stdin);
        let deadline = Instant::now() + timeout;
        while child.try_wait().expect("wait for the client").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("vsr client {args:?} did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("the client's output")
    }

    /// Runs one client command and returns its stdout (its last newline removed) and its exit
    /// status.
    pub(crate) fn run_status(&self, args: &[&str]) -> (String, Option<i32>) {
        let output = self.client(args);
        (
            stdout(&output).trim_end_matches('\n').to_owned(),
            output.status.code(),
        )
    }

    /// Runs one client command and returns its stdout line; panics unless it succeeded.
    pub(crate) fn run(&self, args: &[&str]) -> String {
        let output = self.client(args);
        assert!(
            output.status.success(),
            "vsr client {args:?}: {}",
            stderr(&output)
        );
        stdout(&output).trim_end_matches('\n').to_owned()
    }

    /// The Prometheus text of replica `index`, if its endpoint answers.
    pub(crate) fn scrape(&self, index: usize) -> Option<String> {
        scrape(self.metrics[index])
    }

    /// A sample of replica `index` (its name with labels, if any).
    pub(crate) fn metric(&self, index: usize, name: &str) -> Option<u64> {
        let text = self.scrape(index)?;
        text.lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
    }

    /// The running replica that is primary of a view after `after` (if given) in normal
    /// status, once there is one.
    pub(crate) fn wait_primary(&mut self, after: Option<u64>, timeout: Duration) -> (usize, u64) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for index in 0..self.replica_count {
                if !self.running(index) {
                    continue;
                }
                let view = self.metric(index, "vsr_view");
                let status = self.metric(index, "vsr_status");
                if let (Some(view), Some(0)) = (view, status)
                    && view % self.replica_count as u64 == index as u64
                    && after.is_none_or(|after| view > after)
                {
                    return (index, view);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no primary emerged within {timeout:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /metrics` at `address`, or `None` if it does not answer within 2 s. The request asks
/// for the connection to be closed after the response, which is read until it is.
pub(crate) fn scrape(address: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
