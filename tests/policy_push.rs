//! `sluice policy push`: the policy of a configuration compiled into the NATS KV bucket
//! that the Kubernetes roles follow, with exit codes a script can act on.

mod common;

use common::nats::NatsServer;
use sluice::nats::NatsConfig;
use sluice::policy::bucket::PolicyBucket;
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
    let (dir, config, _) = common::prepare("{}");
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

    let pushed = bucket(&server).await.latest().await.unwrap();
    let pushed = pushed.expect("a snapshot in the bucket");
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
