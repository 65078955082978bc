//! [`LocalCluster`]: replicas as child processes of this binary (`vsr start`) on free loopback
//! ports, in one directory, for `vsr demo`, `vsr bench` (three replicas) and `vsr chaos` (three,
//! five or seven, each possibly with its own `--addresses` list pointing at proxies).
//!
//! [`LocalCluster::create`] picks the ports (outside the ephemeral range, so a restarted replica
//! finds its port free: `vsr_server::loopback_ports`) and runs `vsr format` for each replica;
//! `start`, `kill` and the waits drive the processes; the replicas' metrics
//! ([`crate::scrape`]) tell who is primary and how far each replica got. Dropping the cluster
//! kills every child; the directory goes with its [`TempDir`] unless [`LocalCluster::keep`] was
//! called. Replicas are started with `--exit-with-parent`, so if this process is killed
//! outright they stop by themselves (its directory then stays behind).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::scrape::{ReplicaState, replica_state};

/// Replicas of a local cluster made by [`LocalCluster::create`].
pub(crate) const REPLICA_COUNT: usize = 3;
/// How long the restarted replica may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between two looks at the metrics.
const POLL: Duration = Duration::from_millis(10);

/// Replicas as child processes of this binary, in a temporary directory. Dropping it kills
/// every child and removes the directory (unless [`LocalCluster::keep`] was called).
pub(crate) struct LocalCluster {
    exe: PathBuf,
    /// `None` once kept.
    dir: Option<TempDir>,
    root: PathBuf,
    /// The cluster id the replicas were formatted with.
    pub(crate) cluster: u128,
    /// Replica i's `host:port`, the i-th.
    pub(crate) addresses: Vec<String>,
    /// The `--addresses` list replica i is started with, the i-th (by default `addresses`).
    start_addresses: Vec<Vec<String>>,
    /// Replica i's metrics endpoint, the i-th.
    pub(crate) metrics: Vec<SocketAddr>,
    /// `--checkpoint-interval` for the replicas started from now on, with the log-size bound
    /// lifted so that the interval alone decides (`None`: the defaults).
    pub(crate) checkpoint_interval: Option<u64>,
    /// The throwaway certificates the replicas and this process's clients use; `None`:
    /// `--insecure`.
    tls: Option<PathBuf>,
    children: Vec<Option<Child>>,
}

/// The client certificate a local cluster issues for its own workload.
const LOCAL_CLIENT: &str = "local";

