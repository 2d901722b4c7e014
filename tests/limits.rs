//! Every limit over a real TCP connection on loopback: line lengths, sizes, recipients,
//! timeouts, errors per session and concurrent connections, each answered with its code
//! and, where the session goes on, kept in step.

mod common;

use common::smtp::Client;

const DEFAULTS: &str = "{}";

async fn transaction(c: &mut Client) {
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250 2.1.0").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
}

#[tokio::test]
async fn rfc_sized_command_lines_pass_and_longer_ones_get_500_in_step() {
    let relay = common::start(DEFAULTS).await;
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    // The longest MAIL the advertised extensions allow: 512 + SIZE + BODY + SMTPUTF8 + DSN + AUTH.
    let local = "a".repeat(64);
    let label = "d".repeat(60);
    let domain = format!("{label}.{label}.{label}.test");
    let line = format!(
        "MAIL FROM:<{local}@{domain}> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID={} AUTH={local}@{domain}",
        "e".repeat(100)
    );
    assert!(line.len() > 600, "{}", line.len());
    c.cmd(&line, "250 2.1.0").await;
    c.cmd(&format!("NOOP {}", "x".repeat(2100)), "500 5.5.2")
        .await;
    c.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
    c.cmd("QUIT", "221 2.0.0").await;
    assert!(relay.stop_and_list().await.is_empty());
}

#[tokio::test]
async fn long_text_lines_are_accepted_up_to_the_bound_then_refused_with_552() {
    let relay = common::start("{maxDataLine: 2000}").await;
    let mut c = Client::connect(relay.relay).await;
    transaction(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send(format!("Subject: long\r\n\r\n{}\r\n.\r\n", "x".repeat(1500)).as_bytes())
        .await;
    c.expect("250 2.0.0 Ok: queued as").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(format!("Subject: longer\r\n\r\n{}\r\n.\r\n", "y".repeat(2001)).as_bytes())
        .await;
    c.expect("552 5.3.4").await;
    c.cmd("NOOP", "250").await;
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 1, "only the first message is queued");
    assert!(!spool[0].1.windows(10).any(|w| w == b"yyyyyyyyyy"));
}

#[tokio::test]
async fn declared_and_actual_size_over_the_limit_get_552_and_nothing_is_queued() {
    let relay = common::start("{maxMessageSize: 10Ki}").await;
    let mut c = Client::connect(relay.relay).await;
    let ehlo = c.cmd("EHLO client.test", "250 ").await;
    assert!(ehlo.contains("SIZE 10240"), "{ehlo}");
    c.cmd("MAIL FROM:<a@sender.test> SIZE=10241", "552 5.3.4")
        .await;
    c.cmd("MAIL FROM:<a@sender.test> SIZE=100", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("DATA", "354").await;
    let line = format!("{}\r\n", "z".repeat(70));
    c.send(line.repeat(200).as_bytes()).await;
    c.send(b".\r\n").await;
    c.expect("552 5.3.4").await;
    // The same through BDAT.
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.send(format!("BDAT {} LAST\r\n", line.len() * 200).as_bytes())
        .await;
    c.send(line.repeat(200).as_bytes()).await;
    c.expect("552 5.3.4").await;
    c.cmd("NOOP", "250").await;
    assert!(relay.stop_and_list().await.is_empty());
}

#[tokio::test]
async fn recipients_beyond_the_limit_get_452() {
    let relay = common::start("{maxRecipients: 3}").await;
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    for i in 0..3 {
        c.cmd(&format!("RCPT TO:<r{i}@foreign.test>"), "250 2.1.5")
            .await;
    }
    c.cmd("RCPT TO:<r3@foreign.test>", "452 4.5.3").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: three\r\n\r\nbody\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    let spool = relay.stop_and_list().await;
    assert_eq!(spool[0].0.envelope.recipients.len(), 3);
}

#[tokio::test]
async fn command_timeout_answers_421_and_closes() {
    let relay = common::start("{commandTimeout: 1s}").await;
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.expect("421 4.4.2").await;
    assert!(c.closed().await);
}

/// A client that sends and never reads: once the replies fill the socket buffers the
/// relay's writes block, and the write timeout must end the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let relay = common::start("{writeTimeout: 1s, commandTimeout: 120s}").await;
    let metrics = relay.running.as_ref().unwrap().metrics.clone();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(relay.relay).await.unwrap();
    // Each EHLO draws a reply of some 200 bytes: 40,000 of them are about 8 MB of
    // replies, more than loopback's buffers hold, from 0.7 MB sent.
    let writer = tokio::spawn(async move {
        let batch = "EHLO client.test\r\n".repeat(1000);
        for _ in 0..40 {
            if stream.write_all(batch.as_bytes()).await.is_err() {
                return;
            }
        }
        // Keep the connection open, still not reading, until the test aborts this task.
        std::future::pending::<()>().await;
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while metrics.connections_active.get() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session that never reads is still open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    writer.abort();
}

/// The lifetime cap ends a session that no other limit would end yet (here, one waiting
/// well within its command timeout); it runs beside every other wait, busy or not.
#[tokio::test]
async fn a_session_ends_at_its_lifetime() {
    let relay = common::start("{maxSessionLifetime: 2s, commandTimeout: 120s}").await;
    let mut c = Client::connect(relay.relay).await;
    let started = std::time::Instant::now();
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("NOOP", "250").await;
    c.expect("421 4.4.2").await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn data_timeout_answers_421_and_queues_nothing() {
    let relay = common::start("{dataTimeout: 1s}").await;
    let mut c = Client::connect(relay.relay).await;
    transaction(&mut c).await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: never finished\r\n").await;
    c.expect("421 4.4.2").await;
    assert!(c.closed().await);
    assert!(relay.stop_and_list().await.is_empty());
}

#[tokio::test]
async fn too_many_errors_end_the_session_with_421() {
    let relay = common::start("{maxErrors: 3}").await;
    let mut c = Client::connect(relay.relay).await;
    c.cmd("FOO", "500 5.5.2").await;
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1").await;
    c.cmd("BAR", "421 4.7.0").await;
    assert!(c.closed().await);
}

/// The first line a client from `source` hears.
async fn first_line(addr: std::net::SocketAddr, source: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut reader = tokio::io::BufReader::new(socket.connect(addr).await.unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    line
}

#[tokio::test]
async fn connections_per_ip_and_overall_are_capped_with_421() {
    let relay = common::start("{maxConnectionsPerIp: 2, maxConnections: 3}").await;
    let _a = Client::connect(relay.relay).await;
    let _b = Client::connect(relay.relay).await;
    let refused = first_line(relay.relay, "127.0.0.1").await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    // Another address still gets in, until the overall cap is reached.
    let _c = Client::connect_from(relay.relay, "127.0.0.2").await;
    let refused = first_line(relay.relay, "127.0.0.3").await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    drop(_a);
    // The close frees a slot once the relay has seen it; until then a new client is
    // still refused, so try until one is greeted.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let _d = loop {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let mut c = Client::over(Box::new(socket.connect(relay.relay).await.unwrap()));
        let greeting = c.reply().await;
        if greeting.starts_with("220 ") {
            break c;
        }
        assert!(greeting.starts_with("421 4.7.0"), "{greeting}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused after a connection closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
}
