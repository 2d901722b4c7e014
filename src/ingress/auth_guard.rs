//! Brakes on password guessing at AUTH, shared by every connection of the process.
//!
//! - A bound on password checks running at once: each argon2 check takes about 19 MiB
//!   and tens of milliseconds of a core, so unbounded checks let a few clients exhaust
//!   memory and starve everything else. A check waits up to [`CHECK_WAIT`] for its turn,
//!   then the client hears `454 4.7.0` (try again later).
//! - Failures are counted per client network (an IPv4 address or an IPv6 /64) and per
//!   user name, across connections: a pause before each check that doubles with each
//!   failure in the window (up to 8 times `limits.authFailureDelay`), and a temporary
//!   lockout once either count reaches its limit (`454 4.7.0` without any check).
//!
//! The state is process-local, as Postfix's anvil is per host: each ingress pod brakes
//! what reaches it. Its memory is bounded (see [`super::auth_failures`]).

use super::auth_failures::{Admission, FailureLimits, FailureTable, Recorded};
use crate::smtp::session::AuthOutcome;
use crate::telemetry::metrics::{AuthResult, Label, LockoutScope};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an AUTH waits for a free password check before `454 4.7.0`.
pub const CHECK_WAIT: Duration = Duration::from_secs(10);

/// The doubling of the failure delay stops at this factor.
const MAX_DELAY_FACTOR: u32 = 8;

#[derive(Debug, Clone, Copy)]
pub struct AuthGuardConfig {
    pub max_concurrent_checks: usize,
    /// The pause after the first failure in a window; doubled for each further one.
    pub failure_delay: Duration,
    pub per_ip: FailureLimits,
    pub per_user: FailureLimits,
}

/// A client network as failures are counted: one IPv4 address, or the /64 of an IPv6
/// address, since one subscriber usually holds a whole /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientNet {
    V4(Ipv4Addr),
    V6(u64),
}

impl ClientNet {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientNet::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientNet::V4(v4),
                None => ClientNet::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Which count a lockout is on, as the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    User,
}

impl Scope {
    pub fn metric_label(self) -> LockoutScope {
        match self {
            Scope::Ip => LockoutScope::Ip,
            Scope::User => LockoutScope::User,
        }
    }

    pub fn label(self) -> &'static str {
        self.metric_label().as_str()
    }
}

/// The answer to one AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Bad credentials; `lockouts` are those this failure started.
    Rejected {
        lockouts: [Option<Scope>; 2],
    },
    /// Not checked: the client network or the user name is locked out (or has as many
    /// checks running as it has failures left).
    LockedOut(Scope),
    /// Not checked: no password check became free in time.
    Busy,
}

impl Verdict {
    /// The `result` label of `sluice_auth_total`.
    pub fn metric_label(self) -> AuthResult {
        match self {
            Verdict::Accepted => AuthResult::Success,
            Verdict::Rejected { .. } => AuthResult::Failure,
            Verdict::LockedOut(_) => AuthResult::LockedOut,
            Verdict::Busy => AuthResult::Busy,
        }
    }

    pub fn label(self) -> &'static str {
        self.metric_label().as_str()
    }

    /// RFC 4954: 535 5.7.8 says the credentials are wrong, so it is given only after a
    /// check. A lockout or a busy server never checked them (they may be right): 454
    /// 4.7.0 asks the client to try later, and tells a guesser nothing about the guess.
    pub fn outcome(self) -> AuthOutcome {
        match self {
            Verdict::Accepted => AuthOutcome::Accepted,
            Verdict::Rejected { .. } => AuthOutcome::Rejected,
            Verdict::LockedOut(_) | Verdict::Busy => AuthOutcome::Unavailable,
        }
    }

    pub fn lockouts(self) -> impl Iterator<Item = Scope> {
        let lockouts = match self {
            Verdict::Rejected { lockouts } => lockouts,
            _ => [None, None],
        };
        lockouts.into_iter().flatten()
    }
}

