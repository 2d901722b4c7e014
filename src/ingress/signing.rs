//! DKIM signing at the end of a message, after the filters' last change (issue 12): the
//! content that is queued is what is signed. Only mail of authenticated sessions and
//! trusted networks is signed; Internet mail passing through never carries our
//! signature. The keys of a policy revision are loaded once ([`SignerCache`]).
//!
//! A message with no key for its From domain goes on unsigned. A configured key that
//! cannot be loaded, or a signature that fails, answers 451 4.7.1: mail that left
//! unsigned would fail DMARC at the receiver, and the deployment is what needs fixing.

use super::Shared;
use crate::envelope::{Envelope, SenderTrust};
use crate::filter::signing::{Signed, Signer, Unsigned};
use crate::policy::PolicySnapshot;
use crate::smtp::reply::Reply;
use crate::telemetry::metrics::SigningResult;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a revision whose keys failed to load waits before they are read again: a
/// Secret mounted late or fixed in place is picked up without a new policy revision,
/// and a broken one is not read per message.
const RETRY_FAILED_KEYS: Duration = Duration::from_secs(30);

/// The signer of the policy in force, built once per revision.
pub struct SignerCache {
    secrets_dir: Option<PathBuf>,
    current: Mutex<Option<Loaded>>,
}

struct Loaded {
    revision: String,
    at: Instant,
    signer: Arc<Signer>,
}

impl SignerCache {
    /// Keys are read from `{secrets_dir}/{name}/{key}`.
    pub fn new(secrets_dir: Option<PathBuf>) -> SignerCache {
        SignerCache {
            secrets_dir,
            current: Mutex::new(None),
        }
    }

    /// The keys of `policy`; `None` when it has no `signing:`. ARC sealing takes its key
    /// from here too ([`Signer::arc_key`]).
    pub fn signer(&self, policy: &PolicySnapshot) -> Option<Arc<Signer>> {
        let settings = policy.signing()?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loaded) = &*current
            && loaded.revision == policy.revision()
            && (!loaded.signer.has_errors() || loaded.at.elapsed() < RETRY_FAILED_KEYS)
        {
            return Some(loaded.signer.clone());
        }
        let signer = Arc::new(Signer::load(settings, self.secrets_dir.as_deref()));
        *current = Some(Loaded {
            revision: policy.revision().to_string(),
            at: Instant::now(),
            signer: signer.clone(),
        });
        Some(signer)
    }
}

/// The signer that applies to this envelope: only for senders that are ours.
pub(super) fn signer_for(
    shared: &Shared,
    policy: &PolicySnapshot,
    envelope: &Envelope,
) -> Option<Arc<Signer>> {
    match envelope.sender_trust {
        SenderTrust::Authenticated | SenderTrust::TrustedNetwork => shared.filters.signer(policy),
        SenderTrust::Untrusted => None,
    }
}

/// Signs `content` (the filters' copy, or `original` when they made none) and returns
/// the message to queue, signed or not, with `dkim=...` for the event summary; or the
/// reply that refuses it for now.
pub(super) async fn sign(
    shared: &Shared,
    signer: Arc<Signer>,
    envelope: &Envelope,
    original: &bytes::Bytes,
    content: Option<Vec<u8>>,
) -> Result<(Option<Vec<u8>>, &'static str), Reply> {
    // Hashing a large body and an RSA signature take milliseconds: off the reactor.
    let whole = original.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let signed = signer.sign_message(content.as_deref().unwrap_or(&whole));
        (content, signed)
    })
    .await;
    let metrics = &shared.metrics.dkim_signatures;
    let (content, signed) = match outcome {
        Ok((content, Ok(signed))) => (content, signed),
        Ok((_, Err(e))) => {
            metrics.inc(SigningResult::Error);
            tracing::error!(queue_id = %envelope.id, error = %e, "message not signed: refused for now");
            return Err(refusal());
        }
        Err(e) => {
            metrics.inc(SigningResult::Error);
            tracing::error!(queue_id = %envelope.id, error = %e, "the signing task failed");
            return Err(refusal());
        }
    };
    match signed {
        Signed::Headers {
            domain,
            selectors,
            headers,
        } => {
            metrics.inc(SigningResult::Signed);
            tracing::debug!(queue_id = %envelope.id, domain = %domain, selectors = %selectors.join(","), "DKIM signed");
            let mut signed = match content {
                Some(mut copy) => {
                    copy.splice(0..0, headers);
                    return Ok((Some(copy), "dkim=signed"));
                }
                None => Vec::with_capacity(headers.len() + original.len()),
            };
            signed.extend_from_slice(&headers);
            signed.extend_from_slice(original);
            Ok((Some(signed), "dkim=signed"))
        }
        Signed::Unsigned(why) => {
            metrics.inc(SigningResult::Unsigned);
            match &why {
                Unsigned::NoKey { .. } => {
                    tracing::debug!(queue_id = %envelope.id, reason = %why, "not DKIM signed")
                }
                _ => tracing::info!(queue_id = %envelope.id, reason = %why, "not DKIM signed"),
            }
            Ok((content, "dkim=unsigned"))
        }
    }
}

fn refusal() -> Reply {
    Reply::new(
        451,
        "4.7.1",
        "Error: the message cannot be signed now, try again later",
    )
}
