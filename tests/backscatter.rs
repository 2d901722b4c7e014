//! End to end through `sluice standalone` with Python's smtplib as the client: Sluice does
//! not become a backscatter source. What delivery would refuse is refused at RCPT, a
//! bounce returns at most `limits.bounceSizeLimit` of the message, and success notices
//! go only to trusted senders, and never when the next hop took NOTIFY itself.
//!
//! Every notice Sluice would send goes to a sender address routed to a capturing sink,
//! so "no notice" is checked after the queue has emptied: a notice is queued before the
//! message it is about is acked, so once the queue is empty every notice has reached
//! the sink.

mod common;

use common::sink::{AcceptAll, Replies, Sink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The bound on every wait for the relay to do something.
const WAIT: Duration = Duration::from_secs(20);

/// Connects from `source`, sends MAIL with `mail_options`, one RCPT per `(address,
/// options)`, and when one was accepted DATA with a message of `lines` body lines.
/// Prints `{"rcpt": [[code, text], ...], "data": [code, text]}`.
const SMTPLIB_SCRIPT: &str = r#"
import json, smtplib, sys
a = json.loads(sys.argv[1])
s = smtplib.SMTP('127.0.0.1', a['port'], source_address=(a['source'], 0), timeout=20)
s.ehlo('client.test')
code, text = s.mail(a['from'], a['mail_options'])
assert code == 250, (code, text)
out = {'rcpt': []}
for to, opts in a['rcpts']:
    code, text = s.rcpt(to, opts)
    out['rcpt'].append([code, text.decode()])
if any(c == 250 for c, _ in out['rcpt']):
    body = 'Subject: test\r\nMessage-ID: <m@client.test>\r\n\r\n' + 'BODYLINE 0123456789 0123456789 0123456789\r\n' * a['lines']
    code, text = s.data(body.encode())
    out['data'] = [code, text.decode()]
s.quit()
print(json.dumps(out))
"#;

/// One smtplib session; see [`SMTPLIB_SCRIPT`].
async fn smtplib(
    relay: &common::Relay,
    source: &str,
    from: &str,
    mail_options: &[&str],
    rcpts: &[(&str, &[&str])],
    lines: usize,
) -> serde_json::Value {
    let args = serde_json::json!({
        "port": relay.relay.port(),
        "source": source,
        "from": from,
        "mail_options": mail_options,
        "rcpts": rcpts,
        "lines": lines,
    })
    .to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", SMTPLIB_SCRIPT, &args])
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("the script's JSON")
}

/// The code and text of the `i`th RCPT reply.
fn rcpt_reply(out: &serde_json::Value, i: usize) -> (u64, String) {
    let r = &out["rcpt"][i];
    (r[0].as_u64().unwrap(), r[1].as_str().unwrap().to_string())
}

/// A delivering relay: 127.0.0.1 is trusted, 127.0.0.2 is not; every domain that is not
/// local or listed goes to `sink`. `policy_extra` is more lines of `spec:`.
async fn relay(sink: &Sink, policy_extra: &str) -> common::Relay {
    let delivery = "{ nameserver: \"127.0.0.1:9\", connectTimeout: 5s, retry: { firstRetry: 1s, maxInterval: 1s, maxLifetime: 1h, jitter: 0 } }";
    let config = common::config_yaml_with("{}", delivery);
    let policy = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: backscatter}}\nspec:\n  \
         trustedNetworks: [\"127.0.0.1/32\"]\n  \
         routes:\n    - domains: [\"*\"]\n      smarthost: {{ host: 127.0.0.1, port: {}, tls: opportunistic }}\n{policy_extra}",
        sink.addr.port()
    );
    common::start_with(&config, &policy).await
}

/// A Maildir root that exists (the delivery refuses to create one).
fn maildir_root(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(name);
    std::fs::create_dir(&root).unwrap();
    (dir, root)
}

/// Waits until `mailbox/new` under `root` holds a message.
async fn wait_for_maildir(root: &Path, mailbox: &str) {
    let new = root.join(mailbox).join("new");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let count = std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0);
        if count > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing delivered to {}",
            new.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The relay's queue as `GET /queue` on the admin listener shows it.
async fn queue_len(relay: &common::Relay) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(relay.admin).await.unwrap();
    let request = format!("GET /queue HTTP/1.1\r\nHost: {}\r\n\r\n", relay.admin);
    s.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(body).expect("a JSON array");
    entries.len()
}

async fn wait_for_empty_queue(relay: &common::Relay) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while queue_len(relay).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue did not empty"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends from an untrusted client, for a forged sender whose domain goes to the sink,
/// with RET=FULL: `refused` must get `code` at RCPT, `accepted` 250, and after the
/// accepted copy is in its mailbox and the queue is empty, the sink must have seen
/// nothing: no bounce.
async fn refused_without_a_bounce(
    policy_extra: &str,
    root: &Path,
    refused: &str,
    code: u64,
    reply_start: &str,
    accepted: &str,
) {
    let sink = Sink::start(AcceptAll).await;
    let relay = relay(&sink, policy_extra).await;
    let out = smtplib(
        &relay,
        "127.0.0.2",
        "victim@victim.test",
        &["RET=FULL"],
        &[(refused, &["NOTIFY=FAILURE"]), (accepted, &[])],
        10,
    )
    .await;
    let (got, text) = rcpt_reply(&out, 0);
    assert_eq!(got, code, "{text}");
    assert!(text.starts_with(reply_start), "{text}");
    assert_eq!(rcpt_reply(&out, 1).0, 250);
    assert_eq!(out["data"][0], 250, "{out}");
    let mailbox = accepted.split('@').next().unwrap();
    wait_for_maildir(root, mailbox).await;
    wait_for_empty_queue(&relay).await;
    assert!(
        sink.transactions().is_empty(),
        "a notice went out: {:?}",
        sink.transactions()
    );
}

