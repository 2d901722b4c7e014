//! The JetStream backend of [`Queue`]: the queue of the Kubernetes roles.
//!
//! Layout (ARCHITECTURE.md, "The queue"):
//! - one work-queue stream (`JetStreamOptions::stream`, file storage, `replicas`) holding
//!   one message per queued mail on the subject `PREFIX.QUEUEID`, the envelope in headers
//!   ([`codec`]) and the body as payload;
//! - bodies too large for the server's max payload go to the Object Store bucket
//!   `JetStreamOptions::bodies_bucket` under the queue id, and the message refers to them;
//! - held originals (issue 11) go to the bucket `JetStreamOptions::quarantine_bucket`
//!   ([`JetStreamQuarantine`]);
//! - one durable pull consumer shared by every worker: explicit ack, `ack_wait` as the
//!   server-side bound of a lease, unlimited deliveries and unlimited ack-pending (deferred
//!   messages wait as pending naks).
//!
//! Semantics and their limits, as the trait asks them of a backend:
//! - `enqueue` returns after the PubAck; `Nats-Msg-Id` is the queue id, so a publish
//!   retried within the stream's duplicate window (2 minutes) is stored once.
//! - `take(lease)` fetches one message, waiting at most `fetch_wait` (50 ms) when there
//!   is none: a `None` costs that long. Leases are kept in memory, keyed by
//!   token: when `lease` runs out, this process naks the message so that it is due again;
//!   a lease longer than `ack_wait` is kept alive with in-progress acks. If the process
//!   dies, the server makes the message due again after `ack_wait`.
//! - `Lease::redelivered` comes from the server's delivery count, less the early nak a
//!   deferred copy usually gets; an approximation, see [`lapsed_before`].
//! - `defer` cannot change a stored message: it publishes the updated envelope as a new
//!   message (same subject, `Sluice-Not-Before` = the due time) and then acks the old one.
//!   A crash (or a failed ack) between the two leaves both: the old copy, with the old
//!   envelope (all its recipients), comes back after `ack_wait` and is attempted again
//!   beside the new one: at-least-once, so a recipient may get the mail twice. While two
//!   copies exist, `list`/`inspect` show the newest. `take` naks, with the remaining
//!   delay, every message fetched before its due time.
//! - `retry_now` republishes a deferred message without its due time and deletes the old
//!   one; `remove` purges the message's subject. Both only know the leases of *this*
//!   process: a lease held by another pod is not seen, so `remove` may delete a message
//!   being delivered there (that delivery still happens, beside the bounce of the
//!   removed copy). `list`/`inspect` likewise report `leased` for this process's leases
//!   only: `sluice queue list`, a process of its own, shows none leased.
//! - `list` and `queue_stats` read the per-subject counts of the stream (one subject per
//!   queue id), `list` then each message by subject, without consuming; `list` stops at
//!   `JetStreamOptions::list_limit` entries.
//! - `wait_for_work` long-polls the consumer (a pull request the server holds for up to
//!   `poll_interval`, or `max` if shorter), so that work published by any pod wakes a
//!   worker at once; the message it brings is parked for the next `take` ([`fetch`]).
//!   It also wakes on enqueue/defer/retry made through this handle. A parked message is
//!   out of the server's hands like a lease: `release_all` naks it, and if the process
//!   dies it comes back after `ack_wait`.

pub mod codec;
mod fetch;
mod lease;
pub mod provision;
mod quarantine;
#[cfg(test)]
mod tests;

use super::{Lease, Queue, QueueAdmin, QueueEntry, QueueError, QueueStats};
use crate::envelope::{Envelope, QueueId, bounded_reason, unix_ms};
use crate::smtp::address::Recipient;
use async_nats::jetstream::{
    self, AckKind, consumer::PullConsumer, object_store::ObjectStore, stream,
};
use async_trait::async_trait;
use codec::Meta;
use fetch::Fetcher;
use futures_util::StreamExt;
use lease::{Held, Leases, keep_lease, lapsed_before};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

