//! The processes Sluice runs as, built from the same parts:
//! - `sluice standalone`: ingress and delivery worker in one process, on the embedded
//!   spool (or on JetStream with `--jetstream`), policy from files;
//! - `sluice ingress`: the SMTP listeners, publishing to JetStream;
//! - `sluice worker`: delivery from JetStream;
//! - `sluice operator`: RelayPolicies into the policy bucket (`operator.rs`).
//!
//! The ingress and the worker keep no state of their own: the queue is in JetStream and
//! the compiled policy in the NATS bucket `sluice-policy`, followed while running. Each
//! role is ready (`/readyz`) once its queue answers, it has a policy and its listeners
//! are bound; it stops being ready while JetStream does not answer, and for good at
//! SIGTERM, after which a role with listeners serves on for `limits.drainDelay` (while
//! Kubernetes takes it out of the Service) before it drains.
//!
//! Beside the queue, every role opens the quarantine of held originals (issue 11) on the
//! same store ([`queue::Backend::quarantine`]); the admin listener serves it
//! (`sluice quarantine`) in the roles that deliver, standalone and worker, whose NATS
//! user may read and delete there; the ingress's may only add.

mod delivery;
mod listeners;
pub mod operator;
mod ports;
pub mod provision;
mod queue;
mod reload;

use crate::admin::{AdminState, QuarantineSlot, QueueSlot};
use crate::config::{Config, Role};
use crate::queue::spool::DiskFullSwitch;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::readiness::{Latch, Readiness};
use queue::Backend;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A started process: its bound addresses, and the handles to stop it.
pub struct Running {
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    reload: Arc<Notify>,
    drain: CancellationToken,
    stop: CancellationToken,
    tracker: TaskTracker,
    backend: Backend,
    worker: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
    grace: Duration,
    /// `limits.drainDelay` for a role with listeners, zero for one without: nothing
    /// routes connections to a worker, so it has nothing to wait for.
    drain_delay: Duration,
}

/// Loads everything, binds every socket and starts serving as `role`. Errors are
/// start-up errors: the process should exit with them. With NATS, this waits (ready to
/// be dropped on SIGTERM) until JetStream answers and a policy is in the bucket; the
/// admin listener answers probes meanwhile.
pub async fn start(config: Config, role: Role) -> anyhow::Result<Running> {
    start_with_disk(config, role, None).await
}

