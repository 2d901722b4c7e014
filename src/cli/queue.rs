//! `sluice queue list|show|retry|delete`: the postqueue/postsuper of this relay.
//!
//! The spool is a database that the running relay holds locked, so these tools talk to
//! the relay over its admin listener (as postqueue talks to showq), with a tiny HTTP/1.1
//! client: one request per connection, `Connection: close`, read to the end.
//!
//! Exit status: 0 done, 1 no such message or it is being delivered, 2 usage, connection
//! or server errors.

use anyhow::{Context, anyhow, bail, ensure};
use chrono::{Local, TimeZone};
use clap::{ArgGroup, Args, Subcommand};
use serde::Deserialize;
use sluice::config::Config;
use sluice::queue::{Envelope, QueueEntry, QueueId, unix_ms};
use sluice::smtp::address::{Body, MailParams, Recipient, Ret};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
struct Shown {
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

fn queue_id(text: &str) -> anyhow::Result<QueueId> {
    QueueId::parse(text).ok_or_else(|| anyhow!("{text:?} is not a queue id"))
}

/// The admin listener of `target`: `--admin`, else `admin` from the configuration.
fn admin_address(target: &Target) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = target.admin {
        return Ok(addr);
    }
    let path = target
        .config
        .as_deref()
        .context("--config or --admin is needed")?;
    let config = Config::load(path)?;
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
    Ok(addr)
}

