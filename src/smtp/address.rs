//! Mailbox addresses as they appear in reverse-paths and forward-paths (RFC 5321 4.1.2),
//! and the DSN parameters that travel with them (RFC 3461).

use serde::{Deserialize, Serialize};
use std::fmt;

/// `Local-part "@" ( Domain / address-literal )`. The local part is kept exactly as the
/// client sent it (it is case-sensitive); the domain compares case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mailbox {
    pub local: String,
    /// Empty only for the special forward-path `<Postmaster>` (RFC 5321 4.1.1.3).
    pub domain: String,
}

impl Mailbox {
    pub fn new(local: impl Into<String>, domain: impl Into<String>) -> Self {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    /// The domain in lower case, for comparisons against policy.
    pub fn domain_lowercase(&self) -> String {
        self.domain.to_ascii_lowercase()
    }

    /// True when the local part carries sender-specified routing: `%` (the "percent
    /// hack"), `!` (UUCP bang paths) or an `@` (only possible quoted, `"a@b"@c`). A
    /// server that honours them forwards to a host the envelope does not name, which is
    /// how relay checks were bypassed (Postfix's `allow_untrusted_routing`).
    pub fn has_routing_characters(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    /// True when the domain is an address literal (`[192.0.2.1]`, `[IPv6:…]`).
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }

    /// True when either part needs SMTPUTF8 (RFC 6531) to be carried.
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            write!(f, "{}", self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// The reverse-path of MAIL FROM: `<>` (the null path, used by bounces) or a mailbox.
pub type ReversePath = Option<Mailbox>;

/// Formats a reverse-path the way it appears on the wire and in logs: `<>` or `<a@b>`.
pub fn display_reverse_path(path: &ReversePath) -> String {
    match path {
        Some(m) => format!("<{m}>"),
        None => "<>".to_string(),
    }
}

/// `BODY=` of MAIL FROM (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// `RET=` of MAIL FROM (RFC 3461 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Headers,
}

/// `NOTIFY=` of RCPT TO (RFC 3461 4.1): `NEVER`, or any of the three conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// `ORCPT=` of RCPT TO (RFC 3461 4.2): the address type and the decoded original address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orcpt {
    pub addr_type: String,
    pub address: String,
}

/// The MAIL FROM parameters kept with the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID, decoded from xtext.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954 5), decoded from xtext; `None` also for `AUTH=<>`.
    pub auth: Option<String>,
}

/// A forward-path with its DSN parameters, as kept with the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: Mailbox,
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}
