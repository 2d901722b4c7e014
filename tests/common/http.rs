//! Plain-HTTP requests of the tests (the admin listener, the Kubernetes API emulator's
//! `/version`, Rspamd's `/ping`) through reqwest, the client `sluice queue` uses, so that
//! no test hand-writes HTTP/1.1. The client is built in one place: rustls on ring (the
//! crate has `rustls-no-provider`, so reqwest brings no crypto of its own), no proxy
//! (loopback only, whatever HTTPS_PROXY the environment has) and a bound on the whole
//! request, since a probe that hangs is as bad as one that fails.

use reqwest::Method;
use reqwest::header::HeaderMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One answer: its status, headers and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    /// One header's value as text; `None` when it is absent or not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// The client of every request here: ring, no proxy, `within` for the whole request.
pub fn client(within: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest has no crypto provider of its own here (no aws-lc-rs): ring's. The roots
    // are empty: these requests are plain HTTP on loopback.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(within)
        .build()
}

/// `METHOD http://ADDR/PATH` with an empty body, bounded by `within`.
pub async fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Result<Response, reqwest::Error> {
    let response = client(within)?
        .request(method, format!("http://{addr}{path}"))
        .send()
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A `GET`: (status, body), `None` on any failure or after `within`.
pub async fn get(addr: SocketAddr, path: &str, within: Duration) -> Option<(u16, String)> {
    let response = request(Method::GET, addr, path, within).await.ok()?;
    Some((response.status, response.body))
}
