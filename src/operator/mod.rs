//! `sluice operator`: RelayPolicy resources and the Secrets they reference, from the
//! Kubernetes API into the compiled policy snapshot in NATS, with a status on each
//! policy.

pub mod crd;
pub mod lease;
