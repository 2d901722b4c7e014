//! Command-line interface: subcommands and their arguments.

mod nats;
mod policy;
mod queue;

use clap::{Parser, Subcommand};
use sluice::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sluice", version, about = "A Kubernetes-native SMTP relay")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay in one process on the embedded spool.
    Standalone {
        /// The process configuration (listeners, TLS, spool, admin, limits, policy files).
        #[arg(long, env = "SLUICE_CONFIG")]
        config: PathBuf,
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
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Standalone { config } => {
            let config = Config::load(&config)?;
            sluice::telemetry::init_logging(config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(sluice::standalone::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => policy::run(command),
        Command::Queue { command } => queue::run(command),
    }
}
