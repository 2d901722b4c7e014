//! What became of one recipient in one delivery attempt.

use serde::{Deserialize, Serialize};

/// One recipient's result. `remote_mta` names the server that answered (for the DSN's
/// Remote-MTA field and the log line); `reply` is its reply as one line of text, e.g.
/// `550 5.1.1 <bob@example.org>: user unknown`, or a description of a local failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The next hop took responsibility (2xx), or local delivery completed.
    Delivered {
        remote_mta: Option<String>,
        reply: String,
        /// Who reports the success, if the sender asked (RFC 3461 5.2). Absent in
        /// outcomes written before it existed.
        #[serde(default)]
        handoff: Handoff,
    },
    /// Try again later: a 4xx reply, a timeout, a connection failure.
    Deferred {
        remote_mta: Option<String>,
        reply: String,
    },
    /// Give up: a 5xx reply or a permanent local condition. `status` is the enhanced
    /// status code for the DSN (RFC 3463), e.g. `5.1.1`.
    Failed {
        remote_mta: Option<String>,
        status: String,
        reply: String,
    },
}

/// What a delivery handed the message to, which decides who sends a success notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Handoff {
    /// The final mailbox (Maildir, a webhook, an LMTP server that took NOTIFY no
    /// further): our notice says `delivered` (RFC 3461 5.2.3).
    Final,
    /// An SMTP server that did not announce DSN, so NOTIFY stopped here: our notice
    /// says `relayed` (RFC 3461 5.2.2). Also what an unknown handoff counts as.
    #[default]
    Relayed,
    /// A server that announced DSN and got NOTIFY with the recipient (RFC 3461 5.2.1):
    /// a success notice is its to send, and we send none.
    NotifyPassedOn,
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }

    pub fn is_failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }

    /// The server that answered, whatever the kind.
    pub fn remote_mta(&self) -> Option<&str> {
        match self {
            Outcome::Delivered { remote_mta, .. }
            | Outcome::Deferred { remote_mta, .. }
            | Outcome::Failed { remote_mta, .. } => remote_mta.as_deref(),
        }
    }

    /// The reply line, whatever the kind.
    pub fn reply(&self) -> &str {
        match self {
            Outcome::Delivered { reply, .. }
            | Outcome::Deferred { reply, .. }
            | Outcome::Failed { reply, .. } => reply,
        }
    }
}
