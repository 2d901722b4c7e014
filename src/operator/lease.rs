//! Leader election for `sluice operator` over a `coordination.k8s.io/v1` Lease, so that
//! two replicas during a rollout never both write the policy snapshot, statuses and
//! events. kube-runtime has no leader election; this is the small client-go-style
//! protocol: read the Lease, and create, renew or take it over with a write conditional
//! on the `resourceVersion` that was read, so that of two contenders only one wins.
//!
//! The follower stays ready; it only watches [`Leadership`] and does not write.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The Lease name both replicas of a Deployment agree on unless configured otherwise.
pub const DEFAULT_NAME: &str = "sluice-operator";

/// Where the Lease lives, who we are, and its timing.
///
/// `renew_every` must be well under `duration` (a third, by default): a leader steps
/// down `duration - renew_every` after its last successful renewal, see [`spawn`].
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// The pod name: unique per replica, and readable in `kubectl get lease`.
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

impl LeaseSettings {
    /// The defaults: Lease `sluice-operator`, held for 15 s, renewed every 5 s.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: DEFAULT_NAME.to_owned(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// `leaseDurationSeconds`, rounded up so the Lease never promises others less than
    /// we rely on.
    fn duration_seconds(&self) -> i32 {
        let secs = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    /// Every API call gets at most one renewal period: an answer later than that is
    /// worth no more than the next attempt.
    fn call_timeout(&self) -> Duration {
        self.renew_every
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Whether this replica leads now. Cloned into every task that writes.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    /// Check this right before each write: leadership can end at any moment.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits for leadership to change and returns the new value. Changes in quick
    /// succession may coalesce into the latest value. Once the election has ended
    /// (its task finished, or [`Leadership::fixed`]) the value cannot change again, so
    /// this waits forever rather than returning the same value in a busy loop.
    pub async fn changed(&mut self) -> bool {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.rx.borrow_and_update()
    }

    /// A leadership that never changes: for tests and `--no-leader-election`.
    pub fn fixed(leader: bool) -> Leadership {
        let (_tx, rx) = watch::channel(leader);
        Leadership { rx }
    }
}

/// Which call on the Lease failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    Read,
    Create,
    Renew,
    TakeOver,
    Release,
}

impl fmt::Display for LeaseOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseOp::Read => "read",
            LeaseOp::Create => "create",
            LeaseOp::Renew => "renew",
            LeaseOp::TakeOver => "take over",
            LeaseOp::Release => "release",
        })
    }
}

/// A call on the Lease that failed. A lost race (409 Conflict) is not an error: it
/// means another replica leads.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot {op} Lease {lease}: {source}")]
    Api {
        op: LeaseOp,
        lease: String,
        source: kube::Error,
    },
    #[error("no answer to {op} Lease {lease} within {after:?}")]
    Timeout {
        op: LeaseOp,
        lease: String,
        after: Duration,
    },
}

impl LeaseError {
    /// A lost race: a conditional write found a newer `resourceVersion` (Conflict), or
    /// a create found the Lease already there (AlreadyExists, also a 409).
    fn is_lost_race(&self) -> bool {
        matches!(self, LeaseError::Api { source: kube::Error::Api(status), .. }
            if status.is_conflict() || status.is_already_exists())
    }
}

/// Starts the election; the task runs until `stop`, then releases the Lease if we hold
/// it and ends with the leadership false.
pub fn spawn(
    client: kube::Client,
    settings: LeaseSettings,
    stop: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let api = Api::<Lease>::namespaced(client, &settings.namespace);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(api, settings, stop, tx));
    (Leadership { rx }, task)
}

