//! What the external scanners (Rspamd, clamd) share: the envelope and session facts a
//! scan is given ([`ScanContext`]), how a scan can fail ([`ScanError`]), the verdict a
//! scan maps to ([`Verdict`]) and the clean-up of any text a scanner hands back before
//! it reaches an SMTP reply or a header: a scanner's answer is treated as hostile.

use crate::smtp::reply::Reply;
use std::net::IpAddr;
use std::time::Duration;

/// The longest text taken from a scanner into an SMTP reply line; with the code and
/// the enhanced status this stays well under RFC 5321's 512 octets.
pub const MAX_REPLY_TEXT: usize = 200;
/// The longest header value taken from a scanner: with the name, within RFC 5322's 998.
pub const MAX_HEADER_VALUE: usize = 900;
/// The longest header name taken from a scanner.
pub const MAX_HEADER_NAME: usize = 64;

/// The envelope and session facts a scanner is told about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanContext {
    /// The reverse path without angle brackets; empty for the null sender.
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub client_ip: IpAddr,
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// The SASL identity, when the client authenticated.
    pub user: Option<String>,
    pub queue_id: String,
    /// The TLS version and cipher suite names, when the session used TLS.
    pub tls: Option<ScanTls>,
}

/// TLS facts in the form Rspamd expects (`TLSv1.3`, `TLS13_AES_256_GCM_SHA384`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTls {
    pub version: String,
    pub cipher: String,
}

/// Why a scan gave no verdict. The caller decides between fail open and fail closed
/// ([`FailMode`]); the variants keep the reasons apart for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the message is larger than the scanner accepts")]
    SizeLimit,
    /// The scanner answered, but not with something this client understands or accepts.
    #[error("unusable answer from the scanner: {0}")]
    Protocol(String),
    /// The scanner reported an error of its own.
    #[error("the scanner reported an error: {0}")]
    Scanner(String),
    #[error("no scanner address is configured")]
    NoAddress,
    #[error("bad scanner configuration: {0}")]
    Config(String),
}

/// What a scan says should happen to the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    /// Refuse the message with this (5xx) reply.
    Reject(Reply),
    /// Refuse it for now with this (4xx) reply.
    Tempfail(Reply),
    /// Accept it with these changes.
    Rewrite(Rewrite),
}

/// Changes to a message's header section. Names and values are already clean: no CR,
/// LF or other control characters, bounded lengths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Header fields to add, in order.
    pub add_headers: Vec<(String, String)>,
    /// Header fields to remove, with Rspamd's occurrence numbering: 0 removes every
    /// field of that name, n > 0 the n-th, n < 0 the n-th from the end.
    pub remove_headers: Vec<(String, i32)>,
    /// The new Subject value, replacing the old one.
    pub subject: Option<String>,
    /// Complete header fields that Sluice itself wrote (`Authentication-Results`),
    /// folded and ending in CRLF, for the top of the header section where trace fields
    /// go (RFC 8601 5); never text from a scanner.
    pub prepend: Vec<String>,
}

impl Rewrite {
    /// Adds `other`'s changes after these; its Subject, if any, wins.
    pub fn merge(&mut self, other: Rewrite) {
        self.add_headers.extend(other.add_headers);
        self.remove_headers.extend(other.remove_headers);
        self.prepend.extend(other.prepend);
        if other.subject.is_some() {
            self.subject = other.subject;
        }
    }
}

/// What to do when a scan gives no verdict (`failMode` of a check in a RelayPolicy).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// Accept the message unscanned.
    Open,
    /// Answer `451 4.7.1` so that the client tries again later: the default, as
    /// Postfix's `milter_default_action = tempfail`; a check that was asked for is not
    /// skipped silently.
    #[default]
    Closed,
}

impl FailMode {
    /// The verdict for a scan that failed; `what` names the scanner in the reply.
    pub fn verdict(self, what: &str) -> Verdict {
        match self {
            FailMode::Open => Verdict::Accept,
            FailMode::Closed => Verdict::Tempfail(Reply::new(
                451,
                "4.7.1",
                format!("{} check unavailable, try again later", reply_text(what)),
            )),
        }
    }
}

/// Text fit for an SMTP reply line: printable ASCII only (control characters, CR and
/// LF become spaces; anything else is dropped), spaces collapsed, at most
/// [`MAX_REPLY_TEXT`] characters.
pub fn reply_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_control() { ' ' } else { c };
        if !c.is_ascii() || (c == ' ' && (out.is_empty() || out.ends_with(' '))) {
            continue;
        }
        if out.len() == MAX_REPLY_TEXT {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// A header value fit to write after `Name: `: control characters (CR and LF among
/// them) become spaces, runs of spaces collapse, at most [`MAX_HEADER_VALUE`] octets
/// (cut at a character boundary). UTF-8 stays (RFC 6532).
pub fn header_value(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_HEADER_VALUE {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// A header field name as RFC 5322 3.6.8 allows (printable ASCII but `:`), at most
/// [`MAX_HEADER_NAME`] octets; anything else is refused rather than repaired.
pub fn header_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_one_clean_line() {
        assert_eq!(reply_text("Gtube pattern"), "Gtube pattern");
        assert_eq!(reply_text("a\r\n250 fake\r\nb\u{0}c é"), "a 250 fake b c");
        assert_eq!(reply_text(&"x".repeat(1000)).len(), MAX_REPLY_TEXT);
        assert_eq!(reply_text("\r\n"), "");
    }

    #[test]
    fn header_values_and_names() {
        assert_eq!(header_value("Yes,\r\n Bcc: x@y"), "Yes, Bcc: x@y");
        assert_eq!(header_value("débâcle"), "débâcle");
        let long = header_value(&"é".repeat(1000));
        assert!(long.len() <= MAX_HEADER_VALUE && long.chars().all(|c| c == 'é'));
        assert_eq!(header_name("X-Spam"), Some("X-Spam"));
        for bad in [
            "",
            "X Spam",
            "X:Spam",
            "X-\r\nBcc",
            &"X".repeat(65),
            "Sübject",
        ] {
            assert_eq!(header_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fail_modes() {
        assert_eq!(FailMode::Open.verdict("Virus"), Verdict::Accept);
        let Verdict::Tempfail(reply) = FailMode::Closed.verdict("Virus\r\n") else {
            panic!("fail closed must tempfail");
        };
        assert_eq!((reply.code, reply.status), (451, Some("4.7.1")));
        assert_eq!(reply.lines, ["Virus check unavailable, try again later"]);
    }
}
