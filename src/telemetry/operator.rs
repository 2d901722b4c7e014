//! The metrics of `sluice operator`, registered after the common ones when the process is
//! the operator ([`super::metrics::Metrics::operator`]). The README's metrics table
//! documents them with the others.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::metrics::{
    Counters, FloatGauge, One, PolicyVerdict, ReconcileFailure, ReconcileResult, RevisionInfo,
    register,
};

#[derive(Debug, Clone, Default)]
pub struct OperatorMetrics {
    pub reconciles: Counters<One<ReconcileResult>>,
    pub failures: Counters<One<ReconcileFailure>>,
    pub status_writes: Counter,
    pub snapshot_writes: Counter,
    pub compiles: Counter,
    pub last_compile_seconds: FloatGauge,
    pub password_hashes: Counter,
    pub policies: Family<One<PolicyVerdict>, Gauge>,
    pub leader: Gauge,
    pub in_force: RevisionInfo,
}

impl OperatorMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        // Both verdicts show from the start, 0 before the first compile.
        for verdict in [PolicyVerdict::Accepted, PolicyVerdict::Refused] {
            drop(self.policies.get_or_create(&One(verdict)));
        }
        let r = registry;
        let m = self.clone();
        register(
            r,
            "sluice_operator_reconciles_total",
            &["Reconciles of a RelayPolicy, by result."],
            m.reconciles,
        );
        register(
            r,
            "sluice_operator_failures_total",
            &["Failed reconciles, by what failed."],
            m.failures,
        );
        register(
            r,
            "sluice_operator_status_writes_total",
            &["Statuses written."],
            m.status_writes,
        );
        register(
            r,
            "sluice_operator_snapshot_writes_total",
            &["Snapshots written to NATS."],
            m.snapshot_writes,
        );
        register(
            r,
            "sluice_operator_compiles_total",
            &["Compiles of the whole set of policies."],
            m.compiles,
        );
        register(
            r,
            "sluice_operator_password_hashes_total",
            &["Client passwords hashed."],
            m.password_hashes,
        );
        register(
            r,
            "sluice_operator_policies",
            &["RelayPolicies by verdict at the last compile."],
            m.policies,
        );
        register(
            r,
            "sluice_operator_last_compile_seconds",
            &["How long the last compile took."],
            m.last_compile_seconds,
        );
        register(
            r,
            "sluice_operator_leader",
            &["1 while this replica leads."],
            m.leader,
        );
        register(
            r,
            "sluice_policy_in_force_info",
            &["The revision of the snapshot in force."],
            m.in_force,
        );
    }

    pub fn set_policies(&self, accepted: u64, refused: u64) {
        for (verdict, n) in [
            (PolicyVerdict::Accepted, accepted),
            (PolicyVerdict::Refused, refused),
        ] {
            self.policies
                .get_or_create(&One(verdict))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn set_in_force(&self, revision: &str) {
        self.in_force.set(revision);
    }

    pub fn in_force(&self) -> Option<String> {
        self.in_force.get()
    }
}
