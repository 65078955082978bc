//! What `vsr bench` learns about the machine it measures on: the filesystem under the replicas'
//! data, whether a sync there costs anything, the CPU time processes spent and their resident
//! memory.
//!
//! A throughput figure from a filesystem where fsync is free (tmpfs, or a disk with a volatile
//! write cache and no flush) says nothing about a durable service, so the bench names the
//! filesystem and times a few syncs before it starts. CPU time comes from `/proc/<pid>/stat`
//! (`utime + stime`, every thread of the process): the crate forbids `unsafe`, so there is no
//! `getrusage` call, and `/proc/self/stat` carries the same two numbers. Resident memory comes
//! from `/proc/<pid>/status` (`VmRSS`, and `VmHWM`, its peak since the process started).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Syncs the probe times.
const SYNC_PROBES: usize = 20;
/// Bytes each probe writes before its sync: one WAL block.
const SYNC_PROBE_SIZE_BYTES: usize = 4096;
/// A median sync faster than this never reached stable storage: the figure would be a
/// memory benchmark.
const SYNC_FREE_BELOW: Duration = Duration::from_micros(50);
/// Filesystems that live in memory.
const MEMORY_FILESYSTEMS: [&str; 3] = ["tmpfs", "ramfs", "devtmpfs"];
/// Clock ticks per second of `/proc/<pid>/stat`'s times when `getconf` cannot tell.
const CLOCK_TICKS_DEFAULT: u64 = 100;

/// The filesystem under a directory and what a sync costs there.
#[derive(Clone, Debug)]
pub(crate) struct Filesystem {
    /// Its type, from `/proc/mounts` (or `stat -f`), or `unknown`.
    pub(crate) kind: String,
    /// The median time of a 4 KiB write followed by `fdatasync`.
    pub(crate) sync: Duration,
}

impl Filesystem {
    /// Names the filesystem of `dir` and times [`SYNC_PROBES`] syncs of a file in it.
    pub(crate) fn probe(dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            kind: filesystem_type(dir),
            sync: sync_median(dir)?,
        })
    }

    /// Why a durable throughput measured here would mean nothing, if it would.
    pub(crate) fn sync_is_free(&self) -> Option<String> {
        if MEMORY_FILESYSTEMS.contains(&self.kind.as_str()) {
            return Some(format!(
                "the data directory is on {}, which lives in memory: fsync costs nothing",
                self.kind
            ));
        }
        (self.sync < SYNC_FREE_BELOW).then(|| {
            format!(
                "a 4 KiB write + fdatasync on this {} filesystem takes {} µs: the disk does not \
                 make writes durable (or its cache is never flushed)",
                self.kind,
                self.sync.as_micros()
            )
        })
    }
}

/// The type of the filesystem `dir` is on: the longest mount point of `/proc/mounts` that
/// contains it; `stat -f -c %T` if that file cannot be read.
fn filesystem_type(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        let best = mounts
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let point = unescape_mount(fields.nth(1)?);
                let kind = fields.next()?;
                dir.starts_with(&point)
                    .then(|| (point.len(), kind.to_owned()))
            })
            .max_by_key(|(length, _)| *length);
        if let Some((_, kind)) = best {
            return kind;
        }
    }
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&dir)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|kind| !kind.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A mount point as `/proc/mounts` writes it: space, tab, newline and backslash as `\ooo`.
fn unescape_mount(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|octal| u8::from_str_radix(octal, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The median of [`SYNC_PROBES`] 4 KiB appends each followed by `fdatasync`, in `dir`.
fn sync_median(dir: &Path) -> std::io::Result<Duration> {
    let path = dir.join(".vsr-bench-sync-probe");
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let block = [0x5a_u8; SYNC_PROBE_SIZE_BYTES];
        let mut times = Vec::with_capacity(SYNC_PROBES);
        for _ in 0..SYNC_PROBES {
            let started = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            times.push(started.elapsed());
        }
        times.sort_unstable();
        Ok(times[times.len() / 2])
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Reads processes' CPU time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuClock {
    ticks_per_second: u64,
}

impl CpuClock {
    /// Asks `getconf CLK_TCK` for the unit of `/proc/<pid>/stat`'s times.
    pub(crate) fn new() -> Self {
        let ticks_per_second = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(CLOCK_TICKS_DEFAULT);
        Self { ticks_per_second }
    }

    /// User plus system time process `pid` (`None`: this process) has spent, all its threads,
    /// or `None` if it cannot be read (the process is gone).
    pub(crate) fn process(&self, pid: Option<u32>) -> Option<Duration> {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/stat"),
            None => "/proc/self/stat".to_owned(),
        };
        let stat = std::fs::read_to_string(path).ok()?;
        // The command name (field 2) may hold spaces and parentheses: count from its end.
        let (_, after_name) = stat.rsplit_once(')')?;
        let mut fields = after_name.split_whitespace();
        // Fields 3.. follow the name; utime is field 14 and stime field 15.
        let user: u64 = fields.nth(11)?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        let ticks = user + system;
        Some(Duration::from_micros(
            ticks * 1_000_000 / self.ticks_per_second,
        ))
    }

    /// The summed CPU time of processes `pids`; `None` if any cannot be read.
    pub(crate) fn processes(&self, pids: &[u32]) -> Option<Duration> {
        pids.iter().map(|pid| self.process(Some(*pid))).sum()
    }
}

/// A process's resident memory, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Memory {
    /// `VmHWM`: the most it was resident at once since it started.
    pub(crate) peak_bytes: u64,
    /// `VmRSS`: resident now.
    pub(crate) resident_bytes: u64,
}

