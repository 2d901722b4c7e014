//! Delivery events: one record when a message is accepted and one per recipient and
//! attempt when it is delivered, deferred, bounced or expires, with the remote reply and
//! the timing. They feed `sluice queue`, webhooks and audits, and they tell a worker that
//! takes over a message from one that died which recipients already have it.
//!
//! An [`EventSink`] never holds up acceptance or delivery, and events are best effort:
//! a lost event costs the record a line and, at worst, one duplicate delivery after a
//! worker died; never a message (ARCHITECTURE.md, invariant 1, does not depend on them).
//!
//! Sinks: [`LogOnly`] for the embedded spool, where the log lines of the ingress and the
//! worker are the record, and [`jetstream::JetStreamEvents`], the events stream of the
//! Kubernetes roles.

pub mod jetstream;

use crate::envelope::{Envelope, QueueId, unix_ms};
use crate::smtp::address::Recipient;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The message was queued and the client answered 250.
    Accepted,
    /// The next hop took responsibility for the recipient (2xx, or local delivery done).
    Delivered,
    /// The attempt failed temporarily; the recipient stays queued for a retry.
    Deferred,
    /// The recipient failed permanently; a bounce goes to the sender (NOTIFY allowing).
    Bounced,
    /// The recipient was still deferred when the message outlived its lifetime.
    Expired,
    /// The filters refused the message at the end of its content (`reply` is the 5xx
    /// or 4xx the client got); nothing was queued.
    Refused,
    /// The filters held the message as received in quarantine (`reply` says why); a
    /// stripped copy may have been queued too (an `accepted` event).
    Quarantined,
}

impl EventKind {
    /// The name in JSON and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Delivered => "delivered",
            EventKind::Deferred => "deferred",
            EventKind::Bounced => "bounced",
            EventKind::Expired => "expired",
            EventKind::Refused => "refused",
            EventKind::Quarantined => "quarantined",
        }
    }
}

/// One event, as published (camelCase JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryEvent {
    pub kind: EventKind,
    pub queue_id: QueueId,
    /// The forward-path the event is about; `None` for `accepted`, which is about the
    /// whole message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The remote server's reply (`250 2.0.0 Ok: queued as …`), or the reason of a local
    /// outcome or of an expiry; empty for `accepted`.
    pub reply: String,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Delivery attempts made, this one included; 0 for `accepted`.
    pub attempts: u32,
    /// Time since acceptance, in milliseconds.
    pub delay_ms: u64,
    /// The server that answered (MX host, smarthost), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Where the recipient was sent: `mx:example.org`, `smarthost:host:587`,
    /// `local:example.com` (the destination's label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The client that handed the message in; `accepted` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// The reverse-path, empty for the null path `<>`; `accepted` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The filter checks that ran and their results (`name=result`, space-separated);
    /// on `accepted`, `refused` and `quarantined` of a filtered message only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<String>,
}

impl DeliveryEvent {
    /// The `accepted` event of a message just queued.
    pub fn accepted(envelope: &Envelope, at: SystemTime) -> Self {
        let sender = envelope
            .reverse_path
            .as_ref()
            .map_or_else(String::new, |m| m.to_string());
        DeliveryEvent {
            client_ip: Some(envelope.client_ip),
            sender: Some(sender),
            ..Self::about(EventKind::Accepted, envelope, None, at)
        }
    }

    /// An event of `kind` about `recipient` in the attempt now under way (or about the
    /// message, without one), with no reply, relay or route yet.
    pub fn about(
        kind: EventKind,
        envelope: &Envelope,
        recipient: Option<&Recipient>,
        at: SystemTime,
    ) -> Self {
        let at_ms = unix_ms(at);
        let attempts = match kind {
            EventKind::Accepted | EventKind::Refused | EventKind::Quarantined => envelope.attempts,
            _ => envelope.attempts + 1,
        };
        DeliveryEvent {
            kind,
            queue_id: envelope.id.clone(),
            recipient: recipient.map(|r| r.address.to_string()),
            reply: String::new(),
            at_ms,
            attempts,
            delay_ms: at_ms.saturating_sub(envelope.received_at_ms),
            relay: None,
            route: None,
            client_ip: None,
            sender: None,
            filters: None,
        }
    }
}

/// Where events go.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Records an event; never blocks delivery or acceptance (queue it, publish in the
    /// background, drop and count when the backlog is full).
    fn emit(&self, event: DeliveryEvent);

    /// Recipients of `id` that an event records as delivered (for a message handed out
    /// again after a worker died), as [`DeliveryEvent::recipient`] spells them. Empty
    /// when unknown: the safe side is to deliver again.
    async fn delivered(&self, id: &QueueId) -> Vec<String>;
}

/// The sink of `sluice standalone`: the log lines of the ingress and the worker are the
/// record, and nothing is known of earlier deliveries (a spool lease lapses only when a
/// worker of this same process overran it, or across a restart that the spool cannot
/// see; either way the message is delivered again).
pub struct LogOnly;

#[async_trait]
impl EventSink for LogOnly {
    fn emit(&self, _event: DeliveryEvent) {}

    async fn delivered(&self, _id: &QueueId) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::conformance::envelope;
    use std::time::Duration;

    #[test]
    fn events_are_camel_case_json_without_the_fields_they_lack() {
        let mut env = envelope(&["bob"]);
        env.received_at_ms = 1_700_000_000_000;
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_001_500);
        let accepted = serde_json::to_value(DeliveryEvent::accepted(&env, at)).unwrap();
        assert_eq!(
            accepted,
            serde_json::json!({
                "kind": "accepted", "queueId": env.id.as_str(), "reply": "",
                "atMs": 1_700_000_001_500u64, "attempts": 0, "delayMs": 1500,
                "clientIp": "2001:db8::25", "sender": "Sender.ñ@example.org",
            })
        );
        env.reverse_path = None;
        assert_eq!(
            DeliveryEvent::accepted(&env, at).sender.as_deref(),
            Some("")
        );

        env.attempts = 2;
        let delivered = DeliveryEvent {
            reply: "250 2.0.0 Ok".into(),
            relay: Some("mx1.example.net".into()),
            route: Some("mx:example.net".into()),
            ..DeliveryEvent::about(EventKind::Delivered, &env, Some(&env.recipients[0]), at)
        };
        let json = serde_json::to_value(&delivered).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "delivered", "queueId": env.id.as_str(),
                "recipient": "bob@example.net", "reply": "250 2.0.0 Ok",
                "atMs": 1_700_000_001_500u64, "attempts": 3, "delayMs": 1500,
                "relay": "mx1.example.net", "route": "mx:example.net",
            })
        );
        assert_eq!(
            serde_json::from_value::<DeliveryEvent>(json).unwrap(),
            delivered
        );
    }
}
