//! Time of `analyse` + `evaluate` (the attachment analyser of issue 11) per message,
//! for a 4 KiB text message and for one with a 100 KiB PDF attachment.
//!
//! `cargo run --release --example attachments_bench [-- ITERATIONS]` (bench/README.md)
//!
//! Prints, per message, the median and the 99th percentile of ITERATIONS runs (default
//! 2000) and the rate on one core. A figure for people, never a timed test.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sluice::filter::attachments::{Limits, Rules, analyse, evaluate};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn text_message() -> Vec<u8> {
    let mut m = String::from(
        "From: sender@client.example\r\nTo: rcpt@dest.example\r\nSubject: text\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    while m.len() < 4096 {
        m.push_str("This is a plain text message of about four KiB, line after line.\r\n");
    }
    m.into_bytes()
}

fn attachment_message() -> Vec<u8> {
    // A PDF header and 100 KiB of pseudo-random octets (an xorshift), base64 as sent.
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut x: u32 = 0x9E37_79B9;
    while pdf.len() < 100 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pdf.extend_from_slice(&x.to_le_bytes());
    }
    let encoded = STANDARD.encode(&pdf);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: sender@client.example\r\nTo: rcpt@dest.example\r\nSubject: report\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nThe report is attached.\r\n\
         --b1\r\nContent-Type: application/pdf\r\n\
         Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

fn measure(name: &str, message: &[u8], iterations: usize) {
    let limits = Limits::default();
    let rules = Rules::default();
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            let analysis = analyse(black_box(message), &limits);
            black_box(evaluate(&analysis, &rules));
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    println!(
        "{name:<28} {:>7} octets  median {:>9.1?}  p99 {:>9.1?}  {:>8.0} messages/s",
        message.len(),
        median,
        p99,
        1.0 / median.as_secs_f64()
    );
}

fn main() {
    let iterations = std::env::args()
        .nth(1)
        .map_or(2000, |n| n.parse().expect("ITERATIONS is a number"));
    measure("4 KiB text", &text_message(), iterations);
    measure("100 KiB PDF attachment", &attachment_message(), iterations);
}
