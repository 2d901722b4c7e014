//! What the queue needs to exist in JetStream: the messages stream, the workers' durable
//! consumer, the bodies object store and the quarantine object store.
//!
//! [`provision`] creates or updates the streams (the queue's and those of other layers
//! the caller passes, the events stream) and creates the rest if missing
//! (`crate::roles::provision` is the whole set). Only a privileged NATS user runs it:
//! `sluice operator` at start, `sluice standalone --jetstream`, and `sluice nats
//! provision` (installs without the operator). Updating a stream is what must stay with
//! that user: a stream's configuration (`republish`, `sources`, `subjects`) can copy
//! whatever a user may publish onto any subject, the policy key's among them.
//!
//! The ingress and the worker only look up ([`crate::nats::open_stream`]): a stream that exists is
//! used as it is, never updated; one that is missing is created if this user may (a
//! bare nats-server without permissions, as the scale-out by hand runs it), and
//! otherwise the error says who creates it, and the role retries, unready, until then.

use super::JetStreamOptions;
use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
    object_store,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use std::time::Duration;

/// The work-queue stream of queued messages.
pub fn stream_config(options: &JetStreamOptions) -> stream::Config {
    stream::Config {
        name: options.stream.clone(),
        subjects: vec![format!("{}.>", options.subject_prefix)],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: options.replicas.max(1),
        // Refuse rather than drop: invariant 1.
        discard: DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The durable pull consumer shared by every worker.
pub fn consumer_config(options: &JetStreamOptions) -> pull::Config {
    pull::Config {
        durable_name: Some(options.consumer.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: -1,
        max_ack_pending: -1,
        filter_subject: format!("{}.>", options.subject_prefix),
        ..Default::default()
    }
}

/// The object store of bodies too large for a message.
pub fn bodies_config(options: &JetStreamOptions) -> object_store::Config {
    object_store::Config {
        bucket: options.bodies_bucket.clone(),
        storage: StorageType::File,
        num_replicas: options.replicas.max(1),
        ..Default::default()
    }
}

/// The object store of held originals ([`super::JetStreamQuarantine`]).
pub fn quarantine_config(options: &JetStreamOptions) -> object_store::Config {
    object_store::Config {
        bucket: options.quarantine_bucket.clone(),
        description: Some("Sluice: originals held by a quarantine rule".into()),
        storage: StorageType::File,
        num_replicas: options.replicas.max(1),
        ..Default::default()
    }
}

/// Creates or updates the messages stream with `options` (replicas) and the `companions`
/// (streams of other layers: the events stream), and creates the consumer (with `options.ack_wait`), the bodies bucket and
/// the quarantine bucket if missing. Idempotent; for the privileged user only (see the module's documentation).
pub async fn provision(
    js: &jetstream::Context,
    options: &JetStreamOptions,
    companions: &[stream::Config],
) -> anyhow::Result<()> {
    // The messages stream last: it is what a waiting role looks up first, so that once
    // it exists, so does everything else the role opens after it, and the role does not
    // try (and fail, as a user without the permission) to create the rest itself. The
    // quarantine bucket only here: the roles look it up and never create it.
    if js
        .get_object_store(&options.quarantine_bucket)
        .await
        .is_err()
    {
        js.create_object_store(quarantine_config(options))
            .await
            .with_context(|| format!("creating the bucket {}", options.quarantine_bucket))?;
    }
    if js.get_object_store(&options.bodies_bucket).await.is_err() {
        js.create_object_store(bodies_config(options))
            .await
            .with_context(|| format!("creating the bucket {}", options.bodies_bucket))?;
    }
    for companion in companions {
        js.create_or_update_stream(companion.clone())
            .await
            .with_context(|| format!("creating or updating the stream {}", companion.name))?;
    }
    js.create_or_update_stream(stream_config(options))
        .await
        .with_context(|| format!("creating or updating the stream {}", options.stream))?;
    let stream = js
        .get_stream(&options.stream)
        .await
        .with_context(|| format!("opening the stream {}", options.stream))?;
    // Created if missing, never rewritten: its ack_wait belongs to the workers, which
    // write theirs at start (a worker that finds it missing creates it, as it may);
    // an operator restarting must not undo it.
    if stream.consumer_info(&options.consumer).await.is_err()
        && let Err(e) = stream.create_consumer(consumer_config(options)).await
        // Created meanwhile by a worker, with its own ack_wait: keep that one.
        && stream.consumer_info(&options.consumer).await.is_err()
    {
        return Err(e).with_context(|| format!("creating the consumer {}", options.consumer));
    }
    Ok(())
}
