//! Sluice: a Kubernetes-native SMTP relay.
//!
//! Module map (see ARCHITECTURE.md for the design and its invariants):
//!
//! | module | owns |
//! | --- | --- |
//! | [`smtp`] | the protocol free of I/O: commands, replies, DATA/BDAT framing, SASL, the session state machine (its policy and clock passed in), the Received header |
//! | [`smtp`] | the protocol free of I/O: commands, replies, DATA/BDAT framing, SASL, the session state machine |
//! | [`envelope`] | the leaf every layer shares: the envelope, queue ids, the W3C trace context, time in ms |
//! | [`ingress`] | listeners, TLS, the per-connection task, connection limits, the hand-off to the queue |
//! | [`delivery`] | the worker: routing, MX, the outbound SMTP client, retries, bounces, local delivery |
//! | [`http`] | the outbound HTTP client of the webhook and the Rspamd check: one pooled reqwest client per root store, proxies from the environment, bounded bodies |
//! | [`events`] | delivery events (accepted, delivered, deferred, bounced, expired) and where they go: the log, or a JetStream stream |
//! | [`filter`] | checks on messages passing through: attachments, scanners, DNSBLs, SPF/DKIM/DMARC/ARC verification, DKIM signing and ARC sealing |
//! | [`policy`] | the RelayPolicy model, compilation into a `PolicySnapshot`, the relay decision, credentials, the snapshot in NATS KV |
//! | [`nats`] | connecting to NATS: URLs, credentials, TLS, connection state |
//! | [`operator`] | `sluice operator`: the CRD, RelayPolicies and Secrets from the Kubernetes API into the snapshot in NATS, status, leader election |
//! | [`queue`] | the `Queue` trait and its backends: the embedded spool, JetStream |
//! | [`telemetry`] | observability: logging, Prometheus metrics, readiness latches |
//! | [`admin`] | the admin HTTP listener: health, readiness, metrics and the queue and quarantine API, thin over `delivery::queue_ops` |
//! | [`config`] | the process configuration file of `sluice standalone`, with its own serde types |
//! | [`roles`] | the processes (standalone, ingress, worker): wiring, reloads, readiness, signals and drain |
//! | [`units`] | sizes and durations as written in configuration |
//! | [`watch`] | noticing changed configuration files |
//! | [`yaml`] | reading YAML with bounds for hostile input, errors with field path, line and column |
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod delivery;
pub mod envelope;
pub mod events;
pub mod filter;
pub mod http;
pub mod ingress;
pub mod nats;
pub mod operator;
pub mod policy;
pub mod queue;
pub mod roles;
pub mod smtp;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod units;
pub mod watch;
pub mod yaml;
