//! A run's plan: cluster, workload and faults, drawn from the seed (swarm) or scripted.

use crate::SimOptions;
use crate::random::Prng;
use crate::scenario::{Action, Scenario};
use crate::sim::TICK_NS;
use crate::swarm::{ClusterParams, FaultProfile, MS, SECOND};

/// Everything fixed before the first event.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) replicas: u8,
    pub(crate) clients: usize,
    pub(crate) requests_per_client: u32,
    pub(crate) think_ns_max: u64,
    pub(crate) keys: usize,
    pub(crate) params: ClusterParams,
    pub(crate) profile: FaultProfile,
    /// Scripted faults, by time.
    pub(crate) script: Vec<(u64, Action)>,
    pub(crate) heal_at_ns: u64,
    pub(crate) liveness_timeout_ns: u64,
    pub(crate) convergence_timeout_ns: u64,
    pub(crate) linearizability_budget: u64,
    /// Sizes the replicas' storage runs with.
    pub(crate) storage_tuning: vsr_storage::Tuning,
}

impl Plan {
    /// Draws the cluster parameters, workload and fault mix of a swarm seed.
    pub(crate) fn swarm(options: &SimOptions, prng: &mut Prng) -> Self {
        let params = ClusterParams::swarm(prng, options.clients);
        let profile = if options.faults {
            FaultProfile::swarm(prng)
        } else {
            FaultProfile::quiet()
        };
        let requests_per_client = options
            .requests_per_client
            .unwrap_or_else(|| prng.range(10, 30) as u32);
        Self {
            replicas: options.replicas,
            clients: options.clients,
            requests_per_client,
            think_ns_max: prng.pick(&[0, 20 * MS, 200 * MS, SECOND]),
            keys: prng.range(1, 5) as usize,
            params,
            heal_at_ns: profile.fault_phase_ns,
            profile,
            script: Vec::new(),
            liveness_timeout_ns: options.liveness_timeout_ns,
            convergence_timeout_ns: options.convergence_timeout_ns,
            linearizability_budget: options.linearizability_budget,
            storage_tuning: crate::swarm::storage_tuning(prng),
        }
    }

    /// The plan of a scripted scenario: a clean network apart from the script.
    pub(crate) fn scenario(scenario: &Scenario) -> Self {
        let defaults = SimOptions::default();
        let mut profile = FaultProfile::quiet();
        profile.fault_phase_ns = scenario.heal_at_tick * TICK_NS;
        if scenario.disk_latency_ms_max > 0 {
            profile.disk_latency_min_ns = MS;
            profile.disk_latency_max_ns = scenario.disk_latency_ms_max.max(1) * MS;
        }
        Self {
            replicas: scenario.replicas,
            clients: scenario.clients,
            requests_per_client: scenario.requests_per_client,
            think_ns_max: scenario.think_ticks_max * TICK_NS,
            keys: scenario.keys.max(1),
            params: scenario.params,
            heal_at_ns: profile.fault_phase_ns,
            profile,
            script: scenario
                .steps
                .iter()
                .map(|(tick, action)| (tick * TICK_NS, action.clone()))
                .collect(),
            liveness_timeout_ns: defaults.liveness_timeout_ns,
            convergence_timeout_ns: defaults.convergence_timeout_ns,
            linearizability_budget: defaults.linearizability_budget,
            storage_tuning: crate::swarm::scenario_storage_tuning(),
        }
    }
}
