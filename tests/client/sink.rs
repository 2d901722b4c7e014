//! The client against a real SMTP server: Postfix's smtp-sink, started on loopback.

use super::*;

/// Postfix's smtp-sink, a real SMTP server that accepts everything.
struct Sink {
    _child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

async fn start_smtp_sink() -> Sink {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    let mut cmd = tokio::process::Command::new("/usr/sbin/smtp-sink");
    // smtp-sink refuses to run as root unless told whom to become.
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        cmd.args(["-u", "nobody"]);
    }
    cmd.arg(addr.to_string()).arg("100").kill_on_drop(true);
    let child = cmd
        .spawn()
        .expect("smtp-sink is installed by scripts/install-test-deps");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Sink {
                _child: child,
                addr,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("smtp-sink did not start on {addr}");
}

#[tokio::test]
async fn postfix_smtp_sink_accepts_the_message() {
    let sink = start_smtp_sink().await;
    let mut cfg = config();
    cfg.tls = TlsMode::Opportunistic;
    let env = envelope(&["bob@example.org", "carol@example.org"]);
    let mut conn = Connection::connect(sink.addr, "sink.test", &cfg)
        .await
        .unwrap();
    assert!(conn.extensions().pipelining);
    let message = "Subject: sink\r\n\r\n.dot\r\n\u{e9}t\u{e9}\r\n".as_bytes();
    let outcomes = conn.send(&env, &env.recipients, message).await.unwrap();
    assert!(outcomes.iter().all(Outcome::is_delivered), "{outcomes:?}");
    conn.reset().await.unwrap();
    let outcomes = conn
        .send(&env, &env.recipients[..1], MESSAGE)
        .await
        .unwrap();
    assert!(outcomes[0].is_delivered(), "{outcomes:?}");
    conn.quit().await;
}
