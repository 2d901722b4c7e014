//! A webhook receiver on loopback for the tests of local delivery by webhook: it answers
//! every request with the status of the moment and records it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub head: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// An HTTP server on loopback that answers every request with the current `status`
/// and records it.
pub struct Hook {
    pub port: u16,
    pub status: Arc<AtomicU16>,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    pub async fn start(status: u16) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(status));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (answer, log) = (status.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    if let Some(request) = exchange(stream, &answer).await {
                        log.lock().unwrap().push(request);
                    }
                });
            }
        });
        Hook {
            port,
            status,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests once there are `n`, or after `within` those there are.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.requests();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the head and a Content-Length body, answers with the status of the moment (the
/// request is recorded before the answer goes out), and closes.
async fn exchange(mut stream: tokio::net::TcpStream, status: &AtomicU16) -> Option<Request> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut request = Request {
        head: String::from_utf8(buf[..end].to_vec()).ok()?,
        body: buf[end..].to_vec(),
    };
    let length: usize = request.header("content-length")?.parse().ok()?;
    while request.body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        request.body.extend_from_slice(&chunk[..n]);
    }
    let code = status.load(Ordering::SeqCst);
    let response =
        format!("HTTP/1.1 {code} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    Some(request)
}
