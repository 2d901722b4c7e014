//! The SMTP listeners: accepting connections within the connection limits, the PROXY
//! protocol of a load balancer in front ([`proxy`]), implicit TLS, and one task per
//! connection ([`connection`]) that drives a protocol
//! [`Session`](crate::smtp::session::Session), asks the block lists about untrusted
//! clients ([`dnsbl`]) and hands accepted messages to the queue.

pub mod auth_failures;
pub mod auth_guard;
pub mod budget;
mod connection;
mod content;
pub mod dnsbl;
mod filtering;
mod io;
pub mod limits;
pub mod proxy;
pub mod proxy_header;
mod signing;
pub mod tls;

use crate::events::EventSink;
use crate::policy::PolicySnapshot;
use crate::queue::Queue;
use crate::smtp::reply::Reply;
use crate::smtp::session::{ConnectionInfo, ListenerKind, SessionConfig, SessionEnv};
use crate::telemetry::metrics::{ConnectionRefusal, ListenerLabel, Metrics};
use crate::telemetry::readiness::{Latch, Readiness};
use auth_guard::AuthGuard;
use budget::MemoryBudget;
use connection::Connection;
pub use content::SpillSettings;
pub use filtering::Filters;
use io::Io;
use limits::{ConnectionLimits, ConnectionPermit, Refusal};
use proxy::{ProxyProtocol, ProxyRefusal};
pub use signing::SignerCache;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tls::TlsStore;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The protocol session of a connection, under the relay policy.
type Session = crate::smtp::session::Session<PolicySnapshot>;

/// RFC 5321 4.5.3.2 timeouts as the server applies them.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Waiting for the next command line (and for a TLS handshake).
    pub command: Duration,
    /// Waiting for the next bytes of message content.
    pub data: Duration,
    /// Waiting for the client to take one write of replies.
    pub write: Duration,
    /// A whole session, however busy.
    pub session: Duration,
    /// How long a session keeps the policy it has before taking the one in force.
    pub policy_max_age: Duration,
}

/// What every connection of the process shares.
pub struct Shared {
    pub queue: Arc<dyn Queue>,
    /// The policy in force; each new session takes the value current at its start.
    pub policy: watch::Receiver<Arc<PolicySnapshot>>,
    pub tls: Option<Arc<TlsStore>>,
    pub metrics: Arc<Metrics>,
    /// While the queue's latch is withdrawn (JetStream unreachable), new sessions are
    /// refused with 421: nothing they sent could be acknowledged.
    pub readiness: Arc<Readiness>,
    /// Where the `accepted` event of each queued message goes.
    pub events: Arc<dyn EventSink>,
    pub limits: Arc<ConnectionLimits>,
    /// Lockouts, failure delays and the bound on password checks, across connections.
    pub auth: AuthGuard,
    /// Message content held in memory by all sessions together.
    pub budget: Arc<MemoryBudget>,
    /// Where content beyond the in-memory threshold goes.
    pub spill: SpillSettings,
    pub timeouts: Timeouts,
    pub max_command_line: usize,
    /// The policy's filters at the end of each message, and the quarantine they use.
    pub filters: Filters,
    /// DNS for the checks that need it (sender authentication, DNSBL): the configured
    /// name server (`delivery.nameserver`) or the system's. `None` when it could not be
    /// set up; those checks then fail and their fail mode decides.
    pub dns: Option<crate::delivery::dns::SystemResolver>,
    /// The block lists' answers by TTL, for every session of the process.
    pub dnsbl: dnsbl::Dnsbl,
    /// The clock and the queue id and trace generators of every session:
    /// [`SystemEnv`](crate::smtp::session::SystemEnv) outside tests.
    pub session_env: Arc<dyn SessionEnv>,
}

/// One listening socket's settings.
pub struct Listener {
    pub name: String,
    pub session: Arc<SessionConfig>,
    /// Set when a load balancer in front announces each client with a PROXY header.
    pub proxy: Option<ProxyProtocol>,
}

/// Accepts connections until `drain` is cancelled, then returns; sessions already open
/// are tracked by `tracker` and close when idle (drain) or at once (`stop`).
pub async fn serve(
    socket: TcpListener,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    drain: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = drain.cancelled() => return,
            accepted = socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (listener, shared) = (Arc::clone(&listener), Arc::clone(&shared));
        let (drain, stop) = (drain.clone(), stop.clone());
        tracker.spawn(async move {
            handle(tcp, peer, listener, shared, drain, stop).await;
        });
    }
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    drain: CancellationToken,
    stop: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let Some((tcp, client, permit)) = admit(tcp, peer, &listener, &shared, &stop).await else {
        return;
    };
    shared.metrics.connections.inc(listener_label(&listener));
    shared.metrics.connections_active.inc();
    let mut conn = ConnectionInfo {
        client_ip: canonical_ip(client),
        tls: None,
    };
    let io = match listener.session.kind {
        ListenerKind::Submissions => match implicit_tls(tcp, &shared).await {
            Some((stream, info)) => {
                conn.tls = Some(info);
                Io::Tls(Box::new(stream))
            }
            None => {
                shared.metrics.connections_active.dec();
                return;
            }
        },
        _ => Io::Plain(tcp),
    };
    let policy = shared.policy.borrow().clone();
    let env = Arc::clone(&shared.session_env);
    let session = Session::new(Arc::clone(&listener.session), policy, env, conn);
    let peer_text = client.to_string();
    Connection::new(io, session, listener, Arc::clone(&shared), peer_text)
        .run(drain, stop)
        .await;
    shared.metrics.connections_active.dec();
    drop(permit);
}

