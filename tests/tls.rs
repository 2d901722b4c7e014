//! TLS: implicit TLS on the submissions port (RFC 8314), the TLS versions offered, and
//! certificates reloaded when their files change: rewritten in place, or swapped the way
//! the kubelet updates a mounted Secret.

mod common;

use common::smtp::Client;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn connect_tls(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<Client> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let mut c = Client::over(Box::new(tls));
    c.expect("220 ").await;
    Ok(c)
}

#[tokio::test]
async fn implicit_tls_greets_after_the_handshake_with_tls12_and_tls13() {
    let relay = common::start("{}").await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut c = connect_tls(relay.submissions, client_config(&relay.ca_pem, &[version]))
            .await
            .unwrap();
        let ehlo = c.cmd("EHLO client.test", "250 ").await;
        assert!(
            ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
        c.cmd("MAIL FROM:<alice@local.test>", "530 5.7.0").await;
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let relay = common::start("{}").await;
    let old = relay.ca_pem.clone();
    let new = common::write_certificate(relay.dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let with_new = connect_tls(
            relay.submissions,
            client_config(&new, &[&rustls::version::TLS13]),
        )
        .await;
        if with_new.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served within 10 s: {:?}",
            with_new.err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let with_old = connect_tls(
        relay.submissions,
        client_config(&old, &[&rustls::version::TLS13]),
    )
    .await;
    assert!(with_old.is_err(), "the old certificate is still served");
}

/// A TLS Secret mounted as a volume, laid out as the kubelet's atomic writer does it:
/// the keys' files in a timestamped directory, `..data` a symlink to that directory,
/// and `tls.crt` and `tls.key` symlinks through `..data`. An update writes a new
/// timestamped directory, points a temporary symlink at it, renames that over `..data`
/// (the one atomic step) and removes the old directory.
struct SecretVolume {
    dir: PathBuf,
    version: Option<PathBuf>,
    updates: u32,
}

impl SecretVolume {
    fn new(dir: PathBuf, cert_pem: &str, key_pem: &str) -> SecretVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = SecretVolume {
            dir,
            version: None,
            updates: 0,
        };
        volume.update(cert_pem, key_pem, None);
        for key in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(key), volume.dir.join(key))
                .unwrap();
        }
        volume
    }

    /// Swaps in new contents; with `modified`, the new files carry that modification
    /// time (as a copy that keeps times would), so that only their identity changes.
    fn update(&mut self, cert_pem: &str, key_pem: &str, modified: Option<SystemTime>) {
        self.updates += 1;
        let name = format!(
            "..2026_12_07_08_00_{:02}.{}",
            self.updates,
            100_000 + self.updates
        );
        let version = self.dir.join(&name);
        std::fs::create_dir(&version).unwrap();
        for (key, pem) in [("tls.crt", cert_pem), ("tls.key", key_pem)] {
            std::fs::write(version.join(key), pem).unwrap();
            if let Some(time) = modified {
                let file = std::fs::File::options()
                    .write(true)
                    .open(version.join(key))
                    .unwrap();
                file.set_modified(time).unwrap();
            }
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = self.version.replace(version) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    fn file(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }
}

/// A self-signed certificate for localhost: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}

/// A certificate whose PEM files have exactly the lengths of `like`'s: its length says
/// nothing about a change. ECDSA signatures vary by a byte or two, so a few draws do.
fn certificate_of_same_length(like: &(String, String)) -> (String, String) {
    for _ in 0..500 {
        let new = certificate();
        if new.0.len() == like.0.len() && new.1.len() == like.1.len() && new.0 != like.0 {
            return new;
        }
    }
    panic!("no certificate of the same length in 500 draws");
}

/// Whether a new connection to `addr` negotiates STARTTLS with a server certificate that
/// `ca_pem` (a self-signed certificate) verifies.
async fn starttls_verifies(addr: std::net::SocketAddr, ca_pem: &str) -> bool {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("STARTTLS", "220 2.0.0").await;
    let config = client_config(ca_pem, &[&rustls::version::TLS13]);
    let handshake = tokio_rustls::TlsConnector::from(config)
        .connect(
            ServerName::try_from("localhost").unwrap(),
            c.io.into_inner(),
        )
        .await;
    let Ok(tls) = handshake else { return false };
    let mut c = Client::over(Box::new(tls));
    c.cmd("EHLO client.test", "250 ").await;
    true
}

/// Polls until new STARTTLS connections are served the certificate `ca_pem`; panics
/// after 10 s (the files are checked every second).
async fn until_starttls_serves(addr: std::net::SocketAddr, ca_pem: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !starttls_verifies(addr, ca_pem).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the new certificate is not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_certificate_swapped_into_a_mounted_secret_is_served_on_starttls() {
    let secret = tempfile::tempdir().unwrap();
    let first = certificate();
    let mut volume = SecretVolume::new(secret.path().join("tls"), &first.0, &first.1);
    let tls = format!(
        "tls: {{ certFile: {:?}, keyFile: {:?} }}",
        volume.file("tls.crt"),
        volume.file("tls.key")
    );
    let config =
        common::config_yaml("{}").replace("tls: { certFile: cert.pem, keyFile: key.pem }", &tls);
    assert!(config.contains("tls.crt"), "{config}");
    let relay = common::start_with(&config, &common::policy_yaml()).await;
    assert!(starttls_verifies(relay.submission, &first.0).await);

    // The kubelet's update: new files, written now.
    let second = certificate();
    volume.update(&second.0, &second.1, None);
    until_starttls_serves(relay.submission, &second.0, "a new version").await;
    assert!(
        !starttls_verifies(relay.submission, &first.0).await,
        "the first certificate is still served"
    );

    // Files of the same lengths and modification time as the ones they replace: only
    // which files the paths lead to has changed.
    let third = certificate_of_same_length(&second);
    let modified = std::fs::metadata(volume.file("tls.crt"))
        .unwrap()
        .modified()
        .unwrap();
    volume.update(&third.0, &third.1, Some(modified));
    assert_eq!(
        std::fs::metadata(volume.file("tls.key"))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    until_starttls_serves(relay.submission, &third.0, "same length, same time").await;
}
