//! When to try a deferred message again, when to give up on it, and when to warn its
//! sender that it is late: exponential backoff with jitter, bounded by a maximal
//! lifetime (Postfix's `minimal_backoff_time`, `maximal_backoff_time`,
//! `maximal_queue_lifetime` and `delay_warning_time`).
//!
//! Pure arithmetic on `SystemTime`: the worker passes the clock in, so tests need none.

use rand::Rng;
use std::time::{Duration, SystemTime};

/// The retry policy (configured as `delivery.retry`, `config::RetrySettings`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// Delay after the first failed attempt; each further failure doubles it.
    pub first_retry: Duration,
    /// The doubling stops here.
    pub max_interval: Duration,
    /// How long after its arrival a message is given up and bounced.
    pub max_lifetime: Duration,
    /// Relative spread of each delay: 0.1 draws it from ±10 % around the nominal value,
    /// so that messages deferred together (a remote outage) do not return together.
    /// Values outside 0..=1 are clamped.
    pub jitter: f64,
    /// Age at which the sender gets one "delayed" DSN; `None` sends none.
    pub delay_warning: Option<Duration>,
}

impl Default for RetrySchedule {
    /// Postfix's defaults, except that its 4-hour delay warning is off: DSNs about
    /// delays mostly worry people about mail that arrives anyway.
    fn default() -> Self {
        RetrySchedule {
            first_retry: Duration::from_secs(5 * 60),
            max_interval: Duration::from_secs(60 * 60),
            max_lifetime: Duration::from_secs(5 * 24 * 60 * 60),
            jitter: 0.1,
            delay_warning: None,
        }
    }
}

/// What to do with a message after a failed attempt.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// Defer it until then.
    At(SystemTime),
    /// Its lifetime is over: bounce the recipients still pending.
    Expired,
}

impl RetrySchedule {
    /// The next attempt after `attempts` failed attempts (1 after the first) of a message
    /// received at `received_at`: `first_retry` after the first failure, doubling up to
    /// `max_interval`, spread by `jitter`. `attempts` 0 counts as 1.
    ///
    /// The message expires once it is `max_lifetime` old, and is never deferred beyond
    /// that point: a retry that would land later is moved to the end of the lifetime,
    /// so the last attempt happens exactly then and the one after it expires.
    pub fn next_attempt(
        &self,
        attempts: u32,
        received_at: SystemTime,
        now: SystemTime,
    ) -> NextAttempt {
        let unit = rand::rng().random::<f64>();
        self.next_attempt_with(attempts, received_at, now, unit)
    }

    /// True when the sender should now get its one delay warning: warnings are on, none
    /// was sent yet, the message is at least `delay_warning` old, and it has not expired
    /// (an expired message gets a failure DSN instead).
    pub fn delay_warning_due(
        &self,
        received_at: SystemTime,
        now: SystemTime,
        already_warned: bool,
    ) -> bool {
        let Some(warn_after) = self.delay_warning else {
            return false;
        };
        let age = age(received_at, now);
        !already_warned && age >= warn_after && age < self.max_lifetime
    }

    /// `next_attempt` with the random draw passed in: `unit` in [0, 1) picks the point in
    /// the jitter range, 0 the lowest, 0.5 the nominal delay.
    fn next_attempt_with(
        &self,
        attempts: u32,
        received_at: SystemTime,
        now: SystemTime,
        unit: f64,
    ) -> NextAttempt {
        if age(received_at, now) >= self.max_lifetime {
            return NextAttempt::Expired;
        }
        let delay = self.jittered(self.nominal_delay(attempts), unit);
        let at = now.checked_add(delay);
        // When the deadline is not representable, the lifetime is in effect unbounded.
        let deadline = received_at.checked_add(self.max_lifetime);
        match (at, deadline) {
            (Some(at), Some(deadline)) => NextAttempt::At(at.min(deadline)),
            (Some(at), None) => NextAttempt::At(at),
            (None, Some(deadline)) => NextAttempt::At(deadline),
            (None, None) => NextAttempt::Expired,
        }
    }

    /// `first_retry · 2^(attempts-1)`, at most `max_interval`.
    fn nominal_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let grown = u32::try_from(factor)
            .ok()
            .and_then(|f| self.first_retry.checked_mul(f))
            .unwrap_or(Duration::MAX);
        grown.min(self.max_interval)
    }

    /// Scales `delay` by a factor in [1 - jitter, 1 + jitter). The spread applies at
    /// `max_interval` too, or messages capped there would move in lockstep again.
    fn jittered(&self, delay: Duration, unit: f64) -> Duration {
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 + jitter * (2.0 * unit - 1.0);
        Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
    }
}

