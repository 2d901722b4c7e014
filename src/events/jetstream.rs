//! The events stream of the Kubernetes roles.
//!
//! - Stream [`STREAM`] on `sluice.events.>`, one subject per queue id and kind
//!   (`sluice.events.<queueid>.<kind>`, see [`subject`]), so that the events of one
//!   message, or its deliveries alone, are read by filter. Limits retention: events are
//!   a record to read, not work to consume; the oldest go first, after [`MAX_AGE`] or
//!   beyond [`MAX_BYTES`]. File storage, `replicas` as the queue has.
//! - `emit` puts the event on a bounded backlog ([`BACKLOG`]) and returns; a background
//!   task publishes in order and awaits the PubAcks beside the next publishes (at most
//!   [`ACKS_IN_FLIGHT`] at once). A full backlog drops the event, an unacknowledged
//!   publish loses it; both are counted in `sluice_events_lost_total`, never retried.
//! - `delivered(id)` reads `sluice.events.<id>.delivered` through an ephemeral consumer,
//!   within [`LOOKUP_TIMEOUT`]; an error or a timeout answers empty, so the recipients
//!   are delivered again rather than not at all.

use super::{DeliveryEvent, EventKind, EventSink};
use crate::envelope::QueueId;
use crate::telemetry::metrics::{EventLoss, Metrics};
use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::{JoinHandle, JoinSet};

#[cfg(test)]
#[path = "jetstream_tests.rs"]
mod tests;

pub const STREAM: &str = "SLUICE_EVENTS";
pub const SUBJECT_PREFIX: &str = "sluice.events";
/// How long events are kept.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most the stream holds; the oldest events are discarded beyond it.
pub const MAX_BYTES: i64 = 1 << 30;
/// Events waiting to be published; more are dropped.
pub const BACKLOG: usize = 4096;
/// Publishes whose PubAck is awaited at once.
pub const ACKS_IN_FLIGHT: usize = 256;
/// The bound of a `delivered` lookup.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The subject of an event: `sluice.events.<queueid>.<kind>`.
pub fn subject(id: &QueueId, kind: EventKind) -> String {
    format!("{SUBJECT_PREFIX}.{id}.{}", kind.as_str())
}

/// The configuration of the events stream.
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_string(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        max_age: MAX_AGE,
        max_bytes: MAX_BYTES,
        discard: DiscardPolicy::Old,
        ..Default::default()
    }
}

pub struct JetStreamEvents {
    stream: stream::Stream,
    /// `None` once closed.
    backlog: Mutex<Option<mpsc::Sender<DeliveryEvent>>>,
    publisher: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl JetStreamEvents {
    /// Opens the events stream as it is (created if missing and this user may: see
    /// [`crate::nats::open_stream`]; never updated here) and starts the
    /// publishing task.
    pub async fn open(
        js: jetstream::Context,
        replicas: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let stream = crate::nats::open_stream(&js, stream_config(replicas)).await?;
        let (sender, receiver) = mpsc::channel(BACKLOG);
        let publisher = tokio::spawn(publish_all(js, receiver, metrics.clone()));
        Ok(Arc::new(JetStreamEvents {
            stream,
            backlog: Mutex::new(Some(sender)),
            publisher: Mutex::new(Some(publisher)),
            metrics,
        }))
    }

    /// Stops taking events and waits, at most `within`, until those taken are published
    /// and acknowledged; for a drain at shutdown.
    pub async fn close(&self, within: Duration) {
        drop(lock(&self.backlog).take());
        let publisher = lock(&self.publisher).take();
        if let Some(publisher) = publisher
            && tokio::time::timeout(within, publisher).await.is_err()
        {
            tracing::warn!("delivery events still unpublished at shutdown");
        }
    }

    /// Every recipient of `id` with a `delivered` event, oldest event first.
    async fn read_delivered(&self, id: &QueueId) -> anyhow::Result<Vec<String>> {
        let consumer: PullConsumer = self
            .stream
            .create_consumer(pull::Config {
                filter_subject: subject(id, EventKind::Delivered),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                memory_storage: true,
                // Cleans up after a lookup that timed out before deleting it.
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await?;
        let info = consumer.cached_info();
        let (name, mut pending) = (info.name.clone(), info.num_pending);
        let mut recipients = Vec::new();
        if pending > 0 {
            let mut messages = consumer.messages().await?;
            while pending > 0 {
                let message = messages.next().await.context("events consumer ended")??;
                pending = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
                match serde_json::from_slice::<DeliveryEvent>(&message.payload) {
                    Ok(event) => recipients.extend(event.recipient),
                    Err(e) => {
                        let subject = message.subject.as_str();
                        tracing::warn!(subject, error = %e, "undecodable delivery event");
                    }
                }
            }
        }
        self.stream.delete_consumer(&name).await?;
        Ok(recipients)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl EventSink for JetStreamEvents {
    fn emit(&self, event: DeliveryEvent) {
        let refused = match lock(&self.backlog).as_ref() {
            Some(backlog) => match backlog.try_send(event) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => EventLoss::BacklogFull,
                Err(TrySendError::Closed(_)) => EventLoss::Closed,
            },
            None => EventLoss::Closed,
        };
        self.metrics.events_lost.inc(refused);
    }

    async fn delivered(&self, id: &QueueId) -> Vec<String> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.read_delivered(id)).await {
            Ok(Ok(recipients)) => recipients,
            Ok(Err(e)) => {
                tracing::warn!(queue_id = %id, error = %e, "reading delivery events failed");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(queue_id = %id, "reading delivery events timed out");
                Vec::new()
            }
        }
    }
}

/// Publishes the backlog in order until it is closed and empty, awaiting the PubAcks
/// beside the next publishes rather than one by one.
async fn publish_all(
    js: jetstream::Context,
    mut backlog: mpsc::Receiver<DeliveryEvent>,
    metrics: Arc<Metrics>,
) {
    let mut acks = JoinSet::new();
    while let Some(event) = backlog.recv().await {
        while acks.try_join_next().is_some() {}
        if acks.len() >= ACKS_IN_FLIGHT {
            acks.join_next().await;
        }
        let subject = subject(&event.queue_id, event.kind);
        let payload = match serde_json::to_vec(&event) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "could not encode a delivery event");
                metrics.events_lost.inc(EventLoss::PublishFailed);
                continue;
            }
        };
        match js.publish(subject.clone(), payload.into()).await {
            Ok(ack) => {
                let metrics = metrics.clone();
                acks.spawn(async move {
                    if let Err(e) = ack.await {
                        tracing::warn!(%subject, error = %e, "delivery event not acknowledged");
                        metrics.events_lost.inc(EventLoss::PublishFailed);
                    }
                });
            }
            Err(e) => {
                tracing::warn!(%subject, error = %e, "publishing a delivery event failed");
                metrics.events_lost.inc(EventLoss::PublishFailed);
            }
        }
    }
    while acks.join_next().await.is_some() {}
}
