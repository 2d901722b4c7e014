//! Opening the queue a role works on, with its delivery events: the embedded spool (events
//! in the log only), or JetStream over a NATS connection that is retried until it works
//! (events in the stream `SLUICE_EVENTS`); and, for JetStream, the health probe that
//! readiness and the ingress's 421 follow. Beside the queue, the quarantine of held
//! originals on the same store: files beside the spool, or the JetStream bucket
//! `sluice-quarantine` (looked up, never created here).

use crate::config::{Config, Role};
use crate::events::jetstream::JetStreamEvents;
use crate::events::{EventSink, LogOnly};
use crate::queue::jetstream::codec::EnvelopeLimits;
use crate::queue::jetstream::{InvalidObserver, InvalidReason};
use crate::queue::jetstream::{JetStreamOptions, JetStreamQuarantine, JetStreamQueue};
use crate::queue::quarantine::Quarantine;
use crate::queue::spool::{DiskFullSwitch, Spool, SpoolQuarantine};
use crate::queue::{Queue, QueueAdmin, QueueError};
use crate::telemetry::metrics::{InvalidMessage, Metrics};
use crate::telemetry::readiness::{Latch, Readiness};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the JetStream probe asks, and how long it waits for an answer.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two attempts at setting up the stream while NATS is not there yet.
const SETUP_RETRY: Duration = Duration::from_secs(1);

/// The open queue, with what closing it needs.
#[derive(Clone)]
pub enum Backend {
    Spool {
        spool: Arc<Spool>,
        quarantine: Arc<SpoolQuarantine>,
    },
    JetStream {
        queue: Arc<JetStreamQueue>,
        quarantine: Arc<JetStreamQuarantine>,
        events: Arc<JetStreamEvents>,
        client: async_nats::Client,
    },
}

/// How long closing waits for delivery events still to be published.
const EVENTS_FLUSH: Duration = Duration::from_secs(2);

impl Backend {
    pub fn queue(&self) -> Arc<dyn Queue> {
        match self {
            Backend::Spool { spool, .. } => spool.clone(),
            Backend::JetStream { queue, .. } => queue.clone(),
        }
    }

    /// The same queue with its operator's view, for the admin listener.
    pub fn admin(&self) -> Arc<dyn QueueAdmin> {
        match self {
            Backend::Spool { spool, .. } => spool.clone(),
            Backend::JetStream { queue, .. } => queue.clone(),
        }
    }

    /// Where originals are held (issue 11), on the same store as the queue.
    pub fn quarantine(&self) -> Arc<dyn Quarantine> {
        match self {
            Backend::Spool { quarantine, .. } => quarantine.clone(),
            Backend::JetStream { quarantine, .. } => quarantine.clone(),
        }
    }

    pub fn events(&self) -> Arc<dyn EventSink> {
        match self {
            Backend::Spool { .. } => Arc::new(LogOnly),
            Backend::JetStream { events, .. } => events.clone(),
        }
    }

    pub fn nats(&self) -> Option<&async_nats::Client> {
        match self {
            Backend::Spool { .. } => None,
            Backend::JetStream { client, .. } => Some(client),
        }
    }

    /// After the worker stopped: hands back leases still held (JetStream), then flushes
    /// and closes the store.
    pub async fn close(&self) {
        match self {
            Backend::Spool { spool, .. } => spool.close().await,
            Backend::JetStream {
                queue,
                events,
                client,
                ..
            } => {
                queue.release_all().await;
                events.close(EVENTS_FLUSH).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
            }
        }
    }
}

