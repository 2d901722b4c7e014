//! `sluice queue list|show|retry|delete`: the postqueue/postsuper of this relay.
//!
//! The spool is a database that the running relay holds locked, so these tools talk to
//! the relay over its admin listener (as postqueue talks to showq), over HTTP/1.1 with
//! reqwest (the webhook's client crate): one request, its answer read to the end,
//! bounded.
//!
//! Exit status: 0 done, 1 no such message or it is being delivered, 2 usage, connection
//! or server errors.

use anyhow::{Context, anyhow, bail, ensure};
use clap::{ArgGroup, Args, Subcommand};
use serde::Deserialize;
use sluice::config::Config;
use sluice::envelope::{Envelope, QueueId, unix_ms};
use sluice::queue::QueueEntry;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub(super) mod format;
#[cfg(test)]
mod tests;

use format::{list_table, plural, show_text, summary};

/// A whole exchange with the admin listener, connect included, must fit in this.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer we read: a big queue listing, or a message at the size limit
/// escaped into JSON.
const MAX_RESPONSE: u64 = 256 << 20;

#[derive(Subcommand)]
pub enum QueueCommand {
    /// List the queued messages, postqueue -p style: id (`*` while being delivered),
    /// size, arrival time, sender, the last deferral reason in parentheses, recipients.
    List {
        #[command(flatten)]
        target: Target,
        /// Print the admin API's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Print one message: its envelope, then its content.
    Show {
        /// The queue id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Make a message, or every message, due for delivery now.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Retry {
        /// The queue id.
        id: Option<String>,
        /// Every message that is not being delivered right now.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a message that is not being delivered right now. No bounce is sent unless
    /// asked for.
    Delete {
        /// The queue id.
        id: String,
        /// Send the sender a failure DSN (status 5.0.0, "message deleted by the mail
        /// system administrator") for every recipient still pending, as the recipients'
        /// NOTIFY allows; never for a null sender.
        #[arg(long)]
        bounce: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the running relay's admin listener is.
#[derive(Args)]
pub struct Target {
    /// The relay's configuration file; its `admin` address is used.
    #[arg(long, env = "SLUICE_CONFIG", required_unless_present = "admin")]
    config: Option<PathBuf>,
    /// The admin listener's address, instead of the one in the configuration.
    #[arg(long, env = "SLUICE_ADMIN")]
    admin: Option<SocketAddr>,
    /// The file holding the admin token, sent as `Authorization: Bearer`; by default the
    /// configuration's `adminTokenFile`.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
}

pub fn run(command: QueueCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(command))
}

async fn dispatch(command: QueueCommand) -> anyhow::Result<ExitCode> {
    match command {
        QueueCommand::List { target, json } => {
            let Some(body) = call(&target, "GET", "/queue").await? else {
                return Ok(ExitCode::from(1));
            };
            if json {
                print!("{body}");
            } else {
                let entries: Vec<QueueEntry> =
                    serde_json::from_str(&body).context("unreadable queue listing")?;
                print!("{}", list_table(&entries));
            }
        }
        QueueCommand::Show { id, target } => {
            let path = format!("/queue/{}", queue_id(&id)?);
            let Some(body) = call(&target, "GET", &path).await? else {
                return Ok(ExitCode::from(1));
            };
            let shown: Shown = serde_json::from_str(&body).context("unreadable message")?;
            print!("{}", show_text(&shown, unix_ms(SystemTime::now())));
        }
        QueueCommand::Retry { id, all, target } => return retry(id, all, &target).await,
        QueueCommand::Delete { id, bounce, target } => {
            let id = queue_id(&id)?;
            let query = if bounce { "?bounce=1" } else { "" };
            let path = format!("/queue/{id}{query}");
            let Some(body) = call(&target, "DELETE", &path).await? else {
                return Ok(ExitCode::from(1));
            };
            let removed: Removed = serde_json::from_str(&body).context("unreadable answer")?;
            let bounced = match (bounce, &removed.bounce) {
                (false, _) => String::new(),
                (true, Some(dsn)) => format!("; bounce {dsn} queued"),
                (true, None) => "; no bounce (null sender, or NOTIFY excludes it)".into(),
            };
            println!("{id}: deleted ({}){bounced}", summary(&removed.envelope));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `retry ID` or `retry --all` (clap lets through exactly one of them).
async fn retry(id: Option<String>, all: bool, target: &Target) -> anyhow::Result<ExitCode> {
    match id {
        Some(id) if !all => {
            let id = queue_id(&id)?;
            if call(target, "POST", &format!("/queue/{id}/retry"))
                .await?
                .is_none()
            {
                return Ok(ExitCode::from(1));
            }
            println!("{id}: due now");
        }
        _ => {
            let Some(body) = call(target, "POST", "/queue/retry").await? else {
                return Ok(ExitCode::from(1));
            };
            let counts: RetryCounts = serde_json::from_str(&body).context("unreadable answer")?;
            println!(
                "{} due now; {} skipped (being delivered or gone)",
                plural(counts.retried, "message"),
                counts.skipped
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
pub(super) struct Shown {
    entry: QueueEntry,
    message: String,
}

#[derive(Deserialize)]
struct RetryCounts {
    retried: u64,
    skipped: u64,
}

#[derive(Deserialize)]
struct Removed {
    envelope: Envelope,
    /// The DSN queued by `--bounce`.
    #[serde(default)]
    bounce: Option<QueueId>,
}

pub(super) fn queue_id(text: &str) -> anyhow::Result<QueueId> {
    QueueId::parse(text).ok_or_else(|| anyhow!("{text:?} is not a queue id"))
}

/// Where and how to reach the admin listener.
struct Endpoint {
    addr: SocketAddr,
    token: Option<String>,
}

/// The admin listener of `target`: `--admin`, else `admin` from the configuration; the
/// token from `--admin-token-file`, else from the configuration's `adminTokenFile`.
fn endpoint(target: &Target) -> anyhow::Result<Endpoint> {
    let config = match &target.config {
        Some(path) => Some((path, Config::read(path)?)),
        None => None,
    };
    let token_file = target.admin_token_file.clone().or_else(|| {
        config
            .as_ref()
            .and_then(|(_, c)| c.admin_token_file.clone())
    });
    let token = match token_file {
        Some(path) => Some(sluice::config::read_admin_token(&path)?),
        None => None,
    };
    if let Some(addr) = target.admin {
        return Ok(Endpoint { addr, token });
    }
    let (path, config) = config.context("--config or --admin is needed")?;
    let Some(mut addr) = config.admin else {
        bail!(
            "{}: no `admin` address is configured; the queue tools reach the relay through it",
            path.display()
        );
    };
    ensure!(
        addr.port() != 0,
        "{}: the admin port is 0 (picked at start); pass the bound address with --admin",
        path.display()
    );
    // A listener on every address is reachable on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(Endpoint { addr, token })
}

/// The body of a 2xx answer; `None` (after printing the relay's reason) for 404 and 409,
/// which exit 1; an error for anything else.
pub(super) async fn call(
    target: &Target,
    method: &str,
    path: &str,
) -> anyhow::Result<Option<String>> {
    let endpoint = endpoint(target)?;
    let addr = endpoint.addr;
    let (status, body) = tokio::time::timeout(TIMEOUT, http(&endpoint, method, path))
        .await
        .map_err(|_| anyhow!("the admin listener {addr} did not answer within {TIMEOUT:?}"))??;
    match status {
        200..=299 => Ok(Some(body)),
        404 | 409 => {
            eprintln!("sluice: {}", body.trim_end());
            Ok(None)
        }
        _ => bail!(
            "{method} {path}: the relay answered {status}: {}",
            body.trim_end()
        ),
    }
}

async fn http(endpoint: &Endpoint, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let addr = endpoint.addr;
    // One request per run: no pool worth keeping, no proxy (the admin listener is
    // reached directly), no redirects (the relay sends none).
    // reqwest brings no crypto provider of its own (no aws-lc-rs): it is given ring's,
    // though the admin listener speaks plain HTTP.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("setting up the HTTP client")?;
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut request = client.request(method.clone(), format!("http://{addr}{path}"));
    if let Some(token) = &endpoint.token {
        request = request.bearer_auth(token);
    }
    let mut response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the admin listener {addr}"))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading the answer of {addr} to {method} {path}"))?
    {
        ensure!(
            (body.len() + chunk.len()) as u64 <= MAX_RESPONSE,
            "{method} {path} on {addr}: the answer exceeds {MAX_RESPONSE} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
