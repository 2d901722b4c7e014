//! Counting failed AUTH attempts per key (a client network or a user name) over a window,
//! with a temporary lockout once a key reaches its limit: the bookkeeping of Postfix's
//! anvil and of fail2ban, kept in the process.
//!
//! The table is capped: an attacker who rotates addresses or user names must not grow it
//! without bound. When it is full, entries whose window and lockout have passed go first;
//! then the unlocked entry seen least recently; a locked entry goes only when every entry
//! is locked, and then the one whose lockout ends first. So flooding the table with new
//! keys does not lift a lockout that is in force.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The limits one table applies.
#[derive(Debug, Clone, Copy)]
pub struct FailureLimits {
    /// Failures in one window that start a lockout; 0 counts failures (for the delay)
    /// but never locks out.
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// Most keys held at once.
    pub capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    /// Checks admitted and not yet finished: counted against the limit, so that parallel
    /// connections cannot race past it.
    in_flight: u32,
    last_seen: Instant,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            failures: 0,
            window_start: now,
            locked_until: None,
            in_flight: 0,
            last_seen: now,
        }
    }

    fn locked(&self, now: Instant) -> Option<Instant> {
        self.locked_until.filter(|until| *until > now)
    }

    /// Forgets failures of a window that has passed.
    fn roll(&mut self, now: Instant, window: Duration) {
        if now.duration_since(self.window_start) >= window {
            self.failures = 0;
            self.window_start = now;
        }
    }

    /// Nothing left that matters: no lockout, no failures in the window, no check running.
    fn dead(&self, now: Instant, window: Duration) -> bool {
        self.locked(now).is_none()
            && self.in_flight == 0
            && (self.failures == 0 || now.duration_since(self.window_start) >= window)
    }
}

/// Whether a key may have its credentials checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; `failures` is how many this window holds already (for the delay).
    Admitted { failures: u32 },
    /// No: locked out until then.
    Locked { until: Instant },
    /// Not now: the checks already running for this key would reach the limit if they
    /// fail.
    Saturated,
}

/// What recording a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Recorded {
    Counted,
    /// This failure reached the limit: a lockout starts now.
    LockedOut,
}

#[derive(Debug)]
pub struct FailureTable<K> {
    limits: FailureLimits,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> FailureTable<K> {
    pub fn new(limits: FailureLimits) -> Self {
        FailureTable {
            limits,
            entries: HashMap::new(),
        }
    }

    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// Admits a check for `key` unless it is locked out, or its failures plus the checks
    /// already running would reach the limit.
    pub fn admit(&mut self, key: &K, now: Instant) -> Admission {
        let limits = self.limits;
        if !self.entries.contains_key(key) {
            self.make_room(now);
        }
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| Entry::new(now));
        entry.last_seen = now;
        if let Some(until) = entry.locked(now) {
            return Admission::Locked { until };
        }
        entry.roll(now, limits.window);
        if limits.max_failures > 0 && entry.failures + entry.in_flight >= limits.max_failures {
            return Admission::Saturated;
        }
        entry.in_flight += 1;
        Admission::Admitted {
            failures: entry.failures,
        }
    }

    /// Ends an admitted check that failed.
    pub fn fail(&mut self, key: &K, now: Instant) -> Recorded {
        let limits = self.limits;
        let Some(entry) = self.entries.get_mut(key) else {
            // Evicted meanwhile (the table was full of locked keys): nothing to count on.
            return Recorded::Counted;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.last_seen = now;
        entry.roll(now, limits.window);
        entry.failures = entry.failures.saturating_add(1);
        if limits.max_failures > 0
            && entry.failures >= limits.max_failures
            && entry.locked(now).is_none()
        {
            entry.locked_until = Some(now + limits.lockout);
            entry.failures = 0;
            entry.window_start = now;
            return Recorded::LockedOut;
        }
        Recorded::Counted
    }

    /// Ends an admitted check that succeeded: the key's failures are forgotten.
    pub fn succeed(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.failures = 0;
        }
    }

    /// Ends an admitted check whose result is unknown (the client left, or the check
    /// could not run): nothing is counted.
    pub fn abandon(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
    }

