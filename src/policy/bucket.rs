//! The compiled policy in the NATS KV bucket `sluice-policy`: `sluice policy push` (and
//! later the operator) writes the [`PolicySnapshot`] there, and the ingress and worker
//! pods read and follow it. The pods keep nothing on local disk (ARCHITECTURE.md), so the
//! bucket is where the rules in force live, and following its key swaps them within
//! seconds of a push, without a restart.
//!
//! The value is JSON with a format number and its writer beside the snapshot (layout in
//! `stored.rs`). Only a valid snapshot replaces the one in force; an unreadable value or
//! a deleted key leaves it in force, so a bad write cannot take the rules away from
//! running pods. [`PolicyBucket::in_force`] says which snapshot that is, who wrote it and
//! when, for `sluice policy status`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind, KeyValueError};
use async_nats::jetstream::{self, ErrorCode, kv};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::objects;
use super::snapshot::PolicySnapshot;
use super::stored::{
    Decoded, FORMAT_OBJECT, Loaded, Stored, StoredRef, ValueError, decode, decode_value,
};
pub use super::stored::{Writer, WriterKind};
use crate::telemetry::metrics::{Metrics, ReloadResult};
use async_nats::jetstream::object_store::ObjectStore;

pub const BUCKET: &str = "sluice-policy";
pub const KEY: &str = "snapshot";

/// Values kept per key: enough for a pod that starts after a bad write to find the valid
/// snapshot the running pods still hold, and for a person to see the last few pushes.
const HISTORY: i64 = 5;

/// How long one exchange with NATS may take before it is given up and tried again: a
/// request sent as the connection drops is never answered, and the client would wait out
/// its whole request timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a watch checks whether the client reconnected under it. After a server
/// restart the server has forgotten the watch's consumer, and the client's own watch
/// notices only when idle heartbeats are missed, 10 s later.
const RECONNECT_CHECK: Duration = Duration::from_millis(200);

/// The pauses between attempts after a failure: short, so that a pod follows again
/// within a second or so of NATS coming back.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The policy bucket, opened.
pub struct PolicyBucket {
    store: kv::Store,
    /// Where snapshots too large for one message go; `None` when it does not exist (a
    /// reader opened with `open_existing` before any large snapshot was written).
    objects: Option<ObjectStore>,
    /// The largest value written inline.
    inline_limit: usize,
    /// The client's counters, whose count of connects tells a watch of a reconnect.
    statistics: Arc<async_nats::Statistics>,
}

/// The snapshot in force: the newest valid one in the key's history, which every pod
/// following the bucket applies.
#[derive(Debug, Clone, PartialEq)]
pub struct InForce {
    pub snapshot: PolicySnapshot,
    /// The KV revision of the value holding it.
    pub kv_revision: u64,
    /// When NATS stored the value, by the server's clock.
    pub created: DateTime<Utc>,
    /// Who wrote it; `None` for a value written before writers were recorded.
    pub writer: Option<Writer>,
}

impl PolicyBucket {
    /// Gets the bucket, creating it when missing (idempotent; every pod and the push tool
    /// may race to create it). `replicas` as configured (1 in tests, 3 in production); an
    /// existing bucket is used as it is.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> anyhow::Result<Self> {
        let store = match Self::open_existing(js).await? {
            Some(bucket) => bucket.store,
            None => create(js, replicas).await?,
        };
        Ok(PolicyBucket::with(
            js,
            store,
            objects::open(js, replicas, true).await?,
        ))
    }

    fn with(js: &jetstream::Context, store: kv::Store, objects: Option<ObjectStore>) -> Self {
        let client = js.client();
        PolicyBucket {
            store,
            objects,
            inline_limit: objects::inline_limit(client.server_info().max_payload),
            statistics: client.statistics(),
        }
    }

    /// Gets the bucket if it exists: a tool that only reads must not create it, and its
    /// NATS user may not be allowed to.
    pub async fn open_existing(js: &jetstream::Context) -> anyhow::Result<Option<Self>> {
        let store = match js.get_key_value(BUCKET).await {
            Ok(store) => store,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(e).context(format!("opening the NATS KV bucket {BUCKET}")),
        };
        let objects = objects::open(js, 1, false).await?;
        Ok(Some(PolicyBucket::with(js, store, objects)))
    }

    /// Writes the snapshot, signed with who writes it; returns the KV revision. A value
    /// too large for one NATS message goes to the object store, and the key refers to it.
    pub async fn push(&self, snapshot: &PolicySnapshot, writer: &Writer) -> anyhow::Result<u64> {
        let mut value = serde_json::to_vec(&Stored::new(snapshot, writer))?;
        let large = value.len() > self.inline_limit;
        if large {
            let store = self
                .objects
                .as_ref()
                .with_context(|| format!("the bucket {} does not exist", objects::OBJECTS))?;
            let object = objects::put(store, snapshot.revision(), &value).await?;
            value = serde_json::to_vec(&StoredRef {
                format: FORMAT_OBJECT,
                writer,
                object: &object,
            })?;
        }
        let revision = self
            .store
            .put(KEY, value.into())
            .await
            .with_context(|| format!("writing the policy to the NATS KV bucket {BUCKET}"))?;
        if let Some(store) = &self.objects {
            objects::prune(store, &self.store, KEY).await;
        }
        Ok(revision)
    }

    /// The newest valid snapshot, if any: values written after it that cannot be read
    /// are passed over, as the running pods pass over them.
    pub async fn latest(&self) -> anyhow::Result<Option<PolicySnapshot>> {
        Ok(self.in_force().await?.map(|found| found.snapshot))
    }

    /// The same with its KV revision, its time and its writer.
    pub async fn in_force(&self) -> anyhow::Result<Option<InForce>> {
        let scan = scan(&self.store, self.objects.as_ref())
            .await
            .context("reading the policy history from NATS")?;
        Ok(scan.newest)
    }

    /// Waits (until `stop` is cancelled: then `None`) for the first valid snapshot, then
    /// follows the key in a task until `stop`, sending each new valid snapshot into the
    /// returned channel. Refused values are logged and counted
    /// (`sluice_policy_reloads_total{result="invalid"}`), applied ones too (`applied`).
    /// NATS errors and broken watches (server restart, disconnect) do not end following:
    /// the watch is opened again after a short pause and resumes where it stopped.
    pub async fn follow(
        self,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Option<watch::Receiver<Arc<PolicySnapshot>>> {
        let mut follower = Follower {
            store: self.store,
            objects: self.objects,
            statistics: self.statistics,
            metrics,
            revision: 0,
            watch: None,
        };
        let first = follower.first(&stop).await?;
        log_applied(&first, "policy loaded from NATS");
        let (tx, rx) = watch::channel(Arc::new(first.snapshot));
        tokio::spawn(async move { follower.run(tx, stop).await });
        Some(rx)
    }
}

