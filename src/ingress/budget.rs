//! The process-wide budget of message bytes the ingress holds in memory.
//!
//! Every byte of message content a session keeps in RAM (the buffer of a message still
//! below the spill threshold, the write buffer of a spilled one, a spilled body read
//! back for a queue that needs it whole) is reserved here first, and released when the
//! message is handed to the queue or dropped. A session that cannot reserve is answered
//! `452 4.3.1` before its content starts, or `451 4.3.1` once it ends, and never grows:
//! a hundred slow senders of large messages cannot pin gigabytes.
//!
//! The budget is a [`Semaphore`] whose permits are bytes. Reservations made while
//! receiving never wait ([`Reservation::try_grow`]): a session over budget drops its
//! content. Only the read-back before an enqueue waits ([`Reservation::grow`]), and
//! tokio hands released permits to waiters first, so messages that are done receiving
//! get ahead of messages still arriving: finishing work is what frees memory.

use crate::telemetry::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Without a container memory limit: 256 MiB of message content in memory.
pub const FALLBACK_BUDGET: u64 = 256 << 20;

/// The share of the container's memory limit given to message content by default.
/// The rest is for what the budget does not count: the runtime and every connection's
/// buffers and TLS state, the queue backend's own copy while it writes (the spool's
/// transaction, NATS client buffers), the worker's bodies in `sluice standalone`, and
/// the allocator's slack after many buffers of different sizes came and went.
pub const CONTAINER_FRACTION: u64 = 4;

/// Where cgroup v2 and v1 publish this container's memory limit.
const CGROUP_V2_MAX: &str = "/sys/fs/cgroup/memory.max";
const CGROUP_V1_LIMIT: &str = "/sys/fs/cgroup/memory/memory.limit_in_bytes";

/// The default budget: a quarter of the container's memory limit, else
/// [`FALLBACK_BUDGET`].
pub fn default_budget() -> u64 {
    container_limit(Path::new(CGROUP_V2_MAX), Path::new(CGROUP_V1_LIMIT))
        .map_or(FALLBACK_BUDGET, |limit| limit / CONTAINER_FRACTION)
}

/// The memory limit from cgroup v2 `memory.max`, else from cgroup v1; `None` when
/// neither file says a limit (absent, `max`, or v1's "unlimited", a number near 2^63).
pub fn container_limit(v2: &Path, v1: &Path) -> Option<u64> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    read(v2)
        .and_then(|text| parse_limit(&text))
        .or_else(|| read(v1).and_then(|text| parse_limit(&text)))
}

/// Parses the content of `memory.max` or `memory.limit_in_bytes`.
pub fn parse_limit(text: &str) -> Option<u64> {
    // cgroup v1 writes "no limit" as the largest page-aligned i64.
    const UNLIMITED: u64 = 1 << 62;
    let limit: u64 = text.trim().parse().ok()?;
    (limit > 0 && limit < UNLIMITED).then_some(limit)
}

/// The budget shared by every connection of the process.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    permits: Semaphore,
    metrics: Arc<Metrics>,
}

/// Why a reservation could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("the memory budget is spent")]
    Spent,
    #[error("{wanted} bytes are more than the whole memory budget")]
    TooLarge { wanted: u64 },
    #[error("no room in the memory budget within {0:?}")]
    TimedOut(Duration),
}

