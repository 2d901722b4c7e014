//! TEMPORARY STUB (not to be committed)
use super::PolicySnapshot;
use std::sync::Arc;
pub struct PolicyBucket;
impl PolicyBucket {
    pub async fn open(
        _js: &async_nats::jetstream::Context,
        _replicas: usize,
    ) -> anyhow::Result<Self> {
        anyhow::bail!("stub")
    }
    pub async fn follow(
        self,
        _m: Arc<crate::telemetry::metrics::Metrics>,
        _s: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::watch::Receiver<Arc<PolicySnapshot>>> {
        None
    }
}
