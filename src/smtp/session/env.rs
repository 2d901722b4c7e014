//! What the session takes from the world rather than computing: the time, and the ids
//! of each new transaction (its queue id and its trace). The ingress passes
//! [`SystemEnv`]; tests pass fixed values, so that the Received header, the ids and the
//! time of receipt of a message are known in advance, as `delivery::retry` takes its
//! time from the caller.

use crate::envelope::QueueId;
use crate::envelope::TraceParent;
use chrono::{DateTime, FixedOffset};

/// The clock and the id generators of a session.
pub trait SessionEnv: Send + Sync {
    /// Wall-clock time now, at the server's local offset: the date of the Received
    /// header, and (in milliseconds since the epoch) when the message was received.
    fn now(&self) -> DateTime<FixedOffset>;

    /// The queue id of a new transaction.
    fn queue_id(&self) -> QueueId;

    /// The trace a new message starts.
    fn trace(&self) -> TraceParent;
}

/// The system clock and local time zone, ids by [`QueueId::generate`] and random trace
/// ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl SessionEnv for SystemEnv {
    fn now(&self) -> DateTime<FixedOffset> {
        chrono::Local::now().fixed_offset()
    }

    fn queue_id(&self) -> QueueId {
        QueueId::generate()
    }

    fn trace(&self) -> TraceParent {
        TraceParent::new_root()
    }
}

/// Milliseconds since the Unix epoch of `time`, 0 before it.
pub(super) fn unix_ms(time: DateTime<FixedOffset>) -> u64 {
    u64::try_from(time.timestamp_millis()).unwrap_or(0)
}
