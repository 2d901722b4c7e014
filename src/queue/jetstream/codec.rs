//! How an [`Envelope`] travels in the headers of a JetStream message.
//!
//! This first step carries the whole envelope as one JSON document in the `Sluice-Envelope`
//! header (serde_json escapes control characters, so the value never holds a CR or LF),
//! beside a few headers that the queue reads without decoding it:
//!
//! | header | value |
//! | --- | --- |
//! | `Nats-Msg-Id` | deduplication: the queue id on enqueue, `ID.N` for the N-th deferral, `ID.N.rSEQ` for a retry |
//! | `Sluice-Envelope` | the envelope, JSON |
//! | `Sluice-Not-Before` | due time in ms since the epoch; absent when due at once |
//! | `Sluice-Body-Size` | size of the body in bytes |
//! | `Sluice-Body-Object` | name of the Object Store object holding the body, when it was too large for the payload (the payload is then empty) |

use crate::envelope::{Envelope, MAX_LAST_ERROR};
use crate::queue::QueueError;
use crate::smtp::command::{reparse_mail, reparse_rcpt};
use async_nats::HeaderMap;
use std::sync::Arc;

pub const MSG_ID: &str = "Nats-Msg-Id";
pub const ENVELOPE: &str = "Sluice-Envelope";
pub const NOT_BEFORE: &str = "Sluice-Not-Before";
pub const BODY_SIZE: &str = "Sluice-Body-Size";
pub const BODY_OBJECT: &str = "Sluice-Body-Object";
/// The envelope's trace context under its W3C name, for NATS tooling and tracing
/// instrumentation; the envelope header stays the record.
pub const TRACEPARENT: &str = "traceparent";

/// What the headers of one stored message say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub envelope: Envelope,
    pub not_before_ms: Option<u64>,
    pub body_size: u64,
    pub body_object: Option<String>,
}

pub fn encode(meta: &Meta, msg_id: &str) -> Result<HeaderMap, QueueError> {
    let json =
        serde_json::to_string(&meta.envelope).map_err(|e| QueueError::Encode(Arc::new(e)))?;
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, msg_id);
    headers.insert(ENVELOPE, json.as_str());
    headers.insert(BODY_SIZE, meta.body_size.to_string().as_str());
    if let Some(ms) = meta.not_before_ms {
        headers.insert(NOT_BEFORE, ms.to_string().as_str());
    }
    if let Some(object) = &meta.body_object {
        headers.insert(BODY_OBJECT, object.as_str());
    }
    if let Some(trace) = &meta.envelope.trace {
        headers.insert(TRACEPARENT, trace.to_string().as_str());
    }
    Ok(headers)
}

/// What a stored message may hold: a message over these did not come from an ingress
/// of ours (whose limits they are), or came from one configured with larger limits than
/// this worker, which must not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeLimits {
    /// `limits.maxRecipients`.
    pub max_recipients: usize,
    /// `limits.maxMessageSize`; a body may exceed it by [`BODY_HEADROOM`].
    pub max_message_size: u64,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        EnvelopeLimits {
            max_recipients: crate::envelope::DEFAULT_MAX_RECIPIENTS,
            max_message_size: crate::envelope::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl EnvelopeLimits {
    /// The largest body a message may have: the message, our Received header, and for a
    /// bounce the report around a returned message.
    pub fn max_body(&self) -> u64 {
        self.max_message_size.saturating_add(BODY_HEADROOM)
    }

    /// The largest envelope header read: generous for `max_recipients` recipients with
    /// the longest paths and ORCPTs, JSON-escaped.
    pub(crate) fn max_envelope_json(&self) -> usize {
        ENVELOPE_BASE.saturating_add(self.max_recipients.saturating_mul(PER_RECIPIENT))
    }
}

/// See [`EnvelopeLimits::max_body`].
pub const BODY_HEADROOM: u64 = 1 << 20;
const ENVELOPE_BASE: usize = 16 << 10;
const PER_RECIPIENT: usize = 4 << 10;
/// `helo`, `authenticated_user` and the body object's name.
const MAX_NAME: usize = 512;

/// Why a stored message is not one of ours.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("a queued message without headers")]
    NoHeaders,
    #[error("a queued message without {ENVELOPE}")]
    NoEnvelope,
    #[error("a {ENVELOPE} header of {size} bytes, more than the {limit} read")]
    EnvelopeTooLarge { size: usize, limit: usize },
    #[error("bad {ENVELOPE} header: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bad {name} header {value:?}")]
    Number { name: &'static str, value: String },
    #[error("invalid envelope: {0}")]
    Invalid(String),
}

/// Why a message was terminated undelivered, as told to the queue's observer
/// ([`super::JetStreamQueue::on_invalid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// Its headers do not decode.
    Undecodable,
    /// Its envelope is not one an ingress of ours can have written.
    Invalid,
}

