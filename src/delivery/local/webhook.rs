//! Delivery to an HTTP endpoint: one POST per message for all its recipients.
//!
//! The request, chosen so that a receiver needs no MIME or multipart parser to get at
//! the message:
//! - body: the message exactly as queued, `Content-Type: message/rfc822`;
//! - `X-Sluice-Envelope`: standard base64 (with padding) of a JSON object
//!   `{"queueId", "sender" ("" for the null reverse-path), "recipients": [..],
//!   "receivedAt" (RFC 3339, UTC), "clientIp", "helo", "authenticatedUser" (or null)}`;
//! - `X-Sluice-Signature: t={unix seconds},v1={hex}` when a signing secret is set, where
//!   hex is the lower-case HMAC-SHA256, keyed with the secret, of the ASCII string
//!   `{t}.{lower-case hex SHA-256 of the body}.` followed by the decoded envelope JSON
//!   bytes (see [`sign`]). Receivers should compare in constant time and refuse stale
//!   `t` to stop replays.
//!
//! The answer: 2xx delivers; 4xx fails with 5.3.0 (the receiver refuses the message and
//! will refuse it again), except 408 and 429, which ask to come back later; 3xx
//! (redirects are not followed), 5xx, timeouts and connection errors defer. Delivery is
//! at-least-once: a receiver that must not see a message twice keys on `queueId`.

use super::LocalError;
use crate::delivery::Outcome;
use crate::delivery::outcome::Handoff;
use crate::envelope::Envelope;
use crate::http::{self, HttpError};
use crate::smtp::address::Recipient;
use base64::Engine;
use hmac::{Hmac, Mac};
use rustls::RootCertStore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The default bound on connecting, sending and awaiting the response head.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to POST. `roots` are the CAs trusted for `https://` URLs, usually
/// [`system_roots`].
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub signing_secret: Option<Vec<u8>>,
    pub timeout: Duration,
    pub roots: Arc<RootCertStore>,
}

impl WebhookTarget {
    /// A target with the default timeout.
    pub fn new(
        url: impl Into<String>,
        signing_secret: Option<Vec<u8>>,
        roots: Arc<RootCertStore>,
    ) -> Self {
        WebhookTarget {
            url: url.into(),
            signing_secret,
            timeout: DEFAULT_TIMEOUT,
            roots,
        }
    }
}

/// Written by hand so that the secret never reaches a log line.
impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| "…"))
            .field("timeout", &self.timeout)
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// The operating system's trusted CAs (rustls-native-certs); certificates that cannot
/// be read are logged and skipped. Loading reads files, so callers load once and share.
pub fn system_roots() -> Arc<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "cannot load a system CA certificate");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
    Arc::new(roots)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookEnvelope<'a> {
    queue_id: &'a str,
    sender: String,
    recipients: Vec<String>,
    received_at: String,
    client_ip: String,
    helo: &'a str,
    authenticated_user: Option<&'a str>,
}

/// POSTs the message once; every recipient gets the same outcome.
pub async fn deliver_webhook(
    target: &WebhookTarget,
    envelope: &Envelope,
    recipients: &[Recipient],
    message: &[u8],
) -> Vec<Outcome> {
    if recipients.is_empty() {
        return Vec::new();
    }
    let outcome = attempt(target, envelope, recipients, message).await;
    if !outcome.is_delivered() {
        tracing::warn!(url = %target.url, reply = outcome.reply(), "webhook delivery did not complete");
    }
    vec![outcome; recipients.len()]
}

