//! The process configuration: listeners, TLS files, the spool directory, the admin
//! address, limits, delivery, NATS and the RelayPolicy files. `sluice standalone` reads
//! it from a file; `sluice ingress` and `sluice worker` may start from one and take
//! flags and `SLUICE_…` variables over it. Which parts are needed depends on the role
//! ([`Config::validate`]). (The relay rules themselves live in RelayPolicy documents,
//! see [`crate::policy`].)

use crate::ingress::proxy::ProxyProtocol;
use crate::smtp::data::BareLineEndings;
use crate::units::{serde_duration, serde_size};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Our name in greetings and Received headers; the machine's host name by default.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Needed by the roles that accept mail (standalone, ingress).
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    pub tls: Option<TlsConfig>,
    /// The embedded spool of `sluice standalone` (without `--jetstream`).
    #[serde(default)]
    pub spool: PathBuf,
    pub admin: Option<SocketAddr>,
    /// A file holding the bearer token the admin listener's queue API (`sluice queue`)
    /// requires. Without one the queue API answers on a loopback `admin` address only.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Names (`host` or `host:port`) that the `Host` header of a queue API request may
    /// give, besides the listener's address, `localhost`, `127.0.0.1` and `[::1]`: the
    /// name of a Service in front of the admin port, for example.
    #[serde(default)]
    pub admin_allowed_hosts: Vec<String>,
    /// RelayPolicy files, for `sluice standalone`; the other roles read the compiled
    /// policy from NATS (`sluice policy push`).
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub log: LogFormat,
    /// Where to write the bound addresses (admin, then each listener by name) as JSON,
    /// once each is bound: for scripts and tests that bind port 0.
    #[serde(default)]
    pub ports_file: Option<PathBuf>,
    /// NATS, for the JetStream queue and the policy bucket (`sluice ingress`,
    /// `sluice worker`, `sluice standalone --jetstream`).
    #[serde(default)]
    pub nats: crate::nats::NatsConfig,
    /// Trace export over OTLP; the standard `OTEL_*` variables take precedence.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Trace export (`telemetry:`), for a deployment that prefers the file to the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_TRACES_SAMPLER_ARG` variables, which win
/// when set. No endpoint, no export.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP base URL, e.g. `http://collector:4318` (`/v1/traces` is added).
    pub otlp_endpoint: Option<String>,
    /// The share of new traces kept, 0.0 to 1.0 (parent-based: a trace begun upstream
    /// keeps its decision); all of them by default.
    pub sample_ratio: Option<f64>,
}

impl From<&TelemetryConfig> for crate::telemetry::otel::ExportSettings {
    fn from(config: &TelemetryConfig) -> Self {
        crate::telemetry::otel::ExportSettings {
            otlp_endpoint: config.otlp_endpoint.clone(),
            sample_ratio: config.sample_ratio,
        }
    }
}

/// Which process reads the configuration: each needs different parts of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `sluice standalone`: everything in one process, on the spool or (`--jetstream`)
    /// on NATS, with policy from files.
    Standalone { jetstream: bool },
    /// `sluice ingress`: listeners only, queue and policy in NATS.
    Ingress,
    /// `sluice worker`: delivery only, queue and policy in NATS.
    Worker,
}

impl Role {
    pub fn accepts_mail(self) -> bool {
        !matches!(self, Role::Worker)
    }

    pub fn delivers(self) -> bool {
        !matches!(self, Role::Ingress)
    }

    pub fn uses_nats(self) -> bool {
        !matches!(self, Role::Standalone { jetstream: false })
    }

    /// Policy from the configured files; otherwise from the NATS bucket.
    pub fn policy_from_files(self) -> bool {
        matches!(self, Role::Standalone { .. })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone { .. } => "standalone",
            Role::Ingress => "ingress",
            Role::Worker => "worker",
        }
    }
}

