//! Asking the block lists of a policy's `dnsbl:` about a client, for the connection
//! driver: every zone at once under the policy's time limit, over the ingress's DNS,
//! through the process's cache of answers by TTL ([`filter::dnsbl::Cache`]), with the
//! answers counted by zone and result, and list errors logged at most once a minute
//! per zone. What the answers mean is `filter::dnsbl`'s.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio_util::task::AbortOnDropHandle;

use crate::delivery::dns::SystemResolver;
use crate::filter::dnsbl::{
    self, Cache, DnsblSettings, Verdict, WarnLimiter, ZoneAnswer, ZoneError, ZoneSettings,
};
use crate::telemetry::metrics::{DnsblResult, Metrics};

/// What all sessions of the process share: the answers cache and the warning limiter.
#[derive(Debug, Default)]
pub struct Dnsbl {
    cache: Mutex<Cache>,
    warned: Mutex<WarnLimiter>,
}

/// A lookup round started before the verdict is needed (at the greeting), with the
/// settings it runs under; dropped, it stops.
pub(super) struct Prefetch {
    settings: DnsblSettings,
    round: AbortOnDropHandle<Verdict>,
}

impl Prefetch {
    /// Starts asking about `ip` on a task of its own, so that the first RCPT waits less.
    pub(super) fn start(
        shared: &Arc<super::Shared>,
        settings: &DnsblSettings,
        ip: IpAddr,
    ) -> Prefetch {
        let (shared, owned) = (Arc::clone(shared), settings.clone());
        let round = tokio::spawn(async move {
            let dns = shared.dns.as_ref();
            shared.dnsbl.check(dns, &owned, ip, &shared.metrics).await
        });
        Prefetch {
            settings: settings.clone(),
            round: AbortOnDropHandle::new(round),
        }
    }

    /// The round's verdict if it ran under `settings`; `None` when the policy changed
    /// since (or the task failed), and the caller asks again.
    pub(super) async fn verdict(self, settings: &DnsblSettings) -> Option<Verdict> {
        if self.settings != *settings {
            return None;
        }
        self.round.await.ok()
    }
}

impl Dnsbl {
    /// The verdict on `ip`. Never longer than the settings' timeout (plus scheduling):
    /// zones that have not answered by then count as errors, and the fail mode decides.
    pub async fn check(
        &self,
        dns: Option<&SystemResolver>,
        settings: &DnsblSettings,
        ip: IpAddr,
        metrics: &Metrics,
    ) -> Verdict {
        let deadline = tokio::time::Instant::now() + settings.timeout();
        let lookups = settings
            .zones
            .iter()
            .map(|zone| self.zone(dns, zone, ip, deadline));
        let answers = futures_util::future::join_all(lookups).await;
        for (zone, answer) in settings.zones.iter().zip(&answers) {
            let result = match answer {
                ZoneAnswer::Listed(_) => DnsblResult::Listed,
                ZoneAnswer::Clear => DnsblResult::Clear,
                ZoneAnswer::Error(_) => DnsblResult::Error,
            };
            metrics.dnsbl_lookups.inc(&zone.zone, result);
            if let ZoneAnswer::Error(error) = answer {
                self.warn(&zone.zone, ip, error);
            }
        }
        dnsbl::verdict(settings, &answers)
    }

    /// One zone's answer: from the cache while fresh, else from DNS (then cached).
    async fn zone(
        &self,
        dns: Option<&SystemResolver>,
        zone: &ZoneSettings,
        ip: IpAddr,
        deadline: tokio::time::Instant,
    ) -> ZoneAnswer {
        if let Some(answer) = self.lock_cache().get(&zone.zone, ip, Instant::now()) {
            return answer;
        }
        let Some(dns) = dns else {
            return ZoneAnswer::Error(ZoneError::Lookup("no DNS resolver".into()));
        };
        let name = dnsbl::query_name(ip, &zone.zone);
        let (addresses, ttl) = match tokio::time::timeout_at(deadline, ask(dns, &name)).await {
            Err(_) => return ZoneAnswer::Error(ZoneError::Timeout),
            Ok(Err(error)) => return ZoneAnswer::Error(ZoneError::Lookup(error)),
            Ok(Ok(found)) => found,
        };
        let answer = dnsbl::classify(&addresses, &zone.answers);
        self.lock_cache()
            .insert(&zone.zone, ip, answer.clone(), ttl, Instant::now());
        answer
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn warn(&self, zone: &str, ip: IpAddr, error: &ZoneError) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.allow(zone, Instant::now()) {
            tracing::warn!(zone, client = %ip, error = %error, "DNSBL gave no verdict (logged once a minute per zone)");
        }
    }
}

/// The A records of `name` and how long to believe them; NXDOMAIN and NODATA are an
/// empty answer believed for the SOA's negative TTL.
///
/// hickory keeps a cache of its own, which would answer a repeated question within the
/// TTL too; the entry is dropped before asking, so that ours (bounded in size, capped
/// at an hour, shared by all sessions) is the one cache and the only one to trust.
async fn ask(dns: &SystemResolver, name: &str) -> Result<(Vec<Ipv4Addr>, Duration), String> {
    let mut name = Name::from_ascii(name).map_err(|e| format!("query name {name}: {e}"))?;
    name.set_fqdn(true);
    let resolver = dns.hickory();
    resolver.clear_lookup_cache(name.clone(), RecordType::A);
    match resolver.lookup(name, RecordType::A).await {
        Ok(lookup) => {
            let (mut addresses, mut ttls) = (Vec::new(), Vec::new());
            for record in lookup.answers() {
                if let RData::A(a) = &record.data {
                    addresses.push(a.0);
                    ttls.push(record.ttl);
                }
            }
            Ok((addresses, dnsbl::answer_ttl(&ttls, None)))
        }
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
            let soa = e.into_soa().map(|soa| (soa.ttl, soa.data.minimum));
            Ok((Vec::new(), dnsbl::answer_ttl(&[], soa)))
        }
        Err(e) => Err(e.to_string()),
    }
}