impl DecodeError {
    pub fn reason(&self) -> InvalidReason {
        match self {
            DecodeError::Invalid(_) => InvalidReason::Invalid,
            _ => InvalidReason::Undecodable,
        }
    }
}

/// The headers of one stored message, checked: the envelope must be one that our
/// ingress could have written ([`check`]). A pure function of its input, for fuzzing.
pub fn decode(
    headers: Option<&HeaderMap>,
    payload_len: usize,
    limits: &EnvelopeLimits,
) -> Result<Meta, DecodeError> {
    let headers = headers.ok_or(DecodeError::NoHeaders)?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str());
    let json = get(ENVELOPE).ok_or(DecodeError::NoEnvelope)?;
    let limit = limits.max_envelope_json();
    if json.len() > limit {
        return Err(DecodeError::EnvelopeTooLarge {
            size: json.len(),
            limit,
        });
    }
    let envelope: Envelope = serde_json::from_str(json)?;
    let number = |name: &'static str| -> Result<Option<u64>, DecodeError> {
        get(name)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| DecodeError::Number {
                    name,
                    value: v.chars().take(64).collect(),
                })
            })
            .transpose()
    };
    let meta = Meta {
        not_before_ms: number(NOT_BEFORE)?,
        body_size: number(BODY_SIZE)?.unwrap_or(payload_len as u64),
        body_object: get(BODY_OBJECT).map(str::to_string),
        envelope,
    };
    check(&meta, limits).map_err(DecodeError::Invalid)?;
    Ok(meta)
}

