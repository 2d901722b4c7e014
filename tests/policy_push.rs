//! `sluice policy push`: the policy of a configuration compiled into the NATS KV bucket
//! that the Kubernetes roles follow, with exit codes a script can act on; and
//! `sluice policy status`, which says what is in force there and who wrote it.

mod common;

use common::nats::NatsServer;
use sluice::nats::NatsConfig;
use sluice::policy::bucket::{PolicyBucket, WriterKind};
use sluice::policy::{ClientInfo, PolicySnapshot};
use sluice::smtp::address::Mailbox;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs `sluice policy push --config <config> --nats-url <url>`: exit code and output.
async fn push(config: &Path, url: &str) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "push", "--config"])
        .arg(config)
        .args(["--nats-url", url])
        .env_remove("SLUICE_NATS_URL")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs `sluice policy status` with `args`: exit code, standard output, standard error.
async fn status(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "status"])
        .args(args)
        .env_remove("SLUICE_NATS_URL")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The words of the status line starting with `key`.
fn line<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let found = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key));
    let found = found.unwrap_or_else(|| panic!("no {key} line in\n{text}"));
    found.split_whitespace().skip(1).collect()
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

async fn bucket(server: &NatsServer) -> PolicyBucket {
    let config = NatsConfig {
        url: Some(server.url()),
        ..Default::default()
    };
    let client = config.connect_now("test").await.unwrap();
    PolicyBucket::open(&async_nats::jetstream::new(client), 1)
        .await
        .unwrap()
}

fn accepted(policy: &PolicySnapshot, client: &str, recipient: &str) -> bool {
    let (local, domain) = recipient.split_once('@').unwrap();
    let client = ClientInfo {
        ip: client.parse().unwrap(),
        authenticated_user: None,
    };
    policy
        .relay_decision(&client, &Mailbox::new(local, domain))
        .is_accepted()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_writes_the_compiled_policy_where_the_roles_read_it() {
    let server = NatsServer::start();
    // A configuration written for the ingress and worker roles: no listeners, no spool.
    let (dir, config, _) =
        common::prepare_with("policies: [policy.yaml]\n", &common::policy_yaml());
    let (code, text) = push(&config, &server.url()).await;
    assert_eq!(code, 0, "{text}");
    let expected = PolicySnapshot::load_files(&[dir.path().join("policy.yaml")]).unwrap();
    assert_eq!(
        text.trim(),
        format!(
            "pushed policy revision {} to sluice-policy (KV revision 1)",
            expected.revision()
        )
    );

    let in_force = bucket(&server).await.in_force().await.unwrap();
    let in_force = in_force.expect("a snapshot in the bucket");
    let writer = in_force.writer.expect("push names itself");
    assert_eq!(
        (writer.kind, writer.identity),
        (WriterKind::PolicyPush, hostname())
    );
    let pushed = in_force.snapshot;
    assert_eq!(pushed, expected);
    assert!(accepted(&pushed, "127.0.0.1", "x@foreign.test"), "trusted");
    assert!(
        !accepted(&pushed, "192.0.2.1", "x@foreign.test"),
        "open relay"
    );
    assert!(accepted(&pushed, "192.0.2.1", "x@local.test"), "local");
    assert!(
        accepted(&pushed, "192.0.2.1", "x@partner.test"),
        "relay domain"
    );

    // Pushing again is a new revision of the same key.
    let (code, text) = push(&config, &server.url()).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("(KV revision 2)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_exits_1_and_writes_nothing() {
    let server = NatsServer::start();
    let invalid = common::policy_yaml().replace("relayDomains:", "relayDomainz:");
    let (_dir, config, _) = common::prepare_with(&common::config_yaml("{}"), &invalid);
    let (code, text) = push(&config, &server.url()).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("relayDomainz"), "{text}");
    assert!(text.contains("nothing pushed"), "{text}");
    assert_eq!(bucket(&server).await.latest().await.unwrap(), None);
}

#[tokio::test]
async fn an_unreachable_nats_exits_2_promptly() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (_dir, config, _) = common::prepare("{}");
    let started = Instant::now();
    let (code, text) = push(&config, &format!("nats://127.0.0.1:{closed}")).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!("cannot reach NATS at 127.0.0.1:{closed}")),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a tool must not retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_snapshot_in_force_its_writer_and_its_policies() {
    let server = NatsServer::start();
    let url = server.url();
    let (code, out, err) = status(&["--nats-url", &url]).await;
    assert_eq!(code, 1, "no bucket yet: {out}{err}");
    assert!(
        err.contains("no policy in the NATS KV bucket sluice-policy"),
        "{err}"
    );
    assert_eq!(
        status(&["--nats-url", &url]).await.0,
        1,
        "status created the bucket"
    );
    bucket(&server).await;
    let (code, out, err) = status(&["--nats-url", &url]).await;
    assert_eq!(code, 1, "an empty bucket: {out}{err}");

    let (dir, config, _) =
        common::prepare_with("policies: [policy.yaml]\n", &common::policy_yaml());
    assert_eq!(push(&config, &url).await.0, 0);
    let expected = PolicySnapshot::load_files(&[dir.path().join("policy.yaml")]).unwrap();
    let (code, out, err) = status(&["--nats-url", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(line(&out, "revision"), [expected.revision()]);
    assert_eq!(line(&out, "kv-revision"), ["1"]);
    let writer = line(&out, "writer");
    assert_eq!(writer[..2], ["policy-push", hostname().as_str()], "{out}");
    let created = line(&out, "created");
    for time in [writer[2], created[0]] {
        let at = chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
        assert!(time.ends_with('Z'), "{time}");
        let age = chrono::Utc::now().signed_duration_since(at);
        assert!(age.num_seconds().abs() < 60, "{time}");
    }
    assert_eq!(line(&out, "mode"), ["authenticated"]);
    assert_eq!(
        line(&out, "policy"),
        ["mail/test", "users=1", "local-domains=1", "relay-domains=1"]
    );

    // The same for programs, with the NATS URL from a configuration without `policies`.
    let nats_only = dir.path().join("nats-only.yaml");
    std::fs::write(&nats_only, format!("nats: {{ url: \"{url}\" }}\n")).unwrap();
    let nats_only = nats_only.to_str().unwrap();
    let (code, out, err) = status(&["--config", nats_only, "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["revision"], expected.revision());
    assert_eq!(json["kvRevision"], 1);
    assert_eq!(json["writer"]["kind"], "policy-push");
    assert_eq!(json["mode"], "authenticated");
    assert_eq!(
        json["policies"],
        serde_json::json!([
            {"policy": "mail/test", "users": 1, "localDomains": 1, "relayDomains": 1}
        ])
    );

    // A value from a sluice that did not record writers is in force all the same.
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("sluice-policy")
        .await
        .unwrap();
    let old = serde_json::json!({"format": 1, "snapshot": expected}).to_string();
    kv.put("snapshot", old.into()).await.unwrap();
    let (code, out, err) = status(&["--nats-url", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(line(&out, "kv-revision"), ["2"]);
    assert_eq!(line(&out, "writer"), ["unknown"]);
    assert_eq!(line(&out, "revision"), [expected.revision()]);
}

#[tokio::test]
async fn status_exits_2_promptly_when_nats_cannot_be_reached() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let url = format!("nats://127.0.0.1:{closed}");
    let (code, out, err) = status(&["--nats-url", &url]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("cannot reach NATS at 127.0.0.1:{closed}")),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a tool must not retry"
    );
}
