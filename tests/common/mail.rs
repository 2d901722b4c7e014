//! Mail for the multi-process tests: messages with unique Message-IDs, an SMTP client
//! that reports failures instead of panicking (servers die under it on purpose), a load
//! of concurrent clients that fail over between ingresses, and the bookkeeping that
//! compares what got 250 with what reached the sink.

use super::sink::Sink;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

pub const FROM: &str = "load@client.test";
pub const TO: &str = "inbox@sink.test";

/// Longer than any reply the relay owes, the 451 after a JetStream publish timeout
/// included, under the load of several debug-build processes.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A small message whose Message-ID is `<id>`.
pub fn message(id: &str) -> Vec<u8> {
    let mut text =
        format!("From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: load {id}\r\nMessage-ID: <{id}>\r\n\r\n");
    for line in 0..8 {
        text.push_str(&format!(
            "line {line} of {id}: the quick brown fox jumps over the lazy dog\r\n"
        ));
    }
    text.into_bytes()
}

/// The Message-ID of a message as the sink got it (after the relay's Received header).
pub fn message_id(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let header_end = text.find("\r\n\r\n").unwrap_or(text.len());
    text[..header_end].split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("message-id").then(|| {
            value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// How many times the sink got each Message-ID.
pub fn sink_ids(sink: &Sink) -> HashMap<String, usize> {
    let received = sink.received.lock().unwrap();
    let mut ids = HashMap::new();
    for t in received.iter() {
        let id = message_id(&t.data).unwrap_or_else(|| "(no Message-ID)".into());
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

/// Waits (bounded) until the sink has every id of `wanted`; returns the ids still missing
/// (empty on success) and the sink's counts.
pub async fn wait_delivered(
    sink: &Sink,
    wanted: &[String],
    within: Duration,
) -> (Vec<String>, HashMap<String, usize>) {
    let deadline = Instant::now() + within;
    loop {
        let seen = sink_ids(sink);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            return (missing, seen);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Message-IDs the sink got more than once, summed over their extra copies.
pub fn duplicates(seen: &HashMap<String, usize>) -> usize {
    seen.values().map(|n| n.saturating_sub(1)).sum()
}

/// What became of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 250 at the end of data: the relay owes delivery.
    Accepted,
    /// A reply other than the expected one (421 at connect, 451 after data, …).
    Refused(String),
    /// No reply: connection refused, reset or closed, or a timeout.
    Broken(String),
}

/// One SMTP session that reports every failure as a value.
pub struct Session {
    io: BufReader<TcpStream>,
}

impl Session {
    /// Connects (from `source`, a loopback address, if given), reads the greeting and
    /// says EHLO.
    pub async fn open(addr: SocketAddr, source: Option<IpAddr>) -> Result<Session, Outcome> {
        let connect = async {
            let socket = TcpSocket::new_v4()?;
            if let Some(ip) = source {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            socket.connect(addr).await
        };
        let tcp = match tokio::time::timeout(REPLY_TIMEOUT, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(Outcome::Broken(format!("connect: {e}"))),
            Err(_) => return Err(Outcome::Broken("connect timed out".into())),
        };
        let mut session = Session {
            io: BufReader::new(tcp),
        };
        session.expect("220").await?;
        session.command("EHLO client.test", "250").await?;
        Ok(session)
    }

    /// Reads one (multi-line) reply; its last line.
    pub async fn reply(&mut self) -> Result<String, Outcome> {
        loop {
            let mut line = String::new();
            match tokio::time::timeout(REPLY_TIMEOUT, self.io.read_line(&mut line)).await {
                Err(_) => return Err(Outcome::Broken("reply timed out".into())),
                Ok(Err(e)) => return Err(Outcome::Broken(format!("read: {e}"))),
                Ok(Ok(0)) => return Err(Outcome::Broken("connection closed".into())),
                Ok(Ok(_)) => {}
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line.trim_end().to_string());
            }
        }
    }

    async fn expect(&mut self, code: &str) -> Result<String, Outcome> {
        let reply = self.reply().await?;
        match reply.starts_with(code) {
            true => Ok(reply),
            false => Err(Outcome::Refused(reply)),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Outcome> {
        self.io
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|e| Outcome::Broken(format!("write: {e}")))
    }

    pub async fn command(&mut self, line: &str, expect: &str) -> Result<String, Outcome> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.expect(expect).await
    }

    /// MAIL, RCPT and DATA up to the 354: the content comes next.
    pub async fn start_data(&mut self, from: &str, to: &str) -> Result<(), Outcome> {
        self.command(&format!("MAIL FROM:<{from}>"), "250").await?;
        self.command(&format!("RCPT TO:<{to}>"), "250").await?;
        self.command("DATA", "354").await?;
        Ok(())
    }

    /// Ends the content (which must end in CRLF and hold no line starting with a dot)
    /// and reads the verdict.
    pub async fn finish_data(&mut self) -> Outcome {
        if let Err(outcome) = self.write(b".\r\n").await {
            return outcome;
        }
        match self.expect("250").await {
            Ok(_) => Outcome::Accepted,
            Err(outcome) => outcome,
        }
    }

    /// One whole transaction.
    pub async fn send(&mut self, from: &str, to: &str, content: &[u8]) -> Outcome {
        if let Err(outcome) = self.start_data(from, to).await {
            return outcome;
        }
        if let Err(outcome) = self.write(content).await {
            return outcome;
        }
        self.finish_data().await
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT", "221").await;
    }
}

/// One message in a session of its own.
pub async fn send_one(addr: SocketAddr, source: Option<IpAddr>, content: &[u8]) -> Outcome {
    let mut session = match Session::open(addr, source).await {
        Ok(session) => session,
        Err(outcome) => return outcome,
    };
    let outcome = session.send(FROM, TO, content).await;
    if outcome == Outcome::Accepted {
        session.quit().await;
    }
    outcome
}

/// What a load did, readable while it runs.
#[derive(Default)]
pub struct Tally {
    /// Message-IDs answered 250.
    pub accepted: Mutex<Vec<String>>,
    accepted_count: AtomicUsize,
    /// Every attempt that did not end in 250, with what happened and when.
    pub failed: Mutex<Vec<(String, Outcome, Instant)>>,
    next: AtomicUsize,
}

impl Tally {
    pub fn accepted_count(&self) -> usize {
        self.accepted_count.load(Ordering::SeqCst)
    }

    pub fn accepted_ids(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }

    fn record(&self, id: &str, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => {
                self.accepted.lock().unwrap().push(id.to_string());
                self.accepted_count.fetch_add(1, Ordering::SeqCst);
            }
            other => {
                let failure = (id.to_string(), other, Instant::now());
                self.failed.lock().unwrap().push(failure);
            }
        }
    }
}

/// How long a load client keeps trying one message (each try with a new Message-ID)
/// before it gives up on it: enough to ride out a dead ingress or a NATS leader election.
const KEEP_TRYING: Duration = Duration::from_secs(30);

/// Sends messages `0..total` from `clients` concurrent sessions, spread over `targets`
/// and reused while they work; a session that fails is replaced by one to the next
/// target, so clients of a dead ingress fail over to the others.
pub async fn run_load(targets: Vec<SocketAddr>, total: usize, clients: usize, tally: Arc<Tally>) {
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        tasks.spawn(load_client(targets.clone(), client, total, tally.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("load client panicked");
    }
}

async fn load_client(targets: Vec<SocketAddr>, client: usize, total: usize, tally: Arc<Tally>) {
    let mut target = client % targets.len();
    let mut session: Option<Session> = None;
    loop {
        let n = tally.next.fetch_add(1, Ordering::SeqCst);
        if n >= total {
            break;
        }
        let first_try = Instant::now();
        for attempt in 0.. {
            let id = format!("m{n}.{attempt}@load.test");
            let outcome = match session.as_mut() {
                Some(open) => open.send(FROM, TO, &message(&id)).await,
                None => match Session::open(targets[target], None).await {
                    Ok(mut open) => {
                        let outcome = open.send(FROM, TO, &message(&id)).await;
                        session = Some(open);
                        outcome
                    }
                    Err(outcome) => outcome,
                },
            };
            let accepted = outcome == Outcome::Accepted;
            tally.record(&id, outcome);
            if accepted || first_try.elapsed() > KEEP_TRYING {
                break;
            }
            // The session may be unusable (421, reset): start afresh elsewhere.
            session = None;
            target = (target + 1) % targets.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Some(session) = session {
        session.quit().await;
    }
}

/// A short account of the failed attempts, for the test's output.
pub fn failure_summary(tally: &Tally) -> String {
    let failed = tally.failed.lock().unwrap();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (_, outcome, _) in failed.iter() {
        let kind = match outcome {
            Outcome::Refused(reply) => reply.chars().take(9).collect(),
            Outcome::Broken(why) => why.split(':').next().unwrap_or_default().to_string(),
            Outcome::Accepted => unreachable!(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    let first = failed.iter().map(|f| f.2).min();
    let last = failed.iter().map(|f| f.2).max();
    let span = first.zip(last).map(|(a, b)| b - a).unwrap_or_default();
    format!(
        "{} failed attempts over {span:.1?}: {kinds:?}",
        failed.len()
    )
}

/// The header section of a message, unfolded, as (name, value) lines.
pub fn headers(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let end = text.find("\r\n\r\n").unwrap_or(text.len());
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text[..end].split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The values of header `name` (case-insensitive), unfolded.
pub fn header_values(data: &[u8], name: &str) -> Vec<String> {
    headers(data)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// What tests/dkim_signing/verify.py (Python's dkimpy, a verifier independent of the
/// relay's) says about `data`: `args` before the JSON of the TXT `records` it may look
/// up ("arc" for the ARC chain, nothing for each DKIM signature).
pub fn dkimpy(
    args: &[&str],
    records: &std::collections::BTreeMap<String, String>,
    data: &[u8],
) -> serde_json::Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim_signing/verify.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .arg(serde_json::to_string(records).unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verify.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("verify.py's JSON")
}

/// One SMTP transaction with Python's smtplib (tests/filtering/send.py), `args` as that
/// script takes them (port, source, from, to, file; user and password for STARTTLS and
/// AUTH): the reply to the end of the content, or to the MAIL or RCPT that was refused,
/// as (code, text on one line).
pub async fn smtplib(args: serde_json::Value) -> (u16, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filtering/send.py");
    let args = args.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(&args)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send.py: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text): (u16, String) = serde_json::from_str(&stdout).expect("send.py's JSON");
    (code, text.replace('\n', " "))
}
