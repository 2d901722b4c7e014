//! Throughput of the embedded spool under concurrent enqueues (group commit at work).
//!
//! `cargo run --release --example spool_bench -- --dir /tmp/x --concurrency 20 --messages 20000 --size 4096`
//!
//! Prints enqueues per second, p50/p99/max enqueue latency and commits per second, then
//! drains the queue (take + ack from the same number of workers) and prints that rate.

use clap::Parser;
use sluice::envelope::{Envelope, QueueId, unix_ms};
use sluice::queue::Queue;
use sluice::queue::spool::Spool;
use sluice::smtp::address::{MailParams, Mailbox, Recipient};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser)]
struct Args {
    /// Spool directory (emptied first).
    #[arg(long, default_value = "/tmp/spool-bench")]
    dir: PathBuf,
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

fn envelope() -> Envelope {
    Envelope {
        id: QueueId::generate(),
        reverse_path: Some(Mailbox::new("bench", "example.org")),
        params: MailParams::default(),
        recipients: vec![Recipient {
            address: Mailbox::new("rcpt", "example.net"),
            notify: None,
            orcpt: None,
        }],
        received_at_ms: unix_ms(SystemTime::now()),
        client_ip: "192.0.2.1".parse().unwrap(),
        helo: "bench.example.org".into(),
        authenticated_user: None,
        sender_trust: sluice::envelope::SenderTrust::Untrusted,
        attempts: 0,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    let spool = Arc::new(Spool::open(&args.dir).await?);
    let body = Arc::new(vec![b'x'; args.size]);
    let per_task = args.messages.div_ceil(args.concurrency);

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (spool, body) = (spool.clone(), body.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let env = envelope();
                let t = Instant::now();
                spool.enqueue(&env, &body).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let stats = spool.stats();
    let n = latencies.len();
    println!(
        "enqueue: {n} messages of {} B from {} tasks in {elapsed:.2} s",
        args.size, args.concurrency
    );
    println!("  {:.0} enqueues/s", n as f64 / elapsed);
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies[n - 1].as_secs_f64() * 1e3
    );
    println!(
        "  {} commits, {:.0} commits/s, {:.1} enqueues per commit",
        stats.commits,
        stats.commits as f64 / elapsed,
        stats.operations as f64 / stats.commits as f64
    );

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let spool = spool.clone();
        tasks.spawn(async move {
            let mut done = 0usize;
            while let Some(lease) = spool.take(Duration::from_secs(300)).await? {
                spool.ack(&lease).await?;
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut drained = 0;
    while let Some(done) = tasks.join_next().await {
        drained += done??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = spool.stats();
    println!(
        "drain: {drained} take+ack in {elapsed:.2} s, {:.0} messages/s, {:.0} commits/s",
        drained as f64 / elapsed,
        (after.commits - stats.commits) as f64 / elapsed
    );
    spool.close().await;
    Ok(())
}
