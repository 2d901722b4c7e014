//! The ingress's memory bounds over real TCP: a process-wide budget of message bytes in
//! memory (452/451 4.3.1 when it is spent), large messages received into a temporary
//! file and queued byte for byte through both backends, temporary files removed on every
//! path, and connections counted per IPv6 network.

mod common;

use common::nats::NatsServer;
use common::roles::{http_get, metric_sum};
use common::smtp::Client;
use sluice::queue::QueueAdmin;
use sluice::queue::jetstream::{JetStreamOptions, JetStreamQueue};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until the relay's metric satisfies `ok`; panics with its last value after
/// [`DEADLINE`].
async fn until_metric(admin: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < DEADLINE {
        if let Some((_, page)) = http_get(admin, "/metrics").await {
            last = metric_sum(&page, name);
            if last.is_some_and(&ok) {
                return last.unwrap_or_default();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} never got there; last {last:?}");
}

/// Temporary message files in `dir`.
fn spill_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("sluice-body-"))
        .collect()
}

async fn until_spill_files(dir: &Path, ok: impl Fn(usize) -> bool) {
    let started = Instant::now();
    while !ok(spill_files(dir).len()) {
        assert!(
            started.elapsed() < DEADLINE,
            "spill files in {}: {:?}",
            dir.display(),
            spill_files(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `size` bytes of text in 78-octet lines, none starting with a dot, numbered so that
/// a lost or repeated piece shows.
fn content(size: usize) -> Vec<u8> {
    let mut out = b"Subject: large\r\n\r\n".to_vec();
    let mut n = 0u64;
    while out.len() < size {
        out.extend_from_slice(format!("{n:010} {}\r\n", "x".repeat(65)).as_bytes());
        n += 1;
    }
    out
}

/// The queued content without the Received header the relay prepends.
fn after_received(body: &[u8]) -> &[u8] {
    let start = body
        .windows(b"Subject: large".len())
        .position(|w| w == b"Subject: large")
        .expect("content in the queued body");
    assert!(body.starts_with(b"Received: "));
    &body[start..]
}

async fn open_transaction(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250 2.1.0").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
    c
}

/// Budget 256 KiB, threshold 100 KiB: two messages of 90 KiB held in memory (100 KiB of
/// capacity each) leave 56 KiB, too little for a new message.
const SMALL_BUDGET: &str = "{memoryBudget: 256Ki, spillThreshold: 100Ki}";
const HELD: f64 = 2.0 * 100.0 * 1024.0;

#[tokio::test]
async fn over_the_budget_sessions_get_452_or_451_and_a_later_one_is_accepted() {
    let relay = common::start(SMALL_BUDGET).await;
    let body = content(90 << 10);
    let mut a = open_transaction(relay.relay).await;
    let mut b = open_transaction(relay.relay).await;
    let mut late = open_transaction(relay.relay).await;
    for c in [&mut a, &mut b, &mut late] {
        c.cmd("DATA", "354").await;
    }
    a.send(&body).await;
    b.send(&body).await;
    until_metric(relay.admin, "sluice_memory_in_flight_bytes", |v| v >= HELD).await;

    // A new transaction, recipient or content is refused while the budget is spent.
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "452 4.3.1").await;
    // A message already in DATA cannot grow: its content is dropped, and it is refused
    // once its end arrives, with the session still in step.
    late.send(&body).await;
    late.send(b".\r\n").await;
    late.expect("451 4.3.1").await;
    late.cmd("NOOP", "250").await;

    for c in [&mut a, &mut b] {
        c.send(b".\r\n").await;
        c.expect("250 2.0.0 Ok: queued as").await;
    }
    until_metric(relay.admin, "sluice_memory_in_flight_bytes", |v| v == 0.0).await;
    c.cmd("MAIL FROM:<a@sender.test>", "250 2.1.0").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
    c.cmd("DATA", "354").await;
    c.send(&body).await;
    c.send(b".\r\n").await;
    c.expect("250 2.0.0").await;
    let (_, page) = http_get(relay.admin, "/metrics").await.unwrap();
    let refused = "sluice_messages_rejected_total{reason=\"insufficient_storage\"} 2\n";
    assert!(page.contains(refused), "{page}");
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 3, "a, b and the later one");
    for (_, queued) in &spool {
        assert_eq!(after_received(queued), body.as_slice());
    }
}

/// Sends `body` with DATA, or with BDAT in chunks of `chunk` octets, and checks that
/// it went to a file in `incoming` while it was being received.
async fn send_message(c: &mut Client, body: &[u8], chunk: Option<usize>, incoming: &Path) {
    match chunk {
        None => {
            c.cmd("DATA", "354").await;
            c.send(body).await;
            until_spill_files(incoming, |n| n == 1).await;
            c.send(b".\r\n").await;
        }
        Some(size) => {
            let pieces: Vec<&[u8]> = body.chunks(size).collect();
            for (i, piece) in pieces.iter().enumerate() {
                let last = if i + 1 == pieces.len() { " LAST" } else { "" };
                c.send(format!("BDAT {}{last}\r\n", piece.len()).as_bytes())
                    .await;
                c.send(piece).await;
                if last.is_empty() {
                    c.expect("250 2.0.0").await;
                    assert_eq!(spill_files(incoming).len(), 1, "chunk {i} not in a file");
                }
            }
        }
    }
    c.expect("250 2.0.0 Ok: queued as").await;
}

#[tokio::test]
async fn a_spilled_message_is_queued_byte_identical_on_the_spool() {
    let relay = common::start("{spillThreshold: 64Ki}").await;
    let incoming = relay.spool_dir().join("incoming");
    let body = content(3 << 20);
    let mut c = open_transaction(relay.relay).await;
    send_message(&mut c, &body, None, &incoming).await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    send_message(&mut c, &body, Some(700_000), &incoming).await;
    c.cmd("QUIT", "221").await;
    let spilled = until_metric(relay.admin, "sluice_messages_spilled_total", |v| v >= 2.0).await;
    assert_eq!(spilled, 2.0);
    assert_eq!(spill_files(&incoming), Vec::<String>::new());
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 2);
    for (_, queued) in &spool {
        assert!(after_received(queued) == body.as_slice(), "content differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilled_message_is_queued_byte_identical_on_jetstream() {
    let nats = NatsServer::start();
    let relay = common::start_on_jetstream("{spillThreshold: 64Ki}", &nats.url()).await;
    let incoming = relay.spool_dir().join("incoming");
    // Over NATS's 1 MiB max payload: streamed from the file to the object store. Under
    // it: the message payload.
    let large = content(3 << 20);
    let medium = content(300 << 10);
    let mut c = open_transaction(relay.relay).await;
    send_message(&mut c, &large, None, &incoming).await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    send_message(&mut c, &medium, Some(100_000), &incoming).await;
    c.cmd("QUIT", "221").await;
    assert_eq!(spill_files(&incoming), Vec::<String>::new());
    let options = JetStreamOptions {
        manage_consumer: false,
        ..JetStreamOptions::default()
    };
    let queue = JetStreamQueue::connect(&nats.url(), options)
        .await
        .expect("connect to the queue");
    let mut bodies = Vec::new();
    for entry in queue.list().await.unwrap() {
        let (_, body) = queue.inspect(&entry.envelope.id).await.unwrap().unwrap();
        bodies.push(after_received(&body).to_vec());
    }
    bodies.sort_by_key(Vec::len);
    assert!(bodies == vec![medium, large], "content differs");
}

#[tokio::test]
async fn spill_files_are_removed_after_a_disconnect_mid_data_and_after_a_refusal() {
    let relay = common::start("{spillThreshold: 64Ki, maxMessageSize: 1Mi}").await;
    let incoming = relay.spool_dir().join("incoming");
    let body = content(512 << 10);

    let mut c = open_transaction(relay.relay).await;
    c.cmd("DATA", "354").await;
    c.send(&body).await;
    until_spill_files(&incoming, |n| n == 1).await;
    drop(c);
    until_spill_files(&incoming, |n| n == 0).await;

    // Over maxMessageSize after it spilled: 552 as before, and the file goes.
    let mut c = open_transaction(relay.relay).await;
    c.cmd("DATA", "354").await;
    c.send(&body).await;
    until_spill_files(&incoming, |n| n == 1).await;
    c.send(&body).await;
    c.send(&body).await;
    c.send(b".\r\n").await;
    c.expect("552 5.3.4").await;
    until_spill_files(&incoming, |n| n == 0).await;

    // RSET between BDAT chunks abandons the message, and its file.
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.send(format!("BDAT {}\r\n", body.len()).as_bytes()).await;
    c.send(&body).await;
    c.expect("250 2.0.0").await;
    assert_eq!(spill_files(&incoming).len(), 1);
    c.cmd("RSET", "250").await;
    until_spill_files(&incoming, |n| n == 0).await;
    c.cmd("QUIT", "221").await;
    assert!(relay.stop_and_list().await.is_empty());
}

#[tokio::test]
async fn connections_from_one_ipv6_network_are_counted_together() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: the limiter is unit-tested in ingress::limits");
        return;
    }
    let config = common::config_yaml(
        "{maxConnectionsPerIp: 10, maxConnectionsPerIpv6Prefix: 2, ipv6Prefix: 64}",
    )
    .replace(
        "address: \"127.0.0.1:0\", kind: relay",
        "address: \"[::1]:0\", kind: relay",
    );
    let relay = common::start_with(&config, &common::policy_yaml()).await;
    assert!(relay.relay.is_ipv6());
    let _a = Client::connect(relay.relay).await;
    let _b = Client::connect(relay.relay).await;
    // This machine has one address in ::1's /64; the limiter's unit test shows other
    // addresses of one /64 counted together.
    let mut c = Client::over(Box::new(
        tokio::net::TcpStream::connect(relay.relay).await.unwrap(),
    ));
    c.expect("421 4.7.0").await;
    let (_, page) = http_get(relay.admin, "/metrics").await.unwrap();
    let refused = "sluice_connections_refused_total{reason=\"max_per_ipv6_prefix\"} 1\n";
    assert!(page.contains(refused), "{page}");
}
