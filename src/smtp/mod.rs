//! The SMTP protocol, free of I/O: command parsing, replies with enhanced status codes,
//! DATA/BDAT framing, SASL, the server session state machine, and the `Received:` trace
//! header it adds (RFC 5321 4.4).
//!
//! Layers run bytes → [`command::Command`] → [`session::Session`]; the ingress owns the
//! sockets and only moves bytes between them and the session.

pub mod address;
pub mod command;
pub mod data;
pub mod line;
pub mod received;
pub mod reply;
pub mod sasl;
pub mod session;
pub mod xtext;
