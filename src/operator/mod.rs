//! `sluice operator`: RelayPolicy resources and the Secrets they reference, from the
//! Kubernetes API into the compiled policy snapshot in the NATS bucket `sluice-policy`,
//! which the ingress and worker pods follow, with a status on each policy.
//!
//! | file | owns |
//! | --- | --- |
//! | `crd.rs` | the CustomResourceDefinition as YAML (`sluice crd`) |
//! | `run.rs` | the process: watches, the controller, the admin listener, shutdown |
//! | `changes.rs` | noticing the changes that matter in the watch streams |
//! | `desired.rs` | namespaces and permissions, compiling the set: snapshot and verdicts |
//! | `secrets.rs` | Secrets as hashes and sealed values, with the hash cache |
//! | `reconcile.rs` | the reconciler and its error type |
//! | `status.rs` | each policy's status and Events |
//! | `sink.rs` | writing the snapshot to NATS |
//! | `lease.rs` | leader election with a `coordination.k8s.io/v1` Lease |

mod changes;
pub mod crd;
mod desired;
pub mod lease;
mod reconcile;
pub mod run;
mod secrets;
pub mod sink;
mod status;

pub use desired::Scope;
pub use sink::{NatsSink, SnapshotSink};
