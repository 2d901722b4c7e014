//! DNS block lists at RCPT time end to end: `sluice standalone` (in this process) with a
//! `dnsbl:` policy, its `delivery.nameserver` pointing at the loopback DNS server of
//! tests/common/dns.rs that serves the lists' zones and counts queries, and SMTP
//! clients from 127.0.0.1 (asked as `1.0.0.127.ZONE`) or 127.0.0.3. Each case checks
//! the reply, the metrics and, where it matters, how many queries the lists received.

mod common;

use common::dns::{DnsServer, Zone};
use common::smtp::Client;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The bound on waiting for anything the relay owes.
const WAIT: Duration = Duration::from_secs(10);

/// The policy: `partner.test` is a relay domain anyone may send to, alice may log in,
/// `trusted` are the trusted networks; `dnsbl` is the body of `dnsbl:` (YAML lines
/// indented by four spaces).
fn policy(trusted: &str, dnsbl: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: dnsbl, namespace: mail }}
spec:
  trustedNetworks: [{trusted}]
  relayDomains: ["partner.test"]
  users:
    - name: alice
      passwordHash: "{}"
  dnsbl:
{dnsbl}
"#,
        common::password_hash()
    )
}

/// A relay whose DNS is `dns`, not delivering (what it queues is not the question).
async fn relay(dns: SocketAddr, trusted: &str, dnsbl: &str) -> common::Relay {
    let delivery = format!("{{ enabled: false, nameserver: \"{dns}\" }}");
    let config = common::config_yaml_with("{}", &delivery);
    common::start_with(&config, &policy(trusted, dnsbl)).await
}

/// A session from `source` up to its first RCPT; the client and the RCPT's reply.
async fn first_rcpt(relay: &common::Relay, source: &str) -> (Client, String) {
    let mut c = Client::connect_from(relay.relay, source).await;
    c.cmd("EHLO client.test", "250").await;
    c.cmd("MAIL FROM:<sender@client.test>", "250").await;
    c.send(b"RCPT TO:<rcpt@partner.test>\r\n").await;
    let reply = c.reply().await;
    (c, reply)
}

/// The sum of the samples of `name` carrying every one of `labels` on `/metrics`.
async fn metric(relay: &common::Relay, name: &str, labels: &[&str]) -> f64 {
    common::roles::metric(relay.admin, name, labels).await
}