/// The envelope's paths and DSN parameters through the SMTP parser, its counts and
/// sizes within `limits`, and its free-text fields without control characters.
pub(crate) fn check(meta: &Meta, limits: &EnvelopeLimits) -> Result<(), String> {
    let envelope = &meta.envelope;
    if envelope.recipients.len() > limits.max_recipients {
        return Err(format!(
            "{} recipients, more than {}",
            envelope.recipients.len(),
            limits.max_recipients
        ));
    }
    if meta.body_size > limits.max_body() {
        return Err(format!(
            "a body of {} bytes, more than {}",
            meta.body_size,
            limits.max_body()
        ));
    }
    reparse_mail(&envelope.reverse_path, &envelope.params)?;
    for recipient in &envelope.recipients {
        reparse_rcpt(recipient)?;
    }
    let text = |what: &str, value: &str| match value.len() <= MAX_NAME
        && !value.chars().any(char::is_control)
    {
        true => Ok(()),
        false => Err(format!("{what}: too long or with control characters")),
    };
    text("helo", &envelope.helo)?;
    text(
        "authenticated user",
        envelope.authenticated_user.as_deref().unwrap_or(""),
    )?;
    if let Some(name) = &meta.body_object
        && (name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return Err("body object: not an object name".into());
    }
    match &envelope.last_error {
        Some(reason) if reason.len() > MAX_LAST_ERROR => {
            Err(format!("last error of {} bytes", reason.len()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::conformance::envelope;

    const LIMITS: EnvelopeLimits = EnvelopeLimits {
        max_recipients: 100,
        max_message_size: 10 << 20,
    };

    #[test]
    fn meta_round_trips_through_headers() {
        let mut meta = Meta {
            envelope: envelope(&["a", "b"]),
            not_before_ms: None,
            body_size: 12,
            body_object: None,
        };
        meta.envelope.last_error = Some("451 4.7.1 \"quoted\"\r\nsecond line".into());
        let headers = encode(&meta, "X").unwrap();
        assert_eq!(decode(Some(&headers), 12, &LIMITS).unwrap(), meta);
        assert!(headers.get(TRACEPARENT).is_none());
        meta.not_before_ms = Some(1_700_000_000_000);
        meta.body_object = Some("OBJ".into());
        let trace = crate::envelope::TraceParent::new_root();
        meta.envelope.trace = Some(trace);
        let headers = encode(&meta, "X.1").unwrap();
        assert_eq!(headers.get(MSG_ID).unwrap().as_str(), "X.1");
        assert_eq!(
            headers.get(TRACEPARENT).unwrap().as_str(),
            trace.to_string()
        );
        assert_eq!(decode(Some(&headers), 0, &LIMITS).unwrap(), meta);
        assert!(decode(None, 0, &LIMITS).is_err());
    }

    fn headers_of(meta: &Meta) -> HeaderMap {
        encode(meta, "X").unwrap()
    }

    #[test]
    fn envelopes_our_ingress_could_not_have_written_are_refused() {
        let good = Meta {
            envelope: envelope(&["a"]),
            not_before_ms: None,
            body_size: 12,
            body_object: None,
        };
        type Spoil = Box<dyn Fn(&mut Meta)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "CR LF in a recipient",
                Box::new(|m| m.envelope.recipients[0].address.local = "a\r\nDATA".into()),
            ),
            (
                "NUL in the sender",
                Box::new(|m| {
                    m.envelope.reverse_path.as_mut().unwrap().domain = "b\0.example".into()
                }),
            ),
            (
                "too many recipients",
                Box::new(|m| {
                    let one = m.envelope.recipients[0].clone();
                    m.envelope.recipients = vec![one; 101];
                }),
            ),
            (
                "ENVID",
                Box::new(|m| m.envelope.params.envid = Some("x".repeat(101))),
            ),
            (
                "ORCPT",
                Box::new(|m| {
                    m.envelope.recipients[0].orcpt = Some(crate::smtp::address::Orcpt {
                        addr_type: "a b".into(),
                        address: "x".into(),
                    })
                }),
            ),
            (
                "body size",
                Box::new(|m| m.body_size = (10 << 20) + BODY_HEADROOM + 1),
            ),
            ("helo", Box::new(|m| m.envelope.helo = "x\r\ny".into())),
            (
                "object name",
                Box::new(|m| m.body_object = Some("../x".into())),
            ),
            (
                "last error",
                Box::new(|m| m.envelope.last_error = Some("4".repeat(MAX_LAST_ERROR + 1))),
            ),
        ];
        assert!(decode(Some(&headers_of(&good)), 12, &LIMITS).is_ok());
        for (what, spoil) in cases {
            let mut meta = good.clone();
            spoil(&mut meta);
            let err = decode(Some(&headers_of(&meta)), 12, &LIMITS).unwrap_err();
            assert!(matches!(err, DecodeError::Invalid(_)), "{what}: {err}");
            assert_eq!(err.reason(), InvalidReason::Invalid);
        }
        let mut huge = HeaderMap::new();
        huge.insert(
            ENVELOPE,
            "x".repeat(LIMITS.max_envelope_json() + 1).as_str(),
        );
        let err = decode(Some(&huge), 0, &LIMITS).unwrap_err();
        assert!(matches!(err, DecodeError::EnvelopeTooLarge { .. }), "{err}");
        assert_eq!(err.reason(), InvalidReason::Undecodable);
    }
}