fn log_applied(found: &InForce, what: &str) {
    let writer = found.writer.as_ref();
    tracing::info!(
        revision = found.snapshot.revision(),
        kv_revision = found.kv_revision,
        writer = writer.map(|w| w.kind.as_str()),
        written_by = writer.map(|w| w.identity.as_str()),
        "{what}"
    );
}

/// The snapshot an entry holds; `None` for a deletion, which holds none. The outer error
/// is NATS failing while fetching a large snapshot's object: try again, do not refuse.
async fn read(
    entry: &kv::Entry,
    objects: Option<&ObjectStore>,
) -> anyhow::Result<Option<Result<InForce, ValueError>>> {
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let loaded = match decode_value(&entry.value) {
        Ok(Decoded::Inline(loaded)) => Ok(loaded),
        Ok(Decoded::Object { object, writer }) => match objects::fetch(objects, &object).await? {
            Ok(bytes) => decode(&bytes).map(|loaded| Loaded { writer, ..loaded }),
            Err(refused) => Err(refused),
        },
        Err(refused) => Err(refused),
    };
    Ok(Some(loaded.map(|Loaded { snapshot, writer }| InForce {
        snapshot,
        kv_revision: entry.revision,
        // Through SystemTime: async-nats's time type depends on its features.
        created: SystemTime::from(entry.created).into(),
        writer,
    })))
}

fn refuse(metrics: &Metrics, revision: u64, error: &ValueError) {
    tracing::error!(
        kv_revision = revision,
        error = %error,
        "policy from NATS refused; the policy in force stays"
    );
    metrics.policy_reloads.inc(ReloadResult::Invalid);
}

fn is_missing(error: &KeyValueError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<GetStreamError>())
        .is_some_and(|e| {
            matches!(e.kind(), GetStreamErrorKind::JetStream(js)
                if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
        })
}

async fn create(js: &jetstream::Context, replicas: usize) -> anyhow::Result<kv::Store> {
    let config = kv::Config {
        bucket: BUCKET.to_string(),
        description: "Sluice: the compiled relay policy".to_string(),
        history: HISTORY,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another pod or the push tool created it first, maybe with other settings.
        Err(create) => js
            .get_key_value(BUCKET)
            .await
            .map_err(|_| create)
            .with_context(|| format!("creating the NATS KV bucket {BUCKET}")),
    }
}

/// What the key's history holds.
#[derive(Default)]
struct Scan {
    /// The newest valid snapshot.
    newest: Option<InForce>,
    /// The values written after it that were refused.
    refused: Vec<(u64, ValueError)>,
    /// The key's newest revision; 0 when it was never written.
    revision: u64,
}

async fn scan(store: &kv::Store, objects: Option<&ObjectStore>) -> anyhow::Result<Scan> {
    let mut history = store.history(KEY).await?;
    let mut scan = Scan::default();
    while let Some(entry) = history.try_next().await? {
        scan.revision = entry.revision;
        match read(&entry, objects).await? {
            Some(Ok(found)) => {
                scan.newest = Some(found);
                scan.refused.clear();
            }
            Some(Err(error)) => scan.refused.push((entry.revision, error)),
            None => {}
        }
    }
    Ok(scan)
}

