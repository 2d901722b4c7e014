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
    pub fn new(max_idle_per_host: usize) -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_host,
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
        let key = key(addr, name, config);
        let mut idle = self.idle.lock().await;
        let list = idle.entry(key).or_default();
        list.retain(|(_, since)| since.elapsed() < MAX_IDLE);
        if list.len() < self.max_idle_per_host {
            list.push((conn, Instant::now()));
        }
    }

    async fn pop(&self, key: &str) -> Option<(Connection, Instant)> {
        self.idle.lock().await.get_mut(key)?.pop()
    }
}
