//! Setting up the delivery worker of `sluice standalone` from the process configuration.

use crate::config::{Config, RetrySettings};
use crate::delivery::client::{ClientConfig, Timeouts, TlsMode, system_roots};
use crate::delivery::dispatch::{DispatchSettings, Dispatcher};
use crate::delivery::dns::{Resolver, SystemResolver};
use crate::delivery::guard::{AddressGuard, PrivateDestinations};
use crate::delivery::retry::RetrySchedule;
use crate::delivery::worker::Worker;
use crate::events::EventSink;
use crate::policy::PolicySnapshot;
use crate::queue::Queue;
use crate::telemetry::metrics::Metrics;
use anyhow::Context;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use tokio::sync::watch;

/// The worker, ready to run; `None` when delivery is turned off.
pub fn worker(
    config: &Config,
    queue: Arc<dyn Queue>,
    policy: watch::Receiver<Arc<PolicySnapshot>>,
    metrics: Arc<Metrics>,
    events: Arc<dyn EventSink>,
) -> anyhow::Result<Option<Arc<Worker>>> {
    let settings = &config.delivery;
    if !settings.enabled {
        return Ok(None);
    }
    let resolver: Arc<dyn Resolver> =
        Arc::new(SystemResolver::configured(settings.nameserver).context("setting up DNS")?);
    let client = ClientConfig {
        helo_name: config.hostname.clone(),
        tls: TlsMode::Opportunistic,
        tls_roots: roots(config)?,
        verify_certificates: true,
        credentials: None,
        timeouts: Timeouts {
            connect: settings.connect_timeout,
            ..Timeouts::default()
        },
        lmtp: false,
        tls_fallbacks: metrics.delivery_tls_fallbacks.clone(),
    };
    let mut local_names = vec![config.hostname.to_ascii_lowercase()];
    local_names.extend(settings.local_names.iter().map(|n| n.to_ascii_lowercase()));
    let dispatch = DispatchSettings {
        hostname: config.hostname.clone(),
        local_names,
        per_destination: settings.per_destination,
        max_connections: settings.max_connections,
        mx_port: settings.mx_port,
        client,
        secrets_dir: settings.secrets_dir.clone(),
        secrets_key: match &settings.secrets_key_file {
            Some(path) => Some(Arc::new(
                crate::policy::sealed::SecretsKey::from_file(path)
                    .context("loading the secrets key")?,
            )),
            None => None,
        },
        webhook_timeout: settings.webhook_timeout,
        guard: AddressGuard {
            private: if settings.allow_private_destinations {
                PrivateDestinations::Allow
            } else {
                PrivateDestinations::Refuse
            },
            listeners: config.listeners.iter().map(|l| l.address).collect(),
            interfaces: crate::delivery::guard::interface_addresses(),
        },
        max_received_headers: config.limits.max_received_headers,
    };
    let dispatcher = Arc::new(Dispatcher::new(dispatch, resolver));
    Ok(Some(Worker::new(
        queue,
        policy,
        dispatcher,
        retry_schedule(&settings.retry),
        settings.concurrency,
        metrics,
        events,
    )))
}

/// The worker's retry schedule: the configured values, the schedule's defaults for
/// those left out.
fn retry_schedule(settings: &RetrySettings) -> RetrySchedule {
    let default = RetrySchedule::default();
    RetrySchedule {
        first_retry: settings.first_retry.unwrap_or(default.first_retry),
        max_interval: settings.max_interval.unwrap_or(default.max_interval),
        max_lifetime: settings.max_lifetime.unwrap_or(default.max_lifetime),
        jitter: settings.jitter.unwrap_or(default.jitter),
        delay_warning: settings.delay_warning.or(default.delay_warning),
    }
}

/// The system's trusted roots, plus the configured extra CA file.
fn roots(config: &Config) -> anyhow::Result<Arc<RootCertStore>> {
    let Some(file) = &config.delivery.ca_file else {
        return Ok(system_roots());
    };
    let mut roots = (*system_roots()).clone();
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading delivery.caFile {}", file.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("adding a certificate of {}", file.display()))?;
    }
    Ok(Arc::new(roots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_retry_schedule_keeps_its_defaults_for_what_is_not_configured() {
        const MIN: Duration = Duration::from_secs(60);
        let settings = RetrySettings {
            first_retry: Some(MIN),
            max_interval: Some(120 * MIN),
            delay_warning: Some(240 * MIN),
            jitter: Some(0.2),
            ..RetrySettings::default()
        };
        let schedule = retry_schedule(&settings);
        assert_eq!(schedule.first_retry, MIN);
        assert_eq!(schedule.max_interval, 120 * MIN);
        assert_eq!(schedule.max_lifetime, RetrySchedule::default().max_lifetime);
        assert_eq!(schedule.delay_warning, Some(240 * MIN));
        assert_eq!(schedule.jitter, 0.2);
        assert_eq!(
            retry_schedule(&RetrySettings::default()),
            RetrySchedule::default()
        );
    }
}