/// How long ago `received_at` was; zero when the clock says it is in the future.
fn age(received_at: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(received_at).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn without_jitter() -> RetrySchedule {
        RetrySchedule {
            jitter: 0.0,
            ..RetrySchedule::default()
        }
    }

    #[test]
    fn doubles_from_five_minutes_up_to_an_hour() {
        let schedule = without_jitter();
        let now = t0() + 3 * MIN;
        let want = [5, 10, 20, 40, 60, 60, 60, 60, 60, 60];
        for (attempts, minutes) in (1..=10).zip(want) {
            assert_eq!(
                schedule.next_attempt(attempts, t0(), now),
                NextAttempt::At(now + minutes * MIN),
                "attempts {attempts}"
            );
        }
    }

    #[test]
    fn zero_and_huge_attempt_counts_do_not_overflow() {
        let schedule = without_jitter();
        let now = t0();
        assert_eq!(
            schedule.next_attempt(0, t0(), now),
            NextAttempt::At(now + 5 * MIN)
        );
        for attempts in [33, 64, 65, u32::MAX] {
            assert_eq!(
                schedule.next_attempt(attempts, t0(), now),
                NextAttempt::At(now + 60 * MIN)
            );
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads() {
        let schedule = RetrySchedule::default();
        let now = t0();
        let delays: Vec<Duration> = (0..5_000)
            .map(|_| match schedule.next_attempt(3, t0(), now) {
                NextAttempt::At(at) => at.duration_since(now).unwrap_or_default(),
                NextAttempt::Expired => Duration::ZERO,
            })
            .collect();
        let (low, high) = (18 * MIN, 22 * MIN);
        assert!(delays.iter().all(|d| *d >= low && *d <= high), "{delays:?}");
        // Without jitter every delay would be exactly 20 minutes.
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        assert!(min < 19 * MIN && max > 21 * MIN, "{min:?}..{max:?}");
    }

    #[test]
    fn jitter_range_ends_and_out_of_range_settings() {
        let mut schedule = RetrySchedule::default();
        let at = |s: &RetrySchedule, unit| s.next_attempt_with(1, t0(), t0(), unit);
        assert_eq!(
            at(&schedule, 0.0),
            NextAttempt::At(t0() + 270 * Duration::from_secs(1))
        );
        assert_eq!(at(&schedule, 0.5), NextAttempt::At(t0() + 5 * MIN));
        assert_eq!(
            at(&schedule, 1.0),
            NextAttempt::At(t0() + 330 * Duration::from_secs(1))
        );
        for jitter in [f64::NAN, -1.0] {
            schedule.jitter = jitter;
            assert_eq!(at(&schedule, 0.0), NextAttempt::At(t0() + 5 * MIN));
        }
        schedule.jitter = 7.0;
        assert_eq!(at(&schedule, 0.0), NextAttempt::At(t0()));
    }

    #[test]
    fn expires_at_max_lifetime() {
        let schedule = RetrySchedule::default();
        let lifetime = schedule.max_lifetime;
        for age in [lifetime, lifetime + MIN, 10 * lifetime] {
            assert_eq!(
                schedule.next_attempt(40, t0(), t0() + age),
                NextAttempt::Expired
            );
        }
        let almost = t0() + lifetime - Duration::from_secs(1);
        assert_eq!(
            schedule.next_attempt(40, t0(), almost),
            NextAttempt::At(t0() + lifetime)
        );
    }

    #[test]
    fn never_schedules_past_the_lifetime() {
        let schedule = RetrySchedule::default();
        let deadline = t0() + schedule.max_lifetime;
        let mut now = t0();
        let mut attempts = 0;
        // Follow the schedule the way the worker would, to the end.
        while let NextAttempt::At(at) = schedule.next_attempt(attempts + 1, t0(), now) {
            assert!(at <= deadline && at > now, "attempt {attempts}: {at:?}");
            now = at;
            attempts += 1;
            assert!(attempts < 1_000, "no expiry");
        }
        assert_eq!(
            now, deadline,
            "the last attempt is at the end of the lifetime"
        );
        // 5+10+20+40 minutes, then hourly for the rest of 5 days, give or take jitter.
        assert!((115..=140).contains(&attempts), "{attempts} attempts");
    }

    #[test]
    fn clock_behind_arrival_counts_as_age_zero() {
        let schedule = without_jitter();
        let before = t0() - MIN;
        assert_eq!(
            schedule.next_attempt(1, t0(), before),
            NextAttempt::At(before + 5 * MIN)
        );
        assert!(!schedule.delay_warning_due(t0(), before, false));
    }

    #[test]
    fn delay_warning_once_between_threshold_and_expiry() {
        let off = RetrySchedule::default();
        assert!(!off.delay_warning_due(t0(), t0() + 24 * 60 * MIN, false));
        let on = RetrySchedule {
            delay_warning: Some(4 * 60 * MIN),
            ..RetrySchedule::default()
        };
        let at = |age: Duration, warned| on.delay_warning_due(t0(), t0() + age, warned);
        assert!(!at(4 * 60 * MIN - Duration::from_secs(1), false));
        assert!(at(4 * 60 * MIN, false));
        assert!(at(48 * 60 * MIN, false));
        assert!(!at(48 * 60 * MIN, true));
        assert!(!at(on.max_lifetime, false));
    }
}
