//! The policy's filters at the end of a message, before the queue and the reply
//! (issue 11): the message is loaded whole, the [`Pipeline`] of the session's policy
//! runs on it, and its outcome becomes what is queued, what is held in quarantine, or
//! the refusal the client hears. Every verdict is logged with the queue id, counted by
//! check and result, and recorded as a delivery event.
//!
//! Order for a quarantined message (invariant 1): the original is held durably first,
//! then the stripped copy is queued, then 250. A failed hold answers 451 and queues
//! nothing; a failed queue write after a hold leaves the original held (the client
//! retries; an admin sees the held copy and may delete it).
//!
//! DKIM signing ([`super::signing`]) comes after the checks, on the content to queue,
//! and before the hold, so that a message refused for want of its key holds nothing.

use super::Shared;
use super::content::Body;
use super::signing::{SignerCache, sign, signer_for};
use crate::envelope::{Envelope, unix_ms};
use crate::events::{DeliveryEvent, EventKind};
use crate::filter::pipeline::{CheckResult, Disposition, Environment, Outcome, Pipeline};
use crate::filter::scan::{ScanContext, ScanTls};
use crate::filter::seal::Sealer;
use crate::filter::signing::Signer;
use crate::policy::PolicySnapshot;
use crate::queue::quarantine::{HeldMessage, Quarantine};
use crate::smtp::reply::Reply;
use crate::smtp::session::TlsInfo;
use crate::telemetry::metrics::{FilterCheck, FilterResult, Label};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Room reserved beyond a copy of the message for the filters' changes: added headers
/// and notices are small (a notice is shorter than most parts it replaces).
const REWRITE_ROOM: u64 = 64 * 1024;

/// The filters of the process: the pipeline of the policy in force, built once per
/// policy revision, where quarantined originals go, and the signing keys.
pub struct Filters {
    /// The pipeline of a revision, with the signer whose ARC key it seals with (keys
    /// that failed to load are read again after a while: a new signer, a new pipeline).
    current: Mutex<Option<Built>>,
    quarantine: Option<Arc<dyn Quarantine>>,
    env: Environment,
    signers: SignerCache,
}

/// A pipeline, the revision it was built for and the signer it seals with.
type Built = (String, Option<Arc<Signer>>, Arc<Pipeline>);

impl Filters {
    /// `quarantine` is where originals go; without one, a message that a rule would
    /// quarantine is answered 451 rather than delivered stripped with no original kept.
    /// `env` is what the checks need from the process (host name, DNS); signing keys
    /// are read from `{secrets_dir}/{name}/{key}`.
    pub fn new(
        quarantine: Option<Arc<dyn Quarantine>>,
        env: Environment,
        secrets_dir: Option<PathBuf>,
    ) -> Filters {
        Filters {
            current: Mutex::new(None),
            quarantine,
            env,
            signers: SignerCache::new(secrets_dir),
        }
    }

    /// The signing keys of `policy`, loaded once per revision; `None` without
    /// `signing:`.
    pub fn signer(&self, policy: &PolicySnapshot) -> Option<Arc<Signer>> {
        self.signers.signer(policy)
    }

    fn pipeline(&self, policy: &PolicySnapshot) -> Arc<Pipeline> {
        let signer = self.signer(policy);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let same_signer = |built: &Option<Arc<Signer>>| match (built, &signer) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        match &*current {
            Some((revision, built, pipeline))
                if revision == policy.revision() && same_signer(built) =>
            {
                pipeline.clone()
            }
            _ => {
                let sealer = signer.as_deref().and_then(arc_sealer);
                let pipeline =
                    Arc::new(Pipeline::new(policy.filters(), &self.env).with_sealer(sealer));
                *current = Some((policy.revision().to_string(), signer, pipeline.clone()));
                pipeline
            }
        }
    }
}

/// The ARC sealer of a policy's `signing.arc`, when its key loaded.
fn arc_sealer(signer: &Signer) -> Option<Sealer> {
    if let Some(error) = signer.arc_error() {
        tracing::error!(error = %error, "the ARC key does not load: messages are not sealed");
    }
    let arc = signer.arc_key()?;
    Some(Sealer::new(arc.key.clone(), &arc.domain, &arc.selector))
}

/// What the filters made of a message.
pub(super) enum Filtered {
    /// Queue this (the message as received, or as the filters changed it), with the
    /// checks' results for its `accepted` event when filters ran.
    Queue(Body, Option<String>),
    /// Held whole in quarantine; nothing to queue: answer 250.
    Held,
    /// Answer this reply; `detail` is for the log.
    Refused { reply: Reply, detail: String },
}

/// The facts about the session the filters need, besides the envelope.
pub(super) struct Session<'a> {
    pub policy: &'a PolicySnapshot,
    pub tls: Option<&'a TlsInfo>,
    pub peer: &'a str,
}

