//! Messages that an ingress of ours cannot have written, published by the test straight
//! into the JetStream queue of a running `sluice standalone --jetstream` with delivery
//! on: a recipient with a CR LF that would smuggle a command onto the worker's RCPT line,
//! and 500 recipients against `limits.maxRecipients` of 100 (JetStream itself refuses
//! headers over 64 KiB, about 850 recipients, so 10,000 cannot be stored). Neither reaches the
//! sink; both are terminated (gone from the stream) and counted, while mail sent through
//! the ingress before and after them is delivered.

mod common;

use common::nats::NatsServer;
use common::roles::route_policy;
use common::sink::{AcceptAll, Sink};
use common::smtp::Client;
use sluice::config::Role;
use sluice::envelope::{Envelope, QueueId};
use sluice::queue::QueueAdmin;
use sluice::queue::jetstream::codec::{self, Meta};
use sluice::queue::jetstream::{JetStreamOptions, JetStreamQueue};
use sluice::smtp::address::{MailParams, Mailbox, Recipient};
use sluice::telemetry::metrics::InvalidMessage;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(20);

async fn send(relay: &common::Relay, to: &str) {
    let mut c = Client::connect(relay.relay).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@client.test>", "250").await;
    c.cmd(&format!("RCPT TO:<{to}>"), "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: fine\r\n\r\nhello\r\n.\r\n").await;
    c.expect("250 2.0.0 Ok: queued as ").await;
    c.cmd("QUIT", "221").await;
}

fn envelope(recipients: Vec<Recipient>) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        reverse_path: Some(Mailbox::new("a", "client.test")),
        params: MailParams::default(),
        recipients,
        received_at_ms: 1_700_000_000_000,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: "client.test".into(),
        authenticated_user: None,
        sender_trust: sluice::envelope::SenderTrust::Untrusted,
        attempts: 0,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    }
}

fn recipient(local: &str) -> Recipient {
    Recipient {
        address: Mailbox::new(local, "sink.test"),
        notify: None,
        orcpt: None,
    }
}

/// Publishes `envelope` as the queue's own layout, on its subject, bypassing any
/// ingress.
async fn publish(js: &async_nats::jetstream::Context, envelope: Envelope) {
    let body = b"Subject: smuggled\r\n\r\nhi\r\n";
    let meta = Meta {
        body_size: body.len() as u64,
        envelope,
        not_before_ms: None,
        body_object: None,
    };
    let headers = codec::encode(&meta, meta.envelope.id.as_str()).unwrap();
    let subject = format!(
        "{}.{}",
        JetStreamOptions::default().subject_prefix,
        meta.envelope.id
    );
    js.publish_with_headers(subject, headers, body.as_slice().into())
        .await
        .unwrap()
        .await
        .expect("stored in the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_envelopes_in_the_stream_are_terminated_and_counted_not_delivered() {
    let nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    let config = format!(
        "{}nats: {{ url: \"{}\" }}\n",
        common::config_yaml_with("{maxRecipients: 100}", "{}"),
        nats.url()
    );
    let policy = route_policy(&["127.0.0.1/32"], sink.addr.port());
    let relay = common::start_as(&config, &policy, Role::Standalone { jetstream: true }).await;
    let metrics = relay.running.as_ref().unwrap().metrics.clone();

    send(&relay, "first@sink.test").await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    publish(&js, envelope(vec![recipient("a\r\nRCPT TO:<victim")])).await;
    let many = (0..500).map(|i| recipient(&format!("r{i}"))).collect();
    publish(&js, envelope(many)).await;
    send(&relay, "last@sink.test").await;

    let delivered = sink.wait_for(2, WITHIN).await;
    let deadline = Instant::now() + WITHIN;
    let queue = JetStreamQueue::connect(
        &nats.url(),
        JetStreamOptions {
            manage_consumer: false,
            ..JetStreamOptions::default()
        },
    )
    .await
    .unwrap();
    while queue.queue_stats().await.unwrap().messages > 0 {
        assert!(Instant::now() < deadline, "the stream emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The worker has taken everything there was: what reached the sink is all there is.
    let rcpts: Vec<String> = sink
        .transactions()
        .into_iter()
        .flat_map(|t| t.rcpt_to)
        .collect();
    assert_eq!(delivered.len(), 2);
    assert_eq!(rcpts.len(), 2, "{:?}", &rcpts[..rcpts.len().min(5)]);
    for rcpt in &rcpts {
        assert!(rcpt.contains("first@") || rcpt.contains("last@"), "{rcpt}");
    }
    let commands = sink.commands.lock().unwrap().clone();
    assert!(
        !commands.iter().any(|c| c.contains("victim")),
        "a smuggled command reached the sink"
    );
    while metrics.queue_invalid_messages.get(InvalidMessage::Invalid) < 2 {
        assert!(Instant::now() < deadline, "two invalid messages counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = metrics.render();
    assert!(
        page.contains("sluice_queue_invalid_messages_total{reason=\"invalid\"} 2\n"),
        "{page}"
    );
}