/// The body of a 2xx answer; `None` (after printing the relay's reason) for 404 and 409,
/// which exit 1; an error for anything else.
async fn call(target: &Target, method: &str, path: &str) -> anyhow::Result<Option<String>> {
    let addr = admin_address(target)?;
    let (status, body) = tokio::time::timeout(TIMEOUT, http(addr, method, path))
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

async fn http(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach the admin listener {addr}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .await
        .with_context(|| format!("reading the answer of {addr}"))?;
    parse_response(&raw).with_context(|| format!("{method} {path} on {addr}"))
}

/// `status-line = HTTP-version SP status-code SP [ reason-phrase ]`, header fields, an
/// empty line, and a body as long as `Content-Length` says (RFC 9112 4, 6.3).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the answer ended inside its head")?;
    let head = std::str::from_utf8(&raw[..end]).context("the answer's head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    let status = code
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let body = &raw[end + 4..];
    let length = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if let Some(length) = length {
        ensure!(
            body.len() == length,
            "the answer was cut short: {} of {length} bytes",
            body.len()
        );
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

/// `Tue Mar  5 10:21:33`, local time, as postqueue shows arrival times.
fn local_time(ms: u64, format: &str) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .map(|t| t.format(format).to_string())
        .unwrap_or_else(|| format!("@{ms}"))
}

fn sender(envelope: &Envelope) -> String {
    match &envelope.reverse_path {
        Some(mailbox) => mailbox.to_string(),
        None => "MAILER-DAEMON".to_string(),
    }
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The width of the id column: 26 characters and the `*` of a message being delivered.
const ID_WIDTH: usize = 27;
/// Where recipients start: after id, size and arrival time.
const RECIPIENT_INDENT: usize = ID_WIDTH + 1 + 8 + 1 + 20 + 2;

/// `sluice queue list`, in the layout of `postqueue -p`.
fn list_table(entries: &[QueueEntry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out = String::new();
    let row = |out: &mut String, id: &str, size: &str, time: &str, who: &str| {
        let _ = writeln!(out, "{id:<ID_WIDTH$} {size:>8} {time:>20}  {who}");
    };
    row(
        &mut out,
        "-Queue ID-",
        "--Size--",
        "----Arrival Time----",
        "-Sender/Recipient-------",
    );
    for entry in entries {
        let envelope = &entry.envelope;
        let mark = if entry.leased { "*" } else { "" };
        let id = format!("{}{mark}", envelope.id);
        let time = local_time(envelope.received_at_ms, "%a %b %e %H:%M:%S");
        row(
            &mut out,
            &id,
            &entry.size.to_string(),
            &time,
            &sender(envelope),
        );
        if let Some(reason) = &envelope.last_error {
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "({reason})");
        }
        for recipient in &envelope.recipients {
            let _ = writeln!(out, "{:RECIPIENT_INDENT$}{}", "", recipient.address);
        }
        out.push('\n');
    }
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    let requests = entries.len() as u64;
    let _ = writeln!(
        out,
        "-- {} Kbytes in {}.",
        bytes.div_ceil(1024),
        plural(requests, "request")
    );
    out
}

/// `sluice queue show`: the envelope, one field a line, then the content.
fn show_text(shown: &Shown, now_ms: u64) -> String {
    let (entry, envelope) = (&shown.entry, &shown.entry.envelope);
    let long = "%a %b %e %H:%M:%S %Y";
    let status = if entry.leased {
        "being delivered".to_string()
    } else if envelope.attempts == 0 && entry.due_at_ms <= now_ms {
        "queued, due now".to_string()
    } else if entry.due_at_ms <= now_ms {
        "deferred, due now".to_string()
    } else {
        format!("deferred until {}", local_time(entry.due_at_ms, long))
    };
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let label = if name.is_empty() {
            String::new()
        } else {
            format!("{name}:")
        };
        let _ = writeln!(out, "{label:<15} {value}");
    };
    field("Queue ID", envelope.id.as_str());
    field("Status", &status);
    field("Arrival time", &local_time(envelope.received_at_ms, long));
    field("Size", &plural(entry.size, "byte"));
    field(
        "Client",
        &format!("{} [{}]", envelope.helo, envelope.client_ip),
    );
    if let Some(user) = &envelope.authenticated_user {
        field("Authenticated", user);
    }
    field("Sender", &format!("<{}>", sender_path(envelope)));
    let params = mail_params(&envelope.params);
    if !params.is_empty() {
        field("Parameters", &params);
    }
    for (i, recipient) in envelope.recipients.iter().enumerate() {
        field(if i == 0 { "Recipients" } else { "" }, &rcpt(recipient));
    }
    field("Attempts", &envelope.attempts.to_string());
    if let Some(reason) = &envelope.last_error {
        field("Last error", reason);
    }
    if let Some(ms) = envelope.delay_warned_at_ms {
        field("Delay warned", &local_time(ms, long));
    }
    out.push_str("\n*** MESSAGE CONTENTS ***\n");
    out.push_str(&shown.message.replace("\r\n", "\n"));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn sender_path(envelope: &Envelope) -> String {
    envelope
        .reverse_path
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The MAIL FROM parameters as they were on the wire (xtext decoded).
fn mail_params(p: &MailParams) -> String {
    let mut out = Vec::new();
    if let Some(size) = p.size {
        out.push(format!("SIZE={size}"));
    }
    match p.body {
        Some(Body::SevenBit) => out.push("BODY=7BIT".into()),
        Some(Body::EightBitMime) => out.push("BODY=8BITMIME".into()),
        None => {}
    }
    if p.smtputf8 {
        out.push("SMTPUTF8".into());
    }
    match p.ret {
        Some(Ret::Full) => out.push("RET=FULL".into()),
        Some(Ret::Headers) => out.push("RET=HDRS".into()),
        None => {}
    }
    if let Some(envid) = &p.envid {
        out.push(format!("ENVID={envid}"));
    }
    if let Some(auth) = &p.auth {
        out.push(format!("AUTH=<{auth}>"));
    }
    out.join(" ")
}

/// A forward-path with its DSN parameters (RFC 3461).
fn rcpt(r: &Recipient) -> String {
    let mut out = format!("<{}>", r.address);
    if let Some(n) = r.notify {
        let conditions: Vec<&str> = [
            (n.never, "NEVER"),
            (n.success, "SUCCESS"),
            (n.failure, "FAILURE"),
            (n.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        let _ = write!(out, " NOTIFY={}", conditions.join(","));
    }
    if let Some(o) = &r.orcpt {
        let _ = write!(out, " ORCPT={};{}", o.addr_type, o.address);
    }
    out
}

/// One line about a deleted message: who sent it to whom.
fn summary(envelope: &Envelope) -> String {
    let to: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| format!("<{}>", r.address))
        .collect();
    format!("from <{}> to {}", sender_path(envelope), to.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::smtp::address::{Mailbox, Notify, Orcpt};

    fn entry(id: &str, sender: Option<Mailbox>, recipients: &[&str]) -> QueueEntry {
        let recipients = recipients
            .iter()
            .map(|r| Recipient {
                address: Mailbox::new(*r, "example.net"),
                notify: None,
                orcpt: None,
            })
            .collect();
        QueueEntry {
            envelope: Envelope {
                id: QueueId::parse(id).unwrap(),
                reverse_path: sender,
                params: MailParams::default(),
                recipients,
                received_at_ms: 1_700_000_000_000,
                client_ip: "192.0.2.7".parse().unwrap(),
                helo: "client.example".into(),
                authenticated_user: None,
                attempts: 0,
                last_error: None,
                delay_warned_at_ms: None,
            },
            size: 1500,
            due_at_ms: 1_700_000_000_000,
            leased: false,
        }
    }

    #[test]
    fn list_is_laid_out_like_postqueue() {
        let mut deferred = entry(
            "01HF0000000000000000000001",
            Some(Mailbox::new("a", "sender.example")),
            &["b", "c"],
        );
        deferred.envelope.attempts = 2;
        deferred.envelope.last_error = Some("451 4.7.1 greylisted,\r\n try later".into());
        let mut active = entry("01HF0000000000000000000002", None, &["d"]);
        active.leased = true;
        active.size = 600;
        let table = list_table(&[deferred, active]);
        let time = local_time(1_700_000_000_000, "%a %b %e %H:%M:%S");
        let indent = " ".repeat(RECIPIENT_INDENT);
        let expected = format!(
            "-Queue ID-                  --Size-- ----Arrival Time----  -Sender/Recipient-------\n\
             01HF0000000000000000000001      1500  {time}  a@sender.example\n\
             (451 4.7.1 greylisted, try later)\n\
             {indent}b@example.net\n\
             {indent}c@example.net\n\
             \n\
             01HF0000000000000000000002*      600  {time}  MAILER-DAEMON\n\
             {indent}d@example.net\n\
             \n\
             -- 3 Kbytes in 2 requests.\n"
        );
        assert_eq!(table, expected);
        assert_eq!(list_table(&[]), "Mail queue is empty\n");
    }

    #[test]
    fn show_prints_the_envelope_then_the_content() {
        let mut e = entry(
            "01HF0000000000000000000003",
            Some(Mailbox::new("a", "s.example")),
            &["b", "c"],
        );
        e.envelope.params.size = Some(42);
        e.envelope.params.ret = Some(Ret::Headers);
        e.envelope.recipients[0].notify = Some(Notify {
            never: false,
            success: true,
            failure: true,
            delay: false,
        });
        e.envelope.recipients[0].orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "B@Example.NET".into(),
        });
        e.envelope.attempts = 1;
        e.envelope.last_error = Some("451 later".into());
        e.due_at_ms += 60_000;
        let shown = Shown {
            entry: e,
            message: "Subject: hi\r\n\r\nbody\r\n".into(),
        };
        let text = show_text(&shown, 1_700_000_000_000);
        for line in [
            "Queue ID:       01HF0000000000000000000003\n",
            "Status:         deferred until ",
            "Size:           1500 bytes\n",
            "Client:         client.example [192.0.2.7]\n",
            "Sender:         <a@s.example>\n",
            "Parameters:     SIZE=42 RET=HDRS\n",
            "Recipients:     <b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@Example.NET\n",
            "                <c@example.net>\n",
            "Attempts:       1\n",
            "Last error:     451 later\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        assert!(
            text.ends_with("\n*** MESSAGE CONTENTS ***\nSubject: hi\n\nbody\n"),
            "{text}"
        );
    }

    #[test]
    fn responses_are_checked() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        assert_eq!(parse_response(ok).unwrap(), (200, "abc".into()));
        let no_length = b"HTTP/1.0 404 Not Found\r\n\r\nno message X\n";
        assert_eq!(parse_response(no_length).unwrap().0, 404);
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",
            b"SMTP 220 hello\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
