//! Command-line interface: subcommands and their arguments.

mod dkim;
mod nats;
mod operator;
mod policy;
mod quarantine;
mod queue;
mod role;

use clap::{Parser, Subcommand};
use role::{CommonArgs, DnsArgs, IngressArgs, SecretsArgs, WorkerArgs};
use sluice::config::{Config, Role};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sluice", version, about = "A Kubernetes-native SMTP relay")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay in one process on the embedded spool (or on JetStream with
    /// --jetstream), policy from the configured files.
    Standalone {
        #[command(flatten)]
        common: CommonArgs,
        /// Queue in NATS JetStream (nats.url, --nats-url or SLUICE_NATS_URL) instead of
        /// the embedded spool.
        #[arg(long, env = "SLUICE_JETSTREAM")]
        jetstream: bool,
        #[command(flatten)]
        ingress: IngressArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        dns: DnsArgs,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Accept mail and publish it to JetStream; policy from the NATS bucket sluice-policy.
    Ingress {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        ingress: IngressArgs,
        #[command(flatten)]
        dns: DnsArgs,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Deliver mail from JetStream; policy from the NATS bucket sluice-policy.
    Worker {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        dns: DnsArgs,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Compile the RelayPolicy resources of the cluster, and the Secrets they reference,
    /// into the policy snapshot in NATS that ingress and worker pods follow; report on
    /// each policy in its status.
    Operator {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        operator: operator::OperatorArgs,
    },
    /// Set up the queue's streams in NATS (for installs without `sluice operator`).
    Nats {
        #[command(subcommand)]
        command: nats::NatsCommand,
    },
    /// DKIM keys for the policy's `signing:` section.
    Dkim {
        #[command(subcommand)]
        command: dkim::DkimCommand,
    },
    /// Inspect and prepare RelayPolicy rules.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Inspect and manage the queue of a running `sluice standalone`, through its admin
    /// listener. Exits 0 when done, 1 when there is no such message or it is being
    /// delivered, 2 on usage or connection errors.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Inspect, release and delete the messages that a quarantine rule held, through the
    /// admin listener of `sluice standalone` or a worker. Exits 0 when done, 1 when
    /// there is no such held message, 2 on usage or connection errors.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// Print the RelayPolicy CustomResourceDefinition (YAML) generated from the policy
    /// model, as `crds/relaypolicies.sluice.dev.yaml` holds it.
    Crd,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Standalone {
            common,
            jetstream,
            ingress,
            worker,
            dns,
            secrets,
        } => {
            let role = Role::Standalone { jetstream };
            let mut config = common.config()?;
            ingress.apply(&mut config);
            worker.apply(&mut config);
            dns.apply(&mut config);
            secrets.apply(&mut config);
            serve(config, role)
        }
        Command::Ingress {
            common,
            ingress,
            dns,
            secrets,
        } => {
            let mut config = common.config()?;
            ingress.apply(&mut config);
            dns.apply(&mut config);
            secrets.apply(&mut config);
            serve(config, Role::Ingress)
        }
        Command::Worker {
            common,
            worker,
            dns,
            secrets,
        } => {
            let mut config = common.config()?;
            worker.apply(&mut config);
            dns.apply(&mut config);
            secrets.apply(&mut config);
            serve(config, Role::Worker)
        }
        Command::Operator { common, operator } => {
            let config = common.config()?;
            sluice::telemetry::init_logging(config.log.into());
            let options = sluice::roles::operator::OperatorOptions {
                namespace: operator.namespace,
                policy_namespaces: operator.policy_namespaces,
                privileged_namespaces: operator.privileged_namespaces,
                secrets_key_file: operator.secrets_key_file,
                identity: operator.identity,
                lease_name: operator.lease_name,
                leader_election: !operator.no_leader_election,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(sluice::roles::operator::run(config, options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Nats { command } => nats::run(command),
        Command::Dkim { command } => dkim::run(command),
        Command::Policy { command } => policy::run(command),
        Command::Queue { command } => queue::run(command),
        Command::Quarantine { command } => quarantine::run(command),
        Command::Crd => {
            print!("{}", sluice::operator::crd::yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a role until it is stopped.
fn serve(config: Config, role: Role) -> anyhow::Result<ExitCode> {
    config.validate(role).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The exporter's batch processor runs on the runtime, so it starts inside it.
    let export = {
        let _inside = runtime.enter();
        sluice::telemetry::otel::Export::start(service_name(role), &(&config.telemetry).into())
    };
    let (export, failed) = match export {
        Ok(export) => (export, None),
        Err(e) => (None, Some(e)),
    };
    sluice::telemetry::init_logging_with(config.log.into(), export.as_ref());
    if let Some(e) = failed {
        tracing::error!(error = %e, "trace export is off: the exporter could not start");
    }
    let result = runtime.block_on(sluice::roles::run(config, role));
    // After the drain, with the runtime still up: the last spans go out before exit.
    if let Some(export) = export {
        export.shutdown();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The service name of a role's spans, unless `OTEL_SERVICE_NAME` says otherwise.
fn service_name(role: Role) -> &'static str {
    match role {
        Role::Standalone { .. } => "sluice",
        Role::Ingress => "sluice-ingress",
        Role::Worker => "sluice-worker",
    }
}
