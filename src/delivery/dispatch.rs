//! Delivery to one destination: the right transport for it (MX, smarthost, LMTP,
//! Maildir, webhook), the per-destination connection cap, connection reuse, and the
//! rule that a host which cannot be reached hands the recipients to the next host.

use super::client::{ClientConfig, Connection, TlsMode};
use super::dns::Resolver;
use super::local::{self, WebhookTarget};
use super::mx;
use super::outcome::Outcome;
use super::pool::Pool;
use super::route::Destination;
use crate::policy::sealed::{Sealed, SecretsKey, context};
use crate::policy::{Delivery, Smarthost};
use crate::queue::Envelope;
use crate::smtp::address::Recipient;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

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
            pool: Pool::new(settings.per_destination.max(1)),
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
        // slow destination wait without holding any of the global connections.
        let cap = self.cap(&destination_key(dest));
        let _destination = cap.acquire_owned().await;
        let _connection = self.connections.acquire().await;
        match dest {
            Destination::Local { delivery, .. } => self.local(delivery, env, rcpts, body).await,
            Destination::Smarthost(smarthost) => self.smarthost(smarthost, env, rcpts, body).await,
            Destination::Mx { domain } => self.mx(domain, env, rcpts, body).await,
        }
    }

    fn cap(&self, key: &str) -> Arc<Semaphore> {
        let mut caps = self.caps.lock().unwrap_or_else(|e| e.into_inner());
        let per_destination = self.settings.per_destination.max(1);
        caps.entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(per_destination)))
            .clone()
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
        let hosts =
            match mx::mx_hosts(self.resolver.as_ref(), domain, &self.settings.local_names).await {
                Ok(hosts) => hosts,
                Err(e) => return same(rcpts, e.to_outcome()),
            };
        let port = self.settings.mx_port;
        let candidates: Vec<_> = hosts
            .iter()
            .flat_map(|h| {
                h.addrs
                    .iter()
                    .map(move |ip| (h.name.clone(), SocketAddr::new(*ip, port)))
            })
            .collect();
        // RFC 7435: encrypt when the MX offers it, without insisting on a valid certificate.
        let config = ClientConfig {
            tls: TlsMode::Opportunistic,
            verify_certificates: false,
            credentials: None,
            ..self.settings.client.clone()
        };
        self.relay(Ok(candidates), &config, env, rcpts, body).await
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
            let mut conn = match self.pool.connect(addr, &name, config).await {
                Ok(conn) => conn,
                Err(e) => {
                    last = e.to_outcome(Some(format!("{name}[{}]:{}", addr.ip(), addr.port())));
                    continue;
                }
            };
            match conn.send(env, rcpts, body).await {
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
        let ips = self
            .resolver
            .ips(host)
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