async fn attempt(
    target: &WebhookTarget,
    envelope: &Envelope,
    recipients: &[Recipient],
    message: &[u8],
) -> Outcome {
    let url = match http::parse_url(&target.url) {
        Ok(url) => url,
        Err(e) => return LocalError::from(e).into_outcome(None),
    };
    let remote_mta = Some(url.host.clone());
    let json = match envelope_json(envelope, recipients) {
        Ok(json) => json,
        Err(e) => {
            let e = LocalError::from(HttpError::Response(e.to_string()));
            return e.into_outcome(remote_mta);
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut headers = vec![
        ("Content-Type", "message/rfc822".to_owned()),
        ("X-Sluice-Envelope", b64.encode(&json)),
    ];
    if let Some(secret) = &target.signing_secret {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        headers.push((
            "X-Sluice-Signature",
            sign(secret, now.as_secs(), &json, message),
        ));
    }
    match http::post(&url, &headers, message, &target.roots, target.timeout).await {
        Ok(status) => outcome_of(&status, remote_mta),
        Err(e) => LocalError::from(e).into_outcome(remote_mta),
    }
}

fn envelope_json(envelope: &Envelope, recipients: &[Recipient]) -> serde_json::Result<Vec<u8>> {
    let received_at = chrono::DateTime::from_timestamp_millis(envelope.received_at_ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::to_vec(&WebhookEnvelope {
        queue_id: envelope.id.as_str(),
        sender: envelope
            .reverse_path
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        recipients: recipients.iter().map(|r| r.address.to_string()).collect(),
        received_at,
        client_ip: envelope.client_ip.to_string(),
        helo: &envelope.helo,
        authenticated_user: envelope.authenticated_user.as_deref(),
    })
}

fn outcome_of(status: &http::Status, remote_mta: Option<String>) -> Outcome {
    let reply = format!("HTTP {} {}", status.code, status.reason)
        .trim_end()
        .to_owned();
    match status.code {
        200..=299 => Outcome::Delivered {
            remote_mta,
            reply,
            handoff: Handoff::Final,
        },
        408 | 429 => Outcome::Deferred { remote_mta, reply },
        400..=499 => Outcome::Failed {
            remote_mta,
            status: "5.3.0".into(),
            reply,
        },
        300..=399 => Outcome::Deferred {
            remote_mta,
            reply: format!("{reply} (redirects are not followed)"),
        },
        _ => Outcome::Deferred { remote_mta, reply },
    }
}

/// The `X-Sluice-Signature` value, `t={timestamp},v1={hex}`: HMAC-SHA256 keyed with
/// `secret` over `{timestamp}.{hex SHA-256 of body}.{envelope_json}`, hex in lower
/// case. A receiver recomputes it from the `t` it was given, the decoded
/// `X-Sluice-Envelope` and the body, and compares the whole value.
pub fn sign(secret: &[u8], timestamp: u64, envelope_json: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length (RFC 2104 hashes long ones), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.{}.", hex(&Sha256::digest(body))).as_bytes());
    mac.update(envelope_json);
    format!("t={timestamp},v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_value() {
        // Computed independently:
        // printf '1700000000.%s.{"a":1}' "$(printf 'hi' | sha256sum | cut -c1-64)" \
        //   | openssl dgst -sha256 -hmac secret
        let got = sign(b"secret", 1_700_000_000, br#"{"a":1}"#, b"hi");
        let known = "3662b51ab34ad8899384a10269fb8438426966848aa41ab6b6d695a80223e531";
        assert_eq!(got, format!("t=1700000000,v1={known}"));
    }

    fn status(code: u16) -> http::Status {
        http::Status::new(code, "Reason")
    }

    #[test]
    fn statuses_map_onto_outcomes() {
        let host = || Some("h".to_owned());
        assert!(outcome_of(&status(200), host()).is_delivered());
        assert!(outcome_of(&status(204), host()).is_delivered());
        assert!(outcome_of(&status(404), host()).is_failed());
        for deferred in [101, 301, 408, 429, 500, 503, 600] {
            let o = outcome_of(&status(deferred), host());
            assert!(matches!(o, Outcome::Deferred { .. }), "{deferred}: {o:?}");
        }
        assert_eq!(
            outcome_of(&status(403), host()),
            Outcome::Failed {
                remote_mta: host(),
                status: "5.3.0".into(),
                reply: "HTTP 403 Reason".into()
            }
        );
    }
}