/// The delivery worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `false`: accept and queue only, deliver nothing (for trying out a policy).
    pub enabled: bool,
    /// Messages in delivery at once (their content is held in memory meanwhile).
    pub concurrency: usize,
    /// Outbound connections at once, all destinations together.
    pub max_connections: usize,
    /// Connections at once to one destination (Postfix's default is 20).
    pub per_destination: usize,
    /// The port of MX hosts; 25 except in tests.
    pub mx_port: u16,
    /// A DNS server to ask instead of those in /etc/resolv.conf.
    pub nameserver: Option<SocketAddr>,
    /// Names of this relay besides `hostname`, for MX loop detection.
    pub local_names: Vec<String>,
    /// Deliver to MX hosts at loopback, private (RFC 1918, ULA, CGNAT) and link-local
    /// addresses. Off: an MX or A record pointing there would make the relay reach inside
    /// the network it runs in. Smarthost routes and local deliveries name their hosts
    /// and are never refused; on for tests and local experiments only.
    pub allow_private_destinations: bool,
    pub retry: RetrySettings,
    /// Secrets referenced by the policy, as `{dir}/{name}/{key}`: the layout of a
    /// Kubernetes Secret mounted as a volume. The worker reads smarthost credentials and
    /// webhook keys there, the ingress its DKIM and ARC signing keys.
    pub secrets_dir: Option<PathBuf>,
    /// The key that opens smarthost credentials and webhook keys sealed by the operator
    /// in the snapshot (see `policy::sealed`); workers in Kubernetes have it, ingress
    /// pods do not.
    pub secrets_key_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for smarthosts and webhooks, beside the
    /// system's.
    pub ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub webhook_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            enabled: true,
            concurrency: 200,
            max_connections: 100,
            per_destination: 20,
            mx_port: 25,
            nameserver: None,
            local_names: Vec::new(),
            allow_private_destinations: false,
            retry: Default::default(),
            secrets_dir: None,
            secrets_key_file: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(30),
            webhook_timeout: Duration::from_secs(30),
        }
    }
}

/// `delivery.retry`: when to try a deferred message again, when to give up on it, and
/// when to warn its sender. Durations are written as in the rest of the configuration
/// (`firstRetry: 5m`, `maxLifetime: 5d`); a field left out keeps the worker's default
/// (`delivery::retry::RetrySchedule`), into which the roles turn these settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Delay after the first failed attempt; each further failure doubles it.
    #[serde(deserialize_with = "serde_duration::deserialize_option")]
    pub first_retry: Option<Duration>,
    /// The doubling stops here.
    #[serde(deserialize_with = "serde_duration::deserialize_option")]
    pub max_interval: Option<Duration>,
    /// How long after its arrival a message is given up and bounced.
    #[serde(deserialize_with = "serde_duration::deserialize_option")]
    pub max_lifetime: Option<Duration>,
    /// Relative spread of each delay (0.1: ±10 %); values outside 0..=1 are clamped.
    #[serde(deserialize_with = "some_f64")]
    pub jitter: Option<f64>,
    /// Age at which the sender gets one "delayed" DSN; absent or `null` sends none.
    #[serde(deserialize_with = "optional_duration")]
    pub delay_warning: Option<Duration>,
}

/// A number that, once written, must be one (`jitter: null` is refused as before).
fn some_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    f64::deserialize(d).map(Some)
}

