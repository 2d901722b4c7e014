//! The metrics of `sluice operator`, rendered after the common ones when the process is
//! the operator:
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `sluice_operator_reconciles_total` | counter | `result` (`ok`, `error`, `skipped_follower`) | reconciles of a RelayPolicy |
//! | `sluice_operator_failures_total` | counter | `reason` (`read_snapshot`, `write_snapshot`, `patch_status`, `compile`) | failed reconciles, by what failed |
//! | `sluice_operator_status_writes_total` | counter | | statuses written |
//! | `sluice_operator_snapshot_writes_total` | counter | | snapshots written to NATS |
//! | `sluice_operator_compiles_total` | counter | | compiles of the whole set of policies |
//! | `sluice_operator_last_compile_seconds` | gauge | | how long the last compile took (Secrets, hashing, merging) |
//! | `sluice_operator_password_hashes_total` | counter | | client passwords hashed (not taken from the cache) |
//! | `sluice_operator_policies` | gauge | `verdict` (`accepted`, `refused`) | RelayPolicies by verdict at the last compile |
//! | `sluice_operator_leader` | gauge | | 1 while this replica leads (and writes), else 0 |
//! | `sluice_policy_in_force_info` | gauge | `revision` | the revision of the snapshot in force, as this replica last saw or wrote it |

use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::metrics::LabeledCounter;

#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub reconciles: LabeledCounter,
    pub failures: LabeledCounter,
    pub status_writes: AtomicU64,
    pub snapshot_writes: AtomicU64,
    pub compiles: AtomicU64,
    pub last_compile_micros: AtomicU64,
    pub password_hashes: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub leader: AtomicBool,
    in_force: RwLock<Option<String>>,
}

impl OperatorMetrics {
    pub fn set_in_force(&self, revision: &str) {
        *self.in_force.write().unwrap_or_else(|e| e.into_inner()) = Some(revision.to_string());
    }

    pub fn in_force(&self) -> Option<String> {
        self.in_force
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn render(&self, out: &mut String) {
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        head(
            out,
            "sluice_operator_reconciles_total",
            "counter",
            "Reconciles of a RelayPolicy, by result.",
        );
        self.reconciles
            .render(out, "sluice_operator_reconciles_total", "result");
        head(
            out,
            "sluice_operator_failures_total",
            "counter",
            "Failed reconciles, by what failed.",
        );
        self.failures
            .render(out, "sluice_operator_failures_total", "reason");
        for (name, help, value) in [
            (
                "sluice_operator_status_writes_total",
                "Statuses written.",
                &self.status_writes,
            ),
            (
                "sluice_operator_snapshot_writes_total",
                "Snapshots written to NATS.",
                &self.snapshot_writes,
            ),
            (
                "sluice_operator_compiles_total",
                "Compiles of the whole set of policies.",
                &self.compiles,
            ),
            (
                "sluice_operator_password_hashes_total",
                "Client passwords hashed.",
                &self.password_hashes,
            ),
        ] {
            head(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", load(value));
        }
        head(
            out,
            "sluice_operator_policies",
            "gauge",
            "RelayPolicies by verdict at the last compile.",
        );
        let _ = writeln!(
            out,
            "sluice_operator_policies{{verdict=\"accepted\"}} {}\nsluice_operator_policies{{verdict=\"refused\"}} {}",
            load(&self.accepted),
            load(&self.refused)
        );
        head(
            out,
            "sluice_operator_last_compile_seconds",
            "gauge",
            "How long the last compile took.",
        );
        let micros = load(&self.last_compile_micros);
        let _ = writeln!(
            out,
            "sluice_operator_last_compile_seconds {}.{:06}",
            micros / 1_000_000,
            micros % 1_000_000
        );
        head(
            out,
            "sluice_operator_leader",
            "gauge",
            "1 while this replica leads.",
        );
        let leader = u8::from(self.leader.load(Ordering::Relaxed));
        let _ = writeln!(out, "sluice_operator_leader {leader}");
        if let Some(revision) = self.in_force() {
            head(
                out,
                "sluice_policy_in_force_info",
                "gauge",
                "The revision of the snapshot in force.",
            );
            let _ = writeln!(
                out,
                "sluice_policy_in_force_info{{revision=\"{revision}\"}} 1"
            );
        }
    }
}
