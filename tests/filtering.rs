//! The filter pipeline of issue 11 end to end: real clients (Python's smtplib, messages
//! built by Python's `email`), `sluice standalone` delivering into a capturing sink,
//! real Rspamd and clamd, and the `sluice ingress` + `sluice worker` processes on a real
//! nats-server. Every case checks the reply's code and text and what the sink received.
//!
//! Rspamd takes seconds to start, so the scanner cases run in one test that starts one
//! Rspamd and one clamd for all of them (tests/filtering/scanners.rs).

mod common;

#[path = "filtering/attachments.rs"]
mod attachments;
#[path = "filtering/policy.rs"]
mod policy;
#[path = "filtering/roles.rs"]
mod roles;
#[path = "filtering/scanners.rs"]
mod scanners;
#[path = "filtering/support.rs"]
mod support;
