//! `sluice dkim keygen`: a DKIM key pair for the policy's `signing:` section, the
//! private key to put in a Secret and the TXT record to publish.

use clap::{Subcommand, ValueEnum};
use sluice::filter::keygen::{DnsRecord, KeyAlgorithm, generate};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DkimCommand {
    /// Make a key pair: the private key (PEM PKCS#8) goes to stdout or --out, then the
    /// DNS TXT record to publish at SELECTOR._domainkey.DOMAIN goes to stdout, split
    /// into strings of at most 255 octets as zone files want.
    Keygen {
        /// The signing domain (d=), e.g. example.com.
        #[arg(long)]
        domain: String,
        /// The selector (s=), e.g. s2026r.
        #[arg(long)]
        selector: String,
        #[arg(long, value_enum, default_value_t = Algorithm::Rsa)]
        algorithm: Algorithm,
        /// RSA key size: 2048 (recommended), 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Write the private key to this new file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

pub fn run(command: DkimCommand) -> anyhow::Result<ExitCode> {
    let DkimCommand::Keygen {
        domain,
        selector,
        algorithm,
        bits,
        out,
    } = command;
    sluice::policy::signing::selector(&selector)
        .map_err(|e| anyhow::anyhow!("--selector {selector:?}: {e}"))?;
    let algorithm = match algorithm {
        Algorithm::Rsa => KeyAlgorithm::Rsa { bits },
        Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
    };
    let pem = generate(algorithm)?;
    let record = DnsRecord::for_key(&domain, &selector, pem.as_bytes())?;
    match &out {
        Some(path) => write_private(path, &pem)?,
        None => print!("{pem}"),
    }
    println!("{}", record.zone_line());
    Ok(ExitCode::SUCCESS)
}

/// A new file only the owner can read: it holds a private key.
fn write_private(path: &PathBuf, pem: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
