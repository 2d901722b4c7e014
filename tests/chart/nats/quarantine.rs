//! The quarantine bucket (issue 11) under the chart's permissions: the ingress's user
//! holds an original there with the real `JetStreamQuarantine`; `sluice quarantine`
//! through the worker's admin listener lists, shows and releases it, and the released
//! original reaches the sink byte for byte; the ingress's admin listener serves no
//! quarantine. Then what the ingress's user must not do: read held content back, or
//! purge the bucket.

use crate::cluster::RenderedCluster;
use crate::common::roles::RoleProcess;
use crate::common::sink::Sink;
use async_nats::jetstream;
use sluice::envelope::{Envelope, QueueId, SenderTrust, unix_ms};
use sluice::queue::jetstream::{JetStreamOptions, JetStreamQuarantine};
use sluice::queue::quarantine::{HeldMessage, Quarantine};
use sluice::smtp::address::{MailParams, Mailbox, Recipient};
use std::time::{Duration, Instant, SystemTime};

const ORIGINAL: &[u8] =
    b"Subject: held\r\nMessage-ID: <held@sender.test>\r\n\r\nthe original, attachment and all\r\n";

/// `sluice quarantine ARGS` against a role's admin listener: (exit code, output).
async fn quarantine_tool(process: &RoleProcess, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("quarantine")
        .args(args)
        .args(["--admin", &process.admin.to_string()])
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn record(to: &str) -> HeldMessage {
    let now = unix_ms(SystemTime::now());
    let (local, domain) = to.split_once('@').unwrap();
    HeldMessage {
        envelope: Envelope {
            id: QueueId::generate(),
            reverse_path: Some(Mailbox::new("a", "sender.test")),
            params: MailParams::default(),
            recipients: vec![Recipient {
                address: Mailbox::new(local, domain),
                notify: None,
                orcpt: None,
            }],
            received_at_ms: now,
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "client.test".into(),
            authenticated_user: None,
            sender_trust: SenderTrust::TrustedNetwork,
            attempts: 0,
            last_error: None,
            delay_warned_at_ms: None,
            trace: None,
        },
        reason: "attachment: invoice.pdf.exe (executable)".into(),
        held_at_ms: now,
        size: ORIGINAL.len() as u64,
    }
}

/// The quarantine as `role`'s user sees it.
async fn quarantine_as(cluster: &RenderedCluster, role: &str) -> JetStreamQuarantine {
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(cluster.connect(role).await);
    JetStreamQuarantine::open(js, &JetStreamOptions::default()).await
}

/// Held by the ingress's user, managed through the worker, delivered on release; within
/// the permissions (the caller counts the servers' refusals). Returns the id of a second
/// message left held, for [`ingress_cannot_read_or_purge`].
pub async fn held_and_released(
    cluster: &RenderedCluster,
    ingress: &RoleProcess,
    worker: &RoleProcess,
    sink: &Sink,
) -> QueueId {
    let q = quarantine_as(cluster, "ingress").await;
    let (released, kept) = (record("released@sink.test"), record("kept@sink.test"));
    q.hold(&released, ORIGINAL)
        .await
        .expect("the ingress holds");
    q.hold(&kept, ORIGINAL).await.expect("the ingress holds");
    let id = released.envelope.id.to_string();

    let (code, list) = quarantine_tool(worker, &["list"]).await;
    assert!(code == 0 && list.contains(&id), "{code}: {list}");
    assert!(list.contains("-- 1 Kbytes in 2 held messages."), "{list}");
    let (code, show) = quarantine_tool(worker, &["show", &id]).await;
    assert!(
        code == 0 && show.contains("the original, attachment and all"),
        "{code}: {show}"
    );
    let (code, text) = quarantine_tool(ingress, &["list"]).await;
    assert!(
        code == 1 && text.contains("no quarantine here"),
        "{code}: {text}"
    );

    let before = sink.transactions().len();
    let (code, text) = quarantine_tool(worker, &["release", &id]).await;
    assert!(
        code == 0 && text.contains("released, queued as"),
        "{code}: {text}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let all = sink.transactions();
        if let Some(t) = all[before.min(all.len())..]
            .iter()
            .find(|t| t.rcpt_to.iter().any(|r| r.contains("<released@sink.test>")))
        {
            break t.data.clone();
        }
        worker.fail_if(
            Instant::now() > deadline,
            "the released message was not delivered",
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivered, ORIGINAL, "released byte for byte");
    let (code, list) = quarantine_tool(worker, &["list"]).await;
    assert!(code == 0 && !list.contains(&id), "{code}: {list}");
    kept.envelope.id
}

/// What the ingress's user may not do with held messages: read the content back, purge
/// the bucket. The message stays, as the worker's user sees.
pub async fn ingress_cannot_read_or_purge(cluster: &RenderedCluster, kept: &QueueId) {
    let q = quarantine_as(cluster, "ingress").await;
    let read = tokio::time::timeout(Duration::from_secs(15), q.get(kept)).await;
    assert!(
        matches!(read, Ok(Err(_)) | Err(_)),
        "the ingress user read held content: {read:?}"
    );
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(cluster.connect("ingress").await);
    let stream = js
        .get_stream("OBJ_sluice-quarantine")
        .await
        .expect("lookup");
    assert!(
        stream.purge().await.is_err(),
        "the ingress user purged the quarantine"
    );
    let worker = quarantine_as(cluster, "worker").await;
    let (held, body) = worker.get(kept).await.unwrap().expect("still held");
    assert_eq!(
        (held.envelope.id, body.as_slice()),
        (kept.clone(), ORIGINAL)
    );
    let violations = cluster.violations();
    assert!(
        violations
            .iter()
            .any(|l| l.contains("user:ingress\"") && l.contains("OBJ_sluice-quarantine")),
        "the servers did not refuse it: {violations:#?}"
    );
}
