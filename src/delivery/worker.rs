//! The delivery loop: takes due messages from the queue, delivers each to its
//! destinations, and settles it in one place ([`Worker::settle`]): every recipient
//! delivered or failed → bounce what failed, then ack; some deferred → bounce what failed,
//! then defer the rest on the retry schedule, or bounce them too once the message has
//! outlived its lifetime. A message deferred past `retry.delayWarning` also earns its
//! sender one "delayed" DSN about the deferred recipients; the envelope records it
//! (`delay_warned_at_ms`, written by the defer), so a restart does not warn again.
//!
//! Every outcome is also a delivery event ([`EventSink`]): delivered, deferred and bounced
//! as each destination answers, expired when the message outlives its lifetime. A lease
//! marked `redelivered` (an earlier holder died or overran its lease) first asks the
//! events which recipients were delivered already, and does not deliver to them again.
//! That narrows the duplicates of at-least-once delivery to a worker dying between a
//! remote's 250 and the publication of its event.

use super::dispatch::Dispatcher;
use super::dsn::{self, ReportKind};
use super::outcome::{Handoff, Outcome};
use super::retry::{NextAttempt, RetrySchedule};
use super::route;
use crate::envelope::{Envelope, unix_ms};
use crate::events::{DeliveryEvent, EventKind, EventSink};
use crate::policy::PolicySnapshot;
use crate::queue::{Lease, Queue, QueueError};
use crate::smtp::address::Recipient;
use crate::telemetry::metrics::{DeliveryStatus, Label, Metrics, ReplyClass, RouteLabel};
use crate::telemetry::otel;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long a taken message stays invisible to other takers; a delivery that outlives it
/// may be repeated (at-least-once), so it is far longer than any delivery should take.
const LEASE: Duration = Duration::from_secs(30 * 60);
/// How long the loop sleeps at most when nothing is due.
const IDLE_WAIT: Duration = Duration::from_secs(1);

pub struct Worker {
    queue: Arc<dyn Queue>,
    policy: watch::Receiver<Arc<PolicySnapshot>>,
    dispatcher: Arc<Dispatcher>,
    retry: RetrySchedule,
    hostname: String,
    in_flight: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    events: Arc<dyn EventSink>,
}

impl Worker {
    pub fn new(
        queue: Arc<dyn Queue>,
        policy: watch::Receiver<Arc<PolicySnapshot>>,
        dispatcher: Arc<Dispatcher>,
        retry: RetrySchedule,
        concurrency: usize,
        metrics: Arc<Metrics>,
        events: Arc<dyn EventSink>,
    ) -> Arc<Worker> {
        let hostname = dispatcher.hostname().to_string();
        Arc::new(Worker {
            queue,
            policy,
            dispatcher,
            retry,
            hostname,
            in_flight: Arc::new(Semaphore::new(concurrency.max(1))),
            metrics,
            events,
        })
    }

