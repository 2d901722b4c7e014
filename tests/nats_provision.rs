//! Who sets up the queue's streams in JetStream (src/queue/jetstream/provision.rs):
//! `sluice nats provision` (and the operator, and `sluice standalone --jetstream`, through
//! the same function) creates and updates them; `sluice ingress` and `sluice worker` use
//! an existing stream as it is, never updating it, and a role whose NATS user may not
//! create a missing stream waits, unready and saying who creates it, until it exists.
//! Against a real nats-server and the real binary.

mod common;

use async_nats::jetstream::{self, stream};
use common::nats::NatsServer;
use common::roles::{READY_WITHIN, RoleProcess, policy_config, policy_push, route_policy};
use std::time::Duration;
use tokio::time::Instant;

/// `sluice nats provision ARGS` against `url`: (success, output).
async fn provision(url: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["nats", "provision", "--nats-url", url])
        .args(args)
        .output()
        .await
        .expect("sluice nats provision");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn stream_config(js: &jetstream::Context, name: &str) -> stream::Config {
    let mut stream = js.get_stream(name).await.expect(name);
    stream.info().await.unwrap().config.clone()
}

/// The `ack_wait` of the workers' durable consumer.
async fn workers_ack_wait(js: &jetstream::Context) -> Duration {
    let stream = js.get_stream("SLUICE_MESSAGES").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("sluice-workers").await.unwrap();
    consumer.cached_info().config.ack_wait
}

/// A server where the user `role` may do anything but create or update a stream, and
/// `admin` anything; the store directory and the config file live in `dir`.
fn server_denying_stream_writes(dir: &std::path::Path) -> NatsServer {
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        r#"authorization { users: [
  { user: admin, password: adminpw }
  { user: role, password: rolepw, permissions: {
      publish: { allow: [">"], deny: ["$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>"] }
      subscribe: { allow: [">"] } } }
] }
"#,
    )
    .unwrap();
    NatsServer::start_with(&["-c", conf.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_create_the_streams_waits_unready_until_they_are_provisioned() {
    let _heavy = common::roles::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_denying_stream_writes(dir.path());
    let config = policy_config(
        &dir.path().join("policy"),
        &route_policy(&["127.0.0.1/32"], 9),
    );
    let admin = ["--nats-user", "admin", "--nats-password", "adminpw"];
    policy_push(&config, &server.url(), &admin).await;
    let role = ["--nats-user", "role", "--nats-password", "rolepw"];
    let mut worker = RoleProcess::worker("worker", &server.url(), &role).await;

    // It tries, is refused, says who creates the stream, and stays unready: no exit.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.log().contains("`sluice nats provision` creates it") {
        worker.fail_if(
            Instant::now() > deadline,
            "no log line naming the provisioning",
        );
        let answer = worker.readyz().await;
        worker.fail_if(
            matches!(answer, Some((200, _))),
            "ready without the streams",
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worker.log().contains("SLUICE_MESSAGES does not exist"),
        "{}",
        worker.log_tail()
    );
    let answer = worker.readyz().await;
    worker.fail_if(!matches!(answer, Some((503, _))), &format!("{answer:?}"));
    let client =
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "adminpw".into())
            .connect(server.url())
            .await
            .unwrap();
    let js = jetstream::new(client);
    assert!(
        js.get_stream("SLUICE_MESSAGES").await.is_err(),
        "created after all"
    );

    // The tool, as a user allowed to, provisions; the waiting worker becomes ready, and
    // an ingress as the same restricted user starts at once.
    let (ok, text) = provision(&server.url(), &admin).await;
    assert!(ok && text.contains("provisioned SLUICE_MESSAGES"), "{text}");
    worker.wait_ready(READY_WITHIN).await;
    let mut ingress = RoleProcess::ingress("ingress", &server.url(), &role).await;
    ingress.wait_ready(READY_WITHIN).await;
    let provisioned = [
        "SLUICE_MESSAGES",
        "SLUICE_EVENTS",
        "OBJ_sluice-bodies",
        "OBJ_sluice-quarantine",
    ];
    for name in provisioned {
        assert_eq!(stream_config(&js, name).await.num_replicas, 1, "{name}");
    }
    assert_eq!(workers_ack_wait(&js).await, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_use_existing_streams_as_they_are_and_provisioning_restores_them() {
    let _heavy = common::roles::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    // The streams exist, changed by hand: a shorter event history, a shorter duplicate
    // window. A role that wrote its own configuration over them would undo that.
    let (ok, text) = provision(&server.url(), &[]).await;
    assert!(ok, "{text}");
    let mut events = stream_config(&js, "SLUICE_EVENTS").await;
    events.max_age = Duration::from_secs(3600);
    js.update_stream(events).await.unwrap();
    let mut messages = stream_config(&js, "SLUICE_MESSAGES").await;
    messages.duplicate_window = Duration::from_secs(60);
    js.update_stream(messages).await.unwrap();

    let config = policy_config(
        &dir.path().join("policy"),
        &route_policy(&["127.0.0.1/32"], 9),
    );
    policy_push(&config, &server.url(), &[]).await;
    let mut worker = RoleProcess::worker("worker", &server.url(), &[]).await;
    worker.wait_ready(READY_WITHIN).await;
    let mut ingress = RoleProcess::ingress("ingress", &server.url(), &[]).await;
    ingress.wait_ready(READY_WITHIN).await;
    let events = stream_config(&js, "SLUICE_EVENTS").await;
    assert_eq!(
        events.max_age,
        Duration::from_secs(3600),
        "a role updated SLUICE_EVENTS"
    );
    let messages = stream_config(&js, "SLUICE_MESSAGES").await;
    assert_eq!(
        messages.duplicate_window,
        Duration::from_secs(60),
        "a role updated SLUICE_MESSAGES"
    );

    // Provisioning writes Sluice's configuration back; the consumer's ack_wait stays
    // the workers' (theirs is 30 s here).
    let (ok, text) = provision(&server.url(), &["--nats-ack-wait", "45s"]).await;
    assert!(ok, "{text}");
    let events = stream_config(&js, "SLUICE_EVENTS").await;
    assert_eq!(events.max_age, sluice::events::jetstream::MAX_AGE);
    let messages = stream_config(&js, "SLUICE_MESSAGES").await;
    assert_eq!(messages.duplicate_window, Duration::from_secs(120));
    assert_eq!(workers_ack_wait(&js).await, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_on_jetstream_provisions_what_it_uses() {
    let _heavy = common::roles::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let (ok, text) = provision(&server.url(), &[]).await;
    assert!(ok, "{text}");
    let mut events = stream_config(&js, "SLUICE_EVENTS").await;
    events.max_age = Duration::from_secs(3600);
    js.update_stream(events).await.unwrap();
    let config = policy_config(
        &dir.path().join("policy"),
        &route_policy(&["127.0.0.1/32"], 9),
    );
    let config = config.to_str().unwrap();
    let args = ["--jetstream", "--config", config, "--smtp", "127.0.0.1:0"];
    let mut standalone = RoleProcess::start("standalone", "standalone", &server.url(), &args).await;
    standalone.wait_ready(READY_WITHIN).await;
    let events = stream_config(&js, "SLUICE_EVENTS").await;
    assert_eq!(events.max_age, sluice::events::jetstream::MAX_AGE);
}

#[tokio::test]
async fn provision_fails_plainly_when_nats_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (ok, text) = provision(&format!("nats://127.0.0.1:{port}"), &[]).await;
    assert!(!ok && text.contains("cannot reach NATS"), "{text}");
}
