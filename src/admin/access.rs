//! Who may use the queue API of the admin listener, which shows message content and
//! deletes mail: the probes and `/metrics` stay open to whoever reaches the listener, the
//! queue API does not.
//!
//! - With a token (`adminTokenFile`), a request must carry `Authorization: Bearer
//!   TOKEN`; the two are compared as SHA-256 digests, byte for byte without an early
//!   exit, so that the time taken says nothing about the token.
//! - Without one, the queue API is open on a loopback address, as before (anyone who can
//!   connect there is on the machine), and off on any other address: a listener on
//!   `0.0.0.0` would hand the queue to the network.
//! - Either way, `Host` must name the listener: its address, the address the client
//!   reached, `localhost`, `127.0.0.1` or `[::1]` with its port, or a name in
//!   `adminAllowedHosts`. A web page whose name was pointed at 127.0.0.1 (DNS
//!   rebinding) sends its own name and is refused.

use super::request::Request;
use crate::telemetry::metrics::AdminRefusal;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Whether the queue API answers, and to whom.
#[derive(Clone)]
enum QueueApi {
    Open,
    Token([u8; 32]),
    Off,
}

/// The access rules of one admin listener.
#[derive(Clone)]
pub struct Access {
    queue_api: QueueApi,
    /// Lower-case `host:port` values that `Host` may take, beside the address reached.
    hosts: Vec<String>,
    port: u16,
}

/// Why a request to the queue API is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `Host` does not name this listener.
    Host,
    /// No bearer token, or not the one configured.
    Token,
    /// No token is configured and the listener is not on loopback.
    Disabled,
}

impl Refusal {
    /// The `reason` label of `sluice_admin_requests_refused_total`.
    pub(super) fn metric_label(self) -> AdminRefusal {
        match self {
            Refusal::Host => AdminRefusal::Host,
            Refusal::Token => AdminRefusal::Token,
            Refusal::Disabled => AdminRefusal::Disabled,
        }
    }
}

impl Access {
    /// The rules of a listener bound to `bound`, with the token read from
    /// `adminTokenFile` (if any) and the extra names of `adminAllowedHosts` (a name
    /// without a port gets the listener's).
    pub fn new(bound: SocketAddr, token: Option<&str>, allowed_hosts: &[String]) -> Access {
        let port = bound.port();
        let queue_api = match token {
            Some(token) => QueueApi::Token(Sha256::digest(token.as_bytes()).into()),
            None if bound.ip().is_loopback() => QueueApi::Open,
            None => QueueApi::Off,
        };
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        hosts.push(bound.to_string());
        for host in allowed_hosts {
            let host = host.to_ascii_lowercase();
            match has_port(&host) {
                true => hosts.push(host),
                false => hosts.push(format!("{host}:{port}")),
            }
        }
        Access {
            queue_api,
            hosts,
            port,
        }
    }

    /// Whether the queue API is off (for the start-up log).
    pub fn queue_api_off(&self) -> bool {
        matches!(self.queue_api, QueueApi::Off)
    }

    /// Checks a queue API request that arrived on `local`, the address the client
    /// connected to.
    pub(super) fn check(&self, request: &Request<'_>, local: SocketAddr) -> Result<(), Refusal> {
        if !self.host_allowed(request.host, local) {
            return Err(Refusal::Host);
        }
        match &self.queue_api {
            QueueApi::Open => Ok(()),
            QueueApi::Off => Err(Refusal::Disabled),
            QueueApi::Token(expected) => {
                let given = request
                    .authorization
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim());
                match given {
                    Some(token) if same_digest(&Sha256::digest(token.as_bytes()), expected) => {
                        Ok(())
                    }
                    _ => Err(Refusal::Token),
                }
            }
        }
    }

    fn host_allowed(&self, host: Option<&str>, local: SocketAddr) -> bool {
        let Some(host) = host.map(str::to_ascii_lowercase) else {
            return false;
        };
        // A client that leaves out the default port (80) of its URL leaves it out of
        // `Host` too.
        let host = match (has_port(&host), self.port) {
            (false, 80) => format!("{host}:80"),
            _ => host,
        };
        host == local.to_string() || self.hosts.contains(&host)
    }
}

/// Whether `host` ends in `:port` (an IPv6 literal is bracketed, so its colons do not
/// count).
fn has_port(host: &str) -> bool {
    host.rsplit_once(':').is_some_and(|(name, port)| {
        !name.is_empty()
            && !port.is_empty()
            && !name.ends_with(':')
            && port.bytes().all(|b| b.is_ascii_digit())
            && (!name.contains(':') || name.ends_with(']'))
    })
}

/// Compares every byte, whatever the first difference.
fn same_digest(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(host: Option<&'a str>, authorization: Option<&'a str>) -> Request<'a> {
        Request {
            method: "GET",
            path: "/queue",
            query: None,
            host,
            authorization,
            origin: false,
        }
    }

    #[test]
    fn the_token_and_the_host_are_checked() {
        let bound: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let local: SocketAddr = "10.0.0.5:9090".parse().unwrap();
        let names = ["Admin.Example".to_string(), "other.example:1".to_string()];
        let access = Access::new(bound, Some("s3cret"), &names);
        let ok = |host, auth| access.check(&request(Some(host), auth), local);
        let bearer = Some("Bearer s3cret");
        for host in [
            "localhost:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "10.0.0.5:9090",
            "admin.example:9090",
            "other.example:1",
        ] {
            assert_eq!(ok(host, bearer), Ok(()), "{host}");
        }
        for host in [
            "evil.example:9090",
            "localhost",
            "localhost:9091",
            "admin.example:1",
        ] {
            assert_eq!(ok(host, bearer), Err(Refusal::Host), "{host}");
        }
        assert_eq!(
            access.check(&request(None, bearer), local),
            Err(Refusal::Host)
        );
        for auth in [
            None,
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            assert_eq!(ok("localhost:9090", auth), Err(Refusal::Token), "{auth:?}");
        }
        assert_eq!(ok("localhost:9090", Some("bearer  s3cret ")), Ok(()));
    }

    #[test]
    fn without_a_token_the_queue_api_is_open_on_loopback_only() {
        let loopback: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let open = Access::new(loopback, None, &[]);
        assert_eq!(
            open.check(&request(Some("127.0.0.1:9090"), None), loopback),
            Ok(())
        );
        let any: SocketAddr = "[::]:9090".parse().unwrap();
        let off = Access::new(any, None, &[]);
        assert!(off.queue_api_off());
        let refused = off.check(&request(Some("localhost:9090"), None), loopback);
        assert_eq!(refused, Err(Refusal::Disabled));
    }

    #[test]
    fn ports_are_told_from_ipv6_colons() {
        assert!(has_port("a.example:1") && has_port("[::1]:9") && has_port("1.2.3.4:5"));
        assert!(
            !has_port("a.example") && !has_port("[::1]") && !has_port("::1") && !has_port("a:")
        );
    }
}
