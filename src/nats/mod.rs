//! Connecting to NATS: server URLs, credentials and TLS as the Kubernetes roles take them
//! (`nats:` in the configuration file, or `SLUICE_NATS_…` variables), and the
//! connection's state, which the roles' readiness follows.

use crate::units::serde_duration;
use anyhow::Context;
use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to reach NATS and how to lay out what Sluice keeps there.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One or more server URLs, comma-separated (`nats://…`, `tls://…`).
    pub url: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A file holding an NKey seed (`SU…`).
    pub nkey_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and NKey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
    /// Replicas of the streams and buckets Sluice creates: 3 in production.
    pub replicas: usize,
    /// How long a message taken by a worker that died stays invisible before another
    /// worker gets it.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub ack_wait: Duration,
    /// The subject prefix of this process's reply subjects (JetStream and request
    /// replies, KV watches, object reads all use it); unset: `_INBOX`. Give each NATS
    /// user its own (the chart: `_INBOX_<role>`) and let it subscribe to that alone, so
    /// that no user can read the replies meant for another.
    pub inbox_prefix: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            user: None,
            password: None,
            token: None,
            nkey_file: None,
            creds_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_required: false,
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            inbox_prefix: None,
        }
    }
}

/// How long one attempt on one server may take, TLS and handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the connection reports, as it happens: the roles' readiness follows `Connected`
/// and `Disconnected`.
pub type StateCallback = Arc<dyn Fn(bool) + Send + Sync>;

impl NatsConfig {
    /// Makes relative file paths relative to `base` (the configuration file's directory).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for path in [
            &mut self.nkey_file,
            &mut self.creds_file,
            &mut self.ca_file,
            &mut self.cert_file,
            &mut self.key_file,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// The configured URLs; an error when there are none.
    pub fn urls(&self) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
        let text = self
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .context("no NATS server configured (SLUICE_NATS_URL, --nats-url or nats.url)")?;
        text.split(',')
            .map(|u| {
                u.trim()
                    .parse::<async_nats::ServerAddr>()
                    .with_context(|| format!("NATS URL {u:?}"))
            })
            .collect()
    }

    /// Connects in the background: the client keeps trying (here at start and after
    /// every loss) and `on_state` hears each connect and disconnect. Only bad settings
    /// (unreadable files, malformed URLs) are errors.
    pub async fn connect(
        &self,
        name: &str,
        on_state: StateCallback,
    ) -> anyhow::Result<async_nats::Client> {
        let urls = self.urls()?;
        let options = self
            .options()
            .await?
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let on_state = on_state.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            on_state(true);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from NATS; reconnecting");
                            on_state(false);
                        }
                        other => tracing::info!(event = %other, "NATS"),
                    }
                }
            });
        options
            .connect(urls)
            .await
            .context("setting up the NATS connection")
    }

    /// Connects once, now, for the tools: one run is one attempt, so an unreachable
    /// server should be a prompt error that names it, not the roles' endless retry.
    pub async fn connect_now(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let urls = self.urls()?;
        // Host and port only: a URL may carry a password.
        let shown: Vec<String> = urls
            .iter()
            .map(|u| format!("{}:{}", u.host(), u.port()))
            .collect();
        self.options()
            .await?
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(urls)
            .await
            .with_context(|| format!("cannot reach NATS at {}", shown.join(", ")))
    }

    /// Credentials and TLS, without the connection behaviour.
    async fn options(&self) -> anyhow::Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(file) = &self.creds_file {
            options = options
                .credentials_file(file)
                .await
                .with_context(|| format!("reading NATS credentials {}", file.display()))?;
        }
        if let Some(file) = &self.nkey_file {
            let seed = std::fs::read_to_string(file)
                .with_context(|| format!("reading the NKey seed {}", file.display()))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                options = options.user_and_password(user.clone(), password.clone())
            }
            (None, None) => {}
            _ => anyhow::bail!("a NATS user needs a password, and a password a user"),
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                options = options.add_client_certificate(cert.clone(), key.clone())
            }
            (None, None) => {}
            _ => {
                anyhow::bail!("a NATS client certificate needs its key, and a key its certificate")
            }
        }
        if let Some(prefix) = self.inbox_prefix.as_deref().filter(|p| !p.is_empty()) {
            anyhow::ensure!(
                is_subject_prefix(prefix),
                "the NATS inbox prefix {prefix:?} is not a subject without wildcards"
            );
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options.require_tls(self.tls_required))
    }
}

/// Whether `prefix` can start a subject: non-empty tokens without wildcards or spaces.
fn is_subject_prefix(prefix: &str) -> bool {
    prefix.split('.').all(|token| {
        !token.is_empty()
            && !token
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
    })
}

/// The stream `config.name` as it is, for a role's user (the queue's and the events'
/// streams). Missing, it is created with `config` if this user may; an existing stream is
/// never updated here: updating one is the privileged user's
/// (`crate::queue::jetstream::provision`).
pub async fn open_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    match js.get_stream(&name).await {
        Ok(stream) => return Ok(stream),
        Err(e) if !is_not_found(&e) => {
            return Err(e).with_context(|| format!("looking up the stream {name}"));
        }
        Err(_) => {}
    }
    if let Err(e) = js.create_stream(config).await {
        // Created meanwhile by another process: use it.
        if let Ok(stream) = js.get_stream(&name).await {
            return Ok(stream);
        }
        return Err(e).with_context(|| {
            format!(
                "the stream {name} does not exist and this user could not create it \
                 (a user without the permission cannot): the operator or \
                 `sluice nats provision` creates it"
            )
        });
    }
    js.get_stream(&name)
        .await
        .with_context(|| format!("opening the stream {name}"))
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_a_comma_separated_list() {
        let config = NatsConfig {
            url: Some("nats://127.0.0.1:4222, tls://127.0.0.2:4223".into()),
            ..Default::default()
        };
        assert_eq!(config.urls().unwrap().len(), 2);
        let none = NatsConfig::default();
        assert!(
            none.urls()
                .unwrap_err()
                .to_string()
                .contains("SLUICE_NATS_URL")
        );
    }

    #[tokio::test]
    async fn an_inbox_prefix_with_wildcards_is_refused() {
        for bad in ["_INBOX.>", "a..b", "x y", "_INBOX.*"] {
            let config = NatsConfig {
                url: Some("nats://127.0.0.1:1".into()),
                inbox_prefix: Some(bad.into()),
                ..Default::default()
            };
            let err = config.connect("t", Arc::new(|_| {})).await.unwrap_err();
            assert!(
                format!("{err:#}").contains("inbox prefix"),
                "{bad}: {err:#}"
            );
        }
        assert!(is_subject_prefix("_INBOX_worker"));
    }

    #[tokio::test]
    async fn half_given_credentials_are_refused() {
        let config = NatsConfig {
            url: Some("nats://127.0.0.1:1".into()),
            user: Some("u".into()),
            ..Default::default()
        };
        let err = config.connect("t", Arc::new(|_| {})).await.unwrap_err();
        assert!(format!("{err:#}").contains("password"), "{err:#}");
    }

    #[tokio::test]
    async fn connect_now_fails_at_once_naming_the_server_without_its_password() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let config = NatsConfig {
            url: Some(format!("nats://u:secret@127.0.0.1:{port}")),
            ..Default::default()
        };
        let attempt = config.connect_now("t");
        let err = tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .expect("no retrying")
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("cannot reach NATS at 127.0.0.1:{port}")),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
