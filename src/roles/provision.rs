//! Provisioning JetStream as the privileged NATS user: the queue's streams, consumer and
//! buckets ([`crate::queue::jetstream::provision`]) together with the events stream, which
//! the queue does not know about. `sluice operator` runs it at start,
//! `sluice standalone --jetstream` and `sluice nats provision` too.

use crate::events::jetstream as events;
use crate::queue::jetstream::JetStreamOptions;
use async_nats::jetstream;

/// Creates or updates every stream of Sluice and creates the rest if missing; idempotent.
pub async fn provision(js: &jetstream::Context, options: &JetStreamOptions) -> anyhow::Result<()> {
    crate::queue::jetstream::provision(js, options, &[events::stream_config(options.replicas)])
        .await
}
