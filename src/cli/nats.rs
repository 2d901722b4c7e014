//! The NATS flags shared by the roles and the tools that talk to JetStream; each has a
//! `SLUICE_NATS_…` variable, and each overrides the `nats:` section of the configuration.
//! And `sluice nats provision`, which sets up the queue's streams as a privileged user.

use clap::{Args, Subcommand};
use sluice::config::Config;
use sluice::nats::NatsConfig;
use sluice::queue::jetstream::JetStreamOptions;
use sluice::roles::provision::provision;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum NatsCommand {
    /// Create or update the queue's streams SLUICE_MESSAGES and SLUICE_EVENTS (with
    /// --nats-replicas), and create the consumer sluice-workers (with --nats-ack-wait;
    /// workers write theirs) and the bucket sluice-bodies if missing, as a NATS user
    /// allowed to (`sluice operator` does it at start). The ingress and worker only look
    /// them up. Exits 0 when done, 2 on errors.
    Provision {
        /// A process configuration, for its `nats` section; the flags suffice without it.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        nats: NatsArgs,
    },
}

pub fn run(command: NatsCommand) -> anyhow::Result<ExitCode> {
    let NatsCommand::Provision { config, nats } = command;
    let mut config = match config {
        Some(path) => Config::read(&path)?,
        None => Config::default(),
    };
    nats.apply(&mut config.nats);
    let options = JetStreamOptions::for_nats(&config.nats);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = config.nats.connect_now("sluice nats provision").await?;
        provision(&async_nats::jetstream::new(client.clone()), &options).await?;
        client.flush().await?;
        anyhow::Ok(())
    })?;
    println!(
        "provisioned {} (consumer {}, bucket {}) and {} with {} replicas",
        options.stream,
        options.consumer,
        options.bodies_bucket,
        sluice::events::jetstream::STREAM,
        options.replicas.max(1)
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug, Clone, Default)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated.
    #[arg(long, env = "SLUICE_NATS_URL")]
    nats_url: Option<String>,
    #[arg(long, env = "SLUICE_NATS_USER")]
    nats_user: Option<String>,
    #[arg(long, env = "SLUICE_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    #[arg(long, env = "SLUICE_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// A file holding an NKey seed.
    #[arg(long, env = "SLUICE_NATS_NKEY_FILE")]
    nats_nkey_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed).
    #[arg(long, env = "SLUICE_NATS_CREDS_FILE")]
    nats_creds_file: Option<PathBuf>,
    /// CA certificates (PEM) for the servers' certificates.
    #[arg(long, env = "SLUICE_NATS_CA_FILE")]
    nats_ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for servers that verify clients.
    #[arg(long, env = "SLUICE_NATS_CERT_FILE")]
    nats_cert_file: Option<PathBuf>,
    #[arg(long, env = "SLUICE_NATS_KEY_FILE")]
    nats_key_file: Option<PathBuf>,
    /// Refuse a server without TLS.
    #[arg(long, env = "SLUICE_NATS_TLS_REQUIRED")]
    nats_tls_required: Option<bool>,
    /// Replicas of the streams and buckets created (3 in production).
    #[arg(long, env = "SLUICE_NATS_REPLICAS")]
    nats_replicas: Option<usize>,
    /// How long a message held by a worker that died stays invisible (e.g. 30s).
    #[arg(long, env = "SLUICE_NATS_ACK_WAIT", value_parser = sluice::units::parse_duration)]
    nats_ack_wait: Option<std::time::Duration>,
    /// The prefix of this process's reply subjects (default _INBOX): one per NATS user,
    /// which may subscribe to PREFIX.> alone.
    #[arg(long, env = "SLUICE_NATS_INBOX_PREFIX")]
    nats_inbox_prefix: Option<String>,
}

impl NatsArgs {
    /// Writes the flags given over `config`.
    pub fn apply(&self, config: &mut NatsConfig) {
        fn set<T: Clone>(field: &mut Option<T>, flag: &Option<T>) {
            if flag.is_some() {
                field.clone_from(flag);
            }
        }
        set(&mut config.url, &self.nats_url);
        set(&mut config.user, &self.nats_user);
        set(&mut config.password, &self.nats_password);
        set(&mut config.token, &self.nats_token);
        set(&mut config.nkey_file, &self.nats_nkey_file);
        set(&mut config.creds_file, &self.nats_creds_file);
        set(&mut config.ca_file, &self.nats_ca_file);
        set(&mut config.cert_file, &self.nats_cert_file);
        set(&mut config.key_file, &self.nats_key_file);
        set(&mut config.inbox_prefix, &self.nats_inbox_prefix);
        if let Some(required) = self.nats_tls_required {
            config.tls_required = required;
        }
        if let Some(replicas) = self.nats_replicas {
            config.replicas = replicas;
        }
        if let Some(ack_wait) = self.nats_ack_wait {
            config.ack_wait = ack_wait;
        }
    }
}
