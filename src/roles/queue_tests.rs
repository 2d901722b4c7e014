//! The queue probe against a queue whose `check` answers what the test says: an outage
//! takes the readiness latch back, corrupt data does not.

use super::*;
use crate::envelope::Envelope;
use crate::queue::Lease;
use crate::smtp::address::Recipient;
use async_trait::async_trait;
use std::sync::Mutex;
use std::time::SystemTime;

/// A queue that holds nothing; its `check` answers the scripted error, or `Ok`.
#[derive(Default)]
struct Scripted {
    answer: Mutex<Option<QueueError>>,
}

impl Scripted {
    fn answer(&self, answer: Option<QueueError>) {
        *self.answer.lock().unwrap() = answer;
    }
}

#[async_trait]
impl Queue for Scripted {
    async fn enqueue(&self, _: &Envelope, _: &[u8]) -> Result<(), QueueError> {
        Err(QueueError::Closed)
    }

    async fn wait_for_work(&self, max: Duration) {
        tokio::time::sleep(max).await;
    }

    async fn take(&self, _: Duration) -> Result<Option<Lease>, QueueError> {
        Ok(None)
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        Err(QueueError::LeaseLost(lease.envelope.id.clone()))
    }

    async fn defer(
        &self,
        lease: &Lease,
        _: SystemTime,
        _: Vec<Recipient>,
        _: String,
    ) -> Result<(), QueueError> {
        Err(QueueError::LeaseLost(lease.envelope.id.clone()))
    }

    async fn check(&self) -> Result<(), QueueError> {
        match self.answer.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Lets the paused clock run past `probes` probe intervals, so that many probes answer.
async fn probes(probes: u32) {
    for _ in 0..probes {
        tokio::time::sleep(PROBE_INTERVAL).await;
        // The probe task runs its check on this same runtime: let it finish.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_makes_the_process_unready_and_corrupt_data_does_not() {
    let queue = Arc::new(Scripted::default());
    let readiness = Arc::new(Readiness::default());
    readiness.release(Latch::Queue);
    let stop = CancellationToken::new();
    let probing = tokio::spawn(probe(queue.clone(), readiness.clone(), stop.clone()));

    queue.answer(Some(QueueError::corrupt(
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "bad JSON",
    )));
    probes(2).await;
    assert!(
        readiness.is_released(Latch::Queue),
        "corrupt data is no outage"
    );

    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    queue.answer(Some(QueueError::unavailable(
        "jetstream stream info",
        refused,
    )));
    probes(2).await;
    assert!(
        !readiness.is_released(Latch::Queue),
        "an outage withdraws the latch"
    );

    // Still down while only corrupt data is reported? No: the store answers, so it is up.
    queue.answer(Some(QueueError::corrupt("7", "undecodable headers")));
    probes(2).await;
    assert!(
        readiness.is_released(Latch::Queue),
        "back once the store answers"
    );

    queue.answer(Some(QueueError::full("spool database", None)));
    probes(2).await;
    assert!(
        !readiness.is_released(Latch::Queue),
        "a full store is an outage"
    );

    queue.answer(None);
    probes(2).await;
    assert!(readiness.is_released(Latch::Queue));
    stop.cancel();
    probing.await.unwrap();
}

#[test]
fn errors_keep_their_source_and_name_their_kind() {
    use std::error::Error;
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let e = QueueError::unavailable("connecting to NATS", refused);
    let source = e.source().expect("the I/O error is kept");
    let io = source.downcast_ref::<std::io::Error>().expect("as itself");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        e.to_string()
            .starts_with("queue unavailable: connecting to NATS: "),
        "{e}"
    );
    assert!(e.is_outage());

    let json = serde_json::from_str::<u32>("x").unwrap_err();
    let labels = [
        (e.clone(), "unavailable", true),
        (QueueError::full("disk", None), "full", true),
        (QueueError::corrupt("7", "bad"), "corrupt", false),
        (QueueError::Encode(Arc::new(json)), "encode", false),
        (
            QueueError::LeaseLost(crate::envelope::QueueId::generate()),
            "lease_lost",
            false,
        ),
        (
            QueueError::Busy(crate::envelope::QueueId::generate()),
            "busy",
            false,
        ),
        (QueueError::Closed, "closed", true),
    ];
    for (error, label, outage) in labels {
        assert_eq!(error.metric_label(), label, "{error}");
        assert_eq!(error.is_outage(), outage, "{error}");
    }
    // A copy (one failed group commit answering each of its callers) keeps the source.
    let copy = e.clone();
    assert!(copy.source().is_some());
}
