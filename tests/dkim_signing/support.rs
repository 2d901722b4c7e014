//! What the DKIM signing cases share: keys made by `filter::keygen` in a secrets
//! directory, a delivering `sluice standalone` whose policy signs with them, an smtplib
//! client (tests/filtering/send.py) as an authenticated user, a trusted network or an
//! Internet client, the loopback DNS server publishing the keys, and two verifiers:
//! mail-auth and Python's dkimpy (tests/dkim_signing/verify.py).

use crate::common::{self, dns::DnsServer, dns::Zone, sink::Sink};
use sluice::filter::keygen::{DnsRecord, KeyAlgorithm, generate};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);
pub const TRUSTED: &str = "127.0.0.1";
pub const UNTRUSTED: &str = "127.0.0.2";

/// The keys of the tests: `example.com` signs with an RSA-2048 (`r`) and an Ed25519
/// (`e`) key, `ed.example` with Ed25519 only, `rsa.example` with RSA only.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub records: BTreeMap<String, String>,
}

fn rsa_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| generate(KeyAlgorithm::Rsa { bits: 2048 }).unwrap())
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("dkim-keys");
        std::fs::create_dir(&secret).unwrap();
        let ed = generate(KeyAlgorithm::Ed25519).unwrap();
        std::fs::write(secret.join("rsa.pem"), rsa_pem()).unwrap();
        std::fs::write(secret.join("ed25519.pem"), &ed).unwrap();
        std::fs::write(
            secret.join("garbage.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let mut records = BTreeMap::new();
        for (domain, selector, pem) in [
            ("example.com", "r", rsa_pem()),
            ("example.com", "e", ed.as_str()),
            ("ed.example", "e", ed.as_str()),
            ("rsa.example", "r", rsa_pem()),
        ] {
            let record = DnsRecord::for_key(domain, selector, pem.as_bytes()).unwrap();
            records.insert(record.name, record.value);
        }
        Keys { dir, records }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The loopback DNS server publishing every key.
    pub async fn dns(&self) -> DnsServer {
        let zone = self
            .records
            .iter()
            .fold(Zone::default(), |zone, (name, value)| zone.txt(name, value));
        DnsServer::start(zone).await
    }
}

/// The `signing:` section of the tests' keys, and `extra` keys (YAML list items).
pub fn signing(extra: &str) -> String {
    format!(
        r#"  signing:
    dkim:
      - {{domain: example.com, selector: r, keySecretRef: {{name: dkim-keys, key: rsa.pem}}}}
      - {{domain: example.com, selector: e, keySecretRef: {{name: dkim-keys, key: ed25519.pem}}}}
      - {{domain: ed.example, selector: e, keySecretRef: {{name: dkim-keys, key: ed25519.pem}}}}
      - {{domain: rsa.example, selector: r, keySecretRef: {{name: dkim-keys, key: rsa.pem}}}}
{extra}"#
    )
}

/// The RelayPolicy: 127.0.0.1 trusted, `sink.test` relayed to the sink, alice may
/// send after AUTH; `sections` is more of the spec (indented two spaces).
pub fn policy(sink_port: u16, sections: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: signing, namespace: mail }}
spec:
  trustedNetworks: ["127.0.0.1/32"]
  relayDomains: ["sink.test"]
  routes:
    - domains: ["sink.test"]
      smarthost: {{ host: 127.0.0.1, port: {sink_port}, tls: opportunistic }}
  users:
    - name: alice
      passwordHash: "{}"
      allowedSenders: ["alice@local.test"]
{sections}"#,
        common::password_hash()
    )
}

/// A `sluice standalone` (in this process) reading keys from `secrets`; delivering to a
/// new sink when `deliver`, else only queueing (to look at the spool).
pub async fn relay(secrets: &Path, sections: &str, deliver: bool) -> (common::Relay, Sink) {
    let sink = Sink::start(common::sink::AcceptAll).await;
    let secrets = secrets.display();
    let delivery = if deliver {
        format!(
            "{{ secretsDir: \"{secrets}\", nameserver: \"127.0.0.1:9\", connectTimeout: 5s, retry: {{ firstRetry: 1s, maxInterval: 1s, maxLifetime: 1h, jitter: 0 }} }}"
        )
    } else {
        format!("{{ enabled: false, secretsDir: \"{secrets}\" }}")
    };
    let config = common::config_yaml_with("{}", &delivery);
    let relay = common::start_with(&config, &policy(sink.addr.port(), sections)).await;
    (relay, sink)
}

