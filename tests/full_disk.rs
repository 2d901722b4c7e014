//! End to end: `sluice standalone` on a spool whose disk fills up (a storage backend
//! that answers ENOSPC while switched on). While full, the end of data gets
//! `452 4.3.1`; once space is back the relay accepts again within seconds, with no
//! restart; and every message it acknowledged, before, during or after, is delivered.

mod common;

use common::dns::{DnsServer, Zone};
use common::sink::{AcceptAll, Sink};
use common::smtp::Client;
use sluice::config::Role;
use sluice::queue::spool::DiskFullSwitch;
use std::time::{Duration, Instant};

const STANDALONE: Role = Role::Standalone { jetstream: false };

/// Sends one message with `subject`; returns the reply to its end of data.
async fn send(relay: &common::Relay, subject: &str) -> String {
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@mx.test>", "250").await;
    c.cmd("DATA", "354").await;
    let body = format!("Subject: {subject}\r\n\r\n{}\r\n.\r\n", "x".repeat(4000));
    c.send(body.as_bytes()).await;
    let reply = c.expect("").await;
    c.cmd("QUIT", "221").await;
    reply
}

async fn readyz(relay: &common::Relay) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(relay.admin).await.unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

fn policy() -> &'static str {
    "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: e2e}\nspec:\n  trustedNetworks: [\"127.0.0.1/32\"]\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_452_then_mail_is_accepted_again_and_nothing_acknowledged_is_lost() {
    let spool = tempfile::tempdir().unwrap();
    let spool_line = format!("spool: \"{}\"", spool.path().display());
    let disk = DiskFullSwitch::default();
    let config = common::config_yaml("{}").replace("spool: spool", &spool_line);
    let relay = common::start_on_disk(&config, policy(), STANDALONE, Some(disk.clone())).await;

    let mut acknowledged = Vec::new();
    for n in 0..3 {
        let subject = format!("before {n}");
        assert!(send(&relay, &subject).await.starts_with("250 2.0.0"));
        acknowledged.push(subject);
    }

    disk.set_full(true);
    for n in 0..3 {
        let reply = send(&relay, &format!("refused {n}")).await;
        assert!(reply.starts_with("452 4.3.1"), "{reply}");
    }
    // The process is alive and says so; the spool heals itself, no restart is needed.
    assert!(readyz(&relay).await.starts_with("HTTP/1.1 200"));

    disk.set_full(false);
    let back = Instant::now();
    let mut attempt = 0;
    loop {
        let subject = format!("after {attempt}");
        let reply = send(&relay, &subject).await;
        if reply.starts_with("250 2.0.0") {
            acknowledged.push(subject);
            break;
        }
        assert!(reply.starts_with("452 4.3.1"), "{reply}");
        assert!(back.elapsed() < Duration::from_secs(10), "still refusing");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted_after = back.elapsed();
    for n in 0..3 {
        let subject = format!("later {n}");
        assert!(send(&relay, &subject).await.starts_with("250 2.0.0"));
        acknowledged.push(subject);
    }
    relay.stop_and_list().await;
    eprintln!("accepting again {accepted_after:?} after space came back");

    // A relay that delivers, on the same spool: every acknowledged message goes out.
    let dns = DnsServer::start(
        Zone::default()
            .mx("mx.test", 10, "mx1.mx.test")
            .addr("mx1.mx.test", "127.0.0.1"),
    )
    .await;
    let sink = Sink::start(AcceptAll).await;
    let delivery = format!(
        "{{ allowPrivateDestinations: true, nameserver: \"{}\", mxPort: {} }}",
        dns.addr,
        sink.addr.port()
    );
    let config = common::config_yaml_with("{}", &delivery).replace("spool: spool", &spool_line);
    let relay = common::start_with(&config, policy()).await;
    let delivered = sink
        .wait_for(acknowledged.len(), Duration::from_secs(20))
        .await;
    let mut subjects: Vec<String> = delivered
        .iter()
        .map(|t| {
            let text = String::from_utf8_lossy(&t.data).into_owned();
            let line = text.lines().find(|l| l.starts_with("Subject: ")).unwrap();
            line["Subject: ".len()..].to_string()
        })
        .collect();
    subjects.sort();
    acknowledged.sort();
    assert_eq!(subjects, acknowledged);
    relay.stop_and_list().await;
}