    /// Frees a place for a new key when the table is full.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.limits.capacity {
            return;
        }
        let window = self.limits.window;
        self.entries.retain(|_, e| !e.dead(now, window));
        if self.entries.len() < self.limits.capacity {
            return;
        }
        let victim = self
            .entries
            .iter()
            .min_by_key(|(_, e)| (e.locked(now).is_some(), e.locked_until, e.last_seen))
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_failures: u32, capacity: usize) -> FailureTable<u32> {
        FailureTable::new(FailureLimits {
            max_failures,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            capacity,
        })
    }

    fn fail_once(t: &mut FailureTable<u32>, key: u32, now: Instant) -> Recorded {
        assert!(matches!(t.admit(&key, now), Admission::Admitted { .. }));
        t.fail(&key, now)
    }

    #[test]
    fn the_limit_locks_out_until_the_lockout_ends() {
        let mut t = table(3, 100);
        let t0 = Instant::now();
        assert_eq!(fail_once(&mut t, 1, t0), Recorded::Counted);
        assert_eq!(t.admit(&1, t0), Admission::Admitted { failures: 1 });
        assert_eq!(t.fail(&1, t0), Recorded::Counted);
        assert_eq!(fail_once(&mut t, 1, t0), Recorded::LockedOut);
        let until = t0 + Duration::from_secs(300);
        assert_eq!(
            t.admit(&1, t0 + Duration::from_secs(299)),
            Admission::Locked { until }
        );
        assert!(matches!(t.admit(&2, t0), Admission::Admitted { .. }));
        assert_eq!(t.admit(&1, until), Admission::Admitted { failures: 0 });
    }

    #[test]
    fn failures_expire_with_their_window_and_success_forgets_them() {
        let mut t = table(3, 100);
        let t0 = Instant::now();
        let _ = fail_once(&mut t, 1, t0);
        let _ = fail_once(&mut t, 1, t0);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(t.admit(&1, later), Admission::Admitted { failures: 0 });
        assert_eq!(t.fail(&1, later), Recorded::Counted);
        assert_eq!(t.admit(&1, later), Admission::Admitted { failures: 1 });
        t.succeed(&1);
        assert_eq!(t.admit(&1, later), Admission::Admitted { failures: 0 });
    }

    #[test]
    fn checks_in_flight_count_against_the_limit() {
        let mut t = table(2, 100);
        let t0 = Instant::now();
        assert!(matches!(t.admit(&1, t0), Admission::Admitted { .. }));
        assert!(matches!(t.admit(&1, t0), Admission::Admitted { .. }));
        assert_eq!(t.admit(&1, t0), Admission::Saturated);
        t.abandon(&1);
        assert!(matches!(t.admit(&1, t0), Admission::Admitted { .. }));
    }

    #[test]
    fn no_limit_counts_but_never_locks() {
        let mut t = table(0, 100);
        let t0 = Instant::now();
        for _ in 0..50 {
            assert_eq!(fail_once(&mut t, 1, t0), Recorded::Counted);
        }
        assert_eq!(t.admit(&1, t0), Admission::Admitted { failures: 50 });
    }

    #[test]
    fn rotating_keys_cannot_grow_the_table_or_lift_a_lockout() {
        let mut t = table(2, 500);
        let t0 = Instant::now();
        let _ = fail_once(&mut t, 0, t0);
        assert_eq!(fail_once(&mut t, 0, t0), Recorded::LockedOut);
        // 20,000 keys over 200 s: some windows pass (purged), most do not (evicted).
        for key in 1..20_000u32 {
            let now = t0 + Duration::from_millis(u64::from(key) * 10);
            let _ = fail_once(&mut t, key, now);
            assert!(
                t.tracked() <= 500,
                "{} entries after key {key}",
                t.tracked()
            );
        }
        let now = t0 + Duration::from_secs(200);
        assert!(matches!(t.admit(&0, now), Admission::Locked { .. }));
    }

    #[test]
    fn a_table_full_of_lockouts_drops_the_one_ending_first() {
        let mut t = table(1, 3);
        let t0 = Instant::now();
        for key in 0..3u32 {
            let _ = fail_once(&mut t, key, t0 + Duration::from_secs(u64::from(key)));
        }
        let _ = fail_once(&mut t, 9, t0 + Duration::from_secs(5));
        assert_eq!(t.tracked(), 3);
        let now = t0 + Duration::from_secs(6);
        assert!(matches!(t.admit(&1, now), Admission::Locked { .. }));
        assert!(matches!(t.admit(&9, now), Admission::Locked { .. }));
    }
}
