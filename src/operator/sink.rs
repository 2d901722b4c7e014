//! Where the operator puts the snapshot: the NATS KV bucket `sluice-policy`, which the
//! ingress and worker pods follow. A trait, so that the reconciler's tests can check
//! what it writes without a NATS server.

use async_trait::async_trait;

use crate::policy::PolicySnapshot;
use crate::policy::bucket::{PolicyBucket, Writer, WriterKind};

#[async_trait]
pub trait SnapshotSink: Send + Sync {
    /// The revision of the snapshot in force, if any.
    async fn in_force(&self) -> anyhow::Result<Option<String>>;
    /// Puts a snapshot in force.
    async fn write(&self, snapshot: &PolicySnapshot) -> anyhow::Result<()>;
}

/// The policy bucket, written as this operator replica.
pub struct NatsSink {
    pub bucket: PolicyBucket,
    pub identity: String,
}

#[async_trait]
impl SnapshotSink for NatsSink {
    async fn in_force(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .bucket
            .latest()
            .await?
            .map(|s| s.revision().to_string()))
    }

    async fn write(&self, snapshot: &PolicySnapshot) -> anyhow::Result<()> {
        let writer = Writer::now(WriterKind::Operator, self.identity.clone());
        self.bucket.push(snapshot, &writer).await.map(|_| ())
    }
}
