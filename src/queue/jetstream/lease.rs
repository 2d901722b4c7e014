//! Leases on JetStream messages: which messages this process holds, keeping a lease
//! longer than the consumer's `ack_wait` alive, handing it back when it runs out, and
//! telling whether an earlier lease of a message lapsed.

use crate::envelope::QueueId;
use async_nats::jetstream::{self, AckKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A message this process holds under a lease, and the task that keeps the lease.
pub struct Held {
    pub id: QueueId,
    pub seq: u64,
    pub message: Arc<jetstream::Message>,
    pub keeper: JoinHandle<()>,
}

/// This process's leases, by token.
pub type Leases = Arc<Mutex<HashMap<u64, Held>>>;

/// Keeps a lease: in-progress acks while it is longer than `ack_wait`, then a nak that
/// makes the message due again, unless ack or defer took it first (and aborted this).
pub fn keep_lease(
    leases: Leases,
    token: u64,
    message: Arc<jetstream::Message>,
    lease: Duration,
    ack_wait: Duration,
    work: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + lease;
        let beat = (ack_wait / 3).max(Duration::from_millis(100));
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            let left = until - now;
            if left <= beat {
                tokio::time::sleep(left).await;
                break;
            }
            tokio::time::sleep(beat).await;
            if let Err(e) = message.ack_with(AckKind::Progress).await {
                tracing::warn!(error = %e, "could not extend a JetStream lease");
            }
        }
        let expired = {
            let mut leases = leases.lock().unwrap_or_else(|e| e.into_inner());
            leases.remove(&token).is_some()
        };
        if expired {
            if let Err(e) = message.double_ack_with(AckKind::Nak(None)).await {
                tracing::warn!(error = %e, "could not return an expired lease");
            }
            work.notify_waiters();
        }
    })
}

/// Whether an earlier delivery of this stored message ended without ack or defer: a
/// lease that lapsed (its holder died, or `keep_lease` returned it) or a failed defer.
///
/// The server counts every delivery, and `take` naks a deferred copy fetched before its
/// due time, which is no lapse. So a copy stored before it was due is taken to have been
/// fetched early once, as happens whenever workers wait for work: the consumer hands the
/// new copy out at once, and the nak holds it back until it is due. This errs both ways:
/// - a lapse is missed when no worker fetched such a copy before it was due (all busy or
///   down for the whole deferral) and its first lease then lapsed;
/// - a lapse is seen where there was none when a copy was fetched early twice (two pods
///   whose clocks disagree) or when `take` nak'd it after a failed body read; the worker
///   then merely looks up the delivery events for nothing.
pub fn lapsed_before(
    delivered: i64,
    due_ms: Option<u64>,
    stored: async_nats::datetime::DateTime,
) -> bool {
    let stored_early = due_ms.is_some_and(|ms| {
        async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000).is_ok_and(|due| stored < due)
    });
    delivered > if stored_early { 2 } else { 1 }
}