impl MemoryBudget {
    pub fn new(limit: u64, metrics: Arc<Metrics>) -> Arc<Self> {
        let limit = limit.min(Semaphore::MAX_PERMITS as u64);
        metrics
            .memory_budget_bytes
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        Arc::new(MemoryBudget {
            limit,
            permits: Semaphore::new(limit as usize),
            metrics,
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.permits.available_permits() as u64
    }

    /// An empty reservation, to grow as content arrives.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    fn taken(&self, n: u64) {
        self.metrics
            .memory_in_flight_bytes
            .inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn give_back(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics
            .memory_in_flight_bytes
            .dec_by(i64::try_from(n).unwrap_or(i64::MAX));
        self.permits.add_permits(n as usize);
    }
}

/// Bytes held from the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `n` bytes if the budget has them now.
    pub fn try_grow(&mut self, n: u64) -> Result<(), BudgetError> {
        let permits = u32::try_from(n).map_err(|_| BudgetError::TooLarge { wanted: n })?;
        let taken = match self.budget.permits.try_acquire_many(permits) {
            Ok(permit) => {
                permit.forget();
                Ok(())
            }
            Err(_) => Err(BudgetError::Spent),
        };
        taken.map(|()| self.add(n))
    }

    /// Adds `n` bytes, waiting up to `wait` for other reservations to be given back.
    pub async fn grow(&mut self, n: u64, wait: Duration) -> Result<(), BudgetError> {
        if n > self.budget.limit {
            return Err(BudgetError::TooLarge { wanted: n });
        }
        let permits = u32::try_from(n).map_err(|_| BudgetError::TooLarge { wanted: n })?;
        let taken =
            match tokio::time::timeout(wait, self.budget.permits.acquire_many(permits)).await {
                Ok(Ok(permit)) => {
                    permit.forget();
                    Ok(())
                }
                Ok(Err(_)) => Err(BudgetError::Spent),
                Err(_) => Err(BudgetError::TimedOut(wait)),
            };
        taken.map(|()| self.add(n))
    }

    /// Gives back all but `keep` bytes.
    pub fn shrink_to(&mut self, keep: u64) {
        if keep < self.bytes {
            self.budget.give_back(self.bytes - keep);
            self.bytes = keep;
        }
    }

    fn add(&mut self, n: u64) {
        self.bytes += n;
        self.budget.taken(n);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> Arc<MemoryBudget> {
        MemoryBudget::new(limit, Arc::new(Metrics::default()))
    }

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let b = budget(1000);
        let mut first = b.reservation();
        first.try_grow(600).unwrap();
        let mut second = b.reservation();
        assert_eq!(second.try_grow(500), Err(BudgetError::Spent));
        second.try_grow(400).unwrap();
        assert_eq!(b.available(), 0);
        assert_eq!(b.metrics.memory_in_flight_bytes.get() as u64, 1000);
        first.shrink_to(100);
        assert_eq!(b.available(), 500);
        drop(first);
        drop(second);
        assert_eq!(b.available(), 1000);
        assert_eq!(b.metrics.memory_in_flight_bytes.get() as u64, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reservation_gets_what_is_given_back_or_times_out() {
        let b = budget(1000);
        let mut held = b.reservation();
        held.try_grow(900).unwrap();
        let mut waiting = b.reservation();
        let wait = Duration::from_secs(5);
        assert_eq!(
            waiting.grow(500, wait).await,
            Err(BudgetError::TimedOut(wait))
        );
        assert_eq!(
            waiting.grow(2000, wait).await,
            Err(BudgetError::TooLarge { wanted: 2000 })
        );
        let grow =
            tokio::spawn(async move { waiting.grow(500, wait).await.map(|()| waiting.bytes()) });
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(grow.await.unwrap(), Ok(500));
        assert_eq!(b.available(), 1000);
    }

    #[test]
    fn container_limits_are_read_from_cgroup_v2_then_v1() {
        let dir = std::env::temp_dir().join(format!("sluice-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (v2, v1) = (dir.join("memory.max"), dir.join("memory.limit_in_bytes"));
        assert_eq!(container_limit(&v2, &v1), None);
        std::fs::write(&v1, "9223372036854771712\n").unwrap();
        assert_eq!(container_limit(&v2, &v1), None, "v1 unlimited");
        std::fs::write(&v1, "1073741824\n").unwrap();
        assert_eq!(container_limit(&v2, &v1), Some(1 << 30));
        std::fs::write(&v2, "max\n").unwrap();
        assert_eq!(container_limit(&v2, &v1), Some(1 << 30), "v2 says no limit");
        std::fs::write(&v2, "536870912\n").unwrap();
        assert_eq!(container_limit(&v2, &v1), Some(512 << 20));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(parse_limit("0"), None);
        assert_eq!(parse_limit("garbage"), None);
    }
}
