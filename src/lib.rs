//! Sluice: a Kubernetes-native SMTP relay.
//!
//! Module map (see ARCHITECTURE.md for the design and its invariants):
//!
//! | module | owns |
//! | --- | --- |
//! | [`smtp`] | the protocol free of I/O: commands, replies, DATA/BDAT framing, SASL, the session state machine |
//! | [`ingress`] | listeners, TLS, the per-connection task, connection limits, the hand-off to the queue |
//! | [`policy`] | the RelayPolicy model, compilation into a `PolicySnapshot`, the relay decision, credentials |
//! | [`queue`] | the `Queue` trait and the embedded spool backend |
//! | [`telemetry`] | logging, Prometheus metrics, the admin HTTP listener |
//! | [`config`] | the process configuration file of `sluice standalone` |
#![forbid(unsafe_code)]

pub mod config;
pub mod ingress;
pub mod policy;
pub mod queue;
pub mod smtp;
pub mod telemetry;