impl Memory {
    /// The resident memory of process `pid`, or `None` if it cannot be read (the process is
    /// gone).
    pub(crate) fn of(pid: u32) -> Option<Self> {
        parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }
}

/// `VmHWM` and `VmRSS` of a `/proc/<pid>/status` text (both in kB there).
fn parse_status(status: &str) -> Option<Memory> {
    let kilobytes = |name: &str| -> Option<u64> {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?.trim();
            value.strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    Some(Memory {
        peak_bytes: kilobytes("VmHWM")? * 1024,
        resident_bytes: kilobytes("VmRSS")? * 1024,
    })
}

/// The disk space the files under `dir` (subdirectories a few levels deep) take, in bytes, as
/// `du` counts it: allocated blocks, so the unwritten tail of a file grown ahead of its
/// writes (a WAL) does not count. What cannot be read counts as nothing.
pub(crate) fn directory_size_bytes(dir: &Path) -> u64 {
    /// `st_blocks` counts 512-byte units whatever the filesystem's block size.
    const STAT_BLOCK_SIZE_BYTES: u64 = 512;
    /// Levels of subdirectories walked; a data directory is flat.
    const DEPTH_MAX: usize = 4;
    fn walk(dir: &Path, depth: usize) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .map(|entry| match entry.metadata() {
                Ok(metadata) if metadata.is_dir() && depth < DEPTH_MAX => {
                    walk(&entry.path(), depth + 1)
                }
                Ok(metadata) if metadata.is_file() => metadata.blocks() * STAT_BLOCK_SIZE_BYTES,
                _ => 0,
            })
            .sum()
    }
    walk(dir, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/odd\\"), "/odd\\");
    }

    #[test]
    fn reads_this_process_cpu_time() {
        let clock = CpuClock::new();
        let spin = Instant::now();
        let mut x = 0_u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert!(x != 1);
        assert!(clock.process(None).is_some());
        assert!(clock.processes(&[std::process::id()]).is_some());
        assert!(!filesystem_type(Path::new("/")).is_empty());
    }

    #[test]
    fn reads_resident_memory() {
        let status = "Name:\tvsr\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                peak_bytes: 2048 * 1024,
                resident_bytes: 1024 * 1024,
            })
        );
        assert_eq!(parse_status("Name:\tvsr\n"), None);
        let own = Memory::of(std::process::id()).expect("this process's status");
        assert!(own.peak_bytes >= own.resident_bytes && own.resident_bytes > 0);
    }

    #[test]
    fn sizes_a_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a"), [7_u8; 100_000]).expect("write a");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b"), [7_u8; 28_000]).expect("write b");
        let sparse = std::fs::File::create(dir.path().join("sparse")).expect("create");
        sparse.set_len(100 << 20).expect("grow");
        let size = directory_size_bytes(dir.path());
        // Whole blocks: at least what was written, far less than the sparse file's length.
        assert!((128_000..(1 << 20)).contains(&size), "{size}");
        assert_eq!(directory_size_bytes(&dir.path().join("missing")), 0);
    }
}
