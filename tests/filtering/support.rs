//! What the filtering cases share: the messages (tests/filtering/make_messages.py), an
//! smtplib client (tests/filtering/send.py), a delivering `sluice standalone` with a
//! `filters:` section, and readers for what the sink and the metrics saw.

use crate::common::{self, sink::Sink};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The bound on every wait for the relay to deliver.
pub const WAIT: Duration = Duration::from_secs(20);
/// An address outside the policy's trusted networks.
pub const UNTRUSTED: &str = "127.0.0.2";
pub const TRUSTED: &str = "127.0.0.1";

/// Every message of make_messages.py, as files, generated once per test binary.
pub fn messages() -> &'static BTreeMap<String, PathBuf> {
    static DIR: OnceLock<(tempfile::TempDir, BTreeMap<String, PathBuf>)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = here().join("make_messages.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(common::scanners::EICAR).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success(), "make_messages.py failed");
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                (name, path)
            })
            .collect();
        (dir, files)
    })
    .1
}

pub fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filtering")
}

/// The octets of one message case.
pub fn message(case: &str) -> Vec<u8> {
    std::fs::read(&messages()[case]).unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// Who sends: an address to connect from, and credentials for the submission listener.
#[derive(Clone, Copy)]
pub enum Client {
    From(&'static str),
    Alice,
}

/// Sends the message `case` through `relay`: the reply to the end of the content (or
/// to MAIL or RCPT when one was refused) as (code, text).
pub async fn send(relay: &common::Relay, client: Client, case: &str) -> (u16, String) {
    send_to(relay.relay, relay.submission, client, case).await
}

pub async fn send_to(
    relay: std::net::SocketAddr,
    submission: std::net::SocketAddr,
    client: Client,
    case: &str,
) -> (u16, String) {
    let mut args = serde_json::json!({
        "to": "rcpt@sink.test",
        "file": messages()[case],
    });
    match client {
        Client::From(source) => {
            args["port"] = relay.port().into();
            args["source"] = source.into();
            args["from"] = "sender@client.example".into();
        }
        Client::Alice => {
            args["port"] = submission.port().into();
            args["source"] = UNTRUSTED.into();
            args["from"] = "alice@local.test".into();
            args["user"] = "alice".into();
            args["password"] = common::PASSWORD.into();
        }
    }
    crate::common::mail::smtplib(args).await
}

/// Asserts the reply's code and that its text holds every one of `words`.
#[track_caller]
pub fn assert_reply(reply: &(u16, String), code: u16, words: &[&str]) {
    assert_eq!(reply.0, code, "{reply:?}");
    for word in words {
        assert!(reply.1.contains(word), "{word:?} not in {reply:?}");
    }
}

/// The RelayPolicy of these tests with `filters` (YAML lines, each indented by four
/// spaces, that make the items of `filters:`): 127.0.0.1 is trusted, 127.0.0.2 is not,
/// `sink.test` is a relay domain routed to `sink_port`, alice may send as
/// alice@local.test after AUTH.
pub fn policy(sink_port: u16, filters: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: filtering, namespace: mail }}
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
"#,
        common::password_hash()
    )
}

/// A delivering `sluice standalone` (in this process) with `filters`, and its sink.
pub async fn relay(filters: &str) -> (common::Relay, Sink) {
    let sink = Sink::start(common::sink::AcceptAll).await;
    let delivery = "{ nameserver: \"127.0.0.1:9\", connectTimeout: 5s, retry: { firstRetry: 1s, maxInterval: 1s, maxLifetime: 1h, jitter: 0 } }";
    let config = common::config_yaml_with("{}", delivery);
    let relay = common::start_with(&config, &policy(sink.addr.port(), filters)).await;
    (relay, sink)
}

/// Waits for exactly the messages `cases` (by Message-ID) at the sink and returns them
/// by case. Refused messages were never queued, so once the accepted ones have all
/// arrived anything else would have arrived too, and is an error.
pub async fn delivered(sink: &Sink, cases: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let got = sink.wait_for(cases.len(), WAIT).await;
    let mut out = BTreeMap::new();
    for t in got {
        let id = common::mail::message_id(&t.data).unwrap_or_default();
        let case = id.trim_end_matches("@client.test").to_string();
        assert!(out.insert(case, t.data).is_none(), "{id} delivered twice");
    }
    let want: BTreeSet<&str> = cases.iter().copied().collect();
    let have: BTreeSet<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(have, want, "the messages delivered");
    out
}

pub use crate::common::mail::header_values;
pub use crate::common::roles::metric;

/// The leaf parts of a message as Python's `email` sees them
/// (tests/attachments/check_stripped.py): type, disposition, filename, text, defects.
pub fn python_parts(data: &[u8]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attachments/check_stripped.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "check_stripped.py failed");
    serde_json::from_slice(&out.stdout).unwrap()
}