/// `delayWarning: 4h`, or absent / `null` for no warning.
fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => crate::units::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// What kind of port a listener is, as the file writes it (`kind: relay`); the roles
/// turn it into the protocol's `smtp::session::ListenerKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Port 25 style: STARTTLS offered, AUTH offered only under TLS, relay rules apply.
    Relay,
    /// Port 587 style: AUTH required before MAIL.
    Submission,
    /// Port 465 style: implicit TLS, AUTH required before MAIL.
    Submissions,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub kind: ListenerRole,
    /// Allow AUTH without TLS on this listener (for example behind a TLS-terminating
    /// proxy on loopback). Off by default: passwords never cross the network in clear.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Name the SASL user in the `Received:` header of authenticated mail. By default
    /// yes on submission ports (the user's own mail), no on a relay port: the header
    /// travels to every recipient, and there it discloses a login name.
    #[serde(default)]
    pub received_auth_user: Option<bool>,
    /// Message lines that end in a bare LF instead of CRLF (RFC 5321 2.3.8): `normalize`
    /// (the default, like Postfix's `smtpd_forbid_bare_newline = normalize`) takes them
    /// as CRLF, so scripts that send LF-only text still get through, and stores CRLF;
    /// `reject` refuses the message with `550 5.5.2`. In both modes only
    /// `<CRLF>.<CRLF>` ends DATA and a bare CR is refused (see `smtp::data`).
    #[serde(default)]
    pub bare_line_endings: BareLineEndings,
    /// Behind a load balancer that speaks the PROXY protocol (HAProxy's, v1 or v2): each
    /// connection starts with a header naming the client, which then stands for the
    /// client everywhere (trusted networks, connection and AUTH limits, `Received:`,
    /// logs). Connections without a valid header are closed without a greeting.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers' addresses (CIDRs or single addresses) that may send the header;
    /// needed with `proxyProtocol`, refused without it. Others are closed at once.
    #[serde(default, deserialize_with = "deserialize_networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// How long a balancer may take to send the whole header; 5s by default.
    #[serde(default, deserialize_with = "serde_duration::deserialize_option")]
    pub proxy_header_timeout: Option<Duration>,
}

/// The default of `proxyHeaderTimeout`: balancers send the header with their first
/// segment, so seconds are generous, and an idle connection is not held long.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

impl ListenerConfig {
    /// The PROXY protocol settings, checked; `None` when the listener does not use it.
    pub fn proxy_protocol(&self) -> Result<Option<ProxyProtocol>, String> {
        let name = &self.name;
        if !self.proxy_protocol {
            if !self.trusted_proxies.is_empty() || self.proxy_header_timeout.is_some() {
                return Err(format!(
                    "listener {name}: trustedProxies and proxyHeaderTimeout only make sense with proxyProtocol: true"
                ));
            }
            return Ok(None);
        }
        if self.trusted_proxies.is_empty() {
            return Err(format!(
                "listener {name}: proxyProtocol needs trustedProxies, the addresses of the load balancers allowed to send the PROXY header"
            ));
        }
        let header_timeout = self
            .proxy_header_timeout
            .unwrap_or(DEFAULT_PROXY_HEADER_TIMEOUT);
        if header_timeout.is_zero() {
            return Err(format!(
                "listener {name}: proxyHeaderTimeout must be positive"
            ));
        }
        Ok(Some(ProxyProtocol {
            trusted: self.trusted_proxies.clone(),
            header_timeout,
        }))
    }
}

fn deserialize_networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    use serde::de::Error;
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| crate::policy::parse_network(text).map_err(D::Error::custom))
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl From<LogFormat> for crate::telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => crate::telemetry::LogFormat::Text,
            LogFormat::Json => crate::telemetry::LogFormat::Json,
        }
    }
}

