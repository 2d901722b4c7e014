//! Getting messages from the shared pull consumer: `take` asks for one message at a
//! time; a long-poll (`wait_for_work`) is a pull request the server holds until work
//! arrives from any pod, run in a task of its own that parks the message it brings for
//! the next `take`, so that a caller giving up on the wait cannot strand it.
//!
//! One message per request: a batch would hold messages in this process that other
//! workers, `remove` and the queue listing cannot see, for longer. A parked message is
//! out of the server's hands as a lease is: `drain` hands it back on shutdown, `forget`
//! drops it when the message is removed, and if the process dies it comes back after
//! `ack_wait`. One parked for more than half of `ack_wait` may already be on its way to
//! another worker, so it is handed back rather than delivered.

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

type Parked = Arc<Mutex<VecDeque<(Instant, jetstream::Message)>>>;

pub struct Fetcher {
    consumer: PullConsumer,
    parked: Parked,
    /// Whether a long-poll is in flight: one at a time.
    polling: Arc<AtomicBool>,
    /// Set by `drain`: no more long-polls.
    closed: AtomicBool,
    /// Woken when messages are parked.
    work: Arc<Notify>,
    fetch_wait: Duration,
    ack_wait: Duration,
}

impl Fetcher {
    pub fn new(
        consumer: PullConsumer,
        work: Arc<Notify>,
        fetch_wait: Duration,
        ack_wait: Duration,
    ) -> Self {
        Fetcher {
            consumer,
            parked: Arc::default(),
            polling: Arc::default(),
            closed: AtomicBool::new(false),
            work,
            fetch_wait,
            ack_wait,
        }
    }

    /// The next message: a parked one, else one from a new pull request, waiting at most
    /// `fetch_wait`.
    pub async fn next(&self) -> Result<Option<jetstream::Message>, String> {
        while let Some((parked_at, message)) = self.unpark() {
            if parked_at.elapsed() < self.ack_wait / 2 {
                return Ok(Some(message));
            }
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        let mut batch = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(self.fetch_wait)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        batch.next().await.transpose().map_err(|e| e.to_string())
    }

    pub fn has_parked(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Starts a long-poll unless one is in flight: a pull request the server answers as
    /// soon as there is a message, or empty after `wait`. Its task parks what comes, so
    /// that a caller giving up on the wait cannot strand a message.
    pub fn long_poll(&self, wait: Duration) {
        if self.closed.load(Ordering::Acquire) || self.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (consumer, parked) = (self.consumer.clone(), self.parked.clone());
        let (polling, work) = (self.polling.clone(), self.work.clone());
        tokio::spawn(async move {
            let batch = consumer.batch().max_messages(1).expires(wait).messages();
            if let Ok(batch) = batch.await {
                park(batch, parked, work.clone()).await;
            }
            polling.store(false, Ordering::Release);
            work.notify_waiters();
        });
    }

    /// Hands every parked message back to the server, once the long-poll in flight (at
    /// most `within`) is over and none will follow: a pull request still open would
    /// bring a message handed back, or any other, right back to this process.
    pub async fn drain(&self, within: Duration) {
        self.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + within;
        while self.polling.load(Ordering::Acquire) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let parked = std::mem::take(&mut *self.lock());
        for (_, message) in parked {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }

    /// Drops parked messages on `subject`: they were removed from the stream.
    pub fn forget(&self, subject: &str) {
        self.lock().retain(|(_, m)| m.subject.as_str() != subject);
    }

    fn unpark(&self) -> Option<(Instant, jetstream::Message)> {
        self.lock().pop_front()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, jetstream::Message)>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parks what a pull request brings, as it arrives.
async fn park(mut batch: jetstream::consumer::pull::Batch, parked: Parked, work: Arc<Notify>) {
    while let Some(Ok(message)) = batch.next().await {
        parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((Instant::now(), message));
        work.notify_waiters();
    }
}
