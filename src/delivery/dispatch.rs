//! Delivery to one destination: the right transport for it (MX, smarthost, LMTP,
//! Maildir, webhook), the per-destination connection cap, connection reuse, and the
//! rule that a host which cannot be reached hands the recipients to the next host.

use super::client::{ClientConfig, Connection, TlsMode};
use super::dns::Resolver;
use super::guard::AddressGuard;
use super::local::{self, WebhookTarget};
use super::mx;
use super::outcome::Outcome;
use super::pool::Pool;
use super::route::Destination;
use crate::envelope::Envelope;
use crate::policy::sealed::{Sealed, SecretsKey, context};
use crate::policy::{Delivery, Smarthost};
use crate::smtp::address::Recipient;
use crate::telemetry::otel;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// What the dispatcher needs from the process configuration.
pub struct DispatchSettings {
    pub hostname: String,
    /// Names that are us, for MX loop detection.
    pub local_names: Vec<String>,
    /// Connections at once to one destination (Postfix: 20).
    pub per_destination: usize,
    /// Outbound connections at once, all destinations together.
    pub max_connections: usize,
    /// The port MX hosts are reached on: 25, but tests point it elsewhere.
    pub mx_port: u16,
    pub client: ClientConfig,
    /// Where `secretRef`s resolve in standalone: `{dir}/{name}/{key}`, the layout of a
    /// Kubernetes Secret mounted as a volume.
    pub secrets_dir: Option<PathBuf>,
    /// Opens the secrets the operator sealed into the snapshot (Kubernetes).
    pub secrets_key: Option<Arc<SecretsKey>>,
    pub webhook_timeout: Duration,
    /// Which MX addresses may be connected to.
    pub guard: AddressGuard,
    /// A queued message with more `Received:` headers than this plus our own is a loop.
    pub max_received_headers: usize,
}

pub struct Dispatcher {
    settings: DispatchSettings,
    resolver: Arc<dyn Resolver>,
    pool: Pool,
    caps: Mutex<HashMap<String, Arc<Semaphore>>>,
    connections: Semaphore,
}

impl Dispatcher {
    pub fn new(settings: DispatchSettings, resolver: Arc<dyn Resolver>) -> Self {
        Dispatcher {
            resolver,
            pool: Pool::new(settings.per_destination.max(1), settings_max(&settings)),
            caps: Mutex::new(HashMap::new()),
            connections: Semaphore::new(settings_max(&settings)),
            settings,
        }
    }

    pub fn hostname(&self) -> &str {
        &self.settings.hostname
    }

    /// One outcome per recipient, in order.
    pub async fn deliver(
        &self,
        dest: &Destination,
        env: &Envelope,
        rcpts: &[Recipient],
        body: &[u8],
    ) -> Vec<Outcome> {
        // The destination's cap first, the global one second: deliveries queued behind a
        // slow destination wait without holding any of the global connections. The
        // guard is declared first so that it drops last, after the permit.
        let cap = CapGuard::new(&self.caps, destination_key(dest), self.per_destination());
        let _destination = cap.acquire().await;
        let _connection = self.connections.acquire().await;
        match dest {
            Destination::Local { delivery, .. } => self.local(delivery, env, rcpts, body).await,
            Destination::Smarthost(smarthost) => self.smarthost(smarthost, env, rcpts, body).await,
            Destination::Mx { domain } => self.mx(domain, env, rcpts, body).await,
        }
    }

    fn per_destination(&self) -> usize {
        self.settings.per_destination.max(1)
    }