pub use codec::InvalidReason;
pub use provision::provision;

/// Told of each message that [`JetStreamQueue`] terminates as invalid.
pub type InvalidObserver = Arc<dyn Fn(InvalidReason) + Send + Sync>;
pub use quarantine::JetStreamQuarantine;

/// Where and how the queue lives in JetStream.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// The work-queue stream of queued messages.
    pub stream: String,
    /// Messages are published on `PREFIX.QUEUEID`; the stream holds `PREFIX.>`.
    pub subject_prefix: String,
    /// The durable pull consumer shared by all workers.
    pub consumer: String,
    /// The Object Store bucket for bodies larger than the server's max payload.
    pub bodies_bucket: String,
    /// The Object Store bucket of held originals ([`JetStreamQuarantine`]): created by
    /// [`provision`] only, looked up by the roles.
    pub quarantine_bucket: String,
    /// Stream (and bucket) replicas: 3 in production, 1 in tests.
    pub replicas: usize,
    /// The server-side lease: how long a message taken by a process that died stays
    /// invisible. Longer leases are kept alive with in-progress acks.
    pub ack_wait: Duration,
    /// How long `take` waits for a message before it answers `None`. Not zero: the
    /// server signals its consumers of a stored message asynchronously, after the PubAck,
    /// so a no-wait fetch right after an enqueue may find nothing (seen under load).
    pub fetch_wait: Duration,
    /// The longest `wait_for_work` holds a pull request open before it returns anyway.
    pub poll_interval: Duration,
    /// The most entries `list` returns.
    pub list_limit: usize,
    /// Whether this process's settings (`ack_wait`) are written to an existing
    /// consumer: true for the processes that take messages, false for an ingress, which
    /// would otherwise undo the workers' `ack_wait` with its own.
    pub manage_consumer: bool,
    /// What a stored message may hold ([`codec::decode`]); a message over them is
    /// terminated, never delivered.
    pub limits: codec::EnvelopeLimits,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            stream: "SLUICE_MESSAGES".into(),
            subject_prefix: "sluice.msg".into(),
            consumer: "sluice-workers".into(),
            bodies_bucket: "sluice-bodies".into(),
            quarantine_bucket: "sluice-quarantine".into(),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            fetch_wait: Duration::from_millis(50),
            poll_interval: Duration::from_secs(1),
            list_limit: 10_000,
            manage_consumer: true,
            limits: codec::EnvelopeLimits::default(),
        }
    }
}

impl JetStreamOptions {
    /// The defaults with the replicas and `ack_wait` of `nats`: what every process
    /// (roles, operator, `sluice nats provision`) derives from the same settings.
    pub fn for_nats(nats: &crate::nats::NatsConfig) -> Self {
        JetStreamOptions {
            replicas: nats.replicas,
            ack_wait: nats.ack_wait,
            ..JetStreamOptions::default()
        }
    }
}

/// Room left under the max payload for the protocol line and the small headers; the
/// envelope header is counted twice on top, leaving it room to grow on deferrals.
const HEADER_ROOM: usize = 4 * 1024;

/// The chunk size of the object store's `put` (async-nats's default).
const OBJECT_CHUNK: u64 = 128 * 1024;

/// When a deferral cannot be republished, the old message comes back after the deferral's
/// own delay, bounded by these.
const FAILED_DEFER_MIN: Duration = Duration::from_secs(1);
const FAILED_DEFER_MAX: Duration = Duration::from_secs(300);
/// How long a refused message is watched for, to be withdrawn if it reaches the stream.
const WITHDRAW_FOR: Duration = Duration::from_secs(300);
/// Between two looks at the connection while withdrawing, and between the two purges.
const WITHDRAW_RETRY: Duration = Duration::from_secs(1);
/// How many too-early messages one `take` naks before it gives up for now.
const MAX_EARLY_PER_TAKE: usize = 256;

