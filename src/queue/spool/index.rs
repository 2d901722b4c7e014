//! The in-memory scheduling index: per message only its due time, its body size and its
//! lease, so that `take` never scans the database and memory stays small (no envelope,
//! no body). Rebuilt at open from the schedule table; leases live only here, so after a
//! crash every message is simply due again (at-least-once delivery).
//!
//! `ready` orders every message that `take` may hand out by the time it becomes
//! takeable: its due time, or the end of its lease while it is leased. A lease that runs
//! out therefore needs no timer: the message is just at the front of `ready` again.

use crate::queue::QueueId;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Enqueue written to the committer, not yet committed: invisible, but its id is
    /// reserved so that a duplicate enqueue fails instead of overwriting.
    Pending,
    /// In `ready` at `due_at_ms`.
    Ready,
    /// Leased to `token` until `until_ms`; in `ready` at `until_ms`.
    Leased { token: u64, until_ms: u64 },
    /// An ack or defer by the holder of `token` is being committed: out of `ready`, so
    /// nobody takes a message that is about to go away or move.
    Settling { token: u64, until_ms: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    due_at_ms: u64,
    size: u64,
    state: State,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    entries: HashMap<QueueId, Meta>,
    ready: BTreeSet<(u64, QueueId)>,
    last_token: u64,
}