    /// How many destinations have a cap now: those with a delivery in flight or waiting.
    pub fn tracked_destinations(&self) -> usize {
        self.caps.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether a queued message has made more hops than it may: then every recipient
    /// fails with `554 5.4.6` and nothing is relayed. The count includes the Received
    /// header our ingress put on top, so one more than the ingress limit is allowed.
    pub fn hop_refusal(&self, body: &[u8]) -> Option<Outcome> {
        let hops = crate::smtp::received::count(body);
        let max = self.settings.max_received_headers.saturating_add(1);
        (hops > max).then(|| Outcome::Failed {
            remote_mta: None,
            status: "5.4.6".to_string(),
            reply: format!(
                "554 5.4.6 too many hops: {hops} Received headers, at most {max} (mail loop?)"
            ),
        })
    }

    async fn local(
        &self,
        delivery: &Delivery,
        env: &Envelope,
        rcpts: &[Recipient],
        body: &[u8],
    ) -> Vec<Outcome> {
        match delivery {
            Delivery::Maildir { path } => {
                local::deliver_maildir(std::path::Path::new(path), env, rcpts, body).await
            }
            Delivery::Webhook {
                url,
                signing_secret_ref,
                signing_secret,
            } => {
                // A named secret that cannot be read defers, as a smarthost's missing
                // credentials do: posting unsigned instead would have a verifying
                // receiver refuse (a 4xx, so a bounce) or an unverifying one take it.
                let signing_secret = match (signing_secret, signing_secret_ref) {
                    (Some(sealed), _) => match self.open(&context::webhook(url), sealed) {
                        Ok(key) => Some(key.into_bytes()),
                        Err(reply) => return same(rcpts, deferred(reply)),
                    },
                    (None, None) => None,
                    (None, Some(r)) => match self.secret(&r.name, &r.key) {
                        Some(secret) => Some(secret.into_bytes()),
                        None => {
                            let reply = format!(
                                "webhook signing secret not found (secret {}, key {})",
                                r.name, r.key
                            );
                            return same(rcpts, deferred(reply));
                        }
                    },
                };
                let target = WebhookTarget {
                    url: url.clone(),
                    signing_secret,
                    timeout: self.settings.webhook_timeout,
                    roots: self.settings.client.tls_roots.clone(),
                };
                local::deliver_webhook(&target, env, rcpts, body).await
            }
            Delivery::Lmtp { address } => self.lmtp(address, env, rcpts, body).await,
        }
    }

    async fn lmtp(
        &self,
        address: &str,
        env: &Envelope,
        rcpts: &[Recipient],
        body: &[u8],
    ) -> Vec<Outcome> {
        let config = ClientConfig {
            lmtp: true,
            tls: TlsMode::Disabled,
            credentials: None,
            ..self.settings.client.clone()
        };
        if address.starts_with('/') {
            return match Connection::connect_unix(std::path::Path::new(address), &config).await {
                Ok(mut conn) => match conn.send(env, rcpts, body).await {
                    Ok(outcomes) => outcomes,
                    Err(e) => same(rcpts, e.to_outcome(Some(address.to_string()))),
                },
                Err(e) => same(rcpts, e.to_outcome(Some(address.to_string()))),
            };
        }
        let hosts = self.resolve_host_port(address).await;
        self.relay(hosts, &config, env, rcpts, body).await
    }

    async fn smarthost(
        &self,
        s: &Smarthost,
        env: &Envelope,
        rcpts: &[Recipient],
        body: &[u8],
    ) -> Vec<Outcome> {
        let credentials = match self.smarthost_credentials(s) {
            Ok(credentials) => credentials,
            Err(reply) => return same(rcpts, deferred(reply)),
        };
        let config = ClientConfig {
            tls: TlsMode::from(s.tls),
            verify_certificates: true,
            credentials,
            ..self.settings.client.clone()
        };
        let hosts = self
            .resolve_host_port(&format!("{}:{}", s.host, s.port))
            .await;
        self.relay(hosts, &config, env, rcpts, body).await
    }

    async fn mx(
        &self,
        domain: &str,
        env: &Envelope,
        rcpts: &[Recipient],
        body: &[u8],
    ) -> Vec<Outcome> {
        let lookup = tracing::info_span!(
            target: otel::TARGET,
            "dns.mx",
            sluice.recipient_domain = domain,
            error.type = tracing::field::Empty,
        );
        let candidates = async {
            let hosts =
                mx::mx_hosts(self.resolver.as_ref(), domain, &self.settings.local_names).await?;
            self.allowed_candidates(domain, &hosts).await
        }
        .instrument(lookup.clone())
        .await;
        let candidates = match candidates {
            Ok(candidates) => candidates,
            Err(e) => {
                lookup.record("error.type", "mx_lookup");
                return same(rcpts, e.to_outcome());
            }
        };
        // RFC 7435: encrypt when the MX offers it, without insisting on a valid certificate.
        let config = ClientConfig {
            tls: TlsMode::Opportunistic,
            verify_certificates: false,
            credentials: None,
            ..self.settings.client.clone()
        };
        self.relay(Ok(candidates), &config, env, rcpts, body).await
    }

    /// The MX hosts' addresses in order, without those the guard refuses; when it refuses
    /// them all, the first refusal says why.
    async fn allowed_candidates(
        &self,
        domain: &str,
        hosts: &[mx::MxHost],
    ) -> Result<Vec<(String, SocketAddr)>, mx::MxError> {
        // What our own name resolves to now: an MX at our address is a loop under any
        // name. A failed lookup only leaves the check to the other rules.
        let own_ips = self
            .resolver
            .ips(&self.settings.hostname)
            .await
            .unwrap_or_default();
        let port = self.settings.mx_port;
        let mut allowed = Vec::new();
        let mut first_refusal = None;
        for host in hosts {
            for ip in &host.addrs {
                let addr = SocketAddr::new(*ip, port);
                match self.settings.guard.check(addr, &own_ips) {
                    Ok(()) => allowed.push((host.name.clone(), addr)),
                    Err(refusal) => {
                        tracing::info!(%domain, host = %host.name, %addr, %refusal, "MX address refused");
                        first_refusal.get_or_insert((*ip, refusal));
                    }
                }
            }
        }
        match first_refusal {
            Some((address, refusal)) if allowed.is_empty() => Err(mx::MxError::Refused {
                domain: domain.to_string(),
                address,
                refusal,
            }),
            _ => Ok(allowed),
        }
    }

    /// Tries the hosts in order until one takes the transaction; a host that cannot be
    /// reached or will not talk passes the recipients to the next (RFC 5321 5.1).
    async fn relay(
        &self,
        hosts: Result<Vec<(String, SocketAddr)>, Outcome>,
        config: &ClientConfig,
        env: &Envelope,
        rcpts: &[Recipient],
        body: &[u8],
    ) -> Vec<Outcome> {
        let hosts = match hosts {
            Ok(hosts) => hosts,
            Err(outcome) => return same(rcpts, outcome),
        };
        let mut last = Outcome::Deferred {
            remote_mta: None,
            reply: "no host to deliver to".into(),
        };
        for (name, addr) in hosts {
            let connect = tracing::info_span!(
                target: otel::TARGET,
                "smtp.connect",
                server.address = %name,
                server.port = addr.port(),
                network.peer.address = %addr.ip(),
                network.peer.port = addr.port(),
                error.type = tracing::field::Empty,
            );
            let connected = self
                .pool
                .connect(addr, &name, config)
                .instrument(connect.clone())
                .await;
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(e) => {
                    connect.record("error.type", e.kind());
                    last = e.to_outcome(Some(format!("{name}[{}]:{}", addr.ip(), addr.port())));
                    continue;
                }
            };
            let transaction = tracing::info_span!(
                target: otel::TARGET,
                "smtp.transaction",
                server.address = %name,
                server.port = addr.port(),
                sluice.reply_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            let sent = conn
                .send(env, rcpts, body)
                .instrument(transaction.clone())
                .await;
            record_transaction(&transaction, &sent);
            match sent {
                Ok(outcomes) => {
                    self.pool.release(conn, addr, &name, config).await;
                    return outcomes;
                }
                Err(e) if e.is_permanent() => {
                    return same(rcpts, e.to_outcome(Some(conn.remote().to_string())));
                }
                Err(e) => last = e.to_outcome(Some(conn.remote().to_string())),
            }
        }
        same(rcpts, last)
    }

    /// `host:port` to addresses: an IP literal as it is, a name through the resolver.
    async fn resolve_host_port(&self, address: &str) -> Result<Vec<(String, SocketAddr)>, Outcome> {
        let deferred = |reply: String| Outcome::Deferred {
            remote_mta: None,
            reply,
        };
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| deferred(format!("invalid address {address}")))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![(host.to_string(), SocketAddr::new(ip, port))]);
        }
        let lookup =
            tracing::info_span!(target: otel::TARGET, "dns.resolve", server.address = host);
        let ips = self
            .resolver
            .ips(host)
            .instrument(lookup)
            .await
            .map_err(|e| deferred(format!("cannot resolve {host}: {e}")))?;
        Ok(ips
            .into_iter()
            .map(|ip| (host.to_string(), SocketAddr::new(ip, port)))
            .collect())
    }

    /// A smarthost's username and password: sealed in the snapshot (Kubernetes), or read
    /// from the secrets directory (files). `Err` is the reply of the deferral.
    fn smarthost_credentials(&self, s: &Smarthost) -> Result<Option<(String, String)>, String> {
        if let Some(sealed) = &s.credentials {
            let part = |part: &str, value: &Sealed| {
                self.open(&context::smarthost(&s.host, s.port, part), value)
            };
            return Ok(Some((
                part("username", &sealed.username)?,
                part("password", &sealed.password)?,
            )));
        }
        let Some(r) = &s.credentials_secret_ref else {
            return Ok(None);
        };
        match (
            self.secret(&r.name, &r.username_key),
            self.secret(&r.name, &r.password_key),
        ) {
            (Some(u), Some(p)) => Ok(Some((u, p))),
            _ => Err(format!(
                "credentials for smarthost {} not found (secret {})",
                s.host, r.name
            )),
        }
    }

    /// Opens a sealed secret; `Err` is the reply of the deferral. A worker without the
    /// key defers rather than bounces: the key is a deployment mistake to fix, and the
    /// mail can wait for it.
    fn open(&self, context: &str, sealed: &Sealed) -> Result<String, String> {
        let Some(key) = &self.settings.secrets_key else {
            return Err(format!(
                "cannot open the sealed secret for {context}: this worker has no --secrets-key-file"
            ));
        };
        let bytes = key
            .open(context, sealed)
            .map_err(|e| format!("cannot open the sealed secret for {context}: {e}"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("the sealed secret for {context} is not UTF-8"))?;
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }

    fn secret(&self, name: &str, key: &str) -> Option<String> {
        let dir = self.settings.secrets_dir.as_ref()?;
        let safe = |s: &str| !s.is_empty() && !s.contains(['/', '\0']) && s != "." && s != "..";
        if !safe(name) || !safe(key) {
            return None;
        }
        let text = std::fs::read_to_string(dir.join(name).join(key)).ok()?;
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    }
}

