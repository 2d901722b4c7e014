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

use crate::queue::{Envelope, QueueError};
use async_nats::HeaderMap;

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
    let json = serde_json::to_string(&meta.envelope)
        .map_err(|e| QueueError::Storage(format!("encoding envelope: {e}")))?;
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

pub fn decode(headers: Option<&HeaderMap>, payload_len: usize) -> Result<Meta, QueueError> {
    let headers =
        headers.ok_or_else(|| QueueError::Storage("queued message without headers".into()))?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
    let json =
        get(ENVELOPE).ok_or_else(|| QueueError::Storage(format!("message without {ENVELOPE}")))?;
    let envelope: Envelope = serde_json::from_str(&json)
        .map_err(|e| QueueError::Storage(format!("bad {ENVELOPE} header: {e}")))?;
    let number = |name: &str| -> Result<Option<u64>, QueueError> {
        get(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|e| QueueError::Storage(format!("bad {name} header {v:?}: {e}")))
            })
            .transpose()
    };
    Ok(Meta {
        not_before_ms: number(NOT_BEFORE)?,
        body_size: number(BODY_SIZE)?.unwrap_or(payload_len as u64),
        body_object: get(BODY_OBJECT),
        envelope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::conformance::envelope;

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
        assert_eq!(decode(Some(&headers), 12).unwrap(), meta);
        assert!(headers.get(TRACEPARENT).is_none());
        meta.not_before_ms = Some(1_700_000_000_000);
        meta.body_object = Some("OBJ".into());
        let trace = crate::telemetry::trace::TraceParent::new_root();
        meta.envelope.trace = Some(trace);
        let headers = encode(&meta, "X.1").unwrap();
        assert_eq!(headers.get(MSG_ID).unwrap().as_str(), "X.1");
        assert_eq!(
            headers.get(TRACEPARENT).unwrap().as_str(),
            trace.to_string()
        );
        assert_eq!(decode(Some(&headers), 0).unwrap(), meta);
        assert!(decode(None, 0).is_err());
    }
}
