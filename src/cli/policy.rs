//! `sluice policy check` (would this be relayed, and by which rule),
//! `sluice policy hash-password` (a hash for the `passwordHash` field),
//! `sluice policy push` (the compiled policy into NATS, for the Kubernetes roles) and
//! `sluice policy status` (which snapshot is in force there, and who wrote it).

use super::nats::NatsArgs;
use clap::Subcommand;
use sluice::config::Config;
use sluice::envelope::SenderTrust;
use sluice::policy::bucket::{BUCKET, PolicyBucket, Writer, WriterKind};
use sluice::policy::{ClientInfo, PolicySnapshot, hash_password};
use sluice::smtp::address::{Mailbox, ReversePath};
use sluice::smtp::command::{Command, parse_command};
use std::io::BufRead;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod status;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print the decision for one client, sender and recipient, and the rule that made it.
    /// Exits 0 when the mail would be accepted, 1 when refused.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// The client's IP address.
        #[arg(long)]
        client: IpAddr,
        /// The authenticated user, if the client would authenticate.
        #[arg(long)]
        user: Option<String>,
        /// The reverse-path (MAIL FROM); empty for the null sender.
        #[arg(long)]
        from: String,
        /// The forward-path (RCPT TO).
        #[arg(long)]
        to: String,
    },
    /// Read a password from standard input (one line) and print its argon2id hash.
    HashPassword,
    /// Compile the policy files of a configuration and write the snapshot to the NATS KV
    /// bucket `sluice-policy`, which the ingress and worker pods follow. Exits 0 when
    /// written, 1 when the policy is invalid (nothing is written), 2 when NATS cannot be
    /// reached or refuses the write.
    Push {
        /// The process configuration: its `policies` and its `nats` section.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Print the snapshot in force in the NATS KV bucket `sluice-policy`: its revision,
    /// who wrote it and when, its mode, and its policies with their users and domains.
    /// Exits 0 when a snapshot is in force, 1 when the bucket holds none, 2 when NATS
    /// cannot be reached.
    Status {
        /// A process configuration, for its `nats` section; the flags suffice without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nats: NatsArgs,
    },
}

pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check {
            config,
            client,
            user,
            from,
            to,
        } => check(&config, client, user, &from, &to),
        PolicyCommand::HashPassword => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!("{}", hash_password(password));
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Push { config, nats } => push(&config, &nats),
        PolicyCommand::Status { config, json, nats } => status::run(config.as_deref(), &nats, json),
    }
}

/// The configuration as far as the policy tools need it: its RelayPolicy files (and
/// NATS), whatever role it was written for.
fn policy_config(path: &Path) -> anyhow::Result<Config> {
    let config = Config::read(path)?;
    anyhow::ensure!(
        !config.policies.is_empty(),
        "{}: `policies` names no RelayPolicy file",
        path.display()
    );
    Ok(config)
}

fn push(config: &Path, nats: &NatsArgs) -> anyhow::Result<ExitCode> {
    let mut config = policy_config(config)?;
    nats.apply(&mut config.nats);
    // Compiled before NATS is asked anything: an invalid policy writes nothing.
    let policy = match PolicySnapshot::load_files(&config.policies) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("sluice: invalid policy, nothing pushed: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let writer = Writer::now(
        WriterKind::PolicyPush,
        gethostname::gethostname().to_string_lossy(),
    );
    let kv_revision = runtime.block_on(async {
        let client = config.nats.connect_now("sluice policy push").await?;
        let js = async_nats::jetstream::new(client);
        PolicyBucket::open(&js, config.nats.replicas)
            .await?
            .push(&policy, &writer)
            .await
    })?;
    println!(
        "pushed policy revision {} to {BUCKET} (KV revision {kv_revision})",
        policy.revision()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(
    config: &Path,
    client: IpAddr,
    user: Option<String>,
    from: &str,
    to: &str,
) -> anyhow::Result<ExitCode> {
    let config = policy_config(config)?;
    let policy = PolicySnapshot::load_files(&config.policies)?;
    let reverse_path = parse_reverse_path(from)?;
    let forward_path = parse_forward_path(to)?;
    let mut accepted = true;
    if let Some(user) = &user {
        let sender = policy.sender_decision(user, &reverse_path);
        println!("sender: {sender}");
        accepted &= sender.is_allowed();
    }
    let info = ClientInfo {
        ip: client,
        authenticated_user: user,
    };
    let trust = if info.authenticated_user.is_some() {
        SenderTrust::Authenticated
    } else if policy.trusted_network(client).is_some() {
        SenderTrust::TrustedNetwork
    } else {
        SenderTrust::Untrusted
    };
    let decision = policy.relay_decision(&info, &forward_path);
    println!("recipient: {decision}");
    accepted &= decision.is_accepted();
    for check in policy.filters() {
        let runs = if check.exempts(trust) {
            "skipped: the sender is exempt"
        } else {
            "runs at end of data"
        };
        println!("filter: {}: {runs}", check.describe());
    }
    if let Some(dnsbl) = policy.dnsbl() {
        let asked = if dnsbl.exempts(trust) {
            "skipped: the client is exempt"
        } else {
            "asked at the first RCPT"
        };
        println!("dnsbl: {}: {asked}", dnsbl.describe());
    }
    if let Some(signing) = policy.signing() {
        let signs = match trust {
            SenderTrust::Untrusted => {
                "not signed: the sender is neither authenticated nor in a trusted network"
            }
            _ => "signs mail from this domain or its subdomains",
        };
        for key in &signing.dkim {
            println!("dkim: {}: {signs}", key.describe());
        }
        if let Some(arc) = &signing.arc {
            println!("arc: {}", arc.describe());
        }
    }
    Ok(if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Addresses go through the same parser as MAIL and RCPT on the wire.
fn parse_reverse_path(text: &str) -> anyhow::Result<ReversePath> {
    let line = format!("MAIL FROM:<{}> SMTPUTF8", text.trim_matches(['<', '>']));
    match parse_command(line.as_bytes()) {
        Ok(Command::Mail { reverse_path, .. }) => Ok(reverse_path),
        _ => anyhow::bail!("invalid sender address {text:?}"),
    }
}

fn parse_forward_path(text: &str) -> anyhow::Result<Mailbox> {
    let line = format!("RCPT TO:<{}>", text.trim_matches(['<', '>']));
    match parse_command(line.as_bytes()) {
        Ok(Command::Rcpt { forward_path, .. }) => Ok(forward_path),
        _ => anyhow::bail!("invalid recipient address {text:?}"),
    }
}
