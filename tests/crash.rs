//! The first invariant under `kill -9`: a child `sluice standalone` takes mail from
//! several concurrent clients, is killed with SIGKILL mid-stream, restarted, and every
//! message that got a 250 is in the spool, byte for byte.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CLIENTS: usize = 8;
const MAX_PER_CLIENT: usize = 2_000;
const KILL_AFTER_ACKS: usize = 400;

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_relay(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["standalone", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice")
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("relay did not start listening on {addr}");
}

async fn line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut l = String::new();
    if r.read_line(&mut l).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(l)
}

/// Sends messages until the connection breaks; records (queue id, content) of each 250.
async fn client(
    addr: SocketAddr,
    n: usize,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(TcpStream::connect(addr).await?);
    line(&mut r).await?;
    r.get_mut().write_all(b"HELO crash.test\r\n").await?;
    line(&mut r).await?;
    for i in 0..MAX_PER_CLIENT {
        let content = format!(
            "Subject: crash {n}/{i}\r\n\r\n{}\r\n",
            format!("client {n} message {i} ").repeat(40)
        );
        let tx = format!("MAIL FROM:<c{n}@crash.test>\r\nRCPT TO:<r@foreign.test>\r\nDATA\r\n");
        r.get_mut().write_all(tx.as_bytes()).await?;
        for _ in 0..3 {
            line(&mut r).await?;
        }
        r.get_mut()
            .write_all(format!("{content}.\r\n").as_bytes())
            .await?;
        let reply = line(&mut r).await?;
        if let Some(id) = reply.trim_end().strip_prefix("250 2.0.0 Ok: queued as ") {
            acked.lock().unwrap().push((id.to_string(), content));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    common::write_certificate(dir.path());
    std::fs::write(dir.path().join("policy.yaml"), common::policy_yaml()).unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.yaml");
    let yaml = format!(
        "hostname: relay.test\nlisteners: [{{name: smtp, address: \"127.0.0.1:{port}\", kind: relay}}]\nspool: spool\npolicies: [policy.yaml]\ndelivery: {{enabled: false}}\n"
    );
    std::fs::write(&config, yaml).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut child = spawn_relay(&config);
    wait_listening(addr).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(addr, n, acked.clone())))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < KILL_AFTER_ACKS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for c in clients {
        let _ = c.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= KILL_AFTER_ACKS,
        "only {} messages acknowledged before the deadline",
        acked.len()
    );

    // Restarted, the relay recovers its spool and takes mail again.
    let mut child = spawn_relay(&config);
    wait_listening(addr).await;
    let extra = Arc::new(Mutex::new(Vec::new()));
    let _ = tokio::time::timeout(Duration::from_secs(5), client(addr, 99, extra.clone())).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let spool = common::spool_contents(&dir.path().join("spool")).await;
    let stored: std::collections::HashMap<String, Vec<u8>> = spool
        .into_iter()
        .map(|(e, body)| (e.envelope.id.to_string(), body))
        .collect();
    for (id, content) in &acked {
        let body = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged message {id} is missing"));
        assert!(
            body.ends_with(content.as_bytes()),
            "message {id} is damaged"
        );
        assert!(
            body.starts_with(b"Received: "),
            "message {id} lost its header"
        );
    }
    assert!(
        !extra.lock().unwrap().is_empty(),
        "the restarted relay accepted nothing"
    );
    println!(
        "acknowledged before SIGKILL: {}, in spool after restart: {}",
        acked.len(),
        stored.len()
    );
}
