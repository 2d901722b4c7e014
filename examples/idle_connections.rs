//! Opens many idle SMTP connections to a relay and holds them, for measuring what an idle
//! session costs the relay (its VmRSS before and after, taken by `bench/accept.py`).
//!
//! ```text
//! cargo run --release --example idle_connections -- --addr 127.0.0.1:2525 --count 10000
//! ```
//!
//! Each connection is opened from one of `--sources` loopback addresses starting at
//! `--first-source` (127.0.0.10, 127.0.0.11, ... by default), round-robin, so that a
//! per-IP connection limit and the ephemeral port range of one source address are not
//! what is being measured. Each reads the 220 greeting and then sends nothing.
//!
//! Once every connection is either holding or has failed, one line is printed to standard
//! output, `held=N failed=F refused=R elapsed_ms=T`, and the connections are held until
//! standard input reaches end of file or a line, or `--hold` runs out, whichever comes
//! first. Then `still_open=N` tells how many the relay had kept open, and all are closed.
//! Only loopback addresses are accepted, and every wait is bounded.

use anyhow::{Context, bail};
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(about = "Hold N idle SMTP connections to a loopback relay")]
struct Args {
    /// The relay's SMTP listener (a loopback address).
    #[arg(long)]
    addr: SocketAddrV4,
    /// How many connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// How many loopback source addresses to spread the connections over.
    #[arg(long, default_value_t = 10)]
    sources: u8,
    /// The first source address; the others follow it.
    #[arg(long, default_value = "127.0.0.10")]
    first_source: Ipv4Addr,
    /// Connection attempts in flight at once (the relay's listen backlog is finite).
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Longest wait for the TCP handshake plus the greeting of one connection, in seconds.
    #[arg(long, default_value_t = 15)]
    greeting_timeout: u64,
    /// Longest time to hold the connections, in seconds.
    #[arg(long, default_value_t = 120)]
    hold: u64,
}

enum Outcome {
    Held(TcpStream),
    /// The relay answered 421 (too many connections or draining).
    Refused,
    Failed(String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() || !args.first_source.is_loopback() {
        bail!("only loopback addresses (127.0.0.0/8) are allowed");
    }
    let first = u32::from(args.first_source);
    let sources: Vec<Ipv4Addr> = (0..u32::from(args.sources.max(1)))
        .map(|i| Ipv4Addr::from(first + i))
        .collect();
    if let Some(last) = sources.last()
        && !last.is_loopback()
    {
        bail!("source addresses run out of 127.0.0.0/8 at {last}");
    }

    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let timeout = Duration::from_secs(args.greeting_timeout);
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let permit = Arc::clone(&limit)
            .acquire_owned()
            .await
            .context("semaphore")?;
        let source = sources[i % sources.len()];
        let addr = args.addr;
        tasks.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, open(source, addr)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed("timed out waiting for the greeting".into()),
            };
            drop(permit);
            outcome
        });
    }

    let mut held = Vec::with_capacity(args.count);
    let (mut refused, mut failures) = (0usize, std::collections::BTreeMap::<String, usize>::new());
    while let Some(joined) = tasks.join_next().await {
        match joined.context("connection task panicked")? {
            Outcome::Held(stream) => held.push(stream),
            Outcome::Refused => refused += 1,
            Outcome::Failed(why) => *failures.entry(why).or_default() += 1,
        }
    }
    let failed: usize = failures.values().sum();
    for (why, n) in &failures {
        eprintln!("idle_connections: {n} failed: {why}");
    }
    println!(
        "held={} failed={failed} refused={refused} elapsed_ms={}",
        held.len(),
        started.elapsed().as_millis()
    );

    // Hold until told to stop (a line or EOF on stdin) or until --hold runs out.
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(args.hold), stdin.read_line(&mut line)).await;

    let still_open = held.iter().filter(|s| is_open(s)).count();
    println!("still_open={still_open}");
    drop(held);
    Ok(())
}

/// Connects from `source` and reads the greeting.
async fn open(source: Ipv4Addr, addr: SocketAddrV4) -> Outcome {
    let stream = match connect(source, addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connect: {}", e.kind())),
    };
    let mut stream = stream;
    match read_greeting(&mut stream).await {
        Ok(code) if code.starts_with("220") => Outcome::Held(stream),
        Ok(code) if code.starts_with("421") => Outcome::Refused,
        Ok(code) => Outcome::Failed(format!("greeting {code:?}")),
        Err(e) => Outcome::Failed(format!("reading the greeting: {}", e.kind())),
    }
}

async fn connect(source: Ipv4Addr, addr: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    socket.connect(SocketAddr::V4(addr)).await
}

/// Reads the whole greeting (all lines up to the last `220 ` / `421 ` line) and returns
/// the code of its last line. Greetings are small; more than 4 KiB is an error.
async fn read_greeting(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 4096 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        // The last line of a reply has a space after the code (RFC 5321 4.2.1).
        if buf.ends_with(b"\r\n") {
            let text = String::from_utf8_lossy(&buf);
            if let Some(last) = text.trim_end().lines().last()
                && last.len() >= 4
                && last.as_bytes()[3] == b' '
            {
                return Ok(last[..3].to_string());
            }
        }
    }
}

/// True while the relay has not closed the connection (nothing to read and no EOF).
fn is_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 64];
    match stream.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        // Unsolicited bytes (a 421 on timeout or shutdown) or EOF: the relay let go.
        _ => false,
    }
}
