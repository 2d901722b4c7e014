//! Access to the admin listener of a running relay, with curl as the HTTP client: the
//! queue API (message content, deletion) needs the bearer token of `adminTokenFile` and a
//! `Host` naming the listener; without a token it is open on loopback only and off on
//! any other address; `/healthz`, `/readyz` and `/metrics` answer everyone. `sluice
//! queue` sends the token from `--admin-token-file` or the configuration.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "4f9c2e71d0a8b3c6e5f7a9b1c3d5e7f9";

/// `curl` of `path` with extra headers: (status, body).
async fn curl(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String) {
    let args: Vec<&str> = headers.iter().flat_map(|h| ["-H", h]).collect();
    curl_with(addr, path, &args).await
}

/// The same with any curl arguments.
async fn curl_with(addr: SocketAddr, path: &str, args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl's status line");
    (status.parse().expect("a status"), body.to_string())
}

/// `sluice queue list` against `admin` with extra arguments: (exit code, stdout+stderr).
async fn queue_list(config: &Path, admin: SocketAddr, extra: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["queue", "list", "--admin", &admin.to_string(), "--config"])
        .arg(config)
        .args(extra)
        .env_remove("SLUICE_ADMIN_TOKEN_FILE")
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// A relay whose configuration says `admin` and, when given, `adminTokenFile`.
async fn relay(admin: &str, token_file: Option<&Path>) -> common::Relay {
    let mut config = common::config_yaml("{}")
        .replace("admin: \"127.0.0.1:0\"\n", &format!("admin: \"{admin}\"\n"));
    if let Some(path) = token_file {
        config += &format!("adminTokenFile: \"{}\"\n", path.display());
    }
    common::start_with(&config, &common::policy_yaml()).await
}

#[tokio::test]
async fn with_a_token_the_queue_api_needs_it_and_a_host_naming_the_listener() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let relay = relay("127.0.0.1:0", Some(&token_file)).await;
    let admin = relay.admin;
    let bearer = format!("Authorization: Bearer {TOKEN}");

    let (status, body) = curl(admin, "/queue", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let wrong = format!("Authorization: Bearer {}", &TOKEN[1..]);
    assert_eq!(curl(admin, "/queue", &[&wrong]).await.0, 401);
    assert_eq!(
        curl(admin, "/queue", &[&bearer]).await,
        (200, "[]\n".into())
    );
    let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(curl(admin, &format!("/queue/{id}"), &[]).await.0, 401);
    assert_eq!(
        curl(admin, &format!("/queue/{id}"), &[&bearer]).await.0,
        404
    );

    // DNS rebinding: the browser sends the attacker's name, token or not.
    let rebound = curl(admin, "/queue", &[&bearer, "Host: evil.example"]).await;
    assert_eq!(rebound.0, 403, "{}", rebound.1);
    assert!(rebound.1.contains("Host"), "{}", rebound.1);
    let port = admin.port();
    let named = format!("Host: localhost:{port}");
    assert_eq!(curl(admin, "/queue", &[&bearer, &named]).await.0, 200);

    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = curl(admin, open, &["Host: evil.example"]).await;
        assert_eq!(status, 200, "{open}: {body}");
    }
    let metrics = curl(admin, "/metrics", &[]).await.1;
    let refused =
        |reason: &str| format!("sluice_admin_requests_refused_total{{reason=\"{reason}\"}}");
    assert!(
        metrics.contains(&format!("{} 3\n", refused("token"))),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("{} 1\n", refused("host"))),
        "{metrics}"
    );

    // The queue tool: the token from the flag, or from the configuration's setting.
    let config = relay.dir.path().join("sluice.yaml");
    let (code, text) = queue_list(&config, admin, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(text, "Mail queue is empty\n");
    let plain = relay.dir.path().join("plain.yaml");
    let without = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("adminTokenFile"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&plain, without).unwrap();
    let (code, text) = queue_list(&plain, admin, &[]).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("401"), "{text}");
    let flag = token_file.to_str().unwrap();
    let (code, text) = queue_list(&plain, admin, &["--admin-token-file", flag]).await;
    assert_eq!((code, text.as_str()), (0, "Mail queue is empty\n"));
}

#[tokio::test]
async fn without_a_token_on_every_address_the_queue_api_is_off_and_the_probes_answer() {
    let relay = relay("0.0.0.0:0", None).await;
    let reached = SocketAddr::from(([127, 0, 0, 1], relay.admin.port()));
    let (status, body) = curl(reached, "/queue", &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("the queue API is off"), "{body}");
    let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let delete = curl_with(reached, &format!("/queue/{id}"), &["-X", "DELETE"]).await;
    assert_eq!(delete.0, 403, "{}", delete.1);
    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = curl(reached, open, &[]).await;
        assert_eq!(status, 200, "{open}: {body}");
    }
}

#[tokio::test]
async fn without_a_token_on_loopback_the_queue_api_is_open_to_its_own_names_only() {
    let relay = relay("127.0.0.1:0", None).await;
    assert_eq!(curl(relay.admin, "/queue", &[]).await, (200, "[]\n".into()));
    let rebound = curl(relay.admin, "/queue", &["Host: evil.example:80"]).await;
    assert_eq!(rebound.0, 403, "{}", rebound.1);
}

#[tokio::test]
async fn the_request_head_is_bounded_in_size_and_fields() {
    let relay = relay("127.0.0.1:0", None).await;
    let exchange = |head: String| async move {
        let mut s = tokio::net::TcpStream::connect(relay.admin).await.unwrap();
        // The listener may answer and close before it has read all of a large head.
        let _ = s.write_all(head.as_bytes()).await;
        let mut text = String::new();
        let _ = s.read_to_string(&mut text).await;
        text
    };
    let fields = "X-Filler: 1\r\n".repeat(40);
    let many = exchange(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n")).await;
    assert!(many.starts_with("HTTP/1.1 431"), "{many}");
    let long = "X-Filler: ".to_string() + &"a".repeat(9000) + "\r\n";
    let large = exchange(format!("GET /healthz HTTP/1.1\r\n{long}\r\n")).await;
    assert!(large.starts_with("HTTP/1.1 431"), "{large}");
    let twice = exchange("GET /queue HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into()).await;
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
}
