//! The contract of the [`Quarantine`] trait, written once and run against every backend
//! with [`quarantine_contract_tests!`]: a backend gives a [`Harness`] that opens handles on
//! one store, plants raw stored records (as a hostile writer could) and gives a queue
//! for releases.

use super::{HeldMessage, MAX_REASON, Quarantine, release};
use crate::envelope::QueueId;
use crate::queue::QueueAdmin;
use crate::queue::conformance::envelope;
use async_trait::async_trait;
use std::sync::Arc;

#[async_trait]
pub trait Harness: Send + Sync {
    /// A new handle on the same store: a reopen (spool), a new connection (JetStream).
    async fn open(&self) -> Arc<dyn Quarantine>;
    /// Stores `record_json` and `body` under the id text `name` as the backend would,
    /// with no check at all.
    async fn plant(&self, name: &str, record_json: &str, body: &[u8]);
    /// The queue that releases go to.
    async fn queue(&self) -> Arc<dyn QueueAdmin>;
}

/// One `#[tokio::test]` per check; `$ctx` makes the harness.
macro_rules! quarantine_contract_tests {
    ($ctx:expr) => {
        $crate::queue::quarantine::contract::quarantine_contract_tests!(@ $ctx;
            hold_list_get_delete,
            large_bodies_round_trip,
            held_messages_survive_a_new_handle,
            reasons_are_kept_to_one_bounded_line,
            records_we_could_not_read_back_are_not_held,
            hostile_records_are_refused,
            release_requeues_the_original_under_a_new_id,
        );
    };
    (@ $ctx:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $ctx;
                $crate::queue::quarantine::contract::$name(&harness).await;
            }
        )*
    };
}
pub(crate) use quarantine_contract_tests;

pub fn record(recipients: &[&str], held_at_ms: u64, body: &[u8]) -> HeldMessage {
    HeldMessage {
        envelope: envelope(recipients),
        reason: "attachment: invoice.pdf.exe (executable)".into(),
        held_at_ms,
        size: body.len() as u64,
    }
}

pub async fn hold_list_get_delete(h: &impl Harness) {
    let q = h.open().await;
    assert!(q.list().await.unwrap().is_empty());
    let (newer, older) = (
        record(&["a"], 2_000, b"two"),
        record(&["b", "c"], 1_000, b"one"),
    );
    q.hold(&newer, b"two").await.unwrap();
    q.hold(&older, b"one\r\n.\r\n").await.unwrap();
    let older = HeldMessage { size: 8, ..older };
    assert_eq!(q.list().await.unwrap(), [older.clone(), newer.clone()]);
    let (got, body) = q.get(&older.envelope.id).await.unwrap().unwrap();
    assert_eq!(
        (got, body.as_slice()),
        (older.clone(), &b"one\r\n.\r\n"[..])
    );
    assert!(q.get(&QueueId::generate()).await.unwrap().is_none());
    assert!(q.delete(&older.envelope.id).await.unwrap());
    assert!(!q.delete(&older.envelope.id).await.unwrap());
    assert!(q.get(&older.envelope.id).await.unwrap().is_none());
    assert_eq!(q.list().await.unwrap(), [newer]);
}

pub async fn large_bodies_round_trip(h: &impl Harness) {
    let q = h.open().await;
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let held = record(&["a"], 1, &big);
    q.hold(&held, &big).await.unwrap();
    let (got, body) = q.get(&held.envelope.id).await.unwrap().unwrap();
    assert_eq!(got, held);
    assert!(body == big, "3 MiB come back byte for byte");
    assert_eq!(q.list().await.unwrap(), [held]);
}

pub async fn held_messages_survive_a_new_handle(h: &impl Harness) {
    let held = record(&["a"], 1, b"kept");
    {
        let q = h.open().await;
        q.hold(&held, b"kept").await.unwrap();
    }
    let q = h.open().await;
    assert_eq!(
        q.get(&held.envelope.id).await.unwrap(),
        Some((held.clone(), b"kept".to_vec()))
    );
    assert_eq!(q.list().await.unwrap(), [held]);
}

