//! The process metrics of the Prometheus client conventions, read when scraped: CPU time,
//! memory, file descriptors and start time, from `/proc/self` and `getrusage`/`getrlimit`.
//!
//! Linux only; elsewhere none are rendered. A value that cannot be read is left out rather
//! than reported as 0.

/// Appends the process metrics.
#[cfg(target_os = "linux")]
pub(super) fn render(out: &mut String) {
    linux::render(out);
}

/// Appends nothing: the process metrics are read from Linux's `/proc`.
#[cfg(not(target_os = "linux"))]
pub(super) fn render(_out: &mut String) {}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::OnceLock;

    use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage};
    use nix::sys::time::TimeVal;
    use nix::unistd::{SysconfVar, sysconf};

    use super::super::histogram::metric;

    pub(super) fn render(out: &mut String) {
        if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
            let seconds = |time: TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
            let cpu = seconds(usage.user_time()) + seconds(usage.system_time());
            let help = "Total user and system CPU time spent in seconds.";
            metric(out, "process_cpu_seconds_total", help, "counter", cpu);
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(bytes) = status_kib(&status, "VmRSS:") {
            let help = "Resident memory size in bytes.";
            metric(out, "process_resident_memory_bytes", help, "gauge", bytes);
        }
        if let Some(bytes) = status_kib(&status, "VmSize:") {
            let help = "Virtual memory size in bytes.";
            metric(out, "process_virtual_memory_bytes", help, "gauge", bytes);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            let help = "Number of open file descriptors.";
            metric(out, "process_open_fds", help, "gauge", entries.count());
        }
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let help = "Maximum number of open file descriptors.";
            metric(out, "process_max_fds", help, "gauge", soft);
        }
        if let Some(start) = start_time_seconds() {
            let help = "Start time of the process since unix epoch in seconds.";
            metric(out, "process_start_time_seconds", help, "gauge", start);
        }
    }

    /// The value of the `/proc/self/status` line `key`, given in KiB, in bytes.
    pub(super) fn status_kib(status: &str, key: &str) -> Option<u64> {
        let line = status.lines().find_map(|line| line.strip_prefix(key))?;
        let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    }

    /// When the process started, in seconds since the epoch: the boot time plus the start
    /// in clock ticks after boot. Read once: it never changes.
    fn start_time_seconds() -> Option<f64> {
        static START: OnceLock<Option<f64>> = OnceLock::new();
        *START.get_or_init(|| {
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            let boot = std::fs::read_to_string("/proc/stat").ok()?;
            let ticks = sysconf(SysconfVar::CLK_TCK).ok()??;
            start_from(&stat, &boot, ticks)
        })
    }

    /// The start time from the texts of `/proc/self/stat` and `/proc/stat` and the clock
    /// ticks per second.
    pub(super) fn start_from(stat: &str, boot: &str, ticks_per_second: i64) -> Option<f64> {
        // The command name may hold spaces and parentheses: fields count from its last `)`,
        // after which comes field 3; the start time is field 22.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let started_ticks: u64 = after_name.split_whitespace().nth(22 - 3)?.parse().ok()?;
        let boot_seconds: u64 = boot
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        (ticks_per_second > 0)
            .then(|| boot_seconds as f64 + started_ticks as f64 / ticks_per_second as f64)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::{start_from, status_kib};
    use super::render;

    #[test]
    fn the_proc_texts_are_read() {
        let status = "Name:\tvsr\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048 * 1024));
        assert_eq!(status_kib(status, "VmSize:"), Some(123_456 * 1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 4 0 \
                    250 1000 10";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        assert_eq!(start_from(stat, boot, 100), Some(1_700_000_002.5));
        assert_eq!(start_from("garbage", boot, 100), None);
        assert_eq!(start_from(stat, "cpu 1\n", 100), None);
    }

    #[test]
    fn this_process_reports_every_process_metric() {
        let mut text = String::new();
        render(&mut text);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from {text}"));
            let value: f64 = value.parse().expect("a number");
            assert!(value >= 0.0, "{name} {value}");
        }
        let start = text
            .lines()
            .find_map(|line| line.strip_prefix("process_start_time_seconds "))
            .and_then(|value| value.parse::<f64>().ok())
            .expect("a start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 24.0 * 3600.0,
            "{start} vs {now}"
        );
    }
}