#[tokio::test]
async fn a_listed_client_is_refused_at_rcpt_naming_the_list_and_counted() {
    let dns =
        DnsServer::start(Zone::default().addr_ttl("1.0.0.127.bl.test", "127.0.0.2", 300)).await;
    let relay = relay(dns.addr, "\"192.0.2.0/24\"", "    zones: [{zone: bl.test}]").await;
    let (mut c, reply) = first_rcpt(&relay, "127.0.0.1").await;
    assert_eq!(
        reply,
        "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test"
    );
    // Later recipients of the session hear the same, without another lookup.
    let again = c.cmd("RCPT TO:<other@partner.test>", "554").await;
    assert_eq!(again, reply);
    c.cmd("QUIT", "221").await;
    assert_eq!(dns.queries(), 1, "one lookup for the session");
    assert_eq!(
        metric(
            &relay,
            "sluice_messages_rejected_total",
            &["reason=\"dnsbl\""]
        )
        .await,
        2.0
    );
    let listed = ["zone=\"bl.test\"", "result=\"listed\""];
    assert_eq!(
        metric(&relay, "sluice_dnsbl_lookups_total", &listed).await,
        1.0
    );

    // A client the list does not know (NXDOMAIN) is not refused.
    let (_, reply) = first_rcpt(&relay, "127.0.0.3").await;
    assert!(reply.starts_with("250 "), "{reply}");
    let clear = ["zone=\"bl.test\"", "result=\"clear\""];
    assert_eq!(
        metric(&relay, "sluice_dnsbl_lookups_total", &clear).await,
        1.0
    );

    // `sluice policy check` shows the lists and the threshold.
    let config = relay.dir.path().join("sluice.yaml");
    let (code, out) = common::sluice(&[
        "policy",
        "check",
        "--config",
        config.to_str().unwrap(),
        "--client",
        "198.51.100.1",
        "--from",
        "a@b.test",
        "--to",
        "rcpt@partner.test",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dnsbl: bl.test (weight 1); threshold 1; fail open, timeout 5000 ms: asked at the first RCPT"),
        "{out}"
    );
}

#[tokio::test]
async fn weights_add_up_to_the_threshold_and_answers_filter_codes() {
    let zone = Zone::default()
        // 127.0.0.1: listed by a.test only.
        .addr_ttl("1.0.0.127.a.test", "127.0.0.2", 300)
        // 127.0.0.3: listed by both.
        .addr_ttl("3.0.0.127.a.test", "127.0.0.2", 300)
        .addr_ttl("3.0.0.127.b.test", "127.0.0.2", 300)
        // f.test counts only 127.0.0.2: .3 is not a listing, .2 is.
        .addr_ttl("1.0.0.127.f.test", "127.0.0.3", 300)
        .addr_ttl("4.0.0.127.f.test", "127.0.0.2", 300);
    let dns = DnsServer::start(zone).await;
    let relay = relay(
        dns.addr,
        "\"192.0.2.0/24\"",
        "    zones:\n      - {zone: a.test}\n      - {zone: b.test}\n      - {zone: f.test, weight: 2, answers: ['127.0.0.2']}\n    threshold: 2",
    )
    .await;
    let (_, reply) = first_rcpt(&relay, "127.0.0.1").await;
    assert!(
        reply.starts_with("250 "),
        "one listing of weight 1: {reply}"
    );
    let (_, reply) = first_rcpt(&relay, "127.0.0.3").await;
    assert_eq!(
        reply,
        "554 5.7.1 Service unavailable; client [127.0.0.3] blocked using a.test, b.test"
    );
    let (_, reply) = first_rcpt(&relay, "127.0.0.4").await;
    assert_eq!(
        reply,
        "554 5.7.1 Service unavailable; client [127.0.0.4] blocked using f.test"
    );
    let filtered = ["zone=\"f.test\"", "result=\"clear\""];
    assert!(metric(&relay, "sluice_dnsbl_lookups_total", &filtered).await >= 1.0);
}

#[tokio::test]
async fn the_lists_error_codes_are_errors_by_the_fail_mode() {
    let zone = Zone::default().addr_ttl("1.0.0.127.err.test", "127.255.255.254", 300);
    let dns = DnsServer::start(zone).await;
    let open = relay(
        dns.addr,
        "\"192.0.2.0/24\"",
        "    zones: [{zone: err.test}]",
    )
    .await;
    let (_, reply) = first_rcpt(&open, "127.0.0.1").await;
    assert!(reply.starts_with("250 "), "fail open: {reply}");
    let errors = ["zone=\"err.test\"", "result=\"error\""];
    assert_eq!(
        metric(&open, "sluice_dnsbl_lookups_total", &errors).await,
        1.0
    );
    assert_eq!(
        metric(&open, "sluice_dnsbl_lookups_total", &["result=\"listed\""]).await,
        0.0
    );
    // An error is not cached: the next session asks again.
    let before = dns.queries();
    let (_, reply) = first_rcpt(&open, "127.0.0.1").await;
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(dns.queries(), before + 1);

    let closed = relay(
        dns.addr,
        "\"192.0.2.0/24\"",
        "    zones: [{zone: err.test}]\n    failMode: closed",
    )
    .await;
    let (_, reply) = first_rcpt(&closed, "127.0.0.1").await;
    assert_eq!(reply, "451 4.7.1 Client check unavailable, try again later");
    let unavailable = ["reason=\"dnsbl_unavailable\""];
    assert_eq!(
        metric(&closed, "sluice_messages_rejected_total", &unavailable).await,
        1.0
    );
}

#[tokio::test]
async fn trusted_and_authenticated_clients_are_not_asked_about() {
    let dns =
        DnsServer::start(Zone::default().addr_ttl("1.0.0.127.bl.test", "127.0.0.2", 300)).await;
    let trusted = relay(dns.addr, "\"127.0.0.1/32\"", "    zones: [{zone: bl.test}]").await;
    let (_, reply) = first_rcpt(&trusted, "127.0.0.1").await;
    assert!(reply.starts_with("250 "), "trusted network: {reply}");
    assert_eq!(dns.queries(), 0, "no lookup for a trusted client");

    // AUTH on the relay port, then RCPT: the same listed address is accepted.
    let untrusted = relay(dns.addr, "\"192.0.2.0/24\"", "    zones: [{zone: bl.test}]").await;
    let (code, text) = authenticated_send(&untrusted).await;
    assert_eq!(code, 250, "authenticated: {text}");
    assert_eq!(
        metric(
            &untrusted,
            "sluice_messages_rejected_total",
            &["reason=\"dnsbl\""]
        )
        .await,
        0.0
    );
    // Without AUTH, the same relay refuses it: the list does list it.
    let (_, reply) = first_rcpt(&untrusted, "127.0.0.1").await;
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
}

/// One transaction with smtplib from 127.0.0.1 on the relay port after STARTTLS and
/// AUTH as alice (tests/filtering/send.py): the reply to the end of the data, or to the
/// MAIL or RCPT that was refused.
async fn authenticated_send(relay: &common::Relay) -> (u16, String) {
    let message = relay.dir.path().join("message.eml");
    std::fs::write(
        &message,
        "From: alice@local.test\r\nTo: rcpt@partner.test\r\nSubject: t\r\n\r\nhello\r\n",
    )
    .unwrap();
    let args = serde_json::json!({
        "port": relay.relay.port(),
        "source": "127.0.0.1",
        "from": "alice@local.test",
        "to": "rcpt@partner.test",
        "file": message,
        "user": "alice",
        "password": common::PASSWORD,
    });
    common::mail::smtplib(args).await
}

/// Our cache, not hickory's, answers within the TTL: the ingress drops hickory's entry
/// before each lookup, so without our cache the second session would be a second query.
#[tokio::test]
async fn answers_are_cached_across_sessions_until_their_ttl() {
    let dns = DnsServer::start(Zone::default().addr_ttl("1.0.0.127.bl.test", "127.0.0.2", 2)).await;
    let relay = relay(dns.addr, "\"192.0.2.0/24\"", "    zones: [{zone: bl.test}]").await;
    let started = Instant::now();
    let (_, reply) = first_rcpt(&relay, "127.0.0.1").await;
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    assert_eq!(dns.queries(), 1);
    let (_, reply) = first_rcpt(&relay, "127.0.0.1").await;
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    assert_eq!(
        dns.queries(),
        1,
        "the second session within the TTL asks nobody"
    );
    // Sessions until one asks again: after the TTL, not before.
    let deadline = Instant::now() + WAIT;
    while dns.queries() == 1 {
        assert!(Instant::now() < deadline, "no new query after the TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, reply) = first_rcpt(&relay, "127.0.0.1").await;
        assert!(reply.starts_with("554 5.7.1"), "{reply}");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "asked again after {:?}, within the 2 s TTL",
        started.elapsed()
    );
    assert_eq!(dns.queries(), 2);
}

/// A name server that takes queries and never answers.
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while socket.recv_from(&mut buf).await.is_ok() {}
    });
    (addr, task)
}