pub struct JetStreamQueue {
    js: jetstream::Context,
    stream: stream::Stream,
    bodies: ObjectStore,
    options: JetStreamOptions,
    max_payload: usize,
    leases: Leases,
    next_token: AtomicU64,
    work: Arc<Notify>,
    fetcher: Fetcher,
    on_invalid: Option<InvalidObserver>,
}

fn err<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: &'static str,
) -> impl Fn(E) -> QueueError {
    move |e| QueueError::unavailable(format!("jetstream {what}"), e)
}

impl JetStreamQueue {
    /// Connects to `url` and opens the stream, the consumer and the bodies bucket
    /// ([`crate::nats::open_stream`]: an existing stream is used as it is; missing ones
    /// are created if this user may).
    pub async fn connect(url: &str, options: JetStreamOptions) -> Result<Self, QueueError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| QueueError::unavailable(format!("connecting to NATS at {url}"), e))?;
        Self::with_client(client, options).await
    }

    /// As [`JetStreamQueue::connect`], over a client the caller connected (credentials,
    /// TLS, several server URLs: `async_nats::ConnectOptions`).
    pub async fn with_client(
        client: async_nats::Client,
        options: JetStreamOptions,
    ) -> Result<Self, QueueError> {
        // Not yet known when the client connects in the background: assume the default.
        let max_payload = match client.server_info().max_payload {
            0 => 1024 * 1024,
            known => known,
        };
        let js = jetstream::new(client);
        let stream = crate::nats::open_stream(&js, provision::stream_config(&options))
            .await
            .map_err(|e| QueueError::unavailable("opening the stream", e))?;
        let consumer_config = provision::consumer_config(&options);
        let consumer: PullConsumer = match stream.get_consumer(&options.consumer).await {
            // A consumer's settings cannot copy messages elsewhere (a pull consumer stays
            // one: the server refuses a deliver subject on update), so the worker may
            // keep its ack_wait written; the stream itself is never updated here.
            Ok(consumer) if options.manage_consumer => {
                stream
                    .update_consumer(consumer_config)
                    .await
                    .map_err(err("updating the consumer"))?;
                consumer
            }
            Ok(consumer) => consumer,
            Err(_) => stream.create_consumer(consumer_config).await.map_err(err(
                "creating the consumer (`sluice nats provision` creates it)",
            ))?,
        };
        let bodies = match js.get_object_store(&options.bodies_bucket).await {
            Ok(bucket) => bucket,
            Err(_) => js
                .create_object_store(provision::bodies_config(&options))
                .await
                .map_err(err(
                    "creating the bodies bucket (`sluice nats provision` creates it)",
                ))?,
        };
        let work = Arc::new(Notify::new());
        let fetcher = Fetcher::new(consumer, work.clone(), options.fetch_wait, options.ack_wait);
        Ok(JetStreamQueue {
            js,
            stream,
            bodies,
            options,
            max_payload,
            leases: Arc::default(),
            next_token: AtomicU64::new(1),
            work,
            fetcher,
            on_invalid: None,
        })
    }

    /// Hands back every lease this process holds (a nak each), so that other workers
    /// get the messages now rather than after `ack_wait`: what a worker does when it
    /// stops before its deliveries are settled. The long-poll ends first (within
    /// `poll_interval`), so that what is handed back cannot come straight back here.
    pub async fn release_all(&self) {
        let poll = self.options.poll_interval + Duration::from_secs(1);
        self.fetcher.drain(poll).await;
        let held: Vec<Held> = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            leases.drain().map(|(_, held)| held).collect()
        };
        for held in held {
            held.keeper.abort();
            if let Err(e) = held.message.ack_with(AckKind::Nak(None)).await {
                tracing::warn!(id = %held.id, error = %e, "could not hand back a lease");
            }
        }
    }

    /// After a publish without acknowledgement (the sender is answered 451): the message
    /// may still reach the stream, from the client's buffer once it reconnects or from a
    /// server that stored it and could not answer. Purges it once connected, and again a
    /// little later, so that a message refused is not delivered as well. Best effort: a
    /// worker quick enough may still deliver it (a duplicate, since the sender retries).
    fn withdraw_later(&self, meta: Meta) {
        let (stream, bodies, client) = (self.stream.clone(), self.bodies.clone(), self.js.client());
        let subject = self.subject(&meta.envelope.id);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + WITHDRAW_FOR;
            let mut purged = 0;
            while purged < 2 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(WITHDRAW_RETRY).await;
                if client.connection_state() != async_nats::connection::State::Connected {
                    continue;
                }
                if stream.purge().filter(&subject).await.is_ok() {
                    purged += 1;
                }
            }
            if purged > 0
                && let Some(name) = meta.body_object
            {
                let _ = bodies.delete(&name).await;
            }
        });
    }

    /// Tells `observer` of each invalid message terminated (the process counts them in
    /// `sluice_queue_invalid_messages_total`): the queue knows nothing of metrics.
    pub fn on_invalid(mut self, observer: InvalidObserver) -> Self {
        self.on_invalid = Some(observer);
        self
    }

    /// Ends a message that no ingress of ours can have written (see [`codec::decode`]):
    /// its envelope could smuggle commands onto a delivery's command line or exhaust
    /// memory, so it is never delivered, and since no sender of ours is waiting for it
    /// there is nobody to bounce it to. Terminated (a work queue then drops it) rather
    /// than set aside: kept, it would come back for ever. The log line keeps what is
    /// needed to find its publisher.
    async fn terminate(&self, message: &jetstream::Message, seq: u64, error: &codec::DecodeError) {
        tracing::error!(
            seq,
            subject = %message.subject,
            error = %error,
            "invalid queue message terminated, not delivered"
        );
        if let Some(observer) = &self.on_invalid {
            observer(error.reason());
        }
        if let Err(e) = message.ack_with(AckKind::Term).await {
            tracing::warn!(seq, error = %e, "cannot terminate an invalid queue message");
        }
    }

    /// The largest body that travels as the message payload beside `envelope`; larger
    /// ones go to the object store.
    fn payload_room(&self, envelope: &Envelope) -> Result<usize, QueueError> {
        // While disconnected the client would buffer the publish and send it after
        // reconnecting, long after the sender was told 451: refuse before publishing.
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            return Err(QueueError::unavailable_because("not connected to NATS"));
        }
        let envelope_len = serde_json::to_string(envelope).map_or(0, |json| json.len());
        self.max_payload
            .checked_sub(HEADER_ROOM + 2 * envelope_len)
            .ok_or_else(|| {
                QueueError::full(
                    format!(
                        "envelope of {} ({envelope_len} bytes) too large for the NATS max payload of {} bytes",
                        envelope.id, self.max_payload
                    ),
                    None,
                )
            })
    }

    /// Stores a body in the object store under the queue id, and returns that name.
    async fn put_body(
        &self,
        envelope: &Envelope,
        body: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Result<String, QueueError> {
        let name = envelope.id.to_string();
        self.bodies
            .put(name.as_str(), body)
            .await
            .map_err(err("storing a large body"))?;
        Ok(name)
    }

    /// Publishes a new queue item; `payload` is the body unless it is in `body_object`.
    async fn publish_new(
        &self,
        envelope: &Envelope,
        body_size: u64,
        body_object: Option<String>,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        let meta = Meta {
            envelope: envelope.clone(),
            not_before_ms: None,
            body_size,
            body_object,
        };
        if let Err(e) = self.publish(&meta, envelope.id.as_str(), payload).await {
            self.withdraw_later(meta);
            return Err(e);
        }
        self.work.notify_waiters();
        Ok(())
    }

    fn subject(&self, id: &QueueId) -> String {
        format!("{}.{}", self.options.subject_prefix, id)
    }

    /// Publishes one queue message and waits for the PubAck.
    async fn publish(&self, meta: &Meta, msg_id: &str, body: &[u8]) -> Result<(), QueueError> {
        let headers = codec::encode(meta, msg_id)?;
        let payload = if meta.body_object.is_some() {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::copy_from_slice(body)
        };
        let ack = self
            .js
            .publish_with_headers(self.subject(&meta.envelope.id), headers, payload)
            .await
            .map_err(err("publishing"))?;
        ack.await.map_err(|e| {
            let text = e.to_string();
            if text.contains("maximum") || text.contains("limit") {
                QueueError::full("jetstream refused the message", Some(e.into()))
            } else {
                QueueError::unavailable("jetstream publish not acknowledged", e)
            }
        })?;
        Ok(())
    }

    /// The newest stored message of `id`, with its stream sequence.
    async fn last(&self, id: &QueueId) -> Result<Option<(u64, Meta, bytes::Bytes)>, QueueError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(id))
            .await
        {
            Ok(message) => {
                let meta = codec::decode(
                    Some(&message.headers),
                    message.payload.len(),
                    &self.options.limits,
                )
                .map_err(|e| QueueError::corrupt(id, e))?;
                Ok(Some((message.sequence, meta, message.payload)))
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(QueueError::unavailable(format!("jetstream get {id}"), e)),
        }
    }

    async fn body(&self, meta: &Meta, payload: bytes::Bytes) -> Result<Vec<u8>, QueueError> {
        let Some(name) = &meta.body_object else {
            return Ok(payload.to_vec());
        };
        let mut object = self
            .bodies
            .get(name)
            .await
            .map_err(err("reading a body object"))?;
        // The size was checked against the limits by `codec::decode`; the object is
        // read no further than it says.
        let mut body = Vec::with_capacity(meta.body_size as usize);
        (&mut object)
            .take(meta.body_size.saturating_add(1))
            .read_to_end(&mut body)
            .await
            .map_err(err("reading a body object"))?;
        if body.len() as u64 != meta.body_size {
            return Err(QueueError::corrupt(
                &meta.envelope.id,
                format!(
                    "the body object {name} is not of the {} bytes its message says",
                    meta.body_size
                ),
            ));
        }
        Ok(body)
    }

    async fn delete_body(&self, name: Option<&str>) {
        if let Some(name) = name
            && let Err(e) = self.bodies.delete(name).await
        {
            tracing::warn!(object = %name, error = %e, "could not delete a body object");
        }
    }

    fn leased_seqs(&self) -> Vec<u64> {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.values().map(|h| h.seq).collect()
    }

    fn is_leased(&self, id: &QueueId) -> bool {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.values().any(|h| &h.id == id)
    }

    /// Takes the lease of `token` away from the map (and its keeper task), or `LeaseLost`.
    fn release(&self, token: u64, id: &QueueId) -> Result<Held, QueueError> {
        let held = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            leases.remove(&token)
        };
        let held = held.ok_or_else(|| QueueError::LeaseLost(id.clone()))?;
        held.keeper.abort();
        Ok(held)
    }

    /// The queue ids with messages in the stream (one subject each), sorted.
    async fn ids(&self) -> Result<Vec<QueueId>, QueueError> {
        let filter = format!("{}.>", self.options.subject_prefix);
        let mut subjects = self
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(err("reading stream subjects"))?;
        let prefix = format!("{}.", self.options.subject_prefix);
        let mut ids = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry.map_err(err("reading stream subjects"))?;
            if count == 0 {
                continue;
            }
            if let Some(id) = subject.strip_prefix(&prefix).and_then(QueueId::parse) {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn entry(&self, seq: u64, meta: Meta, leased: &[u64]) -> QueueEntry {
        QueueEntry {
            due_at_ms: meta.not_before_ms.unwrap_or(meta.envelope.received_at_ms),
            size: meta.body_size,
            leased: leased.contains(&seq),
            envelope: meta.envelope,
        }
    }
}

#[async_trait]
impl Queue for JetStreamQueue {
    async fn enqueue(&self, envelope: &Envelope, body: &[u8]) -> Result<(), QueueError> {
        let limit = self.payload_room(envelope)?;
        let body_object = if body.len() > limit {
            Some(self.put_body(envelope, &mut &body[..]).await?)
        } else {
            None
        };
        self.publish_new(envelope, body.len() as u64, body_object, body)
            .await
    }

    /// A body too large for a message payload goes from the file straight to the object
    /// store, in the store's chunks: the ingress never holds it whole.
    async fn enqueue_file(
        &self,
        envelope: &Envelope,
        body: &std::path::Path,
        len: u64,
    ) -> Result<(), QueueError> {
        let limit = self.payload_room(envelope)?;
        if len <= limit as u64 {
            let content = super::read_body_file(body, len).await?;
            return self.enqueue(envelope, &content).await;
        }
        let mut file = tokio::fs::File::open(body).await.map_err(|e| {
            QueueError::unavailable(format!("cannot open message body {}", body.display()), e)
        })?;
        let name = self.put_body(envelope, &mut file).await?;
        self.publish_new(envelope, len, Some(name), &[]).await
    }

    /// The object store reads its input in chunks of this size, and the NATS client
    /// buffers about as much while publishing.
    fn file_body_memory(&self, len: u64) -> u64 {
        if len > self.max_payload as u64 {
            2 * OBJECT_CHUNK
        } else {
            len
        }
    }

    async fn wait_for_work(&self, max: Duration) {
        let wait = max.min(self.options.poll_interval);
        // Registered before looking, so that a long-poll ending in between still wakes us.
        let notified = self.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.fetcher.has_parked() {
            return;
        }
        self.fetcher.long_poll(wait);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    async fn take(&self, lease: Duration) -> Result<Option<Lease>, QueueError> {
        for _ in 0..MAX_EARLY_PER_TAKE {
            let message = match self.fetcher.next().await {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(None),
                Err(e) => return Err(QueueError::unavailable("jetstream fetching", e)),
            };
            let info = message.info().map_err(err("message info"))?;
            let (seq, delivered, stored) = (info.stream_sequence, info.delivered, info.published);
            let limits = &self.options.limits;
            let meta = match codec::decode(message.headers.as_ref(), message.payload.len(), limits)
            {
                Ok(meta) => meta,
                Err(e) => {
                    self.terminate(&message, seq, &e).await;
                    continue;
                }
            };
            let now = unix_ms(SystemTime::now());
            if let Some(due) = meta.not_before_ms
                && due > now
            {
                let delay = Duration::from_millis(due - now);
                message
                    .ack_with(AckKind::Nak(Some(delay)))
                    .await
                    .map_err(err("nak of a message not yet due"))?;
                continue;
            }
            let body = match self.body(&meta, message.payload.clone()).await {
                Ok(body) => body,
                Err(e) => {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(60))))
                        .await;
                    return Err(e);
                }
            };
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            let message = Arc::new(message);
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let keeper = keep_lease(
                self.leases.clone(),
                token,
                message.clone(),
                lease,
                self.options.ack_wait,
                self.work.clone(),
            );
            leases.insert(
                token,
                Held {
                    id: meta.envelope.id.clone(),
                    seq,
                    message,
                    keeper,
                },
            );
            let redelivered = lapsed_before(delivered, meta.not_before_ms, stored);
            return Ok(Some(Lease {
                envelope: meta.envelope,
                body,
                token,
                redelivered,
            }));
        }
        Ok(None)
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let held = self.release(lease.token, &lease.envelope.id)?;
        held.message
            .double_ack()
            .await
            .map_err(err("acknowledging"))?;
        // Once no message of this id is left, neither is a use for its body object.
        let object = held
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(codec::BODY_OBJECT))
            .map(|v| v.as_str().to_string());
        if let Some(name) = object
            && let Ok(None) = self.last(&held.id).await
        {
            self.delete_body(Some(&name)).await;
        }
        Ok(())
    }

    async fn defer(
        &self,
        lease: &Lease,
        until: SystemTime,
        remaining: Vec<Recipient>,
        reason: String,
    ) -> Result<(), QueueError> {
        let held = self.release(lease.token, &lease.envelope.id)?;
        let old = codec::decode(
            held.message.headers.as_ref(),
            held.message.payload.len(),
            &self.options.limits,
        )
        .map_err(|e| QueueError::corrupt(&lease.envelope.id, e))?;
        let mut envelope = lease.envelope.clone();
        envelope.recipients = remaining;
        envelope.attempts += 1;
        envelope.last_error = Some(bounded_reason(reason));
        let msg_id = format!("{}.{}", envelope.id, envelope.attempts);
        let meta = Meta {
            envelope,
            not_before_ms: Some(unix_ms(until)),
            body_size: old.body_size,
            body_object: old.body_object,
        };
        if let Err(e) = self.publish(&meta, &msg_id, &held.message.payload).await {
            // Nothing changed: the old message comes back, but when the deferral meant it
            // to (within bounds), not at once: a republish that keeps failing must not
            // spin through deliveries for days.
            let wait = until
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .clamp(FAILED_DEFER_MIN, FAILED_DEFER_MAX);
            let _ = held.message.ack_with(AckKind::Nak(Some(wait))).await;
            return Err(e);
        }
        if let Err(e) = held.message.double_ack().await {
            // The new message is stored; the old one comes back after ack_wait and is
            // delivered once more (at-least-once).
            tracing::warn!(id = %held.id, error = %e, "deferred, but the old message was not acked");
        }
        self.work.notify_waiters();
        Ok(())
    }

    async fn check(&self) -> Result<(), QueueError> {
        self.stream
            .get_info()
            .await
            .map(|_| ())
            .map_err(err("reading the stream's state"))
    }
}