async fn run(
    api: Api<Lease>,
    settings: LeaseSettings,
    stop: CancellationToken,
    tx: watch::Sender<bool>,
) {
    let identity = settings.identity.as_str();
    // Others see the Lease expire `duration` after the renewTime we wrote, which we read
    // from the wall clock at the same moment as `started` below. Stepping down one
    // renewal period earlier leaves that period as margin for clock skew between nodes
    // and for a write already under way when `is_leader` turns false to finish before
    // anyone else can lead.
    let step_down_after = settings.duration.saturating_sub(settings.renew_every);
    let mut lead_until: Option<Instant> = None;
    let mut ticker = tokio::time::interval(settings.renew_every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let round = async {
            ticker.tick().await;
            let started = Instant::now();
            (
                started,
                try_acquire_or_renew(&api, &settings, Timestamp::now()).await,
            )
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Also cuts short a renewal still in flight: its answer would come too late.
            () = sleep_until(lead_until) => {
                lead_until = None;
                tracing::warn!(identity, after = ?step_down_after, "lease not renewed in time");
                announce(&tx, false, identity);
            }
            (started, result) = round => match result {
                Ok(true) if started + step_down_after > Instant::now() => {
                    lead_until = Some(started + step_down_after);
                    announce(&tx, true, identity);
                }
                // Also a renewal answered so late that its Lease is nearly spent.
                Ok(_) => {
                    lead_until = None;
                    announce(&tx, false, identity);
                }
                // Until `lead_until` a leader keeps leading: the Lease is still ours.
                Err(error) => tracing::warn!(identity, %error, "lease election round failed"),
            },
        }
    }
    // Stop writing before letting go, so the successor never overlaps with us.
    announce(&tx, false, identity);
    // Even a follower asks: a round cut short by `stop` may have just acquired the Lease.
    match release(&api, &settings, Timestamp::now()).await {
        Ok(true) => tracing::info!(identity, "released lease"),
        Ok(false) => {}
        Err(error) => tracing::warn!(identity, %error, "cannot release lease"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn announce(tx: &watch::Sender<bool>, leader: bool, identity: &str) {
    let changed = tx.send_if_modified(|current| std::mem::replace(current, leader) != leader);
    match (changed, leader) {
        (true, true) => tracing::info!(identity, "became leader"),
        (true, false) => tracing::info!(identity, "stopped leading"),
        (false, _) => {}
    }
}

/// One election round at wall-clock time `now`: `Ok(true)` if we hold the Lease after
/// it. Every write is conditional on the `resourceVersion` read, so a concurrent writer
/// makes ours fail with 409 and we follow this round.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    now: Timestamp,
) -> Result<bool, LeaseError> {
    let Some(mut lease) = bounded(settings, LeaseOp::Read, api.get_opt(&settings.name)).await?
    else {
        return create(api, settings, now).await;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    let op = if holder == settings.identity {
        LeaseOp::Renew
    } else if holder.is_empty() || expired(spec, settings, now) {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        LeaseOp::TakeOver
    } else {
        return Ok(false);
    };
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(settings.duration_seconds());
    replace(api, settings, op, &lease).await
}

async fn create(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    now: Timestamp,
) -> Result<bool, LeaseError> {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(settings.duration_seconds()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    };
    match bounded(
        settings,
        LeaseOp::Create,
        api.create(&PostParams::default(), &lease),
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(error) if error.is_lost_race() => Ok(false),
        Err(error) => Err(error),
    }
}

/// Clears the holder if it is us, so the other replica takes over at its next round
/// instead of after `duration`. `Ok(true)` if we released it.
async fn release(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    now: Timestamp,
) -> Result<bool, LeaseError> {
    let Some(mut lease) = bounded(settings, LeaseOp::Read, api.get_opt(&settings.name)).await?
    else {
        return Ok(false);
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(false);
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(false);
    }
    // An empty holder is free to take at once; the one-second duration also frees it
    // for electors that only look at expiry.
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(1);
    replace(api, settings, LeaseOp::Release, &lease).await
}

/// The conditional write: `lease` still carries the `resourceVersion` it was read with.
async fn replace(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    op: LeaseOp,
    lease: &Lease,
) -> Result<bool, LeaseError> {
    let params = PostParams::default();
    match bounded(settings, op, api.replace(&settings.name, &params, lease)).await {
        Ok(_) => Ok(true),
        Err(error) if error.is_lost_race() => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether the holder let its Lease run out. A Lease without `leaseDurationSeconds` is
/// given our own duration rather than none, so a malformed Lease is not stolen early.
fn expired(spec: &LeaseSpec, settings: &LeaseSettings, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let seconds = spec
        .lease_duration_seconds
        .unwrap_or_else(|| settings.duration_seconds());
    match renewed.checked_add(SignedDuration::from_secs(i64::from(seconds))) {
        Ok(until) => until <= now,
        Err(_) => false,
    }
}

async fn bounded<T>(
    settings: &LeaseSettings,
    op: LeaseOp,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, LeaseError> {
    let after = settings.call_timeout();
    match tokio::time::timeout(after, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(LeaseError::Api {
            op,
            lease: settings.lease(),
            source,
        }),
        Err(_) => Err(LeaseError::Timeout {
            op,
            lease: settings.lease(),
            after,
        }),
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