pub async fn reasons_are_kept_to_one_bounded_line(h: &impl Harness) {
    let q = h.open().await;
    let mut held = record(&["a"], 1, b"x");
    held.reason = format!("two\r\nlines {}", "é".repeat(MAX_REASON));
    held.size = 999;
    q.hold(&held, b"x").await.unwrap();
    let (got, _) = q.get(&held.envelope.id).await.unwrap().unwrap();
    assert!(got.reason.starts_with("two  lines é"), "{}", got.reason);
    assert!(got.reason.len() <= MAX_REASON && got.reason.ends_with('…'));
    assert_eq!(got.size, 1, "the size is the content's");
}

pub async fn records_we_could_not_read_back_are_not_held(h: &impl Harness) {
    let q = h.open().await;
    let mut held = record(&["a"], 1, b"x");
    held.envelope.recipients[0].address.local = "a\r\nRSET".into();
    assert!(q.hold(&held, b"x").await.is_err());
    assert!(q.list().await.unwrap().is_empty());
}

/// Records a hostile writer could leave: each is refused by `get` and left out of `list`,
/// while a good one beside them is listed.
pub async fn hostile_records_are_refused(h: &impl Harness) {
    let good = record(&["a"], 1, b"good");
    let q = h.open().await;
    q.hold(&good, b"good").await.unwrap();
    let json = |r: &HeldMessage| serde_json::to_value(r).unwrap();
    let mut cases: Vec<(QueueId, String, &[u8])> = Vec::new();
    let mut plant = |spoil: &dyn Fn(&mut serde_json::Value), body: &'static [u8]| {
        let held = record(&["a"], 2, body);
        let mut value = json(&held);
        spoil(&mut value);
        cases.push((held.envelope.id, value.to_string(), body));
    };
    plant(&|v| v["envelope"]["helo"] = "x\r\nDATA".into(), b"1");
    plant(&|v| v["size"] = 5.into(), b"1");
    plant(&|v| v["reason"] = "a\rb".into(), b"1");
    plant(
        &|v| v["envelope"]["id"] = QueueId::generate().to_string().into(),
        b"1",
    );
    plant(&|v| v["reason"] = "x".repeat(300_000).into(), b"1");
    plant(&|v| *v = serde_json::json!(["not", "a", "record"]), b"1");
    let other = json(&record(&["b"], 2, b"1"));
    plant(&|v| v["envelope"] = other["envelope"].clone(), b"1");
    for (id, record_json, body) in &cases {
        h.plant(id.as_str(), record_json, body).await;
    }
    h.plant(QueueId::generate().as_str(), "{not json", b"1")
        .await;
    for (id, _, _) in &cases {
        assert!(q.get(id).await.is_err(), "{id} refused");
    }
    assert_eq!(q.list().await.unwrap(), [good]);
}

pub async fn release_requeues_the_original_under_a_new_id(h: &impl Harness) {
    let q = h.open().await;
    let queue = h.queue().await;
    let original = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nexe\r\n--b--\r\n";
    let held = record(&["a", "b"], 1, original);
    q.hold(&held, original).await.unwrap();
    let new_id = release(q.as_ref(), queue.as_ref(), &held.envelope.id)
        .await
        .unwrap()
        .expect("released");
    assert_ne!(new_id, held.envelope.id);
    let (entry, body) = queue.inspect(&new_id).await.unwrap().expect("queued");
    assert_eq!(body, original);
    assert_eq!(entry.envelope.recipients, held.envelope.recipients);
    assert_eq!(entry.envelope.reverse_path, held.envelope.reverse_path);
    assert_eq!(entry.envelope.params, held.envelope.params);
    assert_eq!(entry.envelope.attempts, 0);
    assert!(queue.inspect(&held.envelope.id).await.unwrap().is_none());
    assert!(q.get(&held.envelope.id).await.unwrap().is_none());
    assert!(q.list().await.unwrap().is_empty());
    let again = release(q.as_ref(), queue.as_ref(), &held.envelope.id).await;
    assert_eq!(again.unwrap(), None);
    assert_eq!(queue.list().await.unwrap().len(), 1);
}
