//! `sluice standalone`, `sluice ingress` and `sluice worker`: the configuration file
//! (optional for the Kubernetes roles) with flags and `SLUICE_…` variables over it, as a
//! pod spec sets them.

use super::nats::NatsArgs;
use clap::Args;
use sluice::config::ListenerRole;
use sluice::config::{Config, ListenerConfig, LogFormat, TlsConfig};
use sluice::smtp::data::BareLineEndings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What every role takes.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// The process configuration file; flags and variables override what it says.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Our name in greetings, Received headers and bounces.
    #[arg(long, env = "SLUICE_HOSTNAME")]
    hostname: Option<String>,
    /// The admin listener (/healthz, /readyz, /metrics, /queue), e.g. 0.0.0.0:9090.
    #[arg(long, env = "SLUICE_ADMIN")]
    admin: Option<SocketAddr>,
    /// A file holding the bearer token that the admin listener's queue API requires
    /// (`sluice queue --admin-token-file`). Without one the queue API answers on a
    /// loopback admin address only.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "SLUICE_LOG", value_parser = parse_log)]
    log: Option<LogFormat>,
    /// How long SIGTERM waits for sessions and deliveries to finish (e.g. 25s).
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE", value_parser = sluice::units::parse_duration)]
    shutdown_grace: Option<Duration>,
    /// How long SIGTERM keeps the listeners serving, already unready (/readyz 503),
    /// before the drain starts: the time Kubernetes takes to take the pod out of the
    /// Service (e.g. 5s). A second SIGTERM cuts it short. Default 0s.
    #[arg(long, env = "SLUICE_DRAIN_DELAY", value_parser = sluice::units::parse_duration)]
    drain_delay: Option<Duration>,
    /// The largest message accepted (e.g. 25Mi). Workers take it too: they refuse a
    /// queued message beyond it (plus room for a bounce), so give both roles the same.
    #[arg(long, env = "SLUICE_MAX_MESSAGE_SIZE", value_parser = sluice::units::parse_size)]
    max_message_size: Option<u64>,
    /// Write the bound addresses here as JSON (for scripts binding port 0).
    #[arg(long, env = "SLUICE_PORTS_FILE")]
    ports_file: Option<PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
}

/// The listeners and TLS of the roles that accept mail.
#[derive(Args, Debug, Clone, Default)]
pub struct IngressArgs {
    /// The relay listener (port 25 style: MX traffic and trusted clients).
    #[arg(long, env = "SLUICE_SMTP")]
    smtp: Option<SocketAddr>,
    /// The submission listener (port 587 style: STARTTLS and AUTH).
    #[arg(long, env = "SLUICE_SUBMISSION")]
    submission: Option<SocketAddr>,
    /// The implicit-TLS submission listener (port 465 style).
    #[arg(long, env = "SLUICE_SUBMISSIONS")]
    submissions: Option<SocketAddr>,
    /// Certificate chain (PEM), with --tls-key.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// DNS, for every role that looks names up: MX and addresses for delivery, sender
/// authentication and DNSBLs in the ingress.
#[derive(Args, Debug, Clone, Default)]
pub struct DnsArgs {
    /// A DNS server to ask instead of those in /etc/resolv.conf.
    #[arg(long, env = "SLUICE_NAMESERVER")]
    nameserver: Option<SocketAddr>,
}

impl DnsArgs {
    pub fn apply(&self, config: &mut Config) {
        if self.nameserver.is_some() {
            config.delivery.nameserver = self.nameserver;
        }
    }
}

/// The delivery settings of the roles that deliver.
#[derive(Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// Messages in delivery at once.
    #[arg(long, env = "SLUICE_CONCURRENCY")]
    concurrency: Option<usize>,
    /// The port of MX hosts (25; another only for tests).
    #[arg(long, env = "SLUICE_MX_PORT")]
    mx_port: Option<u16>,
    /// Deliver to MX hosts at loopback and private addresses (tests, local experiments).
    #[arg(long, env = "SLUICE_ALLOW_PRIVATE_DESTINATIONS")]
    allow_private_destinations: bool,
    /// The key file that opens the smarthost credentials and webhook keys the operator
    /// sealed into the policy snapshot (at least 32 bytes).
    #[arg(long, env = "SLUICE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for smarthosts and webhooks.
    #[arg(long, env = "SLUICE_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// Where the Secrets the policy references are mounted: the worker's smarthost
/// credentials and webhook keys, the ingress's DKIM and ARC signing keys.
#[derive(Args, Debug, Clone, Default)]
pub struct SecretsArgs {
    /// Secrets referenced by the policy, as DIR/NAME/KEY (a mounted Secret).
    #[arg(long, env = "SLUICE_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
}

impl SecretsArgs {
    pub fn apply(&self, config: &mut Config) {
        if self.secrets_dir.is_some() {
            config.delivery.secrets_dir.clone_from(&self.secrets_dir);
        }
    }
}

fn parse_log(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{other:?}: expected text or json")),
    }
}

fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *field = value.clone();
    }
}

impl CommonArgs {
    /// The file (or the defaults), with the flags over it.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::read(path)?,
            None => Config::default(),
        };
        set(&mut config.hostname, &self.hostname);
        set(&mut config.log, &self.log);
        set(&mut config.limits.shutdown_grace, &self.shutdown_grace);
        set(&mut config.limits.drain_delay, &self.drain_delay);
        set(&mut config.limits.max_message_size, &self.max_message_size);
        if self.admin.is_some() {
            config.admin = self.admin;
        }
        if self.admin_token_file.is_some() {
            config.admin_token_file.clone_from(&self.admin_token_file);
        }
        if self.ports_file.is_some() {
            config.ports_file.clone_from(&self.ports_file);
        }
        self.nats.apply(&mut config.nats);
        Ok(config)
    }
}

impl IngressArgs {
    pub fn apply(&self, config: &mut Config) {
        for (name, kind, address) in [
            ("smtp", ListenerRole::Relay, self.smtp),
            ("submission", ListenerRole::Submission, self.submission),
            ("submissions", ListenerRole::Submissions, self.submissions),
        ] {
            let Some(address) = address else { continue };
            // A flag replaces the file's listener of the same name.
            config.listeners.retain(|l| l.name != name);
            config.listeners.push(ListenerConfig {
                name: name.into(),
                address,
                kind,
                allow_plaintext_auth: false,
                received_auth_user: None,
                bare_line_endings: BareLineEndings::default(),
                proxy_protocol: false,
                trusted_proxies: Vec::new(),
                proxy_header_timeout: None,
            });
        }
        if let (Some(cert_file), Some(key_file)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            });
        }
    }
}

impl WorkerArgs {
    pub fn apply(&self, config: &mut Config) {
        let delivery = &mut config.delivery;
        set(&mut delivery.concurrency, &self.concurrency);
        set(&mut delivery.mx_port, &self.mx_port);
        if self.allow_private_destinations {
            delivery.allow_private_destinations = true;
        }
        if self.secrets_key_file.is_some() {
            delivery.secrets_key_file.clone_from(&self.secrets_key_file);
        }
        if self.ca_file.is_some() {
            delivery.ca_file.clone_from(&self.ca_file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Ingress {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        ingress: IngressArgs,
    }

    #[test]
    fn flags_go_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.yaml");
        std::fs::write(
            &file,
            "hostname: from-file\nlisteners: [{name: smtp, address: '127.0.0.1:25', kind: relay}, {name: other, address: '127.0.0.1:26', kind: relay}]\nnats: {url: 'nats://file:4222', replicas: 3}\n",
        )
        .unwrap();
        let args = Ingress::try_parse_from([
            "ingress",
            "--config",
            file.to_str().unwrap(),
            "--smtp",
            "127.0.0.1:2525",
            "--nats-url",
            "nats://flag:4222",
            "--max-message-size",
            "10Mi",
            "--drain-delay",
            "5s",
            "--nats-inbox-prefix",
            "_INBOX_ingress",
        ])
        .unwrap();
        let mut config = args.common.config().unwrap();
        args.ingress.apply(&mut config);
        assert_eq!(config.hostname, "from-file");
        assert_eq!(config.nats.url.as_deref(), Some("nats://flag:4222"));
        assert_eq!(config.nats.inbox_prefix.as_deref(), Some("_INBOX_ingress"));
        assert_eq!(
            config.nats.replicas, 3,
            "what no flag says stays as the file says"
        );
        let smtp: Vec<_> = config
            .listeners
            .iter()
            .filter(|l| l.name == "smtp")
            .collect();
        assert_eq!(
            smtp.len(),
            1,
            "the flag replaces the file's listener of that name"
        );
        assert_eq!(smtp[0].address, "127.0.0.1:2525".parse().unwrap());
        assert!(config.listeners.iter().any(|l| l.name == "other"));
        assert_eq!(config.limits.max_message_size, 10 << 20);
        assert_eq!(config.limits.drain_delay, Duration::from_secs(5));
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let err = Ingress::try_parse_from(["ingress", "--tls-cert", "cert.pem"])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--tls-key"), "{err}");
    }
}