/// Follows the key from one revision on, through broken watches.
struct Follower {
    store: kv::Store,
    objects: Option<ObjectStore>,
    statistics: Arc<async_nats::Statistics>,
    metrics: Arc<Metrics>,
    /// The last revision handled: a watch opened again resumes after it.
    revision: u64,
    watch: Option<OpenWatch>,
}

struct OpenWatch {
    watch: kv::Watch,
    /// The client's connects when the watch was opened.
    connects: u64,
}

impl Follower {
    /// The newest valid snapshot of the key's history, or else the first one written.
    async fn first(&mut self, stop: &CancellationToken) -> Option<InForce> {
        let mut backoff = Backoff::default();
        let scan = loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return None,
                result = bounded("reading the policy history", scan(&self.store, self.objects.as_ref())) => result,
            };
            match result {
                Ok(scan) => break scan,
                Err(e) => {
                    backoff
                        .pause(stop, "reading the policy from NATS", e)
                        .await?
                }
            }
        };
        for (revision, error) in &scan.refused {
            refuse(&self.metrics, *revision, error);
        }
        self.revision = scan.revision;
        match scan.newest {
            Some(found) => Some(found),
            None => self.next(stop).await,
        }
    }

    /// Sends each new valid snapshot until `stop`, or until no receiver is left.
    async fn run(mut self, tx: watch::Sender<Arc<PolicySnapshot>>, stop: CancellationToken) {
        while let Some(found) = self.next(&stop).await {
            log_applied(&found, "policy updated from NATS");
            self.metrics.policy_reloads.inc(ReloadResult::Applied);
            if tx.send(Arc::new(found.snapshot)).is_err() {
                return;
            }
        }
    }

    /// The next valid snapshot written after `self.revision`; `None` once `stop` is
    /// cancelled.
    async fn next(&mut self, stop: &CancellationToken) -> Option<InForce> {
        let mut backoff = Backoff::default();
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return None,
                result = self.next_entry() => result,
            };
            let entry = match result {
                Ok(entry) => entry,
                Err(e) => {
                    backoff
                        .pause(stop, "following the policy in NATS", e)
                        .await?;
                    continue;
                }
            };
            backoff = Backoff::default();
            let read = loop {
                let attempt = tokio::select! {
                    _ = stop.cancelled() => return None,
                    r = bounded("reading a policy object", read(&entry, self.objects.as_ref())) => r,
                };
                match attempt {
                    Ok(read) => break read,
                    Err(e) => {
                        backoff
                            .pause(stop, "reading the policy from NATS", e)
                            .await?
                    }
                }
            };
            self.revision = entry.revision;
            match read {
                Some(Ok(found)) => return Some(found),
                Some(Err(error)) => refuse(&self.metrics, entry.revision, &error),
                None => tracing::warn!(
                    kv_revision = entry.revision,
                    "policy deleted in NATS; the policy in force stays"
                ),
            }
        }
    }

    /// The next entry of the watch, opening it after the last revision handled when
    /// there is none; a broken watch is dropped, for the next call to open again.
    async fn next_entry(&mut self) -> anyhow::Result<kv::Entry> {
        let open = match self.watch.take() {
            Some(open) => open,
            None => open_watch(&self.store, &self.statistics, self.revision + 1).await?,
        };
        let OpenWatch { watch, connects } = self.watch.insert(open);
        let broken = loop {
            tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => return Ok(entry),
                    Some(Err(e)) => break anyhow::Error::new(e).context("the watch broke"),
                    None => break anyhow::anyhow!("the watch ended"),
                },
                _ = tokio::time::sleep(RECONNECT_CHECK) => {
                    if self.statistics.connects.load(Ordering::Relaxed) != *connects {
                        break anyhow::anyhow!("reconnected to NATS, which may have lost the watch");
                    }
                }
            }
        };
        self.watch = None;
        Err(broken)
    }
}

/// A watch on the key from revision `from` on.
async fn open_watch(
    store: &kv::Store,
    statistics: &async_nats::Statistics,
    from: u64,
) -> anyhow::Result<OpenWatch> {
    // Counted first, so that a reconnect while opening is noticed too.
    let connects = statistics.connects.load(Ordering::Relaxed);
    let open = async { Ok(store.watch_from_revision(KEY, from).await?) };
    let watch = bounded("opening a watch", open).await?;
    Ok(OpenWatch { watch, connects })
}

/// `work`, or an error when it takes longer than [`ATTEMPT_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, work).await {
        Ok(result) => result.with_context(|| what.to_string()),
        Err(_) => anyhow::bail!("{what}: no answer from NATS within {ATTEMPT_TIMEOUT:?}"),
    }
}

/// The pause after a failure: longer after each one, up to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(FIRST_BACKOFF)
    }
}

impl Backoff {
    /// Logs the failure and pauses; `None` when `stop` is cancelled meanwhile.
    async fn pause(
        &mut self,
        stop: &CancellationToken,
        what: &str,
        error: anyhow::Error,
    ) -> Option<()> {
        tracing::warn!(error = format!("{error:#}"), "{what}; trying again");
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        Some(())
    }
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;