/// Protocol and resource limits. Defaults follow Postfix and RFC 5321 4.5.3.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    #[serde(deserialize_with = "serde_size::deserialize")]
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Longest command line, CRLF included; longer ones get 500 5.5.2.
    pub max_command_line: usize,
    /// Longest text line in message content; RFC 5322 says 998, real mail is sloppier.
    pub max_data_line: usize,
    pub max_errors: u32,
    /// More `Received:` headers than this in a message mean a mail loop (RFC 5321 6.3):
    /// the ingress refuses it with `554 5.4.6`, and a worker bounces a queued one rather
    /// than relay it. Our own header is not counted.
    pub max_received_headers: usize,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub command_timeout: Duration,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub data_timeout: Duration,
    /// How long one write of replies may wait for the client to read: a client that
    /// never reads must not hold a session (and its memory) for ever.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub write_timeout: Duration,
    /// The longest a session may last, however busy: then `421 4.4.2` and close.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub max_session_lifetime: Duration,
    /// How long a session goes on with the policy it started with. After that it takes
    /// the policy in force at its next transaction, so that removing a user or a trusted
    /// network reaches long-lived sessions too.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub session_policy_max_age: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Connections at once from one IPv6 network of `ipv6Prefix` bits; by default
    /// `maxConnectionsPerIp`, since one host commonly has a whole /64.
    pub max_connections_per_ipv6_prefix: Option<usize>,
    /// How many leading bits of an IPv6 address name one client network (0 to 128).
    pub ipv6_prefix: u8,
    /// Message content all sessions together may hold in memory; when spent, new
    /// transactions get `452 4.3.1` and messages being received `451 4.3.1`. By default
    /// a quarter of the container's memory limit (cgroup v2 `memory.max`, else v1
    /// `memory.limit_in_bytes`), else 256Mi.
    #[serde(deserialize_with = "serde_size::deserialize_option")]
    pub memory_budget: Option<u64>,
    /// A message's content beyond this size is written to a temporary file while it is
    /// received instead of being held in memory.
    #[serde(deserialize_with = "serde_size::deserialize")]
    pub spill_threshold: u64,
    /// Where those temporary files go: by default `incoming` inside the spool directory
    /// (the same disk as the spool), or the system's temporary directory without a
    /// spool (`sluice ingress`: mount a writable volume there on a read-only root).
    pub spill_directory: Option<PathBuf>,
    /// Pause before checking the password of a client network or user name with failed
    /// AUTHs in the current window, doubled for each further failure (up to 8 times).
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub auth_failure_delay: Duration,
    /// Password checks (argon2: ~19 MiB and tens of ms of a core each) running at once;
    /// the number of cores when absent. An AUTH that waits 10 s for one gets 454 4.7.0.
    pub max_concurrent_auth_checks: Option<usize>,
    /// Failed AUTHs from one client address (IPv6: one /64) within
    /// `authFailureWindow` that lock the address out for `authLockout`; 0: never.
    pub auth_failures_per_ip: u32,
    /// The same per user name, whichever address the attempts come from; 0: never.
    pub auth_failures_per_user: u32,
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub auth_failure_window: Duration,
    /// How long a locked-out address or user name gets 454 4.7.0 without any check.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub auth_lockout: Duration,
    /// Addresses, and user names, whose failures are remembered at once (each a table of
    /// this size, ~100 bytes an entry); when full, the least recently seen unlocked
    /// entries are forgotten first.
    pub auth_failure_table_size: usize,
    /// How long SIGTERM waits for open sessions before closing them.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub shutdown_grace: Duration,
    /// How long after SIGTERM the listeners go on accepting and serving as usual while
    /// `/readyz` already answers 503, before the drain (and `shutdownGrace`) starts.
    /// Kubernetes removes a terminating pod from the Service's endpoints only seconds
    /// after sending SIGTERM; connections routed to it meanwhile would be refused
    /// without this. Roles without listeners (worker) stop at once. A second SIGTERM or
    /// SIGINT cuts the delay short.
    #[serde(deserialize_with = "serde_duration::deserialize")]
    pub drain_delay: Duration,
}

/// RFC 5321 4.5.3.1.4 allows 512 octets, plus what the advertised extensions add to MAIL:
/// SIZE 26 (RFC 1870), BODY 15, SMTPUTF8 9, RET/ENVID 100 (RFC 3461), AUTH 500 (RFC 4954).
pub const MIN_COMMAND_LINE: usize = 512 + 26 + 15 + 9 + 100 + 500;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: crate::envelope::DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: crate::envelope::DEFAULT_MAX_RECIPIENTS,
            max_command_line: 2048,
            max_data_line: 65_536,
            max_errors: 20,
            // Postfix's hopcount_limit is 50; RFC 5321 6.3 asks for at least 100.
            max_received_headers: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            write_timeout: Duration::from_secs(300),
            max_session_lifetime: Duration::from_secs(3600),
            session_policy_max_age: Duration::from_secs(120),
            max_connections: 10_000,
            max_connections_per_ip: 100,
            max_connections_per_ipv6_prefix: None,
            ipv6_prefix: 64,
            memory_budget: None,
            spill_threshold: 256 << 10,
            spill_directory: None,
            auth_failure_delay: Duration::from_secs(1),
            max_concurrent_auth_checks: None,
            auth_failures_per_ip: 10,
            auth_failures_per_user: 5,
            auth_failure_window: Duration::from_secs(600),
            auth_lockout: Duration::from_secs(900),
            auth_failure_table_size: 10_000,
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The underlying errors are part of the message rather than `source`s, so that
    // `{:#}` printing does not repeat them.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse {
        path: PathBuf,
        error: crate::yaml::YamlError,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

