//! A 20 MiB message end to end through the real binary: client → `sluice ingress` →
//! JetStream (the body is over NATS's 1 MiB max payload, so it can only travel through
//! the Object Store bucket) → `sluice worker` → sink. The sink gets the content byte for
//! byte, after the Received header the relay prepends.

mod common;

use common::fleet::Fleet;
use common::mail::{self, Outcome, Session};
use common::nats::NatsServer;
use common::sink::{AcceptAll, Sink};
use std::time::{Duration, Instant};

const SIZE: usize = 20 << 20;

/// `size` bytes of message: headers, then 76-character lines of pseudo-random base64
/// text (as an attachment would be), none starting with a dot.
fn big_message(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: big\r\nMessage-ID: <big@load.test>\r\n\r\n",
        mail::FROM,
        mail::TO
    )
    .into_bytes();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    while out.len() < size {
        for _ in 0..76 {
            // xorshift: cheap, deterministic, and no long runs a codec could shrink.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push(ALPHABET[(state % 64) as usize]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The content after the first header line when it is our Received header, with its
/// continuation lines (which start with whitespace).
fn after_received(data: &[u8]) -> &[u8] {
    let mut rest = data;
    let mut first = true;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..end];
        let ours = match first {
            true => line.starts_with(b"Received: "),
            false => line.starts_with(b"\t") || line.starts_with(b" "),
        };
        if !ours {
            break;
        }
        first = false;
        rest = &rest[end + 2..];
    }
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_mib_message_arrives_byte_identical() {
    let _heavy = common::roles::exclusive().await;
    let nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    let ingress_args = ["--max-message-size", "25Mi"];
    let fleet = Fleet::start(&nats.url(), sink.addr.port(), (1, 1), &[], &ingress_args).await;
    let content = big_message(SIZE);
    let started = Instant::now();

    let mut session = Session::open(fleet.ingresses[0].smtp(), None)
        .await
        .expect("session");
    let outcome = session.send(mail::FROM, mail::TO, &content).await;
    assert_eq!(outcome, Outcome::Accepted, "\n{}", fleet.logs());
    let accepted = started.elapsed();
    session.quit().await;

    let got = sink.wait_for(1, Duration::from_secs(120)).await;
    assert_eq!(got.len(), 1, "not delivered within 120 s\n{}", fleet.logs());
    let delivered = &got[0].data;
    let body = after_received(delivered);
    assert!(
        body == content.as_slice(),
        "content changed: sent {} bytes, {} arrived after the Received header (first difference at {:?})",
        content.len(),
        body.len(),
        body.iter().zip(&content).position(|(a, b)| a != b)
    );
    println!(
        "20 MiB: 250 after {accepted:.1?}, delivered after {:.1?}",
        started.elapsed()
    );
}