impl Index {
    /// Adds a message found in the database at open.
    pub fn load(&mut self, id: QueueId, due_at_ms: u64, size: u64) {
        self.ready.insert((due_at_ms, id.clone()));
        self.entries.insert(
            id,
            Meta {
                due_at_ms,
                size,
                state: State::Ready,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Reserves `id` for an enqueue; false if the id is already in the queue.
    pub fn reserve(&mut self, id: &QueueId, size: u64) -> bool {
        if self.entries.contains_key(id) {
            return false;
        }
        let meta = Meta {
            due_at_ms: 0,
            size,
            state: State::Pending,
        };
        self.entries.insert(id.clone(), meta);
        true
    }

    /// The enqueue of `id` is durable: it becomes takeable at `due_at_ms`.
    pub fn commit_enqueue(&mut self, id: &QueueId, due_at_ms: u64) {
        if let Some(meta) = self.entries.get_mut(id)
            && meta.state == State::Pending
        {
            meta.due_at_ms = due_at_ms;
            meta.state = State::Ready;
            self.ready.insert((due_at_ms, id.clone()));
        }
    }

    /// The enqueue of `id` failed: forget the reservation.
    pub fn abort_enqueue(&mut self, id: &QueueId) {
        if self
            .entries
            .get(id)
            .is_some_and(|m| m.state == State::Pending)
        {
            self.entries.remove(id);
        }
    }

    /// Leases the earliest message takeable at `now_ms` until `now_ms + lease_ms`.
    pub fn take(&mut self, now_ms: u64, lease_ms: u64) -> Option<(QueueId, u64)> {
        let first = self.ready.first()?;
        if first.0 > now_ms {
            return None;
        }
        let (_, id) = self.ready.pop_first()?;
        self.last_token += 1;
        let token = self.last_token;
        let until_ms = now_ms.saturating_add(lease_ms.max(1));
        let meta = self.entries.get_mut(&id)?;
        meta.state = State::Leased { token, until_ms };
        self.ready.insert((until_ms, id.clone()));
        Some((id, token))
    }

    /// Ends a lease without a disposition (the message vanished or could not be read):
    /// the message is due again at its due time.
    pub fn release(&mut self, id: &QueueId, token: u64) {
        if let Some(meta) = self.entries.get_mut(id)
            && let State::Leased { token: t, until_ms } = meta.state
            && t == token
        {
            self.ready.remove(&(until_ms, id.clone()));
            meta.state = State::Ready;
            self.ready.insert((meta.due_at_ms, id.clone()));
        }
    }

    /// Forgets a message that the index had but the database has not.
    pub fn forget(&mut self, id: &QueueId) {
        if let Some(meta) = self.entries.remove(id) {
            let at = match meta.state {
                State::Ready => meta.due_at_ms,
                State::Leased { until_ms, .. } => until_ms,
                State::Pending | State::Settling { .. } => return,
            };
            self.ready.remove(&(at, id.clone()));
        }
    }

    /// Starts an ack or defer by the holder of `token`; returns the body size, or `None`
    /// when `token` no longer holds the message (re-leased, or already settled).
    pub fn begin_settle(&mut self, id: &QueueId, token: u64) -> Option<u64> {
        let meta = self.entries.get_mut(id)?;
        match meta.state {
            State::Leased { token: t, until_ms } if t == token => {
                self.ready.remove(&(until_ms, id.clone()));
                meta.state = State::Settling { token, until_ms };
                Some(meta.size)
            }
            _ => None,
        }
    }

    /// The ack or defer could not be committed: the lease stands as before.
    pub fn abort_settle(&mut self, id: &QueueId) {
        if let Some(meta) = self.entries.get_mut(id)
            && let State::Settling { token, until_ms } = meta.state
        {
            meta.state = State::Leased { token, until_ms };
            self.ready.insert((until_ms, id.clone()));
        }
    }

    /// The ack is durable.
    pub fn commit_ack(&mut self, id: &QueueId) {
        if self
            .entries
            .get(id)
            .is_some_and(|m| matches!(m.state, State::Settling { .. }))
        {
            self.entries.remove(id);
        }
    }

    /// The defer is durable: the message is due again at `due_at_ms`.
    pub fn commit_defer(&mut self, id: &QueueId, due_at_ms: u64) {
        if let Some(meta) = self.entries.get_mut(id)
            && matches!(meta.state, State::Settling { .. })
        {
            meta.due_at_ms = due_at_ms;
            meta.state = State::Ready;
            self.ready.insert((due_at_ms, id.clone()));
        }
    }

    /// When the next message becomes takeable (possibly in the past).
    pub fn next_ready_ms(&self) -> Option<u64> {
        self.ready.first().map(|(at, _)| *at)
    }

    /// Whether a message is held by a lease that has not run out (or is being settled).
    pub fn is_leased(&self, id: &QueueId, now_ms: u64) -> bool {
        self.entries.get(id).is_some_and(|meta| match meta.state {
            State::Pending | State::Ready => false,
            State::Leased { until_ms, .. } => until_ms > now_ms,
            State::Settling { .. } => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_follows_due_order_and_expired_leases_come_back() {
        let mut index = Index::default();
        let (a, b) = (QueueId::generate(), QueueId::generate());
        index.load(b.clone(), 100, 1);
        index.load(a.clone(), 100, 1);
        assert_eq!(index.take(99, 10), None);
        let (first, t1) = index.take(100, 10).unwrap();
        assert_eq!(first, a, "equal due times: oldest id first");
        let (second, _) = index.take(100, 10).unwrap();
        assert_eq!(second, b);
        assert_eq!(index.take(105, 10), None);
        assert!(index.is_leased(&a, 105));
        let (again, t2) = index.take(110, 10).unwrap();
        assert_eq!(again, a);
        assert_ne!(t1, t2);
        assert_eq!(index.begin_settle(&a, t1), None, "stale token");
        assert_eq!(index.begin_settle(&a, t2), Some(1));
        index.commit_ack(&a);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn settling_messages_are_not_taken_and_aborts_restore_the_lease() {
        let mut index = Index::default();
        let id = QueueId::generate();
        assert!(index.reserve(&id, 7));
        assert!(!index.reserve(&id, 7));
        assert_eq!(index.take(u64::MAX, 1), None, "pending is invisible");
        index.commit_enqueue(&id, 5);
        let (_, token) = index.take(5, 10).unwrap();
        index.begin_settle(&id, token).unwrap();
        assert_eq!(index.take(1_000, 10), None);
        index.abort_settle(&id);
        assert_eq!(index.next_ready_ms(), Some(15));
        index.begin_settle(&id, token).unwrap();
        index.commit_defer(&id, 50);
        assert_eq!(index.take(49, 10), None);
        assert_eq!(index.take(50, 10).map(|(i, _)| i), Some(id));
    }
}