impl Default for Config {
    /// What the roles start from without a file: nothing but defaults.
    fn default() -> Self {
        Config {
            hostname: default_hostname(),
            listeners: Vec::new(),
            tls: None,
            spool: PathBuf::new(),
            admin: None,
            admin_token_file: None,
            admin_allowed_hosts: Vec::new(),
            policies: Vec::new(),
            limits: Limits::default(),
            delivery: DeliveryConfig::default(),
            log: LogFormat::default(),
            ports_file: None,
            nats: Default::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Config {
    /// Reads the file as `sluice standalone` needs it: see [`Config::read`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::read(path)?;
        config
            .validate(Role::Standalone { jetstream: false })
            .map_err(|problem| ConfigError::Invalid {
                path: path.to_owned(),
                problem,
            })?;
        Ok(config)
    }

    /// Reads the file without checking it against a role; relative paths in it are taken
    /// relative to the file's directory.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut config: Config =
            crate::yaml::from_str(&text).map_err(|error| ConfigError::Parse {
                path: path.to_owned(),
                error,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            // An empty path is a setting left out, not the file's directory.
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.spool);
        self.delivery.secrets_dir.iter_mut().for_each(join);
        self.delivery.secrets_key_file.iter_mut().for_each(join);
        self.delivery.ca_file.iter_mut().for_each(join);
        self.policies.iter_mut().for_each(join);
        self.ports_file.iter_mut().for_each(join);
        self.admin_token_file.iter_mut().for_each(join);
        self.limits.spill_directory.iter_mut().for_each(join);
        self.nats.resolve_paths(base);
        if let Some(tls) = self.tls.as_mut() {
            join(&mut tls.cert_file);
            join(&mut tls.key_file);
        }
    }

    /// Checks that the configuration has what `role` needs and that its limits make sense.
    pub fn validate(&self, role: Role) -> Result<(), String> {
        if role.accepts_mail() && self.listeners.is_empty() {
            return Err("at least one listener is needed".into());
        }
        if role.policy_from_files() && self.policies.is_empty() {
            return Err("at least one RelayPolicy file is needed in `policies`".into());
        }
        if !role.uses_nats() && self.spool.as_os_str().is_empty() {
            return Err("`spool` (the spool directory) is needed".into());
        }
        if role.uses_nats() {
            self.nats.urls().map_err(|e| e.to_string())?;
        }
        let implicit_tls = self
            .listeners
            .iter()
            .find(|l| l.kind == ListenerRole::Submissions);
        for listener in &self.listeners {
            listener.proxy_protocol()?;
        }
        if let (Some(l), None) = (implicit_tls, &self.tls) {
            return Err(format!(
                "listener {} is implicit TLS (submissions) but `tls` is not configured",
                l.name
            ));
        }
        if self.limits.max_command_line < MIN_COMMAND_LINE {
            return Err(format!(
                "limits.maxCommandLine must be at least {MIN_COMMAND_LINE} (RFC 5321 plus extensions)"
            ));
        }
        if self.limits.max_data_line < 1000 {
            return Err(
                "limits.maxDataLine must be at least 1000 (RFC 5322 allows 998 + CRLF)".into(),
            );
        }
        if self.limits.max_errors == 0
            || self.limits.max_connections == 0
            || self.limits.max_connections_per_ip == 0
            || self.limits.max_concurrent_auth_checks == Some(0)
            || self.limits.auth_failure_table_size == 0
        {
            return Err(
                "limits.maxErrors, maxConnections, maxConnectionsPerIp, maxConcurrentAuthChecks and authFailureTableSize must be positive".into(),
            );
        }
        self.limits.validate_memory()
    }
}

/// The least memory budget: room for one spilled message's write buffers.
pub const MIN_MEMORY_BUDGET: u64 = 128 << 10;

impl Limits {
    fn validate_memory(&self) -> Result<(), String> {
        if self.ipv6_prefix > 128 {
            return Err("limits.ipv6Prefix must be between 0 and 128".into());
        }
        if self.max_connections_per_ipv6_prefix == Some(0) {
            return Err("limits.maxConnectionsPerIpv6Prefix must be positive".into());
        }
        if self.memory_budget.is_some_and(|b| b < MIN_MEMORY_BUDGET) {
            return Err(format!(
                "limits.memoryBudget must be at least {MIN_MEMORY_BUDGET} bytes"
            ));
        }
        if self.spill_threshold == 0 {
            return Err("limits.spillThreshold must be positive".into());
        }
        Ok(())
    }
}

/// The admin token in `path`: the file's text without surrounding white space (a
/// trailing newline, as `echo` and Secrets give). An empty token is refused, as it would
/// let anyone in.
pub fn read_admin_token(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problem: "the admin token must be one word, not empty".into(),
        });
    }
    Ok(token.to_string())
}

