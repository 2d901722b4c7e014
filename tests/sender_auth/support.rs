//! What the sender-authentication cases share: the policy, a relay asking a given name
//! server, messages, the smtplib client of tests/filtering/send.py, and readers for
//! what the sink received.

pub use crate::common::mail::header_values;
pub use crate::common::roles::metric;
use crate::common::{self, sink::Sink};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// An address outside the policy's trusted networks, and one inside.
pub const UNTRUSTED: &str = "127.0.0.2";
pub const TRUSTED: &str = "127.0.0.1";

/// The RelayPolicy of these tests with `filters` (items of `filters:`, indented by four
/// spaces): 127.0.0.1 is trusted, `sink.test` is a relay domain routed to `sink_port`,
/// alice may send as alice@local.test after AUTH.
pub fn policy(sink_port: u16, filters: &str) -> String {
    policy_with(sink_port, filters, "")
}

/// [`policy`] with more of the spec (`extra`, indented by two spaces).
pub fn policy_with(sink_port: u16, filters: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: sender-auth, namespace: mail }}
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
  filters:
{filters}
{extra}
"#,
        common::password_hash()
    )
}

/// A delivering `sluice standalone` (in this process) asking the test's DNS server.
pub async fn start(dns: &common::dns::DnsServer, sink: &Sink, filters: &str) -> common::Relay {
    start_at(dns.addr, sink, filters).await
}

/// The same with any name server.
pub async fn start_at(nameserver: SocketAddr, sink: &Sink, filters: &str) -> common::Relay {
    let policy = policy(sink.addr.port(), filters);
    start_custom(nameserver, &policy, "").await
}

/// A relay with `policy` and `delivery` settings beyond the name server and retries
/// (`secretsDir: ...,` say).
pub async fn start_custom(nameserver: SocketAddr, policy: &str, delivery: &str) -> common::Relay {
    let delivery = format!(
        "{{ {delivery} nameserver: \"{nameserver}\", connectTimeout: 5s, retry: {{ firstRetry: 1s, maxInterval: 1s, maxLifetime: 1h, jitter: 0 }} }}"
    );
    let config = common::config_yaml_with("{}", &delivery);
    common::start_with(&config, policy).await
}

/// dkimpy's validation of the ARC chain of `data`: its `cv` and its reason; `records`
/// are the TXT records it may look up.
pub fn dkimpy_arc(records: &BTreeMap<String, String>, data: &[u8]) -> (String, String) {
    let v = common::mail::dkimpy(&["arc"], records, data);
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (s("cv"), s("reason"))
}

/// A plain message from `user@domain` to the sink, Message-ID `<case@client.test>`,
/// with `extra` header lines (CRLF-ended) after the others.
pub fn message(case: &str, domain: &str, extra: &str) -> Vec<u8> {
    let extra = if extra == "tamper" { "" } else { extra };
    format!(
        "From: Sender <user@{domain}>\r\nTo: rcpt@sink.test\r\nSubject: case {case}\r\nDate: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{case}@client.test>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nThe body of {case}.\r\n"
    )
    .into_bytes()
}

/// Sends `file` from `source` with MAIL FROM `from` (and AUTH over STARTTLS when
/// `login` is given) with Python's smtplib: the reply to the end of the content, or to
/// MAIL or RCPT when one was refused.
pub async fn send(
    port: SocketAddr,
    source: &str,
    from: &str,
    file: &Path,
    login: Option<(&str, &str)>,
) -> (u16, String) {
    let mut args = serde_json::json!({
        "port": port.port(),
        "source": source,
        "from": from,
        "to": "rcpt@sink.test",
        "file": file,
    });
    if let Some((user, password)) = login {
        args["user"] = user.into();
        args["password"] = password.into();
    }
    common::mail::smtplib(args).await
}

/// Exactly `n` messages at the sink, by case (the Message-ID's local part).
pub async fn delivered(sink: &Sink, n: usize) -> BTreeMap<String, Vec<u8>> {
    let got = sink.wait_for(n, Duration::from_secs(20)).await;
    assert_eq!(got.len(), n, "messages delivered");
    got.into_iter()
        .map(|t| {
            let id = common::mail::message_id(&t.data).unwrap_or_default();
            (id.trim_end_matches("@client.test").to_string(), t.data)
        })
        .collect()
}

/// Our `Authentication-Results` values (authserv-id relay.test).
pub fn ours(data: &[u8]) -> Vec<String> {
    header_values(data, "Authentication-Results")
        .into_iter()
        .filter(|v| v.starts_with("relay.test;"))
        .collect()
}

/// A multipart message from `user@domain` with a text part and `setup.exe` (a PE
/// header, base64), Message-ID `<case@client.test>`.
pub fn with_attachment(case: &str, domain: &str) -> Vec<u8> {
    format!(
        "From: Sender <user@{domain}>\r\nTo: rcpt@sink.test\r\nSubject: case {case}\r\nDate: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{case}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n--b1\r\nContent-Type: application/octet-stream; name=\"setup.exe\"\r\nContent-Disposition: attachment; filename=\"setup.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n--b1--\r\n"
    )
    .into_bytes()
}