/// What a connection must pass before its greeting: on a PROXY protocol listener a
/// trusted peer and a valid header, then the connection limits (per client, the one the
/// header names) and a reachable queue. Returns the client's address; `None` when the
/// connection was refused and closed (with 421, or without a word on a PROXY failure).
async fn admit(
    mut tcp: TcpStream,
    peer: SocketAddr,
    listener: &Listener,
    shared: &Shared,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr, ConnectionPermit)> {
    if let Some(proxy) = &listener.proxy
        && !proxy.trusts(canonical_ip(peer))
    {
        proxy_refused(listener, shared, peer, ProxyRefusal::Untrusted);
        return None;
    }
    let admitted = match shared.limits.admit() {
        Ok(admitted) => admitted,
        Err(refusal) => {
            too_many(tcp, refusal, listener, shared).await;
            return None;
        }
    };
    let client = match &listener.proxy {
        None => peer,
        Some(proxy) => {
            let read = tokio::select! {
                read = proxy.client(&mut tcp, peer) => read,
                _ = stop.cancelled() => return None,
            };
            match read {
                Ok(client) => {
                    tracing::debug!(listener = %listener.name, client = %client, proxy = %peer, "PROXY header");
                    client
                }
                Err(refusal) => {
                    proxy_refused(listener, shared, peer, refusal);
                    return None;
                }
            }
        }
    };
    let permit = match admitted.identify(canonical_ip(client)) {
        Ok(permit) => permit,
        Err(refusal) => {
            too_many(tcp, refusal, listener, shared).await;
            return None;
        }
    };
    if !shared.readiness.is_released(Latch::Queue) {
        shared
            .metrics
            .connections_refused
            .inc(ConnectionRefusal::QueueUnavailable);
        let reply = Reply::new(
            421,
            "4.3.0",
            format!(
                "{} Service not available: the queue is unreachable, try again later",
                listener.session.hostname
            ),
        );
        refuse(tcp, reply).await;
        return None;
    }
    Some((tcp, client, permit))
}

async fn too_many(tcp: TcpStream, refusal: Refusal, listener: &Listener, shared: &Shared) {
    shared
        .metrics
        .connections_refused
        .inc(refusal.metric_label());
    let reply = Reply::new(
        421,
        "4.7.0",
        format!("{} Error: too many connections", listener.session.hostname),
    );
    refuse(tcp, reply).await;
}

/// Counted and logged; the caller drops the socket unanswered: whatever is on the other
/// end is no balancer of ours, or not speaking the protocol, and gets no greeting.
fn proxy_refused(listener: &Listener, shared: &Shared, peer: SocketAddr, refusal: ProxyRefusal) {
    shared
        .metrics
        .connections_refused
        .inc(refusal.metric_label());
    tracing::info!(
        listener = %listener.name,
        peer = %peer,
        reason = refusal.label(),
        error = %refusal,
        "connection closed before the greeting"
    );
}

/// RFC 8314: on an implicit-TLS port the handshake comes before the greeting.
async fn implicit_tls(
    tcp: TcpStream,
    shared: &Shared,
) -> Option<(
    tokio_rustls::server::TlsStream<TcpStream>,
    crate::smtp::session::TlsInfo,
)> {
    let tls = shared.tls.as_ref()?;
    let handshake = tls.acceptor().accept(tcp);
    match tokio::time::timeout(shared.timeouts.command, handshake).await {
        Ok(Ok(stream)) => {
            let info = tls::tls_info(stream.get_ref().1);
            Some((stream, info))
        }
        _ => None,
    }
}

async fn refuse(mut tcp: TcpStream, reply: Reply) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(&reply.to_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// IPv4 clients on a dual-stack socket show up as `::ffff:a.b.c.d`; policy and limits
/// want the IPv4 address.
fn canonical_ip(peer: SocketAddr) -> std::net::IpAddr {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer.ip(), std::net::IpAddr::V4),
        v4 => v4,
    }
}

fn listener_label(listener: &Listener) -> ListenerLabel {
    match listener.session.kind {
        ListenerKind::Relay => ListenerLabel::Relay,
        ListenerKind::Submission => ListenerLabel::Submission,
        ListenerKind::Submissions => ListenerLabel::Submissions,
    }
}
