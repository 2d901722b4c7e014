//! Snapshots too large for one NATS message, in the object store bucket
//! `sluice-policy-objects` (the layout of the reference is in `stored.rs`). The object
//! holds the same format-1 value that would otherwise sit in the key, so one decoder
//! reads both; its size and SHA-256 are checked before it is believed.

use anyhow::Context;
use async_nats::jetstream::object_store::{self, GetErrorKind, ObjectStore};
use async_nats::jetstream::{self, kv};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use tokio::io::AsyncReadExt;

use super::stored::{Decoded, MAX_OBJECT, ObjectRef, ValueError, decode_value};

pub const OBJECTS: &str = "sluice-policy-objects";

/// Room left in a message for the key's headers and the client's framing.
const HEADROOM: usize = 8 << 10;

/// The largest value stored inline, for a server with this max payload.
pub fn inline_limit(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADROOM)
}

/// The bucket; created when `create` and missing, else `None` when missing.
pub async fn open(
    js: &jetstream::Context,
    replicas: usize,
    create: bool,
) -> anyhow::Result<Option<ObjectStore>> {
    if let Ok(store) = js.get_object_store(OBJECTS).await {
        return Ok(Some(store));
    }
    if !create {
        return Ok(None);
    }
    let config = object_store::Config {
        bucket: OBJECTS.to_string(),
        description: Some("Sluice: policy snapshots too large for one message".into()),
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    match js.create_object_store(config).await {
        Ok(store) => Ok(Some(store)),
        // Another pod or tool created it first.
        Err(e) => js
            .get_object_store(OBJECTS)
            .await
            .map(Some)
            .map_err(|_| e)
            .with_context(|| format!("creating the NATS object store bucket {OBJECTS}")),
    }
}

/// Stores a format-1 value as an object named after the snapshot's revision.
pub async fn put(store: &ObjectStore, revision: &str, value: &[u8]) -> anyhow::Result<ObjectRef> {
    let object = ObjectRef {
        name: format!("snapshot-{revision}"),
        size: value.len() as u64,
        sha256: hex(&Sha256::digest(value)),
    };
    store
        .put(object.name.as_str(), &mut &value[..])
        .await
        .with_context(|| format!("writing the policy object {}", object.name))?;
    Ok(object)
}

/// The object's bytes. The outer error is NATS failing (try again later); the inner one
/// is an object that is not what the reference says (refuse the value).
pub async fn fetch(
    store: Option<&ObjectStore>,
    object: &ObjectRef,
) -> anyhow::Result<Result<Vec<u8>, ValueError>> {
    let refuse = |reason: String| {
        Ok(Err(ValueError::Object {
            name: object.name.clone(),
            reason,
        }))
    };
    let Some(store) = store else {
        return refuse(format!("the bucket {OBJECTS} does not exist"));
    };
    if object.size > MAX_OBJECT {
        return refuse(format!(
            "{} bytes, more than the {MAX_OBJECT} read",
            object.size
        ));
    }
    let reader = match store.get(&object.name).await {
        Ok(reader) => reader,
        Err(e) if e.kind() == GetErrorKind::NotFound => return refuse("not found".into()),
        Err(e) => return Err(e).context(format!("reading the policy object {}", object.name)),
    };
    let mut bytes = Vec::with_capacity(object.size as usize);
    reader
        .take(MAX_OBJECT + 1)
        .read_to_end(&mut bytes)
        .await
        .with_context(|| format!("reading the policy object {}", object.name))?;
    if bytes.len() as u64 != object.size || hex(&Sha256::digest(&bytes)) != object.sha256 {
        return refuse("its size or SHA-256 differs from the reference".into());
    }
    Ok(Ok(bytes))
}

/// Deletes the objects that no value in the key's history refers to any more. Best
/// effort: a failure leaves an object behind, which the next push deletes.
pub async fn prune(store: &ObjectStore, kv: &kv::Store, key: &str) {
    let result: anyhow::Result<()> = async {
        let mut referenced = HashSet::new();
        let mut history = kv.history(key).await?;
        while let Some(entry) = history.try_next().await? {
            if let Ok(Decoded::Object { object, .. }) = decode_value(&entry.value) {
                referenced.insert(object.name);
            }
        }
        let mut list = store.list().await?;
        let mut stale = Vec::new();
        while let Some(info) = list.try_next().await? {
            if !referenced.contains(&info.name) {
                stale.push(info.name);
            }
        }
        for name in stale {
            store.delete(&name).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = format!("{e:#}"), "cannot prune old policy objects");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