#[tokio::test]
async fn a_list_that_does_not_answer_takes_the_fail_mode_within_the_timeout() {
    let (silent, task) = silent_server().await;
    let lists = "    zones: [{zone: bl.test}]\n    timeout: 1s";
    for (mode, expect) in [("open", "250 "), ("closed", "451 4.7.1")] {
        let relay = relay(
            silent,
            "\"192.0.2.0/24\"",
            &format!("{lists}\n    failMode: {mode}"),
        )
        .await;
        let started = Instant::now();
        let (_, reply) = first_rcpt(&relay, "127.0.0.1").await;
        let took = started.elapsed();
        assert!(reply.starts_with(expect), "{mode}: {reply}");
        assert!(
            took < Duration::from_secs(4),
            "{mode}: the reply took {took:?}"
        );
        let errors = ["zone=\"bl.test\"", "result=\"error\""];
        assert_eq!(
            metric(&relay, "sluice_dnsbl_lookups_total", &errors).await,
            1.0
        );
    }
    task.abort();
}

/// The same check in the Kubernetes role: `sluice ingress` on a real nats-server with the
/// policy pushed to the bucket and `--nameserver` pointing at the lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_role_refuses_a_listed_client() {
    use common::nats::NatsServer;
    use common::roles::{READY_WITHIN, RoleProcess, policy_config, policy_push};
    let dns =
        DnsServer::start(Zone::default().addr_ttl("1.0.0.127.bl.test", "127.0.0.2", 300)).await;
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(
        dir.path(),
        &policy("\"192.0.2.0/24\"", "    zones: [{zone: bl.test}]"),
    );
    policy_push(&config, &nats.url(), &[]).await;
    let nameserver = dns.addr.to_string();
    let args = ["--nameserver", nameserver.as_str()];
    let mut ingress = RoleProcess::ingress("ingress", &nats.url(), &args).await;
    ingress.wait_ready(READY_WITHIN).await;
    let smtp = ingress.smtp();
    for (source, code) in [("127.0.0.1", "554"), ("127.0.0.3", "250")] {
        let mut c = Client::connect_from(smtp, source).await;
        c.cmd("EHLO client.test", "250").await;
        c.cmd("MAIL FROM:<sender@client.test>", "250").await;
        let reply = c.cmd("RCPT TO:<rcpt@partner.test>", code).await;
        if code == "554" {
            assert!(reply.contains("blocked using bl.test"), "{reply}");
        }
        c.cmd("QUIT", "221").await;
    }
    assert_eq!(dns.queries(), 2, "one lookup per client");
}
