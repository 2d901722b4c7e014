//! Signing in the Kubernetes roles: `sluice ingress` with `--secrets-dir` and `sluice
//! worker` on a real nats-server, the policy pushed with `sluice policy push`; a
//! message from the trusted network arrives at the worker's sink signed and verifies.

use super::support::*;
use crate::common::nats::NatsServer;
use crate::common::roles::{READY_WITHIN, RoleProcess, policy_config, policy_push};
use crate::common::sink::{AcceptAll, Sink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_role_signs_what_the_worker_delivers() {
    let keys = Keys::new();
    let dns = keys.dns().await;
    let nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(dir.path(), &policy(sink.addr.port(), &signing("")));
    policy_push(&config, &nats.url(), &[]).await;
    let secrets = keys.path().to_str().unwrap();
    let mut ingress =
        RoleProcess::ingress("ingress", &nats.url(), &["--secrets-dir", secrets]).await;
    let mut worker = RoleProcess::worker("worker", &nats.url(), &[]).await;
    ingress.wait_ready(READY_WITHIN).await;
    worker.wait_ready(READY_WITHIN).await;

    let smtp = ingress.smtp();
    let reply = send(
        smtp,
        smtp,
        Client::From(TRUSTED),
        &message("ops@example.com", "role"),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    let got = delivered(&sink, "role").await;
    assert_eq!(
        signatures(&got).len(),
        2,
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        mail_auth_verdicts(&dns, &got).await,
        [
            ("example.com".to_string(), true),
            ("example.com".to_string(), true)
        ]
    );
    assert!(dkimpy_verdicts(&keys.records, &got).iter().all(|v| v.3));
}