/// [`start`] with the embedded spool on a disk that `disk` can make full: for
/// rehearsing a full disk end to end (the tests do).
pub async fn start_with_disk(
    config: Config,
    role: Role,
    disk: Option<DiskFullSwitch>,
) -> anyhow::Result<Running> {
    config.validate(role).map_err(anyhow::Error::msg)?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let (drain, stop, tracker) = (
        CancellationToken::new(),
        CancellationToken::new(),
        TaskTracker::new(),
    );
    let watches = reload::Watches::new(&config, role);
    let slot = QueueSlot::default();
    let quarantine_slot = QuarantineSlot::default();
    let admin_state = AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        queue: slot.clone(),
        quarantine: quarantine_slot.clone(),
        hostname: config.hostname.clone(),
    };
    let admin = listeners::admin(&config, admin_state, &stop).await?;
    let mut ports = ports::PortsFile::new(config.ports_file.clone(), admin)?;
    let tls = match role.accepts_mail() {
        true => listeners::load_tls(&config)?,
        false => None,
    };
    readiness.release(Latch::Tls);
    let backend = queue::open(&config, role, disk, &readiness, &metrics).await?;
    let _ = slot.set(backend.admin());
    // Held messages are managed (listed, shown, released, deleted) where mail is
    // delivered: the ingress's NATS user may only add to the quarantine bucket.
    if role.delivers() {
        let _ = quarantine_slot.set(backend.quarantine());
    }
    let Some(policy) = reload::policy(&config, role, backend.nats(), &metrics, &stop).await? else {
        anyhow::bail!("stopped before a policy arrived");
    };
    policy.show_revision(metrics.clone(), stop.clone());
    readiness.release(Latch::Policy);
    let mut bound = Vec::new();
    if role.accepts_mail() {
        let shared = listeners::shared(
            &config,
            &backend,
            policy.rx.clone(),
            tls.clone(),
            metrics.clone(),
            readiness.clone(),
        )?;
        bound = listeners::bind(&config, &shared, &tracker, &drain, &stop).await?;
        ports.add(&bound)?;
    }
    readiness.release(Latch::Listeners);
    let worker = match role.delivers() {
        true => delivery::worker(
            &config,
            backend.queue(),
            policy.rx.clone(),
            metrics.clone(),
            backend.events(),
        )?,
        false => None,
    }
    .map(|worker| {
        let stop = CancellationToken::new();
        (tokio::spawn(worker.run(stop.clone())), stop)
    });
    if backend.nats().is_some() {
        tokio::spawn(queue::probe(
            backend.queue(),
            readiness.clone(),
            stop.clone(),
        ));
    }
    let reload = Arc::new(Notify::new());
    tokio::spawn(reload::watch_files(
        config.clone(),
        watches,
        policy.files,
        tls,
        metrics.clone(),
        reload.clone(),
        stop.clone(),
    ));
    tracing::info!(role = role.name(), listeners = ?bound, admin = ?admin, "sluice started");
    Ok(Running {
        listeners: bound,
        admin,
        metrics,
        readiness,
        reload,
        drain,
        stop,
        tracker,
        backend,
        worker,
        grace: config.limits.shutdown_grace,
        drain_delay: match role.accepts_mail() {
            true => config.limits.drain_delay,
            false => Duration::ZERO,
        },
    })
}

impl Running {
    /// Re-reads policy files and certificates now (what SIGHUP does).
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    /// What SIGTERM does: unready at once, so that Kubernetes takes the pod out of its
    /// Services, but still accepting and serving as usual for `limits.drainDelay` while
    /// that happens, so that connections routed here meanwhile are served rather than
    /// refused; then [`Running::shutdown`]. When `cut_short` completes (a second signal)
    /// the rest of the delay is skipped.
    pub async fn shutdown_after_delay(self, cut_short: impl Future<Output = ()>) {
        self.readiness.start_draining();
        if !self.drain_delay.is_zero() {
            tracing::info!(delay = ?self.drain_delay, "not ready; serving on until the drain delay is over");
            tokio::select! {
                _ = tokio::time::sleep(self.drain_delay) => {}
                _ = cut_short => tracing::info!("signalled again: draining now"),
            }
        }
        self.shutdown().await;
    }

    /// Stops accepting and taking mail from the queue, lets open transactions and
    /// deliveries finish within the grace period, then closes what is left and the queue.
    /// A delivery cut short is not lost: its message was never acked, and is handed back
    /// (JetStream) or due again (spool).
    pub async fn shutdown(self) {
        self.readiness.start_draining();
        self.drain.cancel();
        self.tracker.close();
        let worker = self.worker.map(|(handle, stop)| {
            stop.cancel();
            handle
        });
        let deliveries = async {
            if let Some(handle) = worker {
                let _ = handle.await;
            }
        };
        let drained = async { tokio::join!(self.tracker.wait(), deliveries) };
        if tokio::time::timeout(self.grace, drained).await.is_err() {
            tracing::warn!("grace period over; closing the remaining sessions and deliveries");
        }
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        self.backend.close().await;
    }
}

/// Runs as `role` until SIGTERM or SIGINT, then drains (after `limits.drainDelay`, which
/// a second signal cuts short); SIGHUP reloads policy files and certificates.
pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let running = tokio::select! {
        running = start(config, role) => running?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => running.reload(),
        }
    }
    tracing::info!("shutting down");
    let again = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    running.shutdown_after_delay(again).await;
    tracing::info!("stopped");
    Ok(())
}
