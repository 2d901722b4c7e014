//! `sluice standalone`: ingress and delivery worker on the embedded spool in one process,
//! configured from files, reloading policy and certificates when they change, draining
//! on SIGTERM.

mod delivery;

use crate::config::{Config, ListenerConfig};
use crate::events::LogOnly;
use crate::ingress::limits::ConnectionLimits;
use crate::ingress::tls::TlsStore;
use crate::ingress::{self, Listener, Shared, Timeouts};
use crate::policy::PolicySnapshot;
use crate::queue::spool::Spool;
use crate::smtp::session::{ListenerKind, SessionConfig};
use crate::telemetry::admin::{self, AdminState};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::readiness::{Latch, Readiness};
use crate::watch::FileWatch;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often policy and certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A started relay: its bound addresses, and the handles to stop it.
pub struct Running {
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    reload: Arc<tokio::sync::Notify>,
    drain: CancellationToken,
    stop: CancellationToken,
    tracker: TaskTracker,
    spool: Arc<Spool>,
    worker: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
    grace: Duration,
}

/// Loads everything, binds every socket, and starts serving. Errors here are start-up
/// errors: the process should exit with them.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    // The files' stamps are taken before they are read, so that a change made while they
    // load is seen as a change.
    let watches = Watches {
        policy: FileWatch::new(config.policies.clone()),
        tls: FileWatch::new(
            config
                .tls
                .iter()
                .flat_map(|t| [t.cert_file.clone(), t.key_file.clone()])
                .collect(),
        ),
    };
    let policy = PolicySnapshot::load_files(&config.policies).context("loading policy")?;
    readiness.release(Latch::Policy);
    let tls = match &config.tls {
        Some(t) => {
            Some(TlsStore::load(t.cert_file.clone(), t.key_file.clone()).context("loading TLS")?)
        }
        None => None,
    };
    readiness.release(Latch::Tls);
    let spool = Arc::new(
        Spool::open(&config.spool)
            .await
            .context("opening the spool")?,
    );
    readiness.release(Latch::Queue);
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    let shared = Arc::new(Shared {
        queue: spool.clone(),
        policy: policy_rx,
        tls: tls.clone(),
        metrics: metrics.clone(),
        events: Arc::new(LogOnly),
        limits: ConnectionLimits::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        ),
        timeouts: Timeouts {
            command: config.limits.command_timeout,
            data: config.limits.data_timeout,
            auth_failure_delay: config.limits.auth_failure_delay,
        },
        max_command_line: config.limits.max_command_line,
    });
    let (drain, stop, tracker) = (
        CancellationToken::new(),
        CancellationToken::new(),
        TaskTracker::new(),
    );
    let mut bound = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("binding listener {} to {}", l.name, l.address))?;
        bound.push((l.name.clone(), socket.local_addr()?));
        let listener = Arc::new(Listener {
            name: l.name.clone(),
            session: Arc::new(session_config(&config, l, tls.is_some())),
        });
        tokio::spawn(ingress::serve(
            socket,
            listener,
            shared.clone(),
            tracker.clone(),
            drain.clone(),
            stop.clone(),
        ));
    }
    readiness.release(Latch::Listeners);
    let worker = delivery::worker(
        &config,
        spool.clone(),
        shared.policy.clone(),
        metrics.clone(),
    )?
    .map(|worker| {
        let stop = CancellationToken::new();
        (tokio::spawn(worker.run(stop.clone())), stop)
    });
    let admin_state = AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        queue: Some(spool.clone()),
        hostname: config.hostname.clone(),
    };
    let admin_addr = start_admin(&config, admin_state, &stop).await?;
    let reload = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(watch_files(
        config.clone(),
        watches,
        policy_tx,
        tls,
        metrics.clone(),
        reload.clone(),
        stop.clone(),
    ));
    tracing::info!(listeners = ?bound, admin = ?admin_addr, spool = %config.spool.display(), "sluice standalone started");
    Ok(Running {
        listeners: bound,
        admin: admin_addr,
        metrics,
        readiness,
        reload,
        drain,
        stop,
        tracker,
        spool,
        worker,
        grace: config.limits.shutdown_grace,
    })
}

fn session_config(config: &Config, l: &ListenerConfig, tls_available: bool) -> SessionConfig {
    SessionConfig {
        hostname: config.hostname.clone(),
        kind: l.kind,
        tls_available: tls_available && l.kind != ListenerKind::Submissions,
        allow_plaintext_auth: l.allow_plaintext_auth,
        max_message_size: config.limits.max_message_size,
        max_recipients: config.limits.max_recipients,
        max_data_line: config.limits.max_data_line,
        max_errors: config.limits.max_errors,
    }
}

async fn start_admin(
    config: &Config,
    state: AdminState,
    stop: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = config.admin else {
        return Ok(None);
    };
    let socket = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener to {addr}"))?;
    let local = socket.local_addr()?;
    tokio::spawn(admin::run(socket, state, stop.clone()));
    Ok(Some(local))
}

/// Reloads policy and certificates when their files change or on [`Running::reload`]
/// (SIGHUP). An invalid policy is refused and the one in force stays.
struct Watches {
    policy: FileWatch,
    tls: FileWatch,
}

async fn watch_files(
    config: Config,
    mut watches: Watches,
    policy_tx: watch::Sender<Arc<PolicySnapshot>>,
    tls: Option<Arc<TlsStore>>,
    metrics: Arc<Metrics>,
    reload: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = reload.notified() => true,
            _ = tokio::time::sleep(WATCH_INTERVAL) => false,
        };
        if watches.policy.changed() || forced {
            reload_policy(&config, &policy_tx, &metrics);
        }
        if let Some(tls) = &tls
            && (watches.tls.changed() || forced)
        {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in force")
                }
            }
        }
    }
}

fn reload_policy(
    config: &Config,
    policy_tx: &watch::Sender<Arc<PolicySnapshot>>,
    metrics: &Metrics,
) {
    match PolicySnapshot::load_files(&config.policies) {
        Ok(policy) => {
            tracing::info!(revision = policy.revision(), "policy reloaded");
            policy_tx.send_replace(Arc::new(policy));
            metrics.policy_reloads.inc("applied");
        }
        Err(e) => {
            tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
            metrics.policy_reloads.inc("invalid");
        }
    }
}

impl Running {
    /// Re-reads policy and certificates now (what SIGHUP does).
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    /// Stops accepting and taking mail from the queue, lets open transactions and
    /// deliveries finish within the grace period, then closes what is left and the spool.
    /// A delivery cut short is not lost: its message was never acked and is due again.
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
        self.spool.close().await;
    }
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads policy and certificates.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = start(config).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => running.reload(),
        }
    }
    tracing::info!("shutting down: draining sessions");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
