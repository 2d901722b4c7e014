//! Reuse of outbound connections: after a transaction, a connection waits here for the
//! next message to the same host, so that a burst to one destination pays for one TCP and
//! TLS handshake rather than one per message.

use super::client::{ClientConfig, ClientError, Connection};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Servers commonly drop idle clients after a minute or so; stay well below.
const MAX_IDLE: Duration = Duration::from_secs(30);

pub struct Pool {
    idle: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    /// As many as may be open to one destination, so that a burst that used them all
    /// finds them all again.
    max_idle_per_host: usize,
    /// Idle connections kept at most, all hosts together: each holds a socket, and the
    /// map must not grow with the number of hosts ever delivered to.
    max_idle: usize,
}

/// Connections are interchangeable only with the same address, name and settings.
fn key(addr: SocketAddr, name: &str, config: &ClientConfig) -> String {
    let user = config
        .credentials
        .as_ref()
        .map(|(u, _)| u.as_str())
        .unwrap_or("");
    format!(
        "{addr}|{name}|{:?}|{}|{user}|{}",
        config.tls, config.verify_certificates, config.lmtp
    )
}

impl Pool {
    pub fn new(max_idle_per_host: usize, max_idle: usize) -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_host,
            max_idle,
        }
    }

    /// An idle connection that still answers RSET, or a new one.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        name: &str,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let key = key(addr, name, config);
        while let Some((mut conn, since)) = self.pop(&key).await {
            if since.elapsed() < MAX_IDLE && conn.reset().await.is_ok() {
                return Ok(conn);
            }
            conn.quit().await;
        }
        Connection::connect(addr, name, config).await
    }

    /// Keeps a connection whose transaction went through, for the next message.
    pub async fn release(
        &self,
        conn: Connection,
        addr: SocketAddr,
        name: &str,
        config: &ClientConfig,
    ) {
        self.release_at(conn, key(addr, name, config), Instant::now())
            .await;
    }

    /// `release` at `now`. Every release sweeps the whole map: connections idle past
    /// `MAX_IDLE` are closed (dropped) and hosts left without any are removed, so the
    /// map only holds hosts delivered to in the last `MAX_IDLE`, at most `max_idle`.
    async fn release_at(&self, conn: Connection, key: String, now: Instant) {
        let mut idle = self.idle.lock().await;
        idle.retain(|_, list| {
            list.retain(|(_, since)| now.saturating_duration_since(*since) < MAX_IDLE);
            !list.is_empty()
        });
        let total: usize = idle.values().map(Vec::len).sum();
        let here = idle.get(&key).map_or(0, Vec::len);
        if total < self.max_idle && here < self.max_idle_per_host {
            idle.entry(key).or_default().push((conn, now));
        }
    }

    async fn pop(&self, key: &str) -> Option<(Connection, Instant)> {
        let mut idle = self.idle.lock().await;
        let list = idle.get_mut(key)?;
        let found = list.pop();
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Hosts with idle connections, and the connections.
    pub async fn idle_counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().await;
        (idle.len(), idle.values().map(Vec::len).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sink::{AcceptAll, Sink};

    #[tokio::test]
    async fn the_idle_map_is_bounded_and_shrinks_back_when_hosts_go_quiet() {
        let sink = Sink::start(AcceptAll).await;
        let config = ClientConfig {
            tls: crate::delivery::client::TlsMode::Disabled,
            ..ClientConfig::new("relay.test")
        };
        let pool = Pool::new(2, 10);
        // Fifty destinations (one server under fifty names: fifty keys).
        for i in 0..50 {
            let name = format!("mx{i}.test");
            let conn = pool.connect(sink.addr, &name, &config).await.unwrap();
            pool.release(conn, sink.addr, &name, &config).await;
        }
        let (hosts, conns) = pool.idle_counts().await;
        assert_eq!((hosts, conns), (10, 10), "bounded by max_idle");

        // A host reused takes its connection out, and its entry goes with it.
        let conn = pool.connect(sink.addr, "mx0.test", &config).await.unwrap();
        assert_eq!(pool.idle_counts().await, (9, 9));

        // Once the others have idled past MAX_IDLE, the next release sweeps them out.
        let later = Instant::now() + MAX_IDLE * 2;
        pool.release_at(conn, key(sink.addr, "mx0.test", &config), later)
            .await;
        assert_eq!(pool.idle_counts().await, (1, 1));
    }
}