#[tokio::test]
async fn an_unknown_local_user_is_refused_at_rcpt_and_nothing_bounces() {
    let (_dir, root) = maildir_root("mail");
    let policy = format!(
        "  localDomains:\n    - domain: local.test\n      delivery: {{ maildir: {{ path: \"{}\" }} }}\n      recipients: [\"alice@local.test\"]\n",
        root.display()
    );
    refused_without_a_bounce(
        &policy,
        &root,
        "nobody@local.test",
        550,
        "5.1.1 <nobody@local.test>: Recipient address rejected: User unknown in local recipient table",
        "alice@local.test",
    )
    .await;
    assert!(!root.join("nobody").exists());
}

#[tokio::test]
async fn a_local_part_maildir_cannot_store_is_refused_at_rcpt_and_nothing_bounces() {
    let (_dir, root) = maildir_root("mail");
    let policy = format!(
        "  localDomains:\n    - domain: local.test\n      delivery: {{ maildir: {{ path: \"{}\" }} }}\n",
        root.display()
    );
    refused_without_a_bounce(
        &policy,
        &root,
        "a/b@local.test",
        553,
        "5.1.3 <a/b@local.test>: Recipient address rejected",
        "alice@local.test",
    )
    .await;
    assert!(!root.join("a").exists());
}

#[tokio::test]
async fn postmaster_is_refused_without_a_local_domain() {
    let policy = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: relay-only}\nspec:\n  relayDomains: [partner.test]\n";
    let relay = common::start_with(&common::config_yaml("{}"), policy).await;
    let out = smtplib(
        &relay,
        "127.0.0.2",
        "victim@victim.test",
        &[],
        &[("Postmaster", &[]), ("someone@partner.test", &[])],
        1,
    )
    .await;
    let (code, text) = rcpt_reply(&out, 0);
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.1.1 <Postmaster>: "), "{text}");
    assert_eq!(rcpt_reply(&out, 1).0, 250);
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 1);
    let rcpts: Vec<String> = spool[0]
        .0
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(rcpts, ["someone@partner.test"]);
}

/// Refuses one recipient for good, takes everything else.
struct RefuseGone;
impl Replies for RefuseGone {
    fn rcpt(&self, address: &str, _: usize) -> String {
        if address.contains("gone@") {
            "550 5.1.1 no such user".into()
        } else {
            "250 2.1.5 Ok".into()
        }
    }
}

#[tokio::test]
async fn a_bounce_of_a_large_ret_full_message_returns_only_its_header() {
    let sink = Sink::start(RefuseGone).await;
    let relay = relay(&sink, "").await;
    // About 250 kB, five times the default limit.
    let out = smtplib(
        &relay,
        "127.0.0.1",
        "sender@back.test",
        &["RET=FULL"],
        &[("gone@fail.test", &[])],
        5_000,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    // The refused transaction may show in the sink too (pipelined DATA, then nothing).
    let deadline = tokio::time::Instant::now() + WAIT;
    let bounce = loop {
        let got = sink.transactions();
        if let Some(t) = got.iter().find(|t| t.mail_from.starts_with("MAIL FROM:<>")) {
            break t.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no bounce: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(bounce.data.len() < 50_000, "{} bytes", bounce.data.len());
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    assert!(text.contains("Message-ID: <m@client.test>"), "{text}");
    assert!(!text.contains("BODYLINE"), "the body came back: {text}");
    assert!(!text.contains("message/rfc822"), "{text}");
    assert_eq!(bounce.rcpt_to, ["RCPT TO:<sender@back.test> NOTIFY=NEVER"]);
}

#[tokio::test]
async fn success_notices_only_for_trusted_senders_and_not_after_the_next_hop_took_notify() {
    let sink = Sink::start(AcceptAll).await;
    let (_dir, root) = maildir_root("mail");
    let relay = relay(
        &sink,
        &format!(
            "  localDomains:\n    - domain: local.test\n      delivery: {{ maildir: {{ path: \"{}\" }} }}\n",
            root.display()
        ),
    )
    .await;
    let success: &[&str] = &["NOTIFY=SUCCESS"];

    // Untrusted and unauthenticated: delivered, and no notice to the (forgeable) sender.
    let out = smtplib(
        &relay,
        "127.0.0.2",
        "victim@victim.test",
        &[],
        &[("bob@local.test", success)],
        1,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    wait_for_maildir(&root, "bob").await;
    wait_for_empty_queue(&relay).await;
    assert!(sink.transactions().is_empty(), "{:?}", sink.transactions());

    // Trusted, to a next hop that announced DSN: NOTIFY goes on, the notice is its job.
    let out = smtplib(
        &relay,
        "127.0.0.1",
        "app@back.test",
        &[],
        &[("x@remote.test", success)],
        1,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    sink.wait_for(1, WAIT).await;
    wait_for_empty_queue(&relay).await;
    let got = sink.transactions();
    assert_eq!(got.len(), 1, "only the message itself: {got:?}");
    assert_eq!(got[0].rcpt_to, ["RCPT TO:<x@remote.test> NOTIFY=SUCCESS"]);

    // Trusted, delivered into a mailbox here: the sender gets its success notice.
    let out = smtplib(
        &relay,
        "127.0.0.1",
        "app@back.test",
        &[],
        &[("carol@local.test", success)],
        1,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "the success notice");
    let notice = String::from_utf8_lossy(&got[1].data);
    assert_eq!(got[1].rcpt_to, ["RCPT TO:<app@back.test> NOTIFY=NEVER"]);
    assert!(
        notice.contains("Final-Recipient: rfc822; carol@local.test\r\nAction: delivered\r\n"),
        "{notice}"
    );
}
