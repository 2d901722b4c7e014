//! `sluice queue list|show|retry|delete`, the real binary against a running relay's admin
//! listener: what it prints, its exit codes, and what it does to the queue.

mod common;

use common::http::Response;
use common::nats::NatsServer;
use common::smtp::Client;
use reqwest::Method;
use sluice::queue::jetstream::{JetStreamOptions, JetStreamQueue};
use sluice::queue::{QueueAdmin, QueueEntry};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `sluice queue ARGS`; async, since the relay serves on this test's runtime.
async fn queue(config: &Path, admin: Option<SocketAddr>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.arg("queue").args(args).arg("--config").arg(config);
    if let Some(admin) = admin {
        command.arg("--admin").arg(admin.to_string());
    }
    let out = command.output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `METHOD path` on the admin listener; panics when it does not answer within 5 s.
async fn http(addr: SocketAddr, method: Method, path: &str) -> Response {
    common::http::request(method.clone(), addr, path, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Sends one message and returns its queue id.
async fn send(addr: SocketAddr, from: &str, to: &[&str], subject: &str) -> String {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    for rcpt in to {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), "250").await;
    }
    c.cmd("DATA", "354").await;
    c.send(format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n").as_bytes())
        .await;
    let reply = c.expect("250 2.0.0 Ok: queued as ").await;
    reply.rsplit(' ').next().unwrap().to_string()
}

#[tokio::test]
async fn list_show_retry_and_delete_a_running_relays_queue() {
    let relay = common::start("{}").await;
    let (_, second) = list_show_retry_and_delete(&relay).await;
    // The deletion was durable: after a restart only the second message is there.
    let left = relay.stop_and_list().await;
    let ids: Vec<&str> = left.iter().map(|(e, _)| e.envelope.id.as_str()).collect();
    assert_eq!(ids, vec![second.as_str()]);
}

/// The same tools against a relay whose queue is in JetStream: through its admin
/// listener, as `kubectl exec … sluice queue` would reach a pod's.
#[tokio::test]
async fn the_tools_work_the_same_on_a_jetstream_queue() {
    let nats = NatsServer::start();
    let relay = common::start_on_jetstream("{}", &nats.url()).await;
    let (_, second) = list_show_retry_and_delete(&relay).await;
    let stream = JetStreamQueue::connect(&nats.url(), JetStreamOptions::default())
        .await
        .unwrap();
    let left: Vec<String> = stream
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id.to_string())
        .collect();
    assert_eq!(
        left,
        [second],
        "deleted from the stream, not only from a view"
    );
}

#[tokio::test]
async fn delete_bounce_on_a_jetstream_queue() {
    let nats = NatsServer::start();
    delete_bounce(&common::start_on_jetstream("{}", &nats.url()).await).await;
}

/// Sends two messages, then lists, shows, retries and deletes the first; returns both ids.
async fn list_show_retry_and_delete(relay: &common::Relay) -> (String, String) {
    let config = relay.dir.path().join("sluice.yaml");
    let admin = Some(relay.admin);
    let first = send(
        relay.relay,
        "a@sender.test",
        &["b@foreign.test", "c@partner.test"],
        "first",
    )
    .await;
    let second = send(relay.relay, "", &["d@foreign.test"], "second").await;

    let list = queue(&config, admin, &["list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(lines[0].starts_with("-Queue ID- "), "{}", list.stdout);
    assert!(
        lines[1].starts_with(&format!("{first} ")) && lines[1].ends_with("  a@sender.test"),
        "{}",
        list.stdout
    );
    let indent = " ".repeat(59);
    assert_eq!(lines[2], format!("{indent}b@foreign.test"));
    assert_eq!(lines[3], format!("{indent}c@partner.test"));
    assert!(lines[5].starts_with(&second) && lines[5].ends_with("  MAILER-DAEMON"));
    assert_eq!(lines.last(), Some(&"-- 1 Kbytes in 2 requests."));

    let json = queue(&config, admin, &["list", "--json"]).await;
    let entries: Vec<QueueEntry> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].envelope.id.as_str(), first);

    let show = queue(&config, admin, &["show", &first]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    for needle in [
        &format!("Queue ID:       {first}\n"),
        "Status:         queued, due now\n",
        "Sender:         <a@sender.test>\n",
        "Recipients:     <b@foreign.test>\n                <c@partner.test>\n",
        "\n*** MESSAGE CONTENTS ***\n",
        "Subject: first\n",
    ] {
        assert!(
            show.stdout.contains(needle),
            "{needle:?} in\n{}",
            show.stdout
        );
    }

    let retry = queue(&config, admin, &["retry", &first]).await;
    assert_eq!(
        (retry.code, retry.stdout.as_str()),
        (0, format!("{first}: due now\n").as_str())
    );
    let all = queue(&config, admin, &["retry", "--all"]).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert!(
        all.stdout.starts_with("2 messages due now"),
        "{}",
        all.stdout
    );

    let delete = queue(&config, admin, &["delete", &first]).await;
    assert_eq!(delete.code, 0, "{}", delete.stderr);
    assert_eq!(
        delete.stdout,
        format!("{first}: deleted (from <a@sender.test> to <b@foreign.test>, <c@partner.test>)\n")
    );
    let listed = http(relay.admin, Method::GET, "/queue").await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert!(
        !listed.body.contains(&first) && listed.body.contains(&second),
        "{listed:?}"
    );

    // Gone is gone: every tool says so with exit status 1.
    for args in [["delete", &first], ["show", &first], ["retry", &first]] {
        let run = queue(&config, admin, &args).await;
        assert_eq!(run.code, 1, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(&format!("no message {first}")),
            "{}",
            run.stderr
        );
    }
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(queue(&config, admin, &["retry", unknown]).await.code, 1);
    let bad = queue(&config, admin, &["retry", "not-an-id"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    let wrong = http(relay.admin, Method::PUT, &format!("/queue/{second}")).await;
    assert_eq!(wrong.status, 405, "{wrong:?}");
    assert_eq!(wrong.header("allow"), Some("GET, DELETE"), "{wrong:?}");
    (first, second)
}

#[tokio::test]
async fn the_admin_address_must_be_known_and_reachable() {
    let relay = common::start("{}").await;
    let config = relay.dir.path().join("sluice.yaml");

    // The fixture's admin listens on port 0, which says nothing about where it is.
    let run = queue(&config, None, &["list"]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("--admin"), "{}", run.stderr);

    let no_admin = relay.dir.path().join("no-admin.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&no_admin, text.replace("admin: \"127.0.0.1:0\"\n", "")).unwrap();
    let run = queue(&no_admin, None, &["list"]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("no `admin` address is configured"),
        "{}",
        run.stderr
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let run = queue(&config, Some(closed), &["retry", "--all"]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);

    let empty = queue(&config, Some(relay.admin), &["list"]).await;
    assert_eq!(
        (empty.code, empty.stdout.as_str()),
        (0, "Mail queue is empty\n")
    );
}

#[tokio::test]
async fn delete_bounce_queues_a_dsn_to_the_sender_and_plain_delete_none() {
    delete_bounce(&common::start("{}").await).await;
}

async fn delete_bounce(relay: &common::Relay) {
    let config = relay.dir.path().join("sluice.yaml");
    let admin = Some(relay.admin);
    let quiet = send(relay.relay, "a@sender.test", &["b@foreign.test"], "quiet").await;
    let bounced = send(
        relay.relay,
        "a@sender.test",
        &["b@foreign.test", "c@partner.test"],
        "bounced",
    )
    .await;
    let null = send(relay.relay, "", &["d@foreign.test"], "null sender").await;

    let plain = queue(&config, admin, &["delete", &quiet]).await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(!plain.stdout.contains("bounce"), "{}", plain.stdout);
    let listed = queue(&config, admin, &["list", "--json"]).await;
    let entries: Vec<QueueEntry> = serde_json::from_str(&listed.stdout).unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e.envelope.id.as_str()).collect();
    assert_eq!(
        ids,
        [bounced.as_str(), null.as_str()],
        "no DSN without --bounce"
    );

    let run = queue(&config, admin, &["delete", &bounced, "--bounce"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let prefix = format!(
        "{bounced}: deleted (from <a@sender.test> to <b@foreign.test>, <c@partner.test>); bounce "
    );
    let dsn = run
        .stdout
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" queued\n"))
        .unwrap_or_else(|| panic!("{}", run.stdout));

    let run = queue(&config, admin, &["delete", &null, "--bounce"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .ends_with("; no bounce (null sender, or NOTIFY excludes it)\n")
    );

    // Only the DSN is left: from the null reverse-path to the original sender.
    let listed = http(relay.admin, Method::GET, "/queue").await;
    let json = &listed.body;
    let entries: Vec<QueueEntry> = serde_json::from_str(json).unwrap();
    assert_eq!(entries.len(), 1, "{json}");
    let envelope = &entries[0].envelope;
    assert_eq!(envelope.id.as_str(), dsn);
    assert_eq!(envelope.reverse_path, None);
    let to: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(to, ["a@sender.test"]);
    let show = queue(&config, admin, &["show", dsn]).await;
    for needle in [
        "Subject: Undelivered Mail Returned to Sender\n",
        "Final-Recipient: rfc822; c@partner.test\nAction: failed\nStatus: 5.0.0\n",
        "Subject: bounced\n",
    ] {
        assert!(
            show.stdout.contains(needle),
            "{needle:?} in\n{}",
            show.stdout
        );
    }
    let again = queue(&config, admin, &["delete", &bounced, "--bounce"]).await;
    assert_eq!(again.code, 1, "{}", again.stdout);
}

#[tokio::test]
async fn metrics_show_the_queue_size_and_the_age_of_the_oldest_message() {
    let relay = common::start("{}").await;
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    let empty = http(relay.admin, Method::GET, "/metrics").await.body;
    assert_eq!(metric(&empty, "sluice_queue_messages"), 0.0);
    assert_eq!(metric(&empty, "sluice_queue_oldest_age_seconds"), 0.0);

    send(relay.relay, "a@sender.test", &["b@foreign.test"], "one").await;
    send(relay.relay, "a@sender.test", &["c@foreign.test"], "two").await;
    let text = http(relay.admin, Method::GET, "/metrics").await.body;
    assert!(
        text.contains("# TYPE sluice_queue_messages gauge\n"),
        "{text}"
    );
    assert_eq!(metric(&text, "sluice_queue_messages"), 2.0);
    let age = metric(&text, "sluice_queue_oldest_age_seconds");
    assert!((0.0..60.0).contains(&age), "{age}");
}
