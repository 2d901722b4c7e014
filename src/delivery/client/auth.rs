//! SMTP AUTH (RFC 4954) towards a smarthost: PLAIN (RFC 4616) when offered, LOGIN
//! otherwise, and only ever over TLS. Credentials never reach a log line or an error.

use super::ClientConfig;
use super::connection::rejected;
use super::error::ClientError;
use super::extensions::Extensions;
use super::wire::Wire;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Authenticates when credentials are configured.
///
/// A rejection (535) is returned as an error that maps to `Deferred`, not `Failed`:
/// wrong smarthost credentials are an administrator's problem, and the mail should wait
/// while they are fixed rather than bounce.
pub async fn authenticate(
    wire: &mut Wire,
    ext: &Extensions,
    encrypted: bool,
    config: &ClientConfig,
) -> Result<(), ClientError> {
    let Some((user, password)) = &config.credentials else {
        return Ok(());
    };
    let remote = wire.remote.clone();
    if !encrypted {
        return Err(ClientError::AuthWithoutTls { remote });
    }
    let timeout = config.timeouts.other;
    let reply = if ext.has_auth("PLAIN") {
        let token = STANDARD.encode(format!("\0{user}\0{password}"));
        let line = format!("AUTH PLAIN {token}\r\n");
        let reply = wire.exchange(line.as_bytes(), "AUTH", timeout).await?;
        // A server that ignores the initial response asks for it with an empty 334.
        match reply.code {
            334 => {
                wire.exchange(format!("{token}\r\n").as_bytes(), "AUTH", timeout)
                    .await?
            }
            _ => reply,
        }
    } else if ext.has_auth("LOGIN") {
        let mut reply = wire.exchange(b"AUTH LOGIN\r\n", "AUTH", timeout).await?;
        for secret in [user, password] {
            if reply.code != 334 {
                break;
            }
            let line = format!("{}\r\n", STANDARD.encode(secret));
            reply = wire.exchange(line.as_bytes(), "AUTH", timeout).await?;
        }
        reply
    } else {
        let offered = ext.auth.join(" ");
        return Err(ClientError::AuthUnavailable { remote, offered });
    };
    if reply.code != 235 {
        return Err(rejected(wire, "AUTH", reply));
    }
    Ok(())
}
