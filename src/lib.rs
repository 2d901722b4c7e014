//! Sluice: a Kubernetes-native SMTP relay.
//!
//! Module map (see ARCHITECTURE.md for the design and its invariants), bottom up: each
//! module uses only those listed before it (and mail addresses, `smtp::address`, which
//! `envelope` builds on), so the graph points one way; `tests/module_graph.rs` checks it.
//!
//! | module | owns |
//! | --- | --- |
//! | [`units`] | sizes and durations as written in configuration |
//! | [`yaml`] | reading YAML with bounds for hostile input, errors with field path, line and column |
//! | [`watch`] | noticing changed configuration files |
//! | [`envelope`] | the leaf every layer shares: the envelope, queue ids, the W3C trace context, time in ms |
//! | [`smtp`] | the protocol free of I/O: commands, replies, DATA/BDAT framing, SASL, the session state machine (its policy, clock and ids passed in), the Received header |
//! | [`telemetry`] | observability: logging, trace export over OTLP (`telemetry::otel`), Prometheus metrics, readiness latches |
//! | [`nats`] | connecting to NATS: URLs, credentials, TLS, connection state; looking up a stream |
//! | [`http`] | the outbound HTTP client of the webhook and the Rspamd check: one pooled reqwest client per root store, proxies from the environment, bounded bodies |
//! | [`queue`] | the `Queue` (hot path) and `QueueAdmin` traits and their backends: the embedded spool, JetStream |
//! | [`events`] | delivery events (accepted, delivered, deferred, bounced, expired) and where they go: the log, or a JetStream stream |
//! | [`filter`] | checks on messages passing through: attachments, scanners, DNSBLs, SPF/DKIM/DMARC/ARC verification, DKIM signing and ARC sealing |
//! | [`policy`] | the RelayPolicy model, compilation into a `PolicySnapshot` (which the session consults as its `SessionPolicy`), the relay decision, credentials, the snapshot in NATS KV |
//! | [`delivery`] | the worker: routing, MX, the outbound SMTP client, retries, bounces, local delivery, the operator's queue operations |
//! | [`ingress`] | listeners, TLS, the per-connection task, connection limits, the hand-off to the queue |
//! | [`admin`] | the admin HTTP listener (hyper): health, readiness, metrics and the queue and quarantine API, thin over `delivery::queue_ops` |
//! | [`operator`] | `sluice operator`: the CRD, RelayPolicies and Secrets from the Kubernetes API into the snapshot in NATS, status, leader election |
//! | [`config`] | the process configuration file, with its own serde types |
//! | [`roles`] | the processes (standalone, ingress, worker, operator): wiring, JetStream provisioning, reloads, readiness, signals and drain |
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