/// Runs the session policy's filters on `body`, then signs it when the sender is ours
/// and the policy has keys; with neither, `body` is queued as it is, uncopied.
pub(super) async fn filter(
    shared: &Shared,
    session: Session<'_>,
    envelope: &Envelope,
    body: Body,
) -> Filtered {
    let signer = signer_for(shared, session.policy, envelope);
    if session.policy.filters().is_empty() {
        return match signer {
            None => Filtered::Queue(body, None),
            Some(signer) => sign_only(shared, signer, envelope, body).await,
        };
    }
    let pipeline = shared.filters.pipeline(session.policy);
    let started = Instant::now();
    // The filters may make a changed copy while the original is still needed (for the
    // quarantine): room for both is reserved before either exists.
    let loaded = match body
        .load(|len| len.saturating_add(REWRITE_ROOM), shared)
        .await
    {
        Ok(loaded) => loaded,
        // The memory budget or the spill file failed us: the caller's usual 451 4.3.1.
        Err(why) => return Filtered::Queue(Body::Dropped(why), None),
    };
    let context = scan_context(envelope, session.tls);
    let outcome = pipeline
        .run(&loaded.content, &context, envelope.sender_trust)
        .await;
    let summary = summary(&outcome.results);
    account(shared, envelope, session.peer, &outcome);
    let Outcome {
        disposition,
        hold,
        deliver,
        ..
    } = outcome;
    let content = match disposition {
        Disposition::Refuse(reply) => {
            shared.metrics.filter_seconds.observe(started.elapsed());
            let event = DeliveryEvent {
                reply: String::from_utf8_lossy(&reply.to_bytes())
                    .trim_end()
                    .to_string(),
                filters: Some(summary.clone()),
                ..DeliveryEvent::about(EventKind::Refused, envelope, None, SystemTime::now())
            };
            shared.events.emit(event);
            return Filtered::Refused {
                reply,
                detail: summary,
            };
        }
        Disposition::Accept { content } => content,
    };
    let (content, summary) = match signer {
        // Held whole: nothing leaves now; a release goes out as received.
        Some(signer) if deliver => {
            match sign(shared, signer, envelope, &loaded.content, content).await {
                Ok((content, dkim)) => (content, format!("{summary} {dkim}")),
                Err(reply) => {
                    shared.metrics.filter_seconds.observe(started.elapsed());
                    return Filtered::Refused {
                        reply,
                        detail: format!("{summary} dkim=error"),
                    };
                }
            }
        }
        _ => (content, summary),
    };
    if let Some(reason) = hold {
        if let Err(reply) = hold_original(shared, envelope, &loaded.content, &reason).await {
            return Filtered::Refused {
                reply,
                detail: format!("quarantine: {reason}"),
            };
        }
        let event = DeliveryEvent {
            reply: reason,
            filters: Some(summary.clone()),
            ..DeliveryEvent::about(EventKind::Quarantined, envelope, None, SystemTime::now())
        };
        shared.events.emit(event);
    }
    shared.metrics.filter_seconds.observe(started.elapsed());
    if !deliver {
        return Filtered::Held;
    }
    Filtered::Queue(loaded.into_body(content), Some(summary))
}

/// A policy with keys and no filters: the message is loaded only to be signed.
async fn sign_only(
    shared: &Shared,
    signer: Arc<Signer>,
    envelope: &Envelope,
    body: Body,
) -> Filtered {
    // The signed copy is the message and its new header fields.
    let loaded = match body
        .load(|len| len.saturating_add(REWRITE_ROOM), shared)
        .await
    {
        Ok(loaded) => loaded,
        Err(why) => return Filtered::Queue(Body::Dropped(why), None),
    };
    match sign(shared, signer, envelope, &loaded.content, None).await {
        Ok((content, dkim)) => Filtered::Queue(loaded.into_body(content), Some(dkim.to_string())),
        Err(reply) => Filtered::Refused {
            reply,
            detail: "dkim=error".into(),
        },
    }
}

/// Keeps the original durably, or the reply that refuses the message for now.
async fn hold_original(
    shared: &Shared,
    envelope: &Envelope,
    original: &[u8],
    reason: &str,
) -> Result<(), Reply> {
    let unavailable = |why: String| {
        tracing::warn!(queue_id = %envelope.id, error = %why, "cannot hold a message in quarantine");
        Reply::new(
            451,
            "4.3.0",
            "Error: quarantine unavailable, try again later",
        )
    };
    let Some(quarantine) = &shared.filters.quarantine else {
        return Err(unavailable("no quarantine store in this process".into()));
    };
    let record = HeldMessage {
        envelope: envelope.clone(),
        reason: reason.to_string(),
        held_at_ms: unix_ms(SystemTime::now()),
        size: original.len() as u64,
    };
    quarantine
        .hold(&record, original)
        .await
        .map_err(|e| unavailable(e.to_string()))
}

fn scan_context(envelope: &Envelope, tls: Option<&TlsInfo>) -> ScanContext {
    ScanContext {
        mail_from: envelope
            .reverse_path
            .as_ref()
            .map_or_else(String::new, |m| m.to_string()),
        recipients: envelope
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect(),
        client_ip: envelope.client_ip,
        helo: envelope.helo.clone(),
        user: envelope.authenticated_user.clone(),
        queue_id: envelope.id.to_string(),
        tls: tls.map(|t| ScanTls {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
        }),
    }
}

/// `name=result` of every check, for events and logs.
fn summary(results: &[CheckResult]) -> String {
    let parts: Vec<String> = results
        .iter()
        .map(|r| format!("{}={}", r.name, r.result))
        .collect();
    parts.join(" ")
}

/// Metrics and a log line per check that did more than accept.
fn account(shared: &Shared, envelope: &Envelope, peer: &str, outcome: &Outcome) {
    for r in &outcome.results {
        // The filters name kinds and results with strings (for events and
        // `X-Sluice-Filter` too); the labels are the enums they map to.
        match (
            FilterCheck::from_label(r.kind),
            FilterResult::from_label(r.result),
        ) {
            (Some(check), Some(result)) => shared.metrics.filter_verdicts.inc(check, result),
            _ => tracing::warn!(
                kind = r.kind,
                result = r.result,
                "a filter verdict without metric labels"
            ),
        }
        if r.result != "accept" && r.result != "exempt" {
            tracing::info!(
                queue_id = %envelope.id,
                client = %peer,
                check = %r.name,
                result = r.result,
                detail = %r.detail,
                elapsed_ms = r.elapsed.as_millis() as u64,
                "filter verdict"
            );
        }
    }
}