#[async_trait]
impl QueueAdmin for JetStreamQueue {
    async fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        let leased = self.leased_seqs();
        let mut out = Vec::new();
        for id in self.ids().await? {
            if out.len() >= self.options.list_limit {
                break;
            }
            if let Some((seq, meta, _)) = self.last(&id).await? {
                out.push(self.entry(seq, meta, &leased));
            }
        }
        Ok(out)
    }

    async fn inspect(&self, id: &QueueId) -> Result<Option<(QueueEntry, Vec<u8>)>, QueueError> {
        let Some((seq, meta, payload)) = self.last(id).await? else {
            return Ok(None);
        };
        let body = self.body(&meta, payload).await?;
        Ok(Some((self.entry(seq, meta, &self.leased_seqs()), body)))
    }

    async fn retry_now(&self, id: &QueueId) -> Result<bool, QueueError> {
        if self.is_leased(id) {
            return Ok(false);
        }
        let Some((seq, mut meta, payload)) = self.last(id).await? else {
            return Ok(false);
        };
        let now = unix_ms(SystemTime::now());
        if meta.not_before_ms.is_some_and(|due| due > now) {
            meta.not_before_ms = None;
            let msg_id = format!("{}.{}.r{seq}", id, meta.envelope.attempts);
            self.publish(&meta, &msg_id, &payload).await?;
            self.stream
                .delete_message(seq)
                .await
                .map_err(err("deleting the deferred copy"))?;
        }
        self.work.notify_waiters();
        Ok(true)
    }

    async fn remove(&self, id: &QueueId) -> Result<Option<(Envelope, Vec<u8>)>, QueueError> {
        if self.is_leased(id) {
            return Err(QueueError::Busy(id.clone()));
        }
        let Some((_, meta, payload)) = self.last(id).await? else {
            return Ok(None);
        };
        let body = self.body(&meta, payload).await?;
        self.stream
            .purge()
            .filter(self.subject(id))
            .await
            .map_err(err("purging a message"))?;
        self.fetcher.forget(&self.subject(id));
        self.delete_body(meta.body_object.as_deref()).await;
        Ok(Some((meta.envelope, body)))
    }

    async fn queue_stats(&self) -> Result<QueueStats, QueueError> {
        let ids = self.ids().await?;
        Ok(QueueStats {
            messages: ids.len() as u64,
            oldest: ids.into_iter().next(),
        })
    }
}