pub struct AuthGuard {
    config: AuthGuardConfig,
    checks: Arc<Semaphore>,
    nets: Mutex<FailureTable<ClientNet>>,
    /// Keyed by a hash of the name under a per-process key: a few bytes per name however
    /// long it is, and collisions nobody outside can aim for.
    users: Mutex<FailureTable<u64>>,
    hasher: RandomState,
}

/// The keys of one admitted check; counts nothing when dropped unfinished (the client
/// left during the delay or the check).
struct Ticket<'a> {
    guard: &'a AuthGuard,
    net: ClientNet,
    user: u64,
    failures: u32,
    finished: bool,
}

impl AuthGuard {
    pub fn new(config: AuthGuardConfig) -> Self {
        AuthGuard {
            config,
            checks: Arc::new(Semaphore::new(config.max_concurrent_checks.max(1))),
            nets: Mutex::new(FailureTable::new(config.per_ip)),
            users: Mutex::new(FailureTable::new(config.per_user)),
            hasher: RandomState::new(),
        }
    }

    /// Runs `check` (the password verification, CPU-heavy) on a blocking thread once
    /// `ip` and `user` are admitted and a check is free, after the failure delay.
    pub async fn verify<F>(&self, ip: IpAddr, user: &str, check: F) -> Verdict
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let ticket = match self.admit(ClientNet::of(ip), self.hasher.hash_one(user)) {
            Ok(ticket) => ticket,
            Err(scope) => return Verdict::LockedOut(scope),
        };
        tokio::time::sleep(self.delay(ticket.failures)).await;
        match self.run_check(check).await {
            Some(ok) => ticket.finish(ok),
            None => Verdict::Busy,
        }
    }

    /// Runs `check` on a blocking thread under the bound; `None` when no check became
    /// free within [`CHECK_WAIT`]. The permit goes with the thread, so a check whose
    /// client has gone still counts until it ends.
    pub async fn run_check<F>(&self, check: F) -> Option<bool>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let permit: OwnedSemaphorePermit =
            tokio::time::timeout(CHECK_WAIT, Arc::clone(&self.checks).acquire_owned())
                .await
                .ok()?
                .ok()?;
        let run = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            check()
        });
        // A check that panicked verified nothing.
        Some(run.await.unwrap_or(false))
    }

    fn admit(&self, net: ClientNet, user: u64) -> Result<Ticket<'_>, Scope> {
        let now = Instant::now();
        let net_failures = match lock(&self.nets).admit(&net, now) {
            Admission::Admitted { failures } => failures,
            Admission::Locked { .. } | Admission::Saturated => return Err(Scope::Ip),
        };
        let user_failures = match lock(&self.users).admit(&user, now) {
            Admission::Admitted { failures } => failures,
            Admission::Locked { .. } | Admission::Saturated => {
                lock(&self.nets).abandon(&net);
                return Err(Scope::User);
            }
        };
        Ok(Ticket {
            guard: self,
            net,
            user,
            failures: net_failures.max(user_failures),
            finished: false,
        })
    }

    /// Client networks and user names with state now.
    pub fn tracked(&self) -> (usize, usize) {
        (lock(&self.nets).tracked(), lock(&self.users).tracked())
    }

    /// None before the first failure; then the configured delay, doubled per failure.
    fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(MAX_DELAY_FACTOR.trailing_zeros());
        self.config.failure_delay * factor
    }
}

impl Ticket<'_> {
    fn finish(mut self, ok: bool) -> Verdict {
        self.finished = true;
        let now = Instant::now();
        let (nets, users) = (&self.guard.nets, &self.guard.users);
        if ok {
            lock(nets).abandon(&self.net);
            lock(users).succeed(&self.user);
            return Verdict::Accepted;
        }
        let started = |recorded, scope| (recorded == Recorded::LockedOut).then_some(scope);
        let net = started(lock(nets).fail(&self.net, now), Scope::Ip);
        let user = started(lock(users).fail(&self.user, now), Scope::User);
        Verdict::Rejected {
            lockouts: [net, user],
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.guard.nets).abandon(&self.net);
            lock(&self.guard.users).abandon(&self.user);
        }
    }
}

/// A panic elsewhere while holding the lock leaves counts that are still meaningful.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "auth_guard_tests.rs"]
mod tests;