/// Who sends.
#[derive(Clone, Copy)]
pub enum Client {
    /// AUTH as alice on the submission listener, after STARTTLS, from an untrusted address.
    Alice,
    /// On the relay listener from this address, no AUTH.
    From(&'static str),
}

/// Sends `content` through `smtp` (or `submission` for alice) with tests/filtering/send.py:
/// the reply to the end of the content as (code, text).
pub async fn send(
    smtp: std::net::SocketAddr,
    submission: std::net::SocketAddr,
    client: Client,
    content: &[u8],
) -> (u16, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), content).unwrap();
    let mut args = serde_json::json!({"to": "rcpt@sink.test", "file": file.path()});
    match client {
        Client::Alice => {
            args["port"] = submission.port().into();
            args["source"] = UNTRUSTED.into();
            args["from"] = "alice@local.test".into();
            args["user"] = "alice".into();
            args["password"] = common::PASSWORD.into();
        }
        Client::From(source) => {
            args["port"] = smtp.port().into();
            args["source"] = source.into();
            args["from"] = "sender@client.example".into();
        }
    }
    let reply = crate::common::mail::smtplib(args).await;
    drop(file);
    reply
}

/// A message from `from` with Message-ID `<{id}@client.test>`.
pub fn message(from: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Someone <{from}>\r\nTo: rcpt@sink.test\r\nSubject: signing {id}\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{id}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nthis is {id}.  Trailing spaces  \r\n\r\n\r\n"
    )
    .into_bytes()
}

/// The one message with Message-ID `<{id}@client.test>` at the sink.
pub async fn delivered(sink: &Sink, id: &str) -> Vec<u8> {
    let want = format!("{id}@client.test");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = sink
            .received
            .lock()
            .unwrap()
            .iter()
            .find(|t| common::mail::message_id(&t.data).as_deref() == Some(want.as_str()))
            .map(|t| t.data.clone());
        if let Some(data) = found {
            return data;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} not delivered within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `DKIM-Signature` fields of a message's header section, unfolded.
pub fn signatures(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let end = text.find("\r\n\r\n").unwrap_or(text.len());
    let mut fields: Vec<String> = Vec::new();
    for line in text[..end].split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .into_iter()
        .filter_map(|f| {
            f.strip_prefix("DKIM-Signature:")
                .map(|v| v.trim().to_string())
        })
        .collect()
}

/// A tag of a signature (`d`, `s`, `a`, `h`), spaces removed.
pub fn tag(signature: &str, name: &str) -> String {
    signature
        .split(';')
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// mail-auth's verdict on each signature, as (d, pass), against the loopback DNS.
pub async fn mail_auth_verdicts(dns: &DnsServer, data: &[u8]) -> Vec<(String, bool)> {
    let auth = mail_auth::MessageAuthenticator(dns.resolver().hickory().clone());
    let message = mail_auth::AuthenticatedMessage::parse(data).expect("a message");
    auth.verify_dkim(&message)
        .await
        .iter()
        .map(|o| {
            let d = o.signature().map(|s| s.d.clone()).unwrap_or_default();
            (d, *o.result() == mail_auth::DkimResult::Pass)
        })
        .collect()
}

/// dkimpy's verdict on each signature: (d, s, a, ok).
pub fn dkimpy_verdicts(
    keys: &BTreeMap<String, String>,
    data: &[u8],
) -> Vec<(String, String, String, bool)> {
    let list = crate::common::mail::dkimpy(&[], keys, data);
    list.as_array()
        .expect("a list of signatures")
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("d"), s("s"), s("a"), v["ok"].as_bool().unwrap_or(false))
        })
        .collect()
}

pub use crate::common::roles::metric;