/// The transaction's reply on its span: the first recipient's outcome, or the error that
/// ended the session.
fn record_transaction(
    span: &tracing::Span,
    sent: &Result<Vec<Outcome>, super::client::ClientError>,
) {
    if span.is_disabled() {
        return;
    }
    match sent {
        Ok(outcomes) => {
            let code = outcomes.first().and_then(|o| otel::reply_code(o.reply()));
            if let Some(code) = code {
                span.record("sluice.reply_code", code);
                if code >= 400 {
                    span.record("error.type", code);
                }
            }
        }
        Err(e) => {
            span.record("error.type", e.kind());
        }
    }
}

fn settings_max(settings: &DispatchSettings) -> usize {
    settings.max_connections.max(1)
}

fn deferred(reply: String) -> Outcome {
    Outcome::Deferred {
        remote_mta: None,
        reply,
    }
}

fn same(rcpts: &[Recipient], outcome: Outcome) -> Vec<Outcome> {
    vec![outcome; rcpts.len()]
}

/// A destination's cap, taken from the map on creation and removed from it on drop
/// when no one else holds it: the map then holds only destinations with deliveries in
/// flight or waiting, however many distinct domains the queue has seen. Every clone of
/// the `Arc` is made under the map's lock, so a count of one there is exact.
struct CapGuard<'a> {
    caps: &'a Mutex<HashMap<String, Arc<Semaphore>>>,
    key: String,
    cap: Option<Arc<Semaphore>>,
}

impl<'a> CapGuard<'a> {
    fn new(caps: &'a Mutex<HashMap<String, Arc<Semaphore>>>, key: String, size: usize) -> Self {
        let cap = caps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(size)))
            .clone();
        CapGuard {
            caps,
            key,
            cap: Some(cap),
        }
    }

    async fn acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.cap.as_ref()?.acquire().await.ok()
    }
}

impl Drop for CapGuard<'_> {
    fn drop(&mut self) {
        let mut caps = self.caps.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.cap.take());
        if caps
            .get(&self.key)
            .is_some_and(|c| Arc::strong_count(c) == 1)
        {
            caps.remove(&self.key);
        }
    }
}

/// The unit of the per-destination cap: a domain for MX, a host for the others.
fn destination_key(dest: &Destination) -> String {
    match dest {
        Destination::Mx { domain } => format!("mx:{domain}"),
        Destination::Smarthost(s) => format!("smarthost:{}:{}", s.host, s.port),
        Destination::Local { domain, .. } => format!("local:{domain}"),
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
