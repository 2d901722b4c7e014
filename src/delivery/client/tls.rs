//! Client TLS with rustls on the ring provider, TLS 1.2 and 1.3 only: STARTTLS
//! (RFC 3207) and implicit TLS (RFC 8314), with or without certificate verification.

use super::ClientConfig;
use super::error::{ClientError, TLS_HANDSHAKE};
use super::wire::Io;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_rustls::TlsConnector;
use tracing::Instrument;

/// The operating system's trust anchors, loaded once per process. Certificates that do
/// not parse are skipped: one bad file in /etc/ssl must not stop all delivery.
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot load some system TLS roots");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "loaded system TLS roots");
            Arc::new(roots)
        })
        .clone()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `config`.
fn client_config(config: &ClientConfig) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let tls = if config.verify_certificates {
        builder
            .with_root_certificates(config.tls_roots.clone())
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    };
    Ok(tls)
}

/// Runs the TLS handshake over `io` within `duration`.
pub async fn handshake(
    io: Box<dyn Io>,
    server_name: &str,
    remote: &str,
    config: &ClientConfig,
    duration: Duration,
) -> Result<Box<dyn Io>, ClientError> {
    let name = tls_server_name(server_name)?;
    let tls_error = |reason: String| ClientError::Tls {
        remote: remote.to_string(),
        reason,
    };
    let tls = client_config(config).map_err(|e| tls_error(e.to_string()))?;
    let connector = TlsConnector::from(Arc::new(tls));
    let span = tracing::info_span!(
        target: crate::telemetry::otel::TARGET,
        "tls.handshake",
        server.address = server_name,
        error.type = tracing::field::Empty,
    );
    let handshake = tokio::time::timeout(duration, connector.connect(name, io));
    let result = match handshake.instrument(span.clone()).await {
        Ok(Ok(stream)) => Ok(Box::new(stream) as Box<dyn Io>),
        Ok(Err(e)) => Err(tls_error(e.to_string())),
        Err(_) => Err(ClientError::Timeout {
            command: TLS_HANDSHAKE,
            duration,
        }),
    };
    if let Err(e) = &result {
        span.record("error.type", e.kind());
    }
    result
}

/// The name the certificate is verified against (and sent as SNI) for a next hop named
/// `name`: the IP address of an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`,
/// RFC 5321 4.1.3), which certificates carry as an iPAddress SAN and SNI never carries
/// (RFC 6066 3); an IP address as it is; and a domain in its A-label form (RFC 5890),
/// the only form certificates hold, so that `bücher.example` is checked as
/// `xn--bcher-kva.example`.
pub fn tls_server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    let invalid = || ClientError::InvalidServerName {
        name: name.to_string(),
    };
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ip = match literal.split_at_checked(5) {
            Some((tag, v6)) if tag.eq_ignore_ascii_case("ipv6:") => {
                v6.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
            }
            _ => literal.parse::<Ipv4Addr>().map(IpAddr::V4).ok(),
        };
        return ip
            .map(|ip| ServerName::IpAddress(ip.into()))
            .ok_or_else(invalid);
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let ascii = match name.is_ascii() {
        true => name.to_string(),
        false => idna::domain_to_ascii(name).map_err(|_| invalid())?,
    };
    ServerName::try_from(ascii).map_err(|_| invalid())
}

/// Accepts any certificate, for opportunistic security (RFC 7435): an MX found in DNS
/// has no authenticated name to check against (without DANE or MTA-STS), and refusing
/// an unverifiable certificate would only push the mail to plaintext. Handshake
/// signatures are still checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
