//! The outbound SMTP client (RFC 5321) and its LMTP variant (RFC 2033): one
//! [`Connection`] to the next hop (an MX, a smarthost, a local LMTP server), which sends
//! messages and reports one [`Outcome`](crate::delivery::Outcome) per recipient.
//!
//! Layers: [`wire`] moves bytes and bounded replies with the RFC 5321 4.5.3.2 timeouts,
//! [`connection`] opens the session (greeting, EHLO, STARTTLS, AUTH), [`transaction`]
//! runs MAIL/RCPT/DATA with the pure helpers of [`commands`] and [`data`].

mod auth;
pub mod commands;
pub mod connection;
pub mod data;
pub mod error;
pub mod extensions;
#[cfg(test)]
mod tests;
pub mod tls;
mod transaction;
mod wire;

pub use connection::Connection;
pub use error::ClientError;
pub use extensions::Extensions;
pub use tls::system_roots;
pub use transaction::reply_outcome;

use prometheus_client::metrics::counter::Counter;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How the connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when the server offers it, plaintext otherwise (RFC 7435), and plaintext
    /// on a new connection when the handshake fails.
    Opportunistic,
    /// STARTTLS or no delivery: a server that does not offer it gets none of our mail.
    Required,
    /// TLS from the first byte (RFC 8314, port 465).
    Implicit,
    /// Never encrypt (a local LMTP socket, tests).
    Disabled,
}

impl From<crate::policy::model::TlsMode> for TlsMode {
    fn from(mode: crate::policy::model::TlsMode) -> Self {
        use crate::policy::model::TlsMode as Policy;
        match mode {
            Policy::StarttlsRequired => TlsMode::Required,
            Policy::ImplicitTls => TlsMode::Implicit,
            Policy::Opportunistic => TlsMode::Opportunistic,
        }
    }
}

/// How long to wait for each step, RFC 5321 4.5.3.2 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// The 220 greeting (4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// The reply to EHLO/HELO/LHLO (5 minutes, like MAIL).
    pub ehlo: Duration,
    /// The reply to MAIL (4.5.3.2.2: 5 minutes).
    pub mail: Duration,
    /// The reply to each RCPT (4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The 354 to DATA (4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each write of content (4.5.3.2.5: 3 minutes per TCP SEND).
    pub data_block: Duration,
    /// The reply after the final dot (4.5.3.2.6: 10 minutes); per recipient for LMTP.
    pub data_termination: Duration,
    /// STARTTLS with its handshake, AUTH, RSET and QUIT, which RFC 5321 leaves open.
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: min(5),
            ehlo: min(5),
            mail: min(5),
            rcpt: min(5),
            data_init: min(2),
            data_block: min(3),
            data_termination: min(10),
            other: min(5),
        }
    }
}

impl Timeouts {
    /// Every timeout set to `d`, for tests and for callers that want one bound.
    pub fn all(d: Duration) -> Self {
        Timeouts {
            connect: d,
            greeting: d,
            ehlo: d,
            mail: d,
            rcpt: d,
            data_init: d,
            data_block: d,
            data_termination: d,
            other: d,
        }
    }
}

/// Everything a connection needs to know about the next hop.
#[derive(Clone)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO/LHLO.
    pub helo_name: String,
    pub tls: TlsMode,
    /// Trust anchors for verifying the server certificate ([`system_roots`] by default).
    pub tls_roots: Arc<rustls::RootCertStore>,
    /// True for smarthosts. False for MX delivery: RFC 7435 opportunistic security
    /// encrypts even when the certificate does not verify, since the alternative is
    /// plaintext, which an attacker can read just as well.
    pub verify_certificates: bool,
    /// Username and password for AUTH PLAIN (LOGIN when PLAIN is not offered); only
    /// ever sent over TLS.
    pub credentials: Option<(String, String)>,
    pub timeouts: Timeouts,
    /// LMTP (RFC 2033): LHLO, and one reply per recipient after the final dot.
    pub lmtp: bool,
    /// Counts the connections that fell back to plaintext after a failed opportunistic
    /// TLS handshake; shared with the process metrics
    /// (`sluice_delivery_tls_fallbacks_total`).
    pub tls_fallbacks: Counter,
}

impl ClientConfig {
    /// SMTP to `helo_name`'s next hop with system roots, verified certificates,
    /// opportunistic TLS and the RFC 5321 timeouts.
    pub fn new(helo_name: impl Into<String>) -> Self {
        ClientConfig {
            helo_name: helo_name.into(),
            tls: TlsMode::Opportunistic,
            tls_roots: system_roots(),
            verify_certificates: true,
            credentials: None,
            timeouts: Timeouts::default(),
            lmtp: false,
            tls_fallbacks: Counter::default(),
        }
    }
}

/// Written by hand so that the password never reaches a log line.
impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("helo_name", &self.helo_name)
            .field("tls", &self.tls)
            .field("tls_roots", &self.tls_roots.len())
            .field("verify_certificates", &self.verify_certificates)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("timeouts", &self.timeouts)
            .field("lmtp", &self.lmtp)
            .finish()
    }
}
