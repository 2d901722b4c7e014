//! Local delivery for the relay's own domains: into Maildir mailboxes on a mounted
//! volume ([`deliver_maildir`]) or to an HTTP endpoint ([`deliver_webhook`]). LMTP is
//! the outbound SMTP client's business, not this module's.
//!
//! Both entry points return one [`Outcome`] per recipient, in the order given, and never
//! an error: whatever goes wrong becomes a `Deferred` (try again later) or, for
//! conditions that retrying cannot fix, a `Failed` with its enhanced status code.

mod maildir;
mod webhook;

pub use maildir::deliver_maildir;
pub use webhook::{DEFAULT_TIMEOUT, WebhookTarget, deliver_webhook, sign, system_roots};

use crate::delivery::Outcome;
use crate::http::HttpError;
use std::io;
use std::path::PathBuf;

/// What went wrong in a local delivery, before it becomes an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The local part would escape the maildir root or name a hidden entry.
    #[error("local part {0:?} cannot name a mailbox")]
    UnsafeLocalPart(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The webhook's HTTP exchange; its text is the client's own.
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl LocalError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LocalError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Only a bad local part is permanent. Everything else (a full disk, a volume not
    /// mounted, a receiver down, a URL mistyped in the policy) is an operator's to fix,
    /// and the queue keeps the message meanwhile, as Postfix does on configuration errors.
    pub fn into_outcome(self, remote_mta: Option<String>) -> Outcome {
        match self {
            LocalError::UnsafeLocalPart(_) => Outcome::Failed {
                remote_mta,
                status: "5.1.3".into(),
                reply: self.to_string(),
            },
            other => Outcome::Deferred {
                remote_mta,
                reply: other.to_string(),
            },
        }
    }
}
