//! What every layer shares about a message, below all of them: its [`Envelope`], its
//! [`QueueId`], its W3C trace context ([`TraceParent`]) and the time unit of envelopes
//! ([`unix_ms`]). A leaf: it depends only on `smtp::address` (the RFC 5321 paths and
//! parameters the envelope holds), so `smtp`, `queue`, `delivery` and `telemetry` can
//! all name these types without importing one another.
//!
//! The serialized form is the stored form: the spool keeps envelopes as this JSON and
//! JetStream carries them in headers, so a field is only ever added, optional and
//! skipped when absent, never renamed.

mod id;
mod time;
mod trace;

pub use id::QueueId;
pub use time::unix_ms;
pub use trace::TraceParent;

use crate::smtp::address::{MailParams, Recipient, ReversePath};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Everything about a message except its content: who sent it, to whom, and how it
/// reached us. Travels with the body through every backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    pub reverse_path: ReversePath,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
    /// When the 250 was given, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    pub client_ip: IpAddr,
    pub helo: String,
    pub authenticated_user: Option<String>,
    /// Whether the ingress vouched for the sender: success notices (NOTIFY=SUCCESS) go
    /// only to such senders, so that anyone cannot have us mail a chosen address. Absent
    /// in envelopes written before it existed, which read as untrusted.
    #[serde(default, skip_serializing_if = "SenderTrust::is_untrusted")]
    pub sender_trust: SenderTrust,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// The reason of the last deferral, for `sluice queue show` and bounces; at most
    /// [`MAX_LAST_ERROR`] bytes (see [`bounded_reason`]).
    pub last_error: Option<String>,
    /// When the sender was sent its one delay warning (`retry.delayWarning`), in
    /// milliseconds since the Unix epoch; stored so that a restart does not warn again.
    /// Absent in envelopes written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_warned_at_ms: Option<u64>,
    /// The message's W3C trace context, started by the ingress that accepted it.
    /// Absent in envelopes written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceParent>,
}

/// How far the ingress that accepted a message trusts its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SenderTrust {
    /// Anyone on the network: the reverse-path may be forged.
    #[default]
    Untrusted,
    /// The session authenticated (SASL).
    Authenticated,
    /// The client is in a trusted network of the policy.
    TrustedNetwork,
}

impl SenderTrust {
    pub fn is_untrusted(&self) -> bool {
        *self == SenderTrust::Untrusted
    }
}

/// The most of a deferral's reason a queue keeps. A remote server's reply can run to any
/// length, and the envelope travels in every republished message, whose headers must
/// fit NATS's max payload within the room left at enqueue; one reply line is at most 512
/// octets (RFC 5321 4.5.3.1.5), and that says enough.
pub const MAX_LAST_ERROR: usize = 512;

/// The relay's default bound on an envelope's recipients (`limits.maxRecipients`), here
/// so that the queue's decoder and the configuration agree without one importing the
/// other.
pub const DEFAULT_MAX_RECIPIENTS: usize = 1000;
/// The relay's default bound on a message's size in octets (`limits.maxMessageSize`).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 << 20;

/// `reason` cut to at most [`MAX_LAST_ERROR`] bytes on a character boundary, ending in
/// `…` when cut. Every backend stores deferral reasons through this.
pub fn bounded_reason(mut reason: String) -> String {
    const MARK: &str = "…";
    if reason.len() > MAX_LAST_ERROR {
        let mut end = MAX_LAST_ERROR - MARK.len();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str(MARK);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::Mailbox;

    /// An envelope with every optional part a queue must keep filled in.
    fn sample() -> Envelope {
        Envelope {
            id: QueueId::generate(),
            reverse_path: Some(Mailbox::new("sender", "example.org")),
            params: MailParams::default(),
            recipients: Vec::new(),
            received_at_ms: 1_700_000_000_000,
            client_ip: "2001:db8::25".parse().expect("literal address"),
            helo: "client.example.org".into(),
            authenticated_user: Some("alice".into()),
            sender_trust: SenderTrust::Authenticated,
            attempts: 2,
            last_error: Some("451 4.3.0 try later".into()),
            delay_warned_at_ms: None,
            trace: Some(TraceParent::new_root()),
        }
    }

    #[test]
    fn envelopes_without_a_delay_warning_read_and_write_as_before() {
        let mut envelope = sample();
        let json = serde_json::to_value(&envelope).unwrap();
        assert!(json.get("delay_warned_at_ms").is_none(), "{json}");
        let old: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(old, envelope);
        envelope.delay_warned_at_ms = Some(1_700_000_000_000);
        let json = serde_json::to_string(&envelope).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), envelope);
    }

    #[test]
    fn envelopes_without_sender_trust_read_as_untrusted() {
        let mut envelope = sample();
        envelope.sender_trust = SenderTrust::TrustedNetwork;
        let mut json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["sender_trust"], "trustedNetwork", "{json}");
        json.as_object_mut().unwrap().remove("sender_trust");
        let old: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(old.sender_trust, SenderTrust::Untrusted);
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("sender_trust").is_none(), "{json}");
    }
}
