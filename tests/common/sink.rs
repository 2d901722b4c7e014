//! A capturing SMTP server for end-to-end delivery tests: it accepts any number of
//! connections on loopback, answers every command, records each transaction, and lets
//! the test choose the replies to RCPT and to the end of data (451 the first time, 550
//! for one recipient, …).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One transaction as the sink saw it.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The content, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
}

/// What the sink answers; each gets the number of transactions completed so far.
pub trait Replies: Send + Sync + 'static {
    fn rcpt(&self, _address: &str, _completed: usize) -> String {
        "250 2.1.5 Ok".into()
    }
    fn data(&self, _t: &Transaction, _completed: usize) -> String {
        "250 2.0.0 Ok: queued".into()
    }
    /// How long to sit on the reply to the end of data (the transaction is recorded
    /// first): a slow remote server, for tests that stop a worker mid-delivery.
    fn hold(&self, _t: &Transaction, _completed: usize) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Takes everything.
pub struct AcceptAll;
impl Replies for AcceptAll {}

pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Transaction>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Every command line of every session, in arrival order (content excluded).
    pub commands: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Sink {
    pub async fn start(replies: impl Replies) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let replies: Arc<dyn Replies> = Arc::new(replies);
        let store = received.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), commands.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(session(stream, replies.clone(), store.clone(), log.clone()));
            }
        });
        Sink {
            addr,
            received,
            connections,
            commands,
            task,
        }
    }

    pub fn transactions(&self) -> Vec<Transaction> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` transactions have completed.
    pub async fn wait_for(&self, n: usize, within: std::time::Duration) -> Vec<Transaction> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.transactions();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    replies: Arc<dyn Replies>,
    store: Arc<Mutex<Vec<Transaction>>>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let mut io = BufReader::new(stream);
    let mut t = Transaction::default();
    let mut out = String::from("220 sink.test ESMTP\r\n");
    loop {
        if io.get_mut().write_all(out.as_bytes()).await.is_err() {
            return;
        }
        out.clear();
        let mut line = String::new();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_string();
        log.lock().unwrap().push(line.clone());
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" | "LHLO" => {
                t.helo = line.get(5..).unwrap_or_default().to_string();
                "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 SIZE 52428800".to_string()
            }
            "MAIL" => {
                t.mail_from = line.clone();
                "250 2.1.0 Ok".to_string()
            }
            "RCPT" => {
                let completed = store.lock().unwrap().len();
                let reply = replies.rcpt(&line, completed);
                if reply.starts_with('2') {
                    t.rcpt_to.push(line.clone());
                }
                reply
            }
            "DATA" => {
                if io.get_mut().write_all(b"354 go ahead\r\n").await.is_err() {
                    return;
                }
                t.data = read_data(&mut io).await;
                let completed = store.lock().unwrap().len();
                let reply = replies.data(&t, completed);
                let hold = replies.hold(&t, completed);
                store.lock().unwrap().push(std::mem::take(&mut t));
                tokio::time::sleep(hold).await;
                reply
            }
            "RSET" => {
                t = Transaction {
                    helo: t.helo.clone(),
                    ..Default::default()
                };
                "250 2.0.0 Ok".to_string()
            }
            "QUIT" => {
                let _ = io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            _ => "250 2.0.0 Ok".to_string(),
        };
        out = format!("{reply}\r\n");
    }
}

async fn read_data(io: &mut BufReader<tokio::net::TcpStream>) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let mut raw = Vec::new();
        if io.read_until(b'\n', &mut raw).await.unwrap_or(0) == 0 || raw == b".\r\n" {
            return data;
        }
        let unstuffed = if raw.starts_with(b"..") {
            &raw[1..]
        } else {
            &raw[..]
        };
        data.extend_from_slice(unstuffed);
    }
}
