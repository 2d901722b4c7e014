//! What can go wrong with a connection, and what each failure means for the recipients.

use crate::delivery::Outcome;
use crate::smtp::reply::{Reply, ReplyError};
use std::time::Duration;

/// The step name of the TLS handshake in [`ClientError::Timeout`].
pub const TLS_HANDSHAKE: &str = "TLS handshake";

/// A failure of the connection or of the session around the transaction. Replies to
/// MAIL, RCPT and DATA are not errors: `send` turns them into outcomes. After any error
/// but [`ClientError::Rejected`] and the refusals decided locally, the connection is
/// unusable and should be dropped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {remote}: {source}")]
    Connect {
        remote: String,
        source: std::io::Error,
    },
    #[error("timed out after {duration:?} waiting for {command}")]
    Timeout {
        command: &'static str,
        duration: Duration,
    },
    #[error("connection to {remote} failed during {command}: {source}")]
    Io {
        remote: String,
        command: &'static str,
        source: std::io::Error,
    },
    #[error("{remote} closed the connection during {command}")]
    Closed {
        remote: String,
        command: &'static str,
    },
    #[error("protocol error from {remote} during {command}: {reason}")]
    Protocol {
        remote: String,
        command: &'static str,
        reason: String,
    },
    #[error("{remote} rejected {command}: {}", reply.one_line())]
    Rejected {
        remote: String,
        command: &'static str,
        reply: Reply,
    },
    #[error("STARTTLS not offered by {remote}, and TLS is required")]
    StarttlsNotOffered { remote: String },
    #[error("TLS with {remote} failed: {reason}")]
    Tls { remote: String, reason: String },
    #[error("{name:?} is not a valid TLS server name")]
    InvalidServerName { name: String },
    #[error("refusing to send credentials to {remote} without TLS")]
    AuthWithoutTls { remote: String },
    #[error("{remote} offers no usable AUTH mechanism (offered: {offered})")]
    AuthUnavailable { remote: String, offered: String },
    #[error("connection to {remote} is unusable after an earlier error")]
    Broken { remote: String },
}

impl ClientError {
    /// The variant as a short stable name, for the `error.type` of trace spans.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "connect",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Io { .. } => "io",
            ClientError::Closed { .. } => "closed",
            ClientError::Protocol { .. } => "protocol",
            ClientError::Rejected { .. } => "rejected",
            ClientError::StarttlsNotOffered { .. } => "starttls_not_offered",
            ClientError::Tls { .. } => "tls",
            ClientError::InvalidServerName { .. } => "invalid_server_name",
            ClientError::AuthWithoutTls { .. } => "auth_without_tls",
            ClientError::AuthUnavailable { .. } => "auth_unavailable",
            ClientError::Broken { .. } => "broken",
        }
    }

    pub(crate) fn reply_error(remote: &str, command: &'static str, e: ReplyError) -> Self {
        ClientError::Protocol {
            remote: remote.to_string(),
            command,
            reason: e.to_string(),
        }
    }

    /// True when the TLS handshake itself failed (or no name could be made for it): the
    /// stream is then unusable, but the server may well take the message in plaintext.
    pub fn is_tls_handshake_failure(&self) -> bool {
        match self {
            ClientError::Tls { .. } | ClientError::InvalidServerName { .. } => true,
            ClientError::Timeout { command, .. } => *command == TLS_HANDSHAKE,
            _ => false,
        }
    }

    /// True when retrying the same message elsewhere or later cannot help: a 5xx to a
    /// command about the message itself. A 5xx greeting, EHLO, STARTTLS or AUTH says
    /// something about this host (try the next MX) or our configuration (an admin fixes
    /// it while the mail waits), so those stay temporary.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Rejected { command, reply, .. } => {
                reply.code >= 500 && matches!(*command, "MAIL" | "DATA")
            }
            _ => false,
        }
    }

    /// The outcome for every recipient this error stops: `Failed` when permanent,
    /// otherwise `Deferred`. The reply is the server's when it gave one.
    pub fn to_outcome(&self, remote: Option<String>) -> Outcome {
        let reply = match self {
            ClientError::Rejected { reply, .. } => reply.one_line(),
            other => other.to_string(),
        };
        match self {
            ClientError::Rejected { reply: r, .. } if self.is_permanent() => Outcome::Failed {
                remote_mta: remote,
                status: r.enhanced_status().unwrap_or("5.0.0").to_string(),
                reply,
            },
            _ => Outcome::Deferred {
                remote_mta: remote,
                reply,
            },
        }
    }
}
