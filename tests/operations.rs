//! Operating the relay: the admin endpoints, policy reload without dropping sessions,
//! and SIGTERM draining open transactions.

mod common;

use common::smtp::Client;
use sluice::telemetry::metrics::ReloadResult;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

async fn send_one(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("RCPT TO:<c@nowhere.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: metrics\r\n\r\nhi\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let relay = common::start("{}").await;
    assert_eq!(http_get(relay.admin, "/healthz").await.0, 200);
    let policy =
        sluice::policy::PolicySnapshot::load_files(&[relay.dir.path().join("policy.yaml")])
            .unwrap();
    let revision = policy.revision();
    assert_eq!(
        http_get(relay.admin, "/readyz").await,
        (200, format!("ready\npolicy revision {revision}\n"))
    );
    send_one(relay.relay).await;
    let mut c = Client::connect_from(relay.relay, "127.0.0.2").await;
    c.cmd("HELO x.test", "250").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "554 5.7.1").await;
    let (status, metrics) = http_get(relay.admin, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "sluice_messages_accepted_total 1\n",
        "sluice_messages_rejected_total{reason=\"relay_denied\"} 1\n",
        "sluice_commands_total{verb=\"RCPT\"} 3\n",
        "sluice_connections_total{listener=\"relay\"} 2\n",
        "sluice_enqueue_seconds_count 1\n",
        &format!("\nsluice_policy_revision_info{{revision=\"{revision}\"}} 1\n"),
    ] {
        assert!(metrics.contains(needle), "{needle} missing in\n{metrics}");
    }
    assert_eq!(http_get(relay.admin, "/nope").await.0, 404);
}

#[tokio::test]
async fn policy_reload_applies_to_new_sessions_and_invalid_policy_is_refused() {
    let relay = common::start("{}").await;
    let mut before = Client::connect_from(relay.relay, "127.0.0.2").await;
    before.cmd("EHLO client.test", "250 ").await;
    let policy = relay.dir.path().join("policy.yaml");
    let widened =
        common::policy_yaml().replace("\"127.0.0.1/32\"", "\"127.0.0.1/32\", \"127.0.0.2/32\"");
    std::fs::write(&policy, &widened).unwrap();
    let running = relay.running.as_ref().unwrap();
    running.reload();
    wait_for(|| running.metrics.policy_reloads.get(ReloadResult::Applied) >= 1).await;
    // What /metrics and /readyz show follows the files too.
    let widened_revision =
        sluice::policy::PolicySnapshot::load_files(std::slice::from_ref(&policy))
            .unwrap()
            .revision()
            .to_string();
    wait_for(|| running.metrics.policy_revision.get().as_deref() == Some(&widened_revision)).await;
    let (status, body) = http_get(relay.admin, "/readyz").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("\npolicy revision {widened_revision}\n")),
        "{body}"
    );
    let mut after = Client::connect_from(relay.relay, "127.0.0.2").await;
    after.cmd("EHLO client.test", "250 ").await;
    after.cmd("MAIL FROM:<a@sender.test>", "250").await;
    after.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
    // The session opened before the change keeps the policy it started with.
    before.cmd("MAIL FROM:<a@sender.test>", "250").await;
    before.cmd("RCPT TO:<b@foreign.test>", "554 5.7.1").await;

    std::fs::write(
        &policy,
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nspec: {mode: sideways}\n",
    )
    .unwrap();
    running.reload();
    wait_for(|| running.metrics.policy_reloads.get(ReloadResult::Invalid) >= 1).await;
    assert_eq!(
        running.metrics.policy_revision.get(),
        Some(widened_revision),
        "a refused policy is not applied"
    );
    let mut still = Client::connect_from(relay.relay, "127.0.0.2").await;
    still.cmd("EHLO client.test", "250 ").await;
    still.cmd("MAIL FROM:<a@sender.test>", "250").await;
    still.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
}

#[tokio::test]
async fn a_long_session_takes_a_narrower_policy_at_its_next_transaction() {
    let relay = common::start("{sessionPolicyMaxAge: 1s}").await;
    let mut open = Client::connect(relay.relay).await;
    open.cmd("EHLO client.test", "250 ").await;
    open.cmd("MAIL FROM:<a@sender.test>", "250").await;
    open.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
    open.cmd("RSET", "250").await;
    // 127.0.0.1 is no longer trusted.
    let policy = relay.dir.path().join("policy.yaml");
    let narrowed = common::policy_yaml().replace("\"127.0.0.1/32\", ", "");
    std::fs::write(&policy, narrowed).unwrap();
    let running = relay.running.as_ref().unwrap();
    running.reload();
    wait_for(|| running.metrics.policy_reloads.get(ReloadResult::Applied) >= 1).await;
    // Within the cap the session keeps its policy; past it, the next transaction is
    // judged by the policy in force. Each round is one transaction, bounded in count.
    let started = std::time::Instant::now();
    loop {
        open.cmd("MAIL FROM:<a@sender.test>", "250").await;
        open.send(b"RCPT TO:<b@foreign.test>\r\n").await;
        let reply = open.reply().await;
        open.cmd("RSET", "250").await;
        if reply.starts_with("554 5.7.1") {
            break;
        }
        assert!(reply.starts_with("250 2.1.5"), "{reply}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the session still relays 5 s after the trusted network was removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "took the policy before the cap"
    );
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..100 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn sigterm_lets_an_open_transaction_finish_then_exits() {
    let (dir, config, _) = common::prepare("{shutdownGrace: 10s}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = std::fs::read_to_string(&config).unwrap().replacen(
        "127.0.0.1:0",
        &format!("127.0.0.1:{port}"),
        1,
    );
    std::fs::write(&config, yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["standalone", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = std::time::Instant::now();
    let mut c = loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break Client::connect(addr).await;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice exited at start"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not listening within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut idle = Client::connect(addr).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // An idle session is told to go away at once.
    idle.expect("421 4.3.2").await;
    // New connections are refused while the open transaction keeps the process draining:
    // the listener closes as the drain starts (it may take a moment after the idle
    // session's 421). A listener left open would complete every connect, as the kernel
    // does for a listening socket whether or not it is accepted.
    let draining = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            draining.elapsed() < Duration::from_secs(5),
            "still accepting 5 s into the drain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the refusal was seen while draining, not after the exit"
    );
    // The open transaction still completes.
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: during shutdown\r\n\r\nhi\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    c.send(b"NOOP\r\n").await;
    c.expect("421 4.3.2").await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let spool = common::spool_contents(&dir.path().join("spool")).await;
    assert_eq!(spool.len(), 1);
}