fn default_hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    const MINIMAL: &str = "listeners: [{name: smtp, address: '127.0.0.1:2525', kind: relay}]\nspool: var/spool\npolicies: [policy.yaml]\n";

    #[test]
    fn minimal_config_gets_defaults_and_relative_paths() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.limits.max_command_line, 2048);
        assert_eq!(c.limits.max_message_size, 25 << 20);
        assert_eq!(
            c.limits.drain_delay,
            Duration::ZERO,
            "no delay unless asked"
        );
        assert!(c.spool.is_absolute() && c.spool.ends_with("var/spool"));
        assert!(c.policies[0].ends_with("policy.yaml"));
        assert_eq!(c.listeners[0].bare_line_endings, BareLineEndings::Normalize);
    }

    #[test]
    fn bare_line_endings_are_set_per_listener() {
        let c =
            load(&MINIMAL.replace("kind: relay", "kind: relay, bareLineEndings: reject")).unwrap();
        assert_eq!(c.listeners[0].bare_line_endings, BareLineEndings::Reject);
        let bad = MINIMAL.replace("kind: relay", "kind: relay, bareLineEndings: strip");
        assert!(load(&bad).unwrap_err().to_string().contains("normalize"));
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies_and_nothing_else_goes_without_it() {
        let c = load(MINIMAL).unwrap();
        assert!(
            c.listeners[0].proxy_protocol().unwrap().is_none(),
            "off by default"
        );
        let on = |extra: &str| MINIMAL.replace("kind: relay", &format!("kind: relay, {extra}"));
        let c = load(&on(
            "proxyProtocol: true, trustedProxies: [10.0.0.0/8, '192.0.2.1', 'fd00::/8']",
        ))
        .unwrap();
        let proxy = c.listeners[0].proxy_protocol().unwrap().unwrap();
        assert_eq!(proxy.header_timeout, DEFAULT_PROXY_HEADER_TIMEOUT);
        assert_eq!(proxy.trusted.len(), 3);
        assert!(proxy.trusts("10.1.2.3".parse().unwrap()));
        assert!(proxy.trusts("192.0.2.1".parse().unwrap()));
        assert!(!proxy.trusts("192.0.2.2".parse().unwrap()));
        let c = load(&on(
            "proxyProtocol: true, trustedProxies: [127.0.0.1/32], proxyHeaderTimeout: 2s",
        ))
        .unwrap();
        let proxy = c.listeners[0].proxy_protocol().unwrap().unwrap();
        assert_eq!(proxy.header_timeout, Duration::from_secs(2));
        for (extra, needle) in [
            ("proxyProtocol: true", "needs trustedProxies"),
            (
                "proxyProtocol: true, trustedProxies: []",
                "needs trustedProxies",
            ),
            (
                "trustedProxies: [10.0.0.0/8]",
                "only make sense with proxyProtocol",
            ),
            (
                "proxyHeaderTimeout: 3s",
                "only make sense with proxyProtocol",
            ),
            (
                "proxyProtocol: true, trustedProxies: [10.0.0.1/8]",
                "host bits",
            ),
            (
                "proxyProtocol: true, trustedProxies: [balancer]",
                "not a CIDR",
            ),
            (
                "proxyProtocol: true, trustedProxies: [10.0.0.0/8], proxyHeaderTimeout: 0s",
                "proxyHeaderTimeout must be positive",
            ),
        ] {
            let err = load(&on(extra)).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn limits_parse_units() {
        let c = load(&format!(
            "{MINIMAL}limits: {{maxMessageSize: 10Mi, commandTimeout: 2m, drainDelay: 5s}}\n"
        ))
        .unwrap();
        assert_eq!(c.limits.max_message_size, 10 << 20);
        assert_eq!(c.limits.command_timeout, Duration::from_secs(120));
        assert_eq!(c.limits.drain_delay, Duration::from_secs(5));
        assert_eq!(c.limits.memory_budget, None, "computed when left out");
        let c = load(&format!(
            "{MINIMAL}limits: {{memoryBudget: 64Mi, spillThreshold: 1Mi, spillDirectory: tmp, ipv6Prefix: 56}}\n"
        ))
        .unwrap();
        assert_eq!(c.limits.memory_budget, Some(64 << 20));
        assert_eq!(c.limits.spill_threshold, 1 << 20);
        assert!(c.limits.spill_directory.unwrap().is_absolute());
        assert_eq!(c.limits.ipv6_prefix, 56);
    }

    #[test]
    fn auth_brakes_have_safe_defaults_and_parse() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.limits.max_concurrent_auth_checks, None, "the cores");
        assert_eq!(
            (
                c.limits.auth_failures_per_ip,
                c.limits.auth_failures_per_user
            ),
            (10, 5)
        );
        assert_eq!(c.limits.auth_failure_window, Duration::from_secs(600));
        assert_eq!(c.limits.auth_lockout, Duration::from_secs(900));
        assert_eq!(c.listeners[0].received_auth_user, None);
        let c = load(&format!(
            "{}limits: {{maxConcurrentAuthChecks: 3, authLockout: 2m, authFailureWindow: 30s}}\n",
            MINIMAL.replace("kind: relay}", "kind: relay, receivedAuthUser: true}")
        ))
        .unwrap();
        assert_eq!(c.limits.max_concurrent_auth_checks, Some(3));
        assert_eq!(c.limits.auth_lockout, Duration::from_secs(120));
        assert_eq!(c.limits.auth_failure_window, Duration::from_secs(30));
        assert_eq!(c.listeners[0].received_auth_user, Some(true));
    }

    #[test]
    fn invalid_configs_are_refused_with_reasons() {
        for (extra, needle) in [
            ("limits: {maxCommandLine: 512}\n", "maxCommandLine"),
            ("limits: {maxDataLine: 100}\n", "maxDataLine"),
            (
                "limits: {maxConcurrentAuthChecks: 0}\n",
                "maxConcurrentAuthChecks",
            ),
            (
                "limits: {authFailureTableSize: 0}\n",
                "authFailureTableSize",
            ),
            ("limits: {ipv6Prefix: 129}\n", "ipv6Prefix"),
            ("limits: {memoryBudget: 1Ki}\n", "memoryBudget"),
            ("limits: {spillThreshold: 0}\n", "spillThreshold"),
            ("bogus: 1\n", "unknown field"),
        ] {
            let err = load(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let implicit = MINIMAL.replace("kind: relay", "kind: submissions");
        assert!(load(&implicit).unwrap_err().to_string().contains("tls"));
    }

    #[test]
    fn a_malformed_file_names_the_field_line_and_column() {
        let err = load(&format!("{MINIMAL}limits:\n  maxCommandLine: many\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sluice.yaml: limits.maxCommandLine: "),
            "{err}"
        );
        assert!(err.ends_with("at line 5, column 19"), "{err}");
        let err = load(&format!("{MINIMAL}spool: again\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate"), "{err}");
        assert!(err.ends_with("at line 4, column 1"), "{err}");
    }

    #[test]
    fn each_role_needs_its_own_parts() {
        let worker = Config::default();
        let err = worker.validate(Role::Worker).unwrap_err();
        assert!(err.contains("SLUICE_NATS_URL"), "{err}");
        let mut worker = Config::default();
        worker.nats.url = Some("nats://127.0.0.1:4222".into());
        assert_eq!(worker.validate(Role::Worker), Ok(()));
        // An ingress needs listeners, but neither spool nor policy files.
        let err = worker.validate(Role::Ingress).unwrap_err();
        assert!(err.contains("listener"), "{err}");
        let text = "listeners: [{name: smtp, address: '127.0.0.1:2525', kind: relay}]\nnats: {url: 'nats://127.0.0.1:4222', ackWait: 5s, replicas: 3, inboxPrefix: _INBOX_ingress}\n";
        let ingress = load_unchecked(text);
        assert_eq!(ingress.validate(Role::Ingress), Ok(()));
        assert_eq!(ingress.nats.ack_wait, Duration::from_secs(5));
        assert_eq!(ingress.nats.inbox_prefix.as_deref(), Some("_INBOX_ingress"));
        assert!(
            ingress.spool.as_os_str().is_empty(),
            "an absent spool stays absent"
        );
        // Standalone on JetStream needs policy files but no spool; on the spool, both.
        let err = ingress
            .validate(Role::Standalone { jetstream: true })
            .unwrap_err();
        assert!(err.contains("policies"), "{err}");
        let mut standalone = ingress.clone();
        standalone.policies = vec!["policy.yaml".into()];
        assert_eq!(
            standalone.validate(Role::Standalone { jetstream: true }),
            Ok(())
        );
        let err = standalone
            .validate(Role::Standalone { jetstream: false })
            .unwrap_err();
        assert!(err.contains("spool"), "{err}");
    }

    #[test]
    fn the_admin_token_file_is_relative_to_the_config_and_holds_one_word() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.yaml");
        let text = format!("{MINIMAL}adminTokenFile: token\nadminAllowedHosts: [admin.example]\n");
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        let token_file = c.admin_token_file.unwrap();
        assert_eq!(token_file, dir.path().join("token"));
        assert_eq!(c.admin_allowed_hosts, ["admin.example"]);
        std::fs::write(&token_file, "s3cret\n").unwrap();
        assert_eq!(read_admin_token(&token_file).unwrap(), "s3cret");
        for bad in ["", " \n", "two words\n"] {
            std::fs::write(&token_file, bad).unwrap();
            assert!(read_admin_token(&token_file).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retry_settings_are_read_with_what_is_left_out_unset() {
        const MIN: Duration = Duration::from_secs(60);
        let with = |retry: &str| load(&format!("{MINIMAL}delivery: {{retry: {retry}}}\n"));
        let c = with("{firstRetry: 1m, maxInterval: 2h, delayWarning: 4h, jitter: 0.2}").unwrap();
        let retry = c.delivery.retry;
        assert_eq!(retry.first_retry, Some(MIN));
        assert_eq!(retry.max_interval, Some(120 * MIN));
        assert_eq!(retry.max_lifetime, None);
        assert_eq!(retry.delay_warning, Some(240 * MIN));
        assert_eq!(retry.jitter, Some(0.2));
        assert_eq!(with("{}").unwrap().delivery.retry, RetrySettings::default());
        assert_eq!(
            load(MINIMAL).unwrap().delivery.retry,
            RetrySettings::default()
        );
        let null = with("{delayWarning: null}").unwrap();
        assert_eq!(null.delivery.retry.delay_warning, None);
        assert!(with("{firstRetry: 5}").is_err());
        assert!(with("{maxRetries: 5}").is_err());
        assert!(with("{jitter: null}").is_err());
    }

    #[test]
    fn listener_kinds_are_the_three_port_roles() {
        for (text, role) in [
            ("relay", ListenerRole::Relay),
            ("submission", ListenerRole::Submission),
            ("submissions", ListenerRole::Submissions),
        ] {
            let c = load_unchecked(&MINIMAL.replace("kind: relay", &format!("kind: {text}")));
            assert_eq!(c.listeners[0].kind, role);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, MINIMAL.replace("kind: relay", "kind: smtp")).unwrap();
        let error = Config::read(&path).unwrap_err().to_string();
        assert!(error.contains("unknown variant `smtp`"), "{error}");
    }

    fn load_unchecked(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, text).unwrap();
        Config::read(&path).unwrap()
    }
}