    /// Delivers until `stop`; then waits for deliveries in flight, which end by
    /// themselves within their timeouts (what is not settled comes back after its lease).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        while !stop.is_cancelled() {
            let permit = tokio::select! {
                _ = stop.cancelled() => break,
                permit = self.in_flight.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let lease = match self.queue.take(LEASE).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.queue.wait_for_work(IDLE_WAIT) => continue,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "taking from the queue failed");
                    tokio::time::sleep(IDLE_WAIT).await;
                    continue;
                }
            };
            let worker = Arc::clone(&self);
            tracker.spawn(async move {
                worker.process(lease).await;
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn process(&self, mut lease: Lease) {
        let policy = self.policy.borrow().clone();
        let (mut results, pending) = self.delivered_before(&lease).await;
        let envelope = &lease.envelope;
        let hops = self.dispatcher.hop_refusal(&lease.body);
        for (destination, recipients) in route::group_by_destination(&policy, &pending) {
            let (refused, recipients): (Vec<_>, Vec<_>) = recipients
                .into_iter()
                .partition(|r| hops.is_some() || refuses_literal(&policy, r));
            let refusals = refused.into_iter().map(|r| {
                let outcome = hops.clone().unwrap_or_else(|| literal_refusal(&r));
                (r, outcome)
            });
            let outcomes = if recipients.is_empty() {
                Vec::new()
            } else {
                let span = attempt_span(envelope, &destination, &recipients);
                let outcomes = self
                    .dispatcher
                    .deliver(&destination, envelope, &recipients, &lease.body)
                    .instrument(span.clone())
                    .await;
                record_attempt(&span, &outcomes);
                outcomes
            };
            for (recipient, outcome) in refusals.chain(recipients.into_iter().zip(outcomes)) {
                self.record(&lease, &destination, &recipient, &outcome);
                results.push((recipient, outcome));
            }
        }
        let retry = self.schedule(&policy);
        if let Err(e) = self.settle(&mut lease, results, &retry).await {
            // Not acked: the message comes back when its lease runs out.
            tracing::error!(queue_id = %lease.envelope.id, error = %e, "settling a delivery failed");
        }
    }

    /// Splits the recipients into those a delivered event records, as delivered, and
    /// those still to deliver. Only a redelivered lease asks: otherwise every earlier
    /// holder settled, and the envelope lists only what is left. Recorded recipients count
    /// as delivered for the success DSN too: their holder died before it settled, so
    /// before it could queue that DSN (unless it died right between the two).
    async fn delivered_before(&self, lease: &Lease) -> (Vec<(Recipient, Outcome)>, Vec<Recipient>) {
        let recipients = lease.envelope.recipients.clone();
        if !lease.redelivered {
            return (Vec::new(), recipients);
        }
        self.metrics.queue_redeliveries.inc();
        let id = &lease.envelope.id;
        let recorded: HashSet<String> = self.events.delivered(id).await.into_iter().collect();
        let (mut done, mut pending) = (Vec::new(), Vec::new());
        for recipient in recipients {
            if !recorded.contains(&recipient.address.to_string()) {
                pending.push(recipient);
                continue;
            }
            tracing::info!(
                queue_id = %id,
                to = %recipient.address,
                "not delivered again: an earlier attempt delivered it"
            );
            let outcome = Outcome::Delivered {
                remote_mta: None,
                reply: "delivered by an earlier attempt".to_string(),
                handoff: Handoff::default(),
            };
            done.push((recipient, outcome));
        }
        self.metrics
            .delivery_duplicates_suppressed
            .inc_by(done.len() as u64);
        (done, pending)
    }

    /// The retry schedule under `policy`: its `spec.retry.maxLifetime`, when one is set,
    /// replaces the configured lifetime (5 days by default).
    fn schedule(&self, policy: &PolicySnapshot) -> RetrySchedule {
        let mut retry = self.retry.clone();
        if let Some(lifetime) = policy.max_retry_lifetime() {
            retry.max_lifetime = lifetime;
        }
        retry
    }

    /// Maps the outcomes onto the queue: the one place where mail leaves the queue.
    async fn settle(
        &self,
        lease: &mut Lease,
        results: Vec<(Recipient, Outcome)>,
        retry: &RetrySchedule,
    ) -> Result<(), QueueError> {
        let now = SystemTime::now();
        let plan = plan(retry, &lease.envelope, results, now);
        // Notifications are queued before the message is acked or deferred, so that a
        // crash in between repeats the delivery rather than losing the bounce.
        self.notify(lease, &plan.failed, ReportKind::Failure)
            .await?;
        self.notify(lease, &plan.delivered, ReportKind::Success)
            .await?;
        if plan.warn {
            // Due even when NOTIFY rules it out for every recipient (no DSN then): the
            // point is passed, once.
            self.notify(lease, &plan.deferred, ReportKind::Delay)
                .await?;
            lease.envelope.delay_warned_at_ms = Some(unix_ms(now));
        }
        match plan.next {
            Some(NextAttempt::At(at)) => {
                let reason = plan
                    .deferred
                    .first()
                    .map(|(_, o)| o.reply().to_string())
                    .unwrap_or_default();
                let remaining = plan.deferred.into_iter().map(|(r, _)| r).collect();
                self.queue.defer(lease, at, remaining, reason).await
            }
            Some(NextAttempt::Expired) => {
                self.queue.ack(lease).await?;
                for (recipient, outcome) in &plan.deferred {
                    self.emit(
                        EventKind::Expired,
                        lease,
                        recipient,
                        &expired(outcome),
                        None,
                    );
                }
                Ok(())
            }
            None => self.queue.ack(lease).await,
        }
    }

    async fn notify(
        &self,
        lease: &Lease,
        reports: &[(Recipient, Outcome)],
        kind: ReportKind,
    ) -> Result<(), QueueError> {
        if reports.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        let limit = self.policy.borrow().bounce_size_limit();
        let Some((envelope, message)) = dsn::build(
            &lease.envelope,
            reports,
            kind,
            &lease.body,
            &self.hostname,
            limit,
            now,
        ) else {
            return Ok(());
        };
        self.queue.enqueue(&envelope, &message).await?;
        tracing::info!(queue_id = %lease.envelope.id, notification = %envelope.id, kind = ?kind, "delivery status notification queued");
        Ok(())
    }

    /// One log line and one event per recipient and attempt, with what a Postfix admin
    /// greps for. The event goes out before the message is settled: the sooner a
    /// delivery is on record, the smaller the window for a duplicate.
    fn record(
        &self,
        lease: &Lease,
        destination: &route::Destination,
        recipient: &Recipient,
        outcome: &Outcome,
    ) {
        let delay = SystemTime::now()
            .duration_since(UNIX_EPOCH + Duration::from_millis(lease.envelope.received_at_ms))
            .unwrap_or_default();
        let (status, kind) = match outcome {
            Outcome::Delivered { .. } => (DeliveryStatus::Sent, EventKind::Delivered),
            Outcome::Deferred { .. } => (DeliveryStatus::Deferred, EventKind::Deferred),
            Outcome::Failed { .. } => (DeliveryStatus::Bounced, EventKind::Bounced),
        };
        self.emit(kind, lease, recipient, outcome, Some(destination));
        self.metrics.deliveries.inc(route_kind(destination), status);
        self.metrics
            .delivery_replies
            .inc(reply_class(outcome.reply()));
        if status == DeliveryStatus::Sent {
            self.metrics.delivery_seconds.observe(delay);
        }
        tracing::info!(
            queue_id = %lease.envelope.id,
            trace_id = lease.envelope.trace.map(|t| t.trace_id()).unwrap_or_default(),
            to = %recipient.address,
            relay = outcome.remote_mta().unwrap_or("none"),
            delay = format!("{:.1}", delay.as_secs_f64()),
            attempts = lease.envelope.attempts + 1,
            status = status.as_str(),
            reply = outcome.reply(),
            "delivery"
        );
    }

    /// The event of `recipient`'s `outcome` in this attempt.
    fn emit(
        &self,
        kind: EventKind,
        lease: &Lease,
        recipient: &Recipient,
        outcome: &Outcome,
        destination: Option<&route::Destination>,
    ) {
        let about = DeliveryEvent::about(kind, &lease.envelope, Some(recipient), SystemTime::now());
        self.events.emit(DeliveryEvent {
            reply: outcome.reply().to_string(),
            relay: outcome.remote_mta().map(str::to_string),
            route: destination.map(route::Destination::label),
            ..about
        });
    }
}

/// The span of one delivery attempt to one destination, below the message's trace
/// context from the envelope (the ingress's acceptance, or the bounced message's).
fn attempt_span(
    envelope: &Envelope,
    destination: &route::Destination,
    recipients: &[Recipient],
) -> tracing::Span {
    let span = tracing::info_span!(
        target: otel::TARGET,
        "smtp.deliver",
        otel.kind = "client",
        network.protocol.name = "smtp",
        sluice.queue_id = %envelope.id,
        sluice.route = route_kind(destination).as_str(),
        sluice.recipient_domain = otel::domains(
            recipients.iter().map(|r| r.address.domain.as_str()),
            MAX_DOMAINS,
        ),
        sluice.recipient_count = recipients.len(),
        sluice.attempt = envelope.attempts + 1,
        sluice.outcome = tracing::field::Empty,
        sluice.reply_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    otel::set_remote_parent(&span, envelope.trace.as_ref());
    span
}

/// The attempt's result on its span: the first recipient's, and whether any differed.
fn record_attempt(span: &tracing::Span, outcomes: &[Outcome]) {
    if span.is_disabled() {
        return;
    }
    let Some(first) = outcomes.first() else {
        return;
    };
    let outcome = match first {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Deferred { .. } => "deferred",
        Outcome::Failed { .. } => "failed",
    };
    let mixed = outcomes
        .iter()
        .any(|o| std::mem::discriminant(o) != std::mem::discriminant(first));
    span.record("sluice.outcome", if mixed { "mixed" } else { outcome });
    let code = otel::reply_code(first.reply());
    if let Some(code) = code {
        span.record("sluice.reply_code", code);
    }
    if !first.is_delivered() {
        match code {
            Some(code) => span.record("error.type", code),
            None => span.record("error.type", outcome),
        };
    }
}

/// Recipient domains named on an attempt's span; the count says if there were more.
const MAX_DOMAINS: usize = 10;

/// The `route` label of the delivery metrics.
fn route_kind(destination: &route::Destination) -> RouteLabel {
    use crate::policy::Delivery;
    match destination {
        route::Destination::Mx { .. } => RouteLabel::Mx,
        route::Destination::Smarthost(_) => RouteLabel::Smarthost,
        route::Destination::Local { delivery, .. } => match delivery {
            Delivery::Lmtp { .. } => RouteLabel::Lmtp,
            Delivery::Maildir { .. } => RouteLabel::Maildir,
            Delivery::Webhook { .. } => RouteLabel::Webhook,
        },
    }
}

/// What an attempt's outcomes mean for the message: whom to report to, and what to
/// retry when.
struct Plan {
    failed: Vec<(Recipient, Outcome)>,
    delivered: Vec<(Recipient, Outcome)>,
    deferred: Vec<(Recipient, Outcome)>,
    /// `None` when nothing is left to retry.
    next: Option<NextAttempt>,
    /// Send the one delay warning now.
    warn: bool,
}

/// Sorts the outcomes of an attempt into what to report and what to retry.
fn plan(
    retry: &RetrySchedule,
    envelope: &Envelope,
    results: Vec<(Recipient, Outcome)>,
    now: SystemTime,
) -> Plan {
    let received = UNIX_EPOCH + Duration::from_millis(envelope.received_at_ms);
    let (deferred, settled): (Vec<_>, Vec<_>) = results
        .into_iter()
        .partition(|(_, o)| matches!(o, Outcome::Deferred { .. }));
    let next =
        (!deferred.is_empty()).then(|| retry.next_attempt(envelope.attempts + 1, received, now));
    let warned = envelope.delay_warned_at_ms.is_some();
    let warn =
        matches!(next, Some(NextAttempt::At(_))) && retry.delay_warning_due(received, now, warned);
    let (mut failed, delivered): (Vec<_>, Vec<_>) =
        settled.into_iter().partition(|(_, o)| o.is_failed());
    if matches!(next, Some(NextAttempt::Expired)) {
        failed.extend(deferred.iter().map(|(r, o)| (r.clone(), expired(o))));
    }
    Plan {
        failed,
        delivered,
        deferred,
        next,
        warn,
    }
}

/// A recipient at an address literal while the policy refuses them: mail that came in
/// before the policy changed, or through an ingress with an older snapshot. Refused on
/// every route, since a smarthost would deliver it just the same.
fn refuses_literal(policy: &PolicySnapshot, recipient: &Recipient) -> bool {
    use crate::policy::model::AddressLiterals;
    recipient.address.is_address_literal() && policy.address_literals() == AddressLiterals::Refuse
}

fn literal_refusal(recipient: &Recipient) -> Outcome {
    Outcome::Failed {
        remote_mta: None,
        status: "5.7.1".to_string(),
        reply: format!(
            "550 5.7.1 delivery to the address literal {} is not allowed by policy",
            recipient.address.domain
        ),
    }
}

/// A recipient still deferred when the message's lifetime ends fails with 4.4.7.
fn expired(outcome: &Outcome) -> Outcome {
    let (remote_mta, last) = match outcome {
        Outcome::Deferred { remote_mta, reply } => (remote_mta.clone(), reply.clone()),
        other => (None, other.reply().to_string()),
    };
    Outcome::Failed {
        remote_mta,
        status: "4.4.7".to_string(),
        reply: format!("delivery time expired; last error: {last}"),
    }
}

/// `2xx`, `4xx`, `5xx` from a reply line, `local` when it has no SMTP code.
fn reply_class(reply: &str) -> ReplyClass {
    match reply.as_bytes().first() {
        Some(b'2') => ReplyClass::Success,
        Some(b'4') => ReplyClass::Transient,
        Some(b'5') => ReplyClass::Permanent,
        _ => ReplyClass::Other,
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