impl LocalCluster {
    /// A cluster of `replica_count` replicas of this program in a fresh temporary directory
    /// named `prefix…` under the system's temporary directory, and a runtime to drive it.
    pub(crate) fn in_temp_dir(
        prefix: &str,
        replica_count: usize,
        secure: bool,
    ) -> anyhow::Result<(tokio::runtime::Runtime, Self)> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("cannot create a temporary directory")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        Ok((
            runtime,
            Self::create_sized(exe, dir, replica_count, secure)?,
        ))
    }

    /// Picks free ports and formats the data directories of [`REPLICA_COUNT`] replicas.
    pub(crate) fn create(exe: PathBuf, dir: TempDir, secure: bool) -> anyhow::Result<Self> {
        Self::create_sized(exe, dir, REPLICA_COUNT, secure)
    }

    /// Picks free ports and formats the data directories of `replica_count` replicas; when
    /// `secure`, writes throwaway certificates (valid for a day) into `tls/` for mutual TLS.
    pub(crate) fn create_sized(
        exe: PathBuf,
        dir: TempDir,
        replica_count: usize,
        secure: bool,
    ) -> anyhow::Result<Self> {
        let root = dir.path().to_owned();
        let ports = vsr_server::loopback_ports(2 * replica_count)
            .context("cannot find free loopback ports")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let cluster = (nanos << 32) ^ u128::from(std::process::id());
        let addresses: Vec<String> = ports[..replica_count]
            .iter()
            .map(ToString::to_string)
            .collect();
        let tls = if secure {
            let tls = root.join("tls");
            let issue = vsr_server::tls::Issue {
                cluster,
                replica_count: u8::try_from(replica_count).context("too many replicas")?,
                clients: vec![LOCAL_CLIENT.to_owned()],
                operators: Vec::new(),
                validity: Duration::from_secs(24 * 3600),
            };
            vsr_server::tls::generate(&tls, &issue).context("cannot write certificates")?;
            Some(tls)
        } else {
            None
        };
        let cluster = Self {
            exe,
            dir: Some(dir),
            tls,
            root,
            cluster,
            start_addresses: vec![addresses.clone(); replica_count],
            addresses,
            metrics: ports[replica_count..].to_vec(),
            checkpoint_interval: None,
            children: (0..replica_count).map(|_| None).collect(),
        };
        for index in 0..replica_count {
            cluster.format(index, false)?;
        }
        Ok(cluster)
    }

    /// The transport this process's clients reach the replicas with: mutual TLS with the
    /// cluster's throwaway client certificate, or plain TCP.
    pub(crate) fn network(&self) -> anyhow::Result<vsr_server::Network> {
        let Some(tls) = &self.tls else {
            return Ok(vsr_server::Network::Insecure);
        };
        let identity = vsr_server::Identity::Client(LOCAL_CLIENT.to_owned());
        let transport = vsr_server::TlsTransport::new(tls, self.cluster, identity)?;
        Ok(vsr_server::Network::Tls(transport))
    }

    /// Replicas in the cluster.
    pub(crate) fn replica_count(&self) -> usize {
        self.children.len()
    }

    /// Starts replica `index` with `addresses` as its `--addresses` list from now on (its own
    /// entry must stay its listening address).
    pub(crate) fn set_start_addresses(&mut self, index: usize, addresses: Vec<String>) {
        assert_eq!(addresses.len(), self.replica_count());
        assert_eq!(addresses[index], self.addresses[index]);
        self.start_addresses[index] = addresses;
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn data_dir(&self, index: usize) -> PathBuf {
        self.root.join(format!("replica-{index}"))
    }

    pub(crate) fn log_path(&self, index: usize) -> PathBuf {
        self.root.join(format!("replica-{index}.log"))
    }

    /// Runs `vsr format` for replica `index`, with `--recover` if `recover`.
    fn format(&self, index: usize, recover: bool) -> anyhow::Result<()> {
        let output = Command::new(&self.exe)
            .arg("format")
            .arg(format!("--cluster={:#x}", self.cluster))
            .arg(format!("--replica={index}"))
            .arg(format!("--replica-count={}", self.replica_count()))
            .args(recover.then_some("--recover"))
            .arg(self.data_dir(index))
            .stdin(Stdio::null())
            .output()
            .context("cannot run vsr format")?;
        if !output.status.success() {
            bail!(
                "vsr format failed for replica {index}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Replaces the data directory of the stopped replica `index` with an empty one formatted
    /// with `vsr format --recover`: the way to rebuild a replica whose data was lost.
    pub(crate) fn reformat_recovering(&self, index: usize) -> anyhow::Result<()> {
        if self.children[index].is_some() {
            bail!("replica {index} is running");
        }
        let dir = self.data_dir(index);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        self.format(index, true)
    }

    /// Starts `vsr start` for replica `index`, its log appended to `replica-<index>.log`.
    pub(crate) fn start(&mut self, index: usize) -> anyhow::Result<u32> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(index))
            .context("cannot create a replica's log file")?;
        let mut command = Command::new(&self.exe);
        command
            .arg("start")
            .arg(format!("--cluster={:#x}", self.cluster))
            .arg(format!(
                "--addresses={}",
                self.start_addresses[index].join(",")
            ))
            .arg(format!("--metrics={}", self.metrics[index]))
            .arg(format!("--exit-with-parent={}", std::process::id()));
        if let Some(interval) = self.checkpoint_interval {
            command.arg(format!("--checkpoint-interval={interval}"));
            // The interval alone decides: no checkpoint comes early from the log-size bound.
            command.arg(format!("--checkpoint-log-bytes={}", 1u64 << 50));
        }
        match &self.tls {
            Some(tls) => command.arg("--tls").arg(tls),
            None => command.arg("--insecure"),
        };
        let child = command
            .arg(self.data_dir(index))
            .env_remove("VSR_CLUSTER")
            .env_remove("VSR_ADDRESSES")
            .env_remove("VSR_METRICS")
            .env_remove("VSR_TLS_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot run vsr start")?;
        let pid = child.id();
        self.children[index] = Some(child);
        Ok(pid)
    }

    /// Kills replica `index` with SIGKILL and reaps it; returns its pid.
    pub(crate) fn kill(&mut self, index: usize) -> anyhow::Result<u32> {
        let mut child = self.children[index]
            .take()
            .ok_or_else(|| anyhow!("replica {index} is not running"))?;
        let pid = child.id();
        child.kill().context("cannot kill a replica")?;
        child.wait().context("cannot reap a replica")?;
        Ok(pid)
    }

    /// The pid of replica `index`, if it runs.
    pub(crate) fn pid(&self, index: usize) -> Option<u32> {
        self.children[index].as_ref().map(Child::id)
    }

    /// Reaps every replica that exited although nobody stopped it; returns each with its
    /// status.
    pub(crate) fn reap_exited(&mut self) -> Vec<(usize, ExitStatus)> {
        let mut exited = Vec::new();
        for (index, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                *slot = None;
                exited.push((index, status));
            }
        }
        exited
    }

    /// Waits up to `timeout` for replica `index` to exit (after a signal this process sent
    /// it), and reaps it; `None` if it still runs.
    pub(crate) fn wait_exit(&mut self, index: usize, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.children[index].as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.children[index] = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fails if a replica that should run has exited, with the end of its log.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        for index in 0..self.replica_count() {
            let Some(child) = self.children[index].as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.children[index] = None;
                let log = self.log_path(index);
                eprintln!("the end of {}:\n{}", log.display(), log_tail(&log));
                bail!("replica {index} exited unexpectedly ({status})");
            }
        }
        Ok(())
    }

    /// The state of every running replica whose metrics answer.
    async fn states(&mut self) -> anyhow::Result<Vec<Option<ReplicaState>>> {
        self.check_running()?;
        let mut states = Vec::with_capacity(self.replica_count());
        for index in 0..self.replica_count() {
            states.push(if self.children[index].is_some() {
                replica_state(self.metrics[index]).await
            } else {
                None
            });
        }
        Ok(states)
    }

    /// Waits for a running replica that is primary of its view in normal status (of a view
    /// after `after`, if given).
    pub(crate) async fn wait_for_primary(
        &mut self,
        after: Option<u64>,
        timeout: Duration,
    ) -> anyhow::Result<(usize, ReplicaState)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let states = self.states().await?;
            for (index, state) in states.iter().enumerate() {
                if let Some(state) = state
                    && state.is_primary(index, self.replica_count())
                    && after.is_none_or(|view| state.view > view)
                {
                    return Ok((index, *state));
                }
            }
            tokio::time::sleep(POLL).await;
        }
        bail!("no primary emerged within {} s", timeout.as_secs())
    }

    /// The highest commit number of the running replicas.
    pub(crate) async fn commit_max(&mut self) -> anyhow::Result<u64> {
        let states = self.states().await?;
        Ok(states
            .iter()
            .flatten()
            .map(|state| state.commit)
            .max()
            .unwrap_or(0))
    }

    /// Waits until replica `index` executed up to `target`; returns its commit number then.
    pub(crate) async fn wait_reaches(&mut self, index: usize, target: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while Instant::now() < deadline {
            self.check_running()?;
            if let Some(state) = replica_state(self.metrics[index]).await
                && state.commit >= target
            {
                return Ok(state.commit);
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "replica {index} did not catch up within {} s; see {}",
            CATCH_UP_TIMEOUT.as_secs(),
            self.log_path(index).display()
        )
    }

    /// Waits until every replica reports the same commit number (the workload is done, so
    /// the primary's has stopped moving); returns it.
    pub(crate) async fn wait_converged(&mut self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while Instant::now() < deadline {
            let states = self.states().await?;
            let commits: Vec<Option<u64>> = states.iter().map(|s| s.map(|s| s.commit)).collect();
            if let Some(Some(commit)) = commits.first()
                && commits.iter().all(|other| *other == Some(*commit))
            {
                return Ok(*commit);
            }
            tokio::time::sleep(POLL).await;
        }
        bail!(
            "the replicas' commit numbers did not converge within {} s",
            CATCH_UP_TIMEOUT.as_secs()
        )
    }

    /// Keeps the directory when dropped; returns its path.
    pub(crate) fn keep(&mut self) -> Option<PathBuf> {
        self.dir.take().map(TempDir::keep)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a replica's log.
pub(crate) fn log_tail(path: &Path) -> String {
    const TAIL_BYTES: u64 = 2048;
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let size = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(size.saturating_sub(TAIL_BYTES)));
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
