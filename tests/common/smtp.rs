//! A raw SMTP client for transcripts: it writes exactly the bytes a test gives it and
//! reads whole (multi-line) replies, so tests can pipeline, misbehave and check codes.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Long enough for any reply the relay owes, short enough that a hang fails the test.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Client {
    pub io: BufReader<Box<dyn Stream>>,
}

impl Client {
    /// Connects and checks the greeting.
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client::over(Box::new(tcp));
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        c
    }

    /// Connects from a given loopback source address (127.0.0.2 is an untrusted client).
    pub async fn connect_from(addr: SocketAddr, source: &str) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let tcp = socket.connect(addr).await.expect("connect");
        let mut c = Client::over(Box::new(tcp));
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        c
    }

    pub fn over(io: Box<dyn Stream>) -> Client {
        Client {
            io: BufReader::new(io),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    /// Reads one reply, all its lines joined with `\n`; "" when the server closed.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.io.read_line(&mut line))
                .await
                .expect("reply timed out")
                .expect("read");
            if n == 0 {
                return lines.join("\n");
            }
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// Sends one command line and checks that the reply's last line starts with `expect`.
    pub async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.expect(expect).await
    }

    pub async fn expect(&mut self, expect: &str) -> String {
        let reply = self.reply().await;
        let last = reply.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(expect),
            "expected {expect:?}, got {reply:?}"
        );
        reply
    }

    /// True once the server has closed the connection.
    pub async fn closed(&mut self) -> bool {
        let mut rest = String::new();
        matches!(
            tokio::time::timeout(REPLY_TIMEOUT, self.io.read_line(&mut rest)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}
