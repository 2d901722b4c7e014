//! Tests of the admin listener's bounds over real HTTP on loopback: a handler longer
//! than every timeout finishes, the connection limit holds, a slow head is cut.

use super::tests::{parse_answer, raw, serve};
use super::*;
use crate::delivery::queue_ops;
use crate::queue::Queue;
use crate::queue::conformance::envelope;
use crate::queue::spool::Spool;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn state_with(queue: Option<Arc<dyn QueueAdmin>>) -> AdminState {
    AdminState {
        metrics: Arc::default(),
        readiness: Arc::default(),
        queue: queue.map(queue_slot).unwrap_or_default(),
        quarantine: QuarantineSlot::default(),
        hostname: "relay.test".into(),
    }
}

/// The retry of a queue that takes several times every timeout of the listener is
/// answered in full. The timeouts are set from how long the same work takes here, so
/// that the test means the same on a fast and a slow machine.
#[tokio::test]
async fn a_long_retry_of_every_message_is_not_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path()).await.unwrap());
    let count = 300;
    for i in 0..count {
        spool
            .enqueue(&envelope(&["a"]), format!("{i}").as_bytes())
            .await
            .unwrap();
    }
    let started = Instant::now();
    let direct = queue_ops::retry_all(spool.as_ref()).await.unwrap();
    let work = started.elapsed();
    assert_eq!(direct.retried, count);
    let bound = work / 4;
    let limits = Limits {
        header_timeout: bound,
        body_timeout: bound,
        write_timeout: bound.max(Duration::from_millis(50)),
        ..Limits::default()
    };
    let served = serve(&state_with(Some(spool.clone())), limits).await;
    let head = format!(
        "POST /queue/retry HTTP/1.1\r\nHost: {}\r\n\r\n",
        served.addr
    );
    let started = Instant::now();
    let (status, body) = raw(served.addr, head.as_bytes()).await.expect("an answer");
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    let counts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (counts["retried"].as_u64(), counts["skipped"].as_u64()),
        (Some(count), Some(0))
    );
    assert!(
        took > limits.header_timeout && took > limits.body_timeout,
        "the retry ({took:?}) must outlast the timeouts ({bound:?}) for this test to mean anything"
    );
}

/// With room for two connections, a third is answered 503 and closed while they are
/// open; once one closes, a new connection is served again.
#[tokio::test]
async fn connections_over_the_limit_are_answered_busy() {
    let limits = Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let served = serve(&state_with(None), limits).await;
    let addr = served.addr;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    let read = third.read_to_end(&mut answer);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("closed at once")
        .unwrap();
    let (status, body) = parse_answer(&answer).expect("a 503");
    assert_eq!(
        (status, body.as_str()),
        (503, "too many admin connections, try again\n")
    );

    drop(first);
    let health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match raw(addr, health).await {
            Some((200, body)) => {
                assert_eq!(body, "ok\n");
                break;
            }
            Some((503, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("a slot never came free: {other:?}"),
        }
    }
}

/// A client trickling its head one field at a time, never finishing it, is cut off at
/// the header timeout; so is one that sends nothing.
#[tokio::test]
async fn a_trickled_head_is_cut_by_the_header_timeout() {
    let limits = Limits {
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let served = serve(&state_with(None), limits).await;
    let started = Instant::now();
    let stream = TcpStream::connect(served.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = async move {
        writer.write_all(b"GET /healthz HTTP/1.1\r\n").await?;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer.write_all(b"X-A: 1\r\n").await?;
        }
        std::io::Result::Ok(())
    };
    let mut answer = Vec::new();
    tokio::select! {
        _ = reader.read_to_end(&mut answer) => {}
        _ = trickle => panic!("10 s of trickling were not cut off"),
    }
    let took = started.elapsed();
    assert!(took >= limits.header_timeout, "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "{answer:?}"
    );

    let started = Instant::now();
    let mut idle = TcpStream::connect(served.addr).await.unwrap();
    let read = idle.read_to_end(&mut answer);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an idle connection is closed")
        .ok();
    assert!(started.elapsed() >= limits.header_timeout);
}

/// A request whose body does not arrive is answered 408 at the body timeout.
#[tokio::test]
async fn a_missing_body_is_cut_by_the_body_timeout() {
    let limits = Limits {
        body_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let served = serve(&state_with(None), limits).await;
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    let head = "POST /queue/retry HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("answered");
    assert_eq!(parse_answer(&answer).map(|a| a.0), Some(408));
}
