//! TLS: implicit TLS on the submissions port (RFC 8314), the TLS versions offered, and
//! certificates reloaded when their files change.

mod common;

use common::smtp::Client;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::Arc;
use std::time::Duration;

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
