//! A Prometheus histogram of atomics over fixed bucket bounds, and the lines of the text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A Prometheus histogram over fixed bucket bounds (in seconds), with its sum and count.
#[derive(Debug)]
pub(super) struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    buckets: [AtomicU64; N],
    sum_micros: AtomicU64,
    count: AtomicU64,
    /// The largest value observed, in microseconds.
    max_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub(super) fn new(bounds: &'static [f64; N]) -> Self {
        Self {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }

    pub(super) fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(bucket) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// The histogram's `# HELP` and `# TYPE` lines, then its samples.
    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        self.render_samples(out, name, None);
    }

    /// The samples alone, each with the label `label` (name, value) if given: one of a family
    /// whose header is written once.
    pub(super) fn render_samples(&self, out: &mut String, name: &str, label: Option<(&str, &str)>) {
        let (prefix, only) = match label {
            Some((key, value)) => (
                format!("{key}=\"{value}\","),
                format!("{{{key}=\"{value}\"}}"),
            ),
            None => (String::new(), String::new()),
        };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{only} {sum}");
        let _ = writeln!(out, "{name}_count{only} {count}");
    }

    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(super) fn max_seconds(&self) -> f64 {
        self.max_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// The `# HELP` and `# TYPE` lines of metric `name`.
pub(super) fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One unlabelled metric with its header.
pub(super) fn metric(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    value: impl std::fmt::Display,
) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}
