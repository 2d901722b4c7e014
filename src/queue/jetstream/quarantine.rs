//! The quarantine of the Kubernetes roles: held originals in the Object Store bucket
//! `JetStreamOptions::quarantine_bucket` (`sluice-quarantine`), one object per message,
//! named by its queue id, the record as JSON in the object's metadata under
//! [`RECORD_KEY`] beside the content.
//!
//! - `hold` returns after the PubAck of every chunk and of the object's metadata: durable
//!   as the queue's enqueue is. Holding an id again replaces what was held.
//! - Only [`provision`](super::provision) creates the bucket; a role looks it up, at its
//!   first use and again at each use until it is there, so that a role started before
//!   the bucket exists works once `sluice nats provision` (or the operator) has run.
//! - What comes back from NATS is hostile until checked: the metadata is read only if
//!   its record is at most [`max_record_json`] bytes, passes [`check_record`], names the
//!   object's own id and the object's size; an object that links elsewhere (which the
//!   client would follow into another bucket) is refused; the content is read no
//!   further than that size, and must be that size. `list` skips what fails, with a
//!   warning; `get` answers it with an error.

use super::JetStreamOptions;
use crate::envelope::QueueId;
use crate::queue::QueueError;
use crate::queue::jetstream::codec::EnvelopeLimits;
use crate::queue::quarantine::{
    HeldMessage, Quarantine, check_record, decode_record, max_record_json, normalised, sort,
};
use async_nats::jetstream::{
    self,
    object_store::{InfoErrorKind, ObjectInfo, ObjectMetadata, ObjectStore},
};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

/// The object metadata key holding the record.
pub const RECORD_KEY: &str = "sluice-held";

pub struct JetStreamQuarantine {
    js: jetstream::Context,
    name: String,
    bucket: OnceCell<ObjectStore>,
    limits: EnvelopeLimits,
    list_limit: usize,
}

fn err<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: &'static str,
) -> impl Fn(E) -> QueueError {
    move |e| QueueError::unavailable(format!("quarantine {what}"), e)
}

impl JetStreamQuarantine {
    /// The quarantine in `options.quarantine_bucket`, read within `options.limits`; the
    /// bucket is looked up now and, while missing, again at each use (see the module
    /// notes): a missing bucket is not an error here.
    pub async fn open(js: jetstream::Context, options: &JetStreamOptions) -> Self {
        let quarantine = JetStreamQuarantine {
            js,
            name: options.quarantine_bucket.clone(),
            bucket: OnceCell::new(),
            limits: options.limits,
            list_limit: options.list_limit,
        };
        if let Err(e) = quarantine.bucket().await {
            tracing::warn!(error = %e, "quarantine bucket not available yet; looked up again when used");
        }
        quarantine
    }

    async fn bucket(&self) -> Result<&ObjectStore, QueueError> {
        self.bucket
            .get_or_try_init(|| async {
                self.js.get_object_store(&self.name).await.map_err(|e| {
                    QueueError::unavailable(
                        format!(
                            "quarantine bucket {} (the operator or `sluice nats provision` creates it)",
                            self.name
                        ),
                        e,
                    )
                })
            })
            .await
    }

    /// The metadata of `id` as stored, `None` when there is none (or it was deleted).
    async fn info(&self, id: &QueueId) -> Result<Option<ObjectInfo>, QueueError> {
        match self.bucket().await?.info(id.as_str()).await {
            Ok(info) if info.deleted => Ok(None),
            Ok(info) => Ok(Some(info)),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(QueueError::unavailable(
                format!("quarantine info of {id}"),
                e,
            )),
        }
    }
}

/// The record of one stored object, checked (see the module notes).
pub(crate) fn decode_info(
    info: &ObjectInfo,
    limits: &EnvelopeLimits,
) -> Result<HeldMessage, String> {
    if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
        return Err("a link, not a held message".into());
    }
    let id = QueueId::parse(&info.name).ok_or("not named by a queue id")?;
    let json = info.metadata.get(RECORD_KEY).ok_or("no record")?;
    let record = decode_record(json.as_bytes(), limits)?;
    if record.envelope.id != id {
        return Err(format!("the record of {} is of {}", id, record.envelope.id));
    }
    if record.size != info.size as u64 {
        return Err(format!(
            "{} bytes of content, the record says {}",
            info.size, record.size
        ));
    }
    Ok(record)
}

#[async_trait]
impl Quarantine for JetStreamQuarantine {
    async fn hold(&self, record: &HeldMessage, body: &[u8]) -> Result<(), QueueError> {
        let record = normalised(record, body);
        let id = &record.envelope.id;
        check_record(&record, &self.limits)
            .map_err(|e| QueueError::corrupt(id, format!("cannot hold it: {e}")))?;
        let json = serde_json::to_string(&record).map_err(|e| QueueError::Encode(Arc::new(e)))?;
        if json.len() > max_record_json(&self.limits) {
            return Err(QueueError::full(
                format!("cannot hold {id}: a record of {} bytes", json.len()),
                None,
            ));
        }
        let meta = ObjectMetadata {
            name: id.to_string(),
            metadata: HashMap::from([(RECORD_KEY.to_string(), json)]),
            ..Default::default()
        };
        self.bucket()
            .await?
            .put(meta, &mut &body[..])
            .await
            .map_err(err("storing a held message"))?;
        tracing::info!(queue_id = %id, reason = %record.reason, "message held in the quarantine");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<HeldMessage>, QueueError> {
        let mut objects = self.bucket().await?.list().await.map_err(err("listing"))?;
        let mut records = Vec::new();
        while let Some(object) = objects.next().await {
            match object.map_err(|e| e.to_string()).and_then(|info| {
                decode_info(&info, &self.limits).map_err(|e| format!("{}: {e}", info.name))
            }) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!(error = %e, "invalid held message skipped"),
            }
            if records.len() >= self.list_limit {
                break;
            }
        }
        sort(&mut records);
        Ok(records)
    }

