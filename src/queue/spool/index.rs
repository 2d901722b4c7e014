//! The in-memory scheduling index: per message only its due time, its body size and its
//! lease, so that `take` never scans the database and memory stays small (no envelope,
//! no body). Rebuilt at open from the schedule table; leases live only here, so after a
//! crash every message is simply due again (at-least-once delivery).
//!
//! `ready` orders every message that `take` may hand out by the time it becomes
//! takeable: its due time, or the end of its lease while it is leased. A lease that runs
//! out therefore needs no timer: the message is just at the front of `ready` again.
//! `take` notes when it re-leases a message whose lease ran out (`Meta::lapsed`), so that
//! the new holder knows the old one may have delivered it; like leases, that note is lost
//! with the process.

use crate::envelope::QueueId;
use crate::queue::QueueStats;
use std::collections::{BTreeMap, BTreeSet};

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
    /// An operator's removal is being committed: out of `ready`, and no lease exists
    /// that could ack or defer it meanwhile.
    Removing,
}

/// What [`Index::begin_remove`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removal {
    /// The message is now out of reach of `take`; commit the deletion, then
    /// `commit_remove` (or `abort_remove`).
    Started,
    /// No such message: never queued, not committed yet, gone, or already being removed.
    Absent,
    /// A lease that has not run out holds it (or its holder is settling it).
    Leased,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    due_at_ms: u64,
    size: u64,
    state: State,
    /// A lease ran out without ack or defer since the message was enqueued or last
    /// deferred: its holder may have delivered some recipients already.
    lapsed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    /// Ordered by id, that is by acceptance time, so the oldest message is at the front.
    entries: BTreeMap<QueueId, Meta>,
    /// How many `entries` are `Pending`: not in the queue yet.
    pending: usize,
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
                lapsed: false,
            },
        );
    }

    /// After the database was opened again: takes in the messages it has that the index
    /// has not (a commit reported as failed that was durable after all). Returns how
    /// many.
    pub fn adopt(&mut self, stored: Vec<(QueueId, u64, u64)>) -> usize {
        let mut adopted = 0;
        for (id, due_at_ms, size) in stored {
            if !self.entries.contains_key(&id) {
                self.load(id, due_at_ms, size);
                adopted += 1;
            }
        }
        adopted
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The messages whose enqueue is committed, and the oldest of them. Pending
    /// enqueues are new, so the search for the first committed entry stops at once.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.entries.len().saturating_sub(self.pending) as u64,
            oldest: self
                .entries
                .iter()
                .find(|(_, m)| m.state != State::Pending)
                .map(|(id, _)| id.clone()),
        }
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
            lapsed: false,
        };
        self.entries.insert(id.clone(), meta);
        self.pending += 1;
        true
    }

    /// The enqueue of `id` is durable: it becomes takeable at `due_at_ms`.
    pub fn commit_enqueue(&mut self, id: &QueueId, due_at_ms: u64) {
        if let Some(meta) = self.entries.get_mut(id)
            && meta.state == State::Pending
        {
            meta.due_at_ms = due_at_ms;
            meta.state = State::Ready;
            self.pending -= 1;
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
            self.pending -= 1;
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
        // Leased and in `ready` means its lease ran out: the holder neither acked nor deferred.
        meta.lapsed |= matches!(meta.state, State::Leased { .. });
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
                State::Pending => {
                    self.pending -= 1;
                    return;
                }
                State::Settling { .. } | State::Removing => return,
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
            meta.lapsed = false;
            self.ready.insert((due_at_ms, id.clone()));
        }
    }

    /// Whether an earlier lease of `id` ran out since it was enqueued or last deferred
    /// (see `Meta::lapsed`); asked by `take` right after it leased `id`.
    pub fn lapsed(&self, id: &QueueId) -> bool {
        self.entries.get(id).is_some_and(|m| m.lapsed)
    }

    /// Makes `id` due at `now_ms` if it is waiting; true when it is now takeable. A held
    /// lease (and a pending enqueue, settle or removal) is left alone: false.
    pub fn retry_now(&mut self, id: &QueueId, now_ms: u64) -> bool {
        let Some(meta) = self.entries.get_mut(id) else {
            return false;
        };
        match meta.state {
            State::Ready => {
                if meta.due_at_ms > now_ms {
                    self.ready.remove(&(meta.due_at_ms, id.clone()));
                    meta.due_at_ms = now_ms;
                    self.ready.insert((now_ms, id.clone()));
                }
                true
            }
            // A lease that has run out is in `ready` at its end: takeable already.
            State::Leased { until_ms, .. } => until_ms <= now_ms,
            State::Pending | State::Settling { .. } | State::Removing => false,
        }
    }

    /// Starts the removal of `id` unless a lease that has not run out holds it.
    pub fn begin_remove(&mut self, id: &QueueId, now_ms: u64) -> Removal {
        let Some(meta) = self.entries.get_mut(id) else {
            return Removal::Absent;
        };
        let at = match meta.state {
            State::Ready => meta.due_at_ms,
            State::Leased { until_ms, .. } if until_ms <= now_ms => until_ms,
            State::Leased { .. } | State::Settling { .. } => return Removal::Leased,
            State::Pending | State::Removing => return Removal::Absent,
        };
        self.ready.remove(&(at, id.clone()));
        meta.state = State::Removing;
        Removal::Started
    }

    /// The removal could not be committed: the message is waiting again at its due time.
    pub fn abort_remove(&mut self, id: &QueueId) {
        if let Some(meta) = self.entries.get_mut(id)
            && meta.state == State::Removing
        {
            meta.state = State::Ready;
            self.ready.insert((meta.due_at_ms, id.clone()));
        }
    }

    /// The removal is durable.
    pub fn commit_remove(&mut self, id: &QueueId) {
        if self
            .entries
            .get(id)
            .is_some_and(|m| m.state == State::Removing)
        {
            self.entries.remove(id);
        }
    }

    /// When `id` is due, as the index knows it (a retry changes only the index); `None`
    /// for a message the index does not know or whose enqueue is not committed yet.
    pub fn due_at_ms(&self, id: &QueueId) -> Option<u64> {
        self.entries
            .get(id)
            .filter(|m| m.state != State::Pending)
            .map(|m| m.due_at_ms)
    }

    /// When the next message becomes takeable (possibly in the past).
    pub fn next_ready_ms(&self) -> Option<u64> {
        self.ready.first().map(|(at, _)| *at)
    }

    /// Whether a message is held by a lease that has not run out (or is being settled).
    pub fn is_leased(&self, id: &QueueId, now_ms: u64) -> bool {
        self.entries.get(id).is_some_and(|meta| match meta.state {
            State::Pending | State::Ready | State::Removing => false,
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
    fn a_message_taken_after_its_lease_ran_out_is_lapsed_until_deferred() {
        let mut index = Index::default();
        let id = QueueId::generate();
        index.load(id.clone(), 0, 1);
        let (_, first) = index.take(0, 10).unwrap();
        assert!(!index.lapsed(&id), "a first lease");
        index.release(&id, first);
        let (_, released) = index.take(0, 10).unwrap();
        assert!(!index.lapsed(&id), "released unread: no holder saw it");
        let (_, second) = index.take(10, 10).unwrap();
        assert_ne!(released, second);
        assert!(index.lapsed(&id));
        index.begin_settle(&id, second).unwrap();
        index.abort_settle(&id);
        assert!(index.lapsed(&id), "still the same unsettled lease");
        index.begin_settle(&id, second).unwrap();
        index.commit_defer(&id, 30);
        assert!(!index.lapsed(&id), "the holder settled what it did");
        index.take(30, 10).unwrap();
        assert!(!index.lapsed(&id));
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

    #[test]
    fn retry_moves_only_waiting_messages_and_remove_spares_leases() {
        let mut index = Index::default();
        let (a, b) = (QueueId::generate(), QueueId::generate());
        index.load(a.clone(), 1_000, 1);
        index.load(b.clone(), 10, 1);
        assert!(index.retry_now(&a, 20));
        assert_eq!(index.due_at_ms(&a), Some(20));
        assert!(!index.retry_now(&QueueId::generate(), 20));
        let (first, token) = index.take(20, 100).unwrap();
        assert_eq!(first, b);
        assert!(!index.retry_now(&b, 30), "leased");
        assert_eq!(index.begin_remove(&b, 30), Removal::Leased);
        assert_eq!(
            index.begin_remove(&b, 120),
            Removal::Started,
            "lease ran out"
        );
        assert_eq!(index.begin_settle(&b, token), None);
        assert_eq!(
            index.begin_remove(&b, 120),
            Removal::Absent,
            "already going"
        );
        index.abort_remove(&b);
        assert_eq!(index.begin_remove(&b, 120), Removal::Started);
        index.commit_remove(&b);
        assert_eq!(index.len(), 1);
        assert_eq!(index.take(120, 100).map(|(i, _)| i), Some(a));
    }

    #[test]
    fn stats_count_committed_messages_and_name_the_oldest() {
        let mut index = Index::default();
        assert_eq!(index.stats(), QueueStats::default());
        let (a, b, c) = (
            QueueId::generate(),
            QueueId::generate(),
            QueueId::generate(),
        );
        assert!(index.reserve(&a, 1));
        assert!(index.reserve(&b, 1));
        assert!(index.reserve(&c, 1));
        assert_eq!(
            index.stats().messages,
            0,
            "pending enqueues are not queued yet"
        );
        index.commit_enqueue(&c, 5);
        index.commit_enqueue(&b, 5);
        let stats = index.stats();
        assert_eq!((stats.messages, stats.oldest), (2, Some(b.clone())));
        index.abort_enqueue(&a);
        let (taken, token) = index.take(5, 10).unwrap();
        assert_eq!(taken, b);
        assert_eq!(
            index.stats().oldest,
            Some(b.clone()),
            "a lease stays queued"
        );
        index.begin_settle(&b, token).unwrap();
        index.commit_ack(&b);
        assert_eq!(
            index.stats(),
            QueueStats {
                messages: 1,
                oldest: Some(c)
            }
        );
    }
}
