//! `vsr_operation_latency_seconds{operation}`: one latency histogram per kind of operation.
//!
//! The names come from the state machine ([`vsr::StateMachine::operation_name`] and
//! [`vsr::StateMachine::query_name`]) as `&'static str`s. A name takes the first free slot
//! the first time it is seen and keeps it; the lookup compares at most
//! [`OPERATION_NAMES_MAX`] short strings, with no allocation and no lock. Names past the
//! bound, and names that are not a plain label value, share the slot [`OTHER`].

use std::sync::OnceLock;
use std::time::Duration;

use super::LATENCY_BUCKETS;
use super::histogram::{Histogram, header};

/// Kinds of operation with a histogram of their own; one more slot holds the rest.
pub(super) const OPERATION_NAMES_MAX: usize = 15;
/// The name of the slot shared by names past the bound or not of the allowed form.
pub(super) const OTHER: &str = "other";
/// The longest name kept.
const NAME_SIZE_MAX: usize = 32;

/// Where one operation's latency goes: an index into [`Operations`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OperationSlot(u8);

/// The per-operation latency histograms.
#[derive(Debug)]
pub(super) struct Operations {
    /// The name of each slot, set once, in the order the names were first seen.
    names: [OnceLock<&'static str>; OPERATION_NAMES_MAX],
    /// One histogram per slot of `names`, then the one of [`OTHER`].
    latencies: [Histogram<{ LATENCY_BUCKETS.len() }>; OPERATION_NAMES_MAX + 1],
}

impl Operations {
    pub(super) fn new() -> Self {
        Self {
            names: std::array::from_fn(|_| OnceLock::new()),
            latencies: std::array::from_fn(|_| Histogram::new(&LATENCY_BUCKETS)),
        }
    }

    /// The slot of operations named `name`, which takes a free slot if it has none yet.
    pub(super) fn slot(&self, name: &'static str) -> OperationSlot {
        let other = OperationSlot(OPERATION_NAMES_MAX as u8);
        if !is_label_value(name) || name == OTHER {
            return other;
        }
        for (index, cell) in self.names.iter().enumerate() {
            // Only the event loop registers; `set` failing means another name took the slot.
            let held = *cell.get_or_init(|| name);
            if held == name {
                return OperationSlot(u8::try_from(index).expect("few slots"));
            }
        }
        other
    }

    pub(super) fn observe(&self, slot: OperationSlot, latency: Duration) {
        self.latencies[usize::from(slot.0)].observe(latency);
    }

    pub(super) fn render(&self, out: &mut String) {
        let name = "vsr_operation_latency_seconds";
        header(
            out,
            name,
            "Request or query arrival at the primary to reply sent, by kind of operation (as the \
             state machine names it; register: a session's registration).",
            "histogram",
        );
        let named = self.names.iter().map_while(OnceLock::get).copied();
        for (operation, latency) in named.zip(&self.latencies) {
            latency.render_samples(out, name, Some(("operation", operation)));
        }
        let other = &self.latencies[OPERATION_NAMES_MAX];
        if other.count() > 0 {
            other.render_samples(out, name, Some(("operation", OTHER)));
        }
    }
}

/// Whether `name` is a short, non-empty run of lower case ASCII letters, digits and `_`.
fn is_label_value(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_SIZE_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_slot_and_the_rest_share_other() {
        let operations = Operations::new();
        let put = operations.slot("put");
        assert_eq!(operations.slot("get"), OperationSlot(1));
        assert_eq!(operations.slot("put"), put);
        let other = OperationSlot(OPERATION_NAMES_MAX as u8);
        for bad in [
            "",
            "Put",
            "a b",
            "quote\"",
            "other",
            &"x".repeat(NAME_SIZE_MAX + 1),
        ] {
            let bad: &'static str = Box::leak(bad.to_owned().into_boxed_str());
            assert_eq!(operations.slot(bad), other, "{bad:?}");
        }
        const NAMES: [&str; 20] = [
            "n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10", "n11", "n12", "n13",
            "n14", "n15", "n16", "n17", "n18", "n19",
        ];
        let slots: Vec<_> = NAMES.iter().map(|name| operations.slot(name)).collect();
        assert_eq!(slots[OPERATION_NAMES_MAX - 3], OperationSlot(14));
        assert!(
            slots[OPERATION_NAMES_MAX - 2..]
                .iter()
                .all(|slot| *slot == other)
        );
    }

    #[test]
    fn each_name_renders_its_own_series_and_other_only_when_used() {
        let operations = Operations::new();
        operations.observe(operations.slot("put"), Duration::from_millis(2));
        operations.observe(operations.slot("put"), Duration::from_millis(20));
        operations.observe(operations.slot("scan"), Duration::from_millis(2));
        let mut text = String::new();
        operations.render(&mut text);
        for sample in [
            "# TYPE vsr_operation_latency_seconds histogram\n",
            "vsr_operation_latency_seconds_bucket{operation=\"put\",le=\"0.0025\"} 1\n",
            "vsr_operation_latency_seconds_bucket{operation=\"put\",le=\"+Inf\"} 2\n",
            "vsr_operation_latency_seconds_count{operation=\"put\"} 2\n",
            "vsr_operation_latency_seconds_sum{operation=\"put\"} 0.022\n",
            "vsr_operation_latency_seconds_count{operation=\"scan\"} 1\n",
        ] {
            assert!(text.contains(sample), "{sample:?} missing from {text}");
        }
        assert!(!text.contains("other"), "{text}");
        operations.observe(operations.slot("Bad"), Duration::from_millis(2));
        text.clear();
        operations.render(&mut text);
        assert!(text.contains("vsr_operation_latency_seconds_count{operation=\"other\"} 1\n"));
    }
}
