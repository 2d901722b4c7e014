//! The SMTP side of a role that accepts mail: the state its connections share, and its
//! listening sockets.

use super::queue::Backend;
use crate::admin::access::Access;
use crate::config::{Config, Limits, ListenerConfig, ListenerRole};
use crate::delivery::dns::SystemResolver;
use crate::ingress::auth_failures::FailureLimits;
use crate::ingress::auth_guard::{AuthGuard, AuthGuardConfig};
use crate::ingress::budget::{MemoryBudget, default_budget};
use crate::ingress::limits::{ConnectionLimits, Ipv6Limit};
use crate::ingress::tls::TlsStore;
use crate::ingress::{self, Listener, Shared, SpillSettings, Timeouts};
use crate::policy::PolicySnapshot;
use crate::smtp::session::{ListenerKind, ReceivedUser, SessionConfig};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::readiness::Readiness;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The certificate, when TLS is configured.
pub fn load_tls(config: &Config) -> anyhow::Result<Option<Arc<TlsStore>>> {
    config
        .tls
        .as_ref()
        .map(|t| TlsStore::load(t.cert_file.clone(), t.key_file.clone()).context("loading TLS"))
        .transpose()
}

/// What the connections share; the queue, its quarantine (where the filters hold
/// originals) and the event sink come from `backend`.
pub fn shared(
    config: &Config,
    backend: &Backend,
    policy: watch::Receiver<Arc<PolicySnapshot>>,
    tls: Option<Arc<TlsStore>>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> anyhow::Result<Arc<Shared>> {
    let (queue, events) = (backend.queue(), backend.events());
    let limits = &config.limits;
    let budget = MemoryBudget::new(
        limits.memory_budget.unwrap_or_else(default_budget),
        metrics.clone(),
    );
    let spill = spill_settings(config)?;
    let largest = queue.file_body_memory(limits.max_message_size);
    if largest > budget.limit() {
        tracing::warn!(
            budget = budget.limit(),
            needed = largest,
            "limits.memoryBudget is smaller than the queue needs to store a message of limits.maxMessageSize: such messages will get 451 4.3.1"
        );
    }
    tracing::info!(budget = budget.limit(), spill_threshold = spill.threshold, spill_directory = %spill.dir.display(), "memory budget for message content");
    let ipv6 = Ipv6Limit {
        prefix: limits.ipv6_prefix,
        max_per_prefix: limits
            .max_connections_per_ipv6_prefix
            .unwrap_or(limits.max_connections_per_ip),
    };
    let dns = match SystemResolver::configured(config.delivery.nameserver) {
        Ok(resolver) => Some(resolver),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS for sender authentication and DNSBL checks");
            None
        }
    };
    Ok(Arc::new(Shared {
        queue,
        policy,
        tls,
        metrics,
        readiness,
        events,
        limits: ConnectionLimits::with_ipv6(
            limits.max_connections,
            limits.max_connections_per_ip,
            ipv6,
        ),
        auth: AuthGuard::new(auth_guard_config(&config.limits)),
        budget,
        spill,
        timeouts: Timeouts {
            command: config.limits.command_timeout,
            data: config.limits.data_timeout,
            write: config.limits.write_timeout,
            session: config.limits.max_session_lifetime,
            policy_max_age: config.limits.session_policy_max_age,
        },
        max_command_line: config.limits.max_command_line,
        filters: ingress::Filters::new(
            Some(backend.quarantine()),
            crate::filter::pipeline::Environment {
                hostname: config.hostname.clone(),
                dns: dns.as_ref().map(|d| d.hickory().clone()),
            },
            config.delivery.secrets_dir.clone(),
        ),
        dns,
        dnsbl: Default::default(),
        session_env: Arc::new(crate::smtp::session::SystemEnv),
    }))
}

/// The temporary files of large messages: in the spool's `incoming` directory (ours
/// alone: what a crash left there is removed now), else where configured, else the
/// system's temporary directory.
fn spill_settings(config: &Config) -> anyhow::Result<SpillSettings> {
    let own = config.limits.spill_directory.is_none() && !config.spool.as_os_str().is_empty();
    let dir = match &config.limits.spill_directory {
        Some(dir) => dir.clone(),
        None if own => config.spool.join("incoming"),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the spill directory {}", dir.display()))?;
    if own {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("sluice-body-")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(SpillSettings {
        threshold: config.limits.spill_threshold,
        dir,
    })
}

/// Binds every configured listener and serves it until `drain`; returns the bound
/// addresses by listener name.
pub async fn bind(
    config: &Config,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    drain: &CancellationToken,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let mut bound = Vec::new();
    for l in &config.listeners {
        let socket = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("binding listener {} to {}", l.name, l.address))?;
        bound.push((l.name.clone(), socket.local_addr()?));
        let listener = Arc::new(Listener {
            name: l.name.clone(),
            session: Arc::new(session_config(config, l, shared.tls.is_some())),
            proxy: l.proxy_protocol().map_err(anyhow::Error::msg)?,
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
    Ok(bound)
}

fn auth_guard_config(limits: &Limits) -> AuthGuardConfig {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let table = |max_failures| FailureLimits {
        max_failures,
        window: limits.auth_failure_window,
        lockout: limits.auth_lockout,
        capacity: limits.auth_failure_table_size,
    };
    AuthGuardConfig {
        max_concurrent_checks: limits.max_concurrent_auth_checks.unwrap_or(cores),
        failure_delay: limits.auth_failure_delay,
        per_ip: table(limits.auth_failures_per_ip),
        per_user: table(limits.auth_failures_per_user),
    }
}

/// The protocol's name for the kind of port the file gives a listener.
pub(super) fn listener_kind(role: ListenerRole) -> ListenerKind {
    match role {
        ListenerRole::Relay => ListenerKind::Relay,
        ListenerRole::Submission => ListenerKind::Submission,
        ListenerRole::Submissions => ListenerKind::Submissions,
    }
}

fn session_config(config: &Config, l: &ListenerConfig, tls_available: bool) -> SessionConfig {
    let kind = listener_kind(l.kind);
    SessionConfig {
        hostname: config.hostname.clone(),
        kind,
        tls_available: tls_available && kind != ListenerKind::Submissions,
        allow_plaintext_auth: l.allow_plaintext_auth,
        max_message_size: config.limits.max_message_size,
        max_recipients: config.limits.max_recipients,
        max_data_line: config.limits.max_data_line,
        bare_line_endings: l.bare_line_endings,
        max_errors: config.limits.max_errors,
        received_user: match l.received_auth_user {
            Some(true) => ReceivedUser::Named,
            Some(false) => ReceivedUser::Omitted,
            None => ReceivedUser::default_for(kind),
        },
        max_received_headers: config.limits.max_received_headers,
    }
}

/// Starts the admin listener, when one is configured, with the access rules of its
/// queue API (`adminTokenFile`, `adminAllowedHosts`).
pub async fn admin(
    config: &Config,
    state: crate::admin::AdminState,
    stop: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = config.admin else {
        return Ok(None);
    };
    let token = match &config.admin_token_file {
        Some(path) => Some(crate::config::read_admin_token(path)?),
        None => None,
    };
    let socket = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener to {addr}"))?;
    let local = socket.local_addr()?;
    let access = Access::new(local, token.as_deref(), &config.admin_allowed_hosts);
    if access.queue_api_off() {
        tracing::warn!(admin = %local, "the queue API is off: the admin listener is not on loopback and no adminTokenFile is configured");
    }
    tokio::spawn(crate::admin::run(socket, state, access, stop.clone()));
    Ok(Some(local))
}