/// Opens the role's queue. For JetStream this waits, retrying, until NATS answers and the
/// stream is set up; the queue latch is released then, and from then on follows the
/// connection and [`probe`].
pub async fn open(
    config: &Config,
    role: Role,
    disk: Option<DiskFullSwitch>,
    readiness: &Arc<Readiness>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Backend> {
    let limits = EnvelopeLimits {
        max_recipients: config.limits.max_recipients,
        max_message_size: config.limits.max_message_size,
    };
    if !role.uses_nats() {
        let spool = Spool::open_with(&config.spool, disk)
            .await
            .context("opening the spool")?;
        // Inside the spool directory, so under the lock the spool just took.
        let quarantine = SpoolQuarantine::open(&config.spool, limits)
            .await
            .context("opening the quarantine")?;
        readiness.release(Latch::Queue);
        return Ok(Backend::Spool {
            spool: Arc::new(spool),
            quarantine: Arc::new(quarantine),
        });
    }
    let on_state = {
        let readiness = readiness.clone();
        Arc::new(move |connected: bool| {
            // Released again by the probe once JetStream answers, not by the connection
            // alone: a connected server may still have no JetStream quorum.
            if !connected {
                readiness.withdraw(Latch::Queue);
            }
        })
    };
    let name = format!("sluice-{}-{}", role.name(), config.hostname);
    let client = config.nats.connect(&name, on_state).await?;
    let options = JetStreamOptions {
        manage_consumer: role.delivers(),
        limits,
        ..JetStreamOptions::for_nats(&config.nats)
    };
    // The one-process relay is its own operator: it provisions what it uses.
    let provisions = matches!(role, Role::Standalone { .. });
    let mut attempt = 0u32;
    let (queue, events) = loop {
        match set_up(&client, &options, provisions, metrics).await {
            Ok(both) => break both,
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(30) {
                    let error = format!("{e:#}");
                    tracing::warn!(
                        error,
                        attempt,
                        "JetStream queue not available yet; retrying"
                    );
                }
                tokio::time::sleep(SETUP_RETRY).await;
            }
        }
    };
    readiness.release(Latch::Queue);
    tracing::info!(stream = %options.stream, replicas = options.replicas, "JetStream queue ready");
    let js = async_nats::jetstream::new(client.clone());
    let quarantine = JetStreamQuarantine::open(js, &options).await;
    Ok(Backend::JetStream {
        queue: Arc::new(queue),
        quarantine: Arc::new(quarantine),
        events,
        client,
    })
}

/// The queue's stream, consumer and bucket, and the events stream, opened as they are
/// (created if missing and this user may); provisioned (created or updated) first when
/// `provisions` (`sluice standalone --jetstream`).
/// Counts the queue's invalid messages in `sluice_queue_invalid_messages_total`.
fn count_invalid(metrics: Arc<Metrics>) -> InvalidObserver {
    Arc::new(move |reason| {
        metrics.queue_invalid_messages.inc(match reason {
            InvalidReason::Undecodable => InvalidMessage::Undecodable,
            InvalidReason::Invalid => InvalidMessage::Invalid,
        })
    })
}

async fn set_up(
    client: &async_nats::Client,
    options: &JetStreamOptions,
    provisions: bool,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(JetStreamQueue, Arc<JetStreamEvents>)> {
    if provisions {
        let js = async_nats::jetstream::new(client.clone());
        super::provision::provision(&js, options).await?;
    }
    let queue = JetStreamQueue::with_client(client.clone(), options.clone())
        .await?
        .on_invalid(count_invalid(metrics.clone()));
    let js = async_nats::jetstream::new(client.clone());
    let events = JetStreamEvents::open(js, options.replicas, metrics.clone()).await?;
    Ok((queue, events))
}

/// Asks the queue whether it answers, every second, until `stop`, and keeps the queue
/// latch in step: a JetStream that is unreachable or too slow makes the process unready
/// (the Service stops routing to it) and the ingress refuses new sessions with 421.
/// An answer about bad data ([`QueueError::Corrupt`]) is not an outage: it is logged,
/// and the queue stays up for every other message.
pub async fn probe(queue: Arc<dyn Queue>, readiness: Arc<Readiness>, stop: CancellationToken) {
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let answer = tokio::time::timeout(PROBE_TIMEOUT, queue.check()).await;
        let now_healthy = queue_is_up(&answer);
        if let Ok(Err(e)) = &answer
            && now_healthy
        {
            tracing::warn!(error = %e, kind = e.metric_label(), "queue answered with an error that is not an outage; still ready");
        }
        if now_healthy {
            readiness.release(Latch::Queue);
        } else {
            readiness.withdraw(Latch::Queue);
        }
        if now_healthy != healthy {
            match answer {
                _ if now_healthy => tracing::info!("queue reachable again"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, kind = e.metric_label(), "queue unreachable; not ready")
                }
                _ => tracing::error!("queue too slow to answer; not ready"),
            }
            healthy = now_healthy;
        }
    }
}

/// Whether one probe answer leaves the queue up: only an outage (unreachable, full, shut
/// down, or no answer within [`PROBE_TIMEOUT`]) takes the latch back.
fn queue_is_up(answer: &Result<Result<(), QueueError>, tokio::time::error::Elapsed>) -> bool {
    match answer {
        Ok(Ok(())) => true,
        Ok(Err(e)) => !e.is_outage(),
        Err(_) => false,
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