    async fn get(&self, id: &QueueId) -> Result<Option<(HeldMessage, Vec<u8>)>, QueueError> {
        let Some(info) = self.info(id).await? else {
            return Ok(None);
        };
        let record = decode_info(&info, &self.limits)
            .map_err(|e| QueueError::corrupt(id, format!("held message is invalid: {e}")))?;
        let mut object = self
            .bucket()
            .await?
            .get(id.as_str())
            .await
            .map_err(err("reading a held message"))?;
        // The client looks the metadata up again: it must be the version just checked.
        if object.info().nuid != info.nuid || object.info().name != info.name {
            return Err(QueueError::unavailable_because(format!(
                "held message {id} changed while read"
            )));
        }
        let mut body = Vec::with_capacity(record.size as usize);
        (&mut object)
            .take(record.size.saturating_add(1))
            .read_to_end(&mut body)
            .await
            .map_err(err("reading a held message"))?;
        if body.len() as u64 != record.size {
            return Err(QueueError::corrupt(
                id,
                format!(
                    "held message has {} bytes, its record says {}",
                    body.len(),
                    record.size
                ),
            ));
        }
        Ok(Some((record, body)))
    }

    async fn delete(&self, id: &QueueId) -> Result<bool, QueueError> {
        if self.info(id).await?.is_none() {
            return Ok(false);
        }
        self.bucket()
            .await?
            .delete(id.as_str())
            .await
            .map_err(err("deleting a held message"))?;
        tracing::info!(queue_id = %id, "held message deleted");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::jetstream::JetStreamQueue;
    use crate::queue::quarantine::contract::{Harness, quarantine_contract_tests, record};
    use crate::testing::nats::NatsServer;
    use std::sync::Arc;

    struct NatsHarness {
        server: NatsServer,
        queue: tokio::sync::OnceCell<Arc<JetStreamQueue>>,
    }

    impl NatsHarness {
        fn new() -> Self {
            NatsHarness {
                server: NatsServer::start(),
                queue: tokio::sync::OnceCell::new(),
            }
        }

        async fn js(&self) -> jetstream::Context {
            jetstream::new(async_nats::connect(self.server.url()).await.unwrap())
        }
    }

    #[async_trait]
    impl Harness for NatsHarness {
        /// A new connection each time; the bucket provisioned as the operator does.
        async fn open(&self) -> Arc<dyn Quarantine> {
            let (js, options) = (self.js().await, JetStreamOptions::default());
            crate::roles::provision::provision(&js, &options)
                .await
                .unwrap();
            Arc::new(JetStreamQuarantine::open(js, &options).await)
        }

        async fn plant(&self, name: &str, record_json: &str, body: &[u8]) {
            let bucket = self.js().await.get_object_store("sluice-quarantine").await;
            let meta = ObjectMetadata {
                name: name.to_string(),
                metadata: HashMap::from([(RECORD_KEY.to_string(), record_json.to_string())]),
                ..Default::default()
            };
            bucket.unwrap().put(meta, &mut &body[..]).await.unwrap();
        }

        async fn queue(&self) -> Arc<dyn crate::queue::QueueAdmin> {
            let url = self.server.url();
            let queue = self
                .queue
                .get_or_init(async || {
                    let options = JetStreamOptions::default();
                    Arc::new(JetStreamQueue::connect(&url, options).await.unwrap())
                })
                .await;
            queue.clone()
        }
    }

    quarantine_contract_tests!(NatsHarness::new());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_link_into_another_bucket_is_not_followed() {
        let harness = NatsHarness::new();
        let q = harness.open().await;
        let js = harness.js().await;
        let bodies = js.get_object_store("sluice-bodies").await.unwrap();
        let secret = bodies.put("SECRET", &mut &b"a body"[..]).await.unwrap();
        let held = record(&["a"], 1, b"x");
        let quarantine = js.get_object_store("sluice-quarantine").await.unwrap();
        quarantine
            .add_bucket_link(held.envelope.id.as_str(), "sluice-bodies")
            .await
            .unwrap();
        let _ = secret;
        assert!(q.get(&held.envelope.id).await.is_err());
        assert!(q.list().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_role_started_before_the_bucket_finds_it_once_provisioned() {
        let harness = NatsHarness::new();
        let (js, options) = (harness.js().await, JetStreamOptions::default());
        let q = JetStreamQuarantine::open(js.clone(), &options).await;
        let held = record(&["a"], 1, b"x");
        let refused = q.hold(&held, b"x").await.unwrap_err().to_string();
        assert!(refused.contains("sluice nats provision"), "{refused}");
        assert!(
            js.get_object_store("sluice-quarantine").await.is_err(),
            "a role never creates the bucket"
        );
        crate::roles::provision::provision(&js, &options)
            .await
            .unwrap();
        q.hold(&held, b"x").await.unwrap();
        assert_eq!(q.list().await.unwrap(), [held]);
    }
}
