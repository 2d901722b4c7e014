//! End to end through `sluice standalone`: the delivery routes other than MX. A client
//! hands mail to the relay, whose worker delivers it to a smarthost (Postfix's smtp-sink,
//! a scripted STARTTLS + AUTH server), to an LMTP server, or to a webhook, all real peers
//! on loopback; plus connection reuse towards one smarthost.

mod common;

#[path = "delivery_routes/lmtp.rs"]
mod lmtp;
#[path = "delivery_routes/reuse.rs"]
mod reuse;
#[path = "delivery_routes/smarthost.rs"]
mod smarthost;
#[path = "delivery_routes/smtp_sink.rs"]
mod smtp_sink;
#[path = "delivery_routes/webhook.rs"]
mod webhook;

use common::smtp::Client;
use std::path::Path;
use std::time::Duration;

/// The bound on every wait for the relay to do something.
pub const WAIT: Duration = Duration::from_secs(20);

/// A relay that delivers, retrying after a second. `delivery_extra` is YAML for more keys
/// of `delivery:` (`secretsDir: …, caFile: …`, each followed by a comma), `policy_extra`
/// more lines of the policy's `spec:` (indented by two spaces). 127.0.0.1 is trusted, so
/// the test client relays without authenticating. DNS goes to a port where nothing
/// answers: every next hop of these tests is an IP literal.
pub async fn relay(delivery_extra: &str, policy_extra: &str) -> common::Relay {
    let delivery = format!(
        "{{ {delivery_extra} nameserver: \"127.0.0.1:9\", connectTimeout: 5s, retry: {{ firstRetry: 1s, maxInterval: 1s, maxLifetime: 1h, jitter: 0 }} }}"
    );
    let config = common::config_yaml_with("{}", &delivery);
    let policy = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: routes}}\nspec:\n  trustedNetworks: [\"127.0.0.1/32\"]\n{policy_extra}"
    );
    common::start_with(&config, &policy).await
}

/// The policy lines of a `*` route to a smarthost on loopback.
pub fn star_route(port: u16, tls: &str, extra: &str) -> String {
    format!(
        "  routes:\n    - domains: [\"*\"]\n      smarthost: {{ host: 127.0.0.1, port: {port}, tls: {tls}{extra} }}\n"
    )
}

/// Writes `value` as the Secret key `{dir}/{name}/{key}`, with a trailing newline as
/// `kubectl create secret --from-file` often leaves one.
pub fn write_secret(dir: &Path, name: &str, key: &str, value: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join(key), format!("{value}\n")).unwrap();
}

/// Dot-stuffs `content` (RFC 5321 4.5.2) for the client side of DATA.
pub fn stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 16);
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

/// Sends one message with `mail_params` after MAIL FROM; `content` is unstuffed and
/// ends with CRLF. Returns the queue id.
pub async fn send(
    relay: &common::Relay,
    from: &str,
    mail_params: &str,
    to: &[&str],
    content: &[u8],
) -> String {
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd(&format!("MAIL FROM:<{from}>{mail_params}"), "250")
        .await;
    for rcpt in to {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), "250").await;
    }
    c.cmd("DATA", "354").await;
    c.send(&stuff(content)).await;
    c.send(b".\r\n").await;
    let reply = c.expect("250 2.0.0 Ok: queued as ").await;
    c.cmd("QUIT", "221").await;
    reply.rsplit(' ').next().unwrap().to_string()
}

/// The content after our Received header (its continuation lines start with a tab).
pub fn after_received(data: &[u8]) -> &[u8] {
    skip_header(data, b"Received: ", b"\r\n")
}

/// `data` without its first header field when that is `name`, with the field's
/// continuation lines; lines end with `eol`.
pub fn skip_header<'a>(data: &'a [u8], name: &[u8], eol: &[u8]) -> &'a [u8] {
    let mut offset = 0;
    let mut first = true;
    while let Some(end) = data[offset..].windows(eol.len()).position(|w| w == eol) {
        let line = &data[offset..offset + end];
        if !(first && line.starts_with(name) || !first && line.starts_with(b"\t")) {
            break;
        }
        first = false;
        offset += end + eol.len();
    }
    &data[offset..]
}

/// The relay's queue as `GET /queue` on the admin listener shows it.
pub async fn queue(relay: &common::Relay) -> Vec<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(relay.admin).await.unwrap();
    let head = format!("GET /queue HTTP/1.1\r\nHost: {}\r\n\r\n", relay.admin);
    s.write_all(head.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).expect("a JSON array")
}

/// Polls `check` on the queue until it returns `Some`, for at most [`WAIT`].
pub async fn wait_for_queue<T>(
    relay: &common::Relay,
    what: &str,
    check: impl Fn(&[serde_json::Value]) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let entries = queue(relay).await;
        if let Some(found) = check(&entries) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; queue: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_until_queue_is_empty(relay: &common::Relay) {
    wait_for_queue(relay, "an empty queue", |q| q.is_empty().then_some(())).await
}

/// The `last_error` of the message `id` once it has been deferred at least once.
pub async fn deferred_with(relay: &common::Relay, id: &str) -> String {
    wait_for_queue(relay, "a deferral", |q| {
        q.iter()
            .find(|e| e["envelope"]["id"] == id && e["envelope"]["attempts"].as_u64() >= Some(1))
            .and_then(|e| e["envelope"]["last_error"].as_str().map(str::to_string))
    })
    .await
}
