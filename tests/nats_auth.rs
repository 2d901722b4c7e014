//! The roles reach NATS as a Kubernetes Secret would let them: user and password, a
//! token, an NKey seed file, a `.creds` file (user JWT and seed, with an operator, its
//! accounts and the user made here), and TLS with a private CA. Each against a real `nats-server`
//! set up to demand it, and each also refused when the credentials are wrong, so that a
//! setting that is silently ignored would fail here.

mod common;

use common::nats::NatsServer;
use sluice::nats::NatsConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `connect_now` and the roles' background connection both work with `config`: the
/// second is what `sluice ingress` uses, and must reach a connected state.
async fn reaches(config: &NatsConfig) -> Result<(), String> {
    let client = config
        .connect_now("test")
        .await
        .map_err(|e| format!("{e:#}"))?;
    client.flush().await.map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let background = config
        .connect(
            "test",
            Arc::new(move |up| {
                let _ = tx.send(up);
            }),
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|up| *up))
        .await
        .map_err(|_| "the background connection never came up".to_string())?
        .map_err(|e| e.to_string())?;
    background.flush().await.map_err(|e| e.to_string())
}

fn url(server: &NatsServer) -> Option<String> {
    Some(server.url())
}

#[tokio::test]
async fn user_and_password() {
    let server = NatsServer::start_with(&["--user", "sluice", "--pass", "s3cret"]);
    let mut config = NatsConfig {
        url: url(&server),
        user: Some("sluice".into()),
        password: Some("s3cret".into()),
        ..Default::default()
    };
    reaches(&config).await.unwrap();
    config.password = Some("wrong".into());
    let err = config.connect_now("test").await.unwrap_err();
    assert!(
        !format!("{err:#}").contains("wrong"),
        "no password in errors"
    );
}

#[tokio::test]
async fn token() {
    let server = NatsServer::start_with(&["--auth", "t0ken"]);
    let mut config = NatsConfig {
        url: url(&server),
        token: Some("t0ken".into()),
        ..Default::default()
    };
    reaches(&config).await.unwrap();
    config.token = Some("other".into());
    assert!(config.connect_now("test").await.is_err());
}

#[tokio::test]
async fn nkey_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let server = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().unwrap())).unwrap();
    let mut config = NatsConfig {
        url: url(&server),
        nkey_file: Some(seed.clone()),
        ..Default::default()
    };
    reaches(&config).await.unwrap();
    std::fs::write(&seed, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    assert!(config.connect_now("test").await.is_err(), "another key");
    config.nkey_file = Some(dir.path().join("missing.nk"));
    let err = config.connect_now("test").await.unwrap_err();
    assert!(format!("{err:#}").contains("missing.nk"), "{err:#}");
}

/// A private CA signing the server's certificate for 127.0.0.1; returns the CA's PEM
/// path and writes the server's certificate and key.
fn private_ca(dir: &Path) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    ca_path
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = private_ca(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let server = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let tls_url = server.url().replace("nats://", "tls://");
    let mut config = NatsConfig {
        url: Some(tls_url),
        ca_file: Some(ca),
        tls_required: true,
        ..Default::default()
    };
    reaches(&config).await.unwrap();
    // Without our CA the server's certificate is not trusted.
    config.ca_file = None;
    assert!(config.connect_now("test").await.is_err());
}

/// base64url without padding, as JWTs are written.
fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// A NATS JWT (version 2 claims) about `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> String {
    let header = b64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let jti: String = (0..52)
        .map(|_| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[rand::random_range(0..32)]))
        .collect();
    let claims = serde_json::json!({
        "jti": jti,
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "iss": issuer.public_key(),
        "name": subject,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64url(&signature))
}

/// A user of `account` as a `.creds` file, the way `nsc` writes one.
fn creds(account: &nkeys::KeyPair, path: &Path) {
    let user = nkeys::KeyPair::new_user();
    let claims = serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1,
        "payload": -1, "type": "user", "version": 2});
    let user_jwt = jwt(account, &user.public_key(), claims);
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn creds_file_of_an_operator_mode_server() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    // JetStream (the harness starts every server with it) needs a system account.
    let (account, system) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_account());
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = |account: &nkeys::KeyPair| {
        let claims = serde_json::json!({"limits": {"subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
            "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2});
        format!(
            "  {}: {}\n",
            account.public_key(),
            jwt(&operator, &account.public_key(), claims)
        )
    };
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: {operator_jwt}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{}{}}}\n",
            system.public_key(),
            account_jwt(&account),
            account_jwt(&system),
        ),
    )
    .unwrap();
    let server = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let file = dir.path().join("user.creds");
    creds(&account, &file);
    let mut config = NatsConfig {
        url: url(&server),
        creds_file: Some(file.clone()),
        ..Default::default()
    };
    reaches(&config).await.unwrap();
    // A user of an account this server does not know.
    creds(&nkeys::KeyPair::new_account(), &file);
    assert!(config.connect_now("test").await.is_err());
    config.creds_file = Some(dir.path().join("missing.creds"));
    assert!(config.connect_now("test").await.is_err());
}

/// JetStream through a client of `config`, with requests given up after 2 s: a reply the
/// server may not deliver never comes.
async fn jetstream_answers(config: &NatsConfig) -> Result<(), String> {
    let client = config
        .connect_now("test")
        .await
        .map_err(|e| format!("{e:#}"))?;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client);
    js.query_account().await.map_err(|e| e.to_string())?;
    // A KV bucket: created, written, read, and watched (an ordered push consumer whose
    // deliver subject is an inbox too).
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "inbox-test".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    kv.put("k", "v".into()).await.map_err(|e| e.to_string())?;
    let mut watch = kv
        .watch_with_history("k")
        .await
        .map_err(|e| e.to_string())?;
    use futures_util::StreamExt;
    match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
        Ok(Some(Ok(entry))) if entry.value.as_ref() == b"v" => Ok(()),
        other => Err(format!("watch: {other:?}")),
    }
}

#[tokio::test]
async fn replies_come_back_on_the_configured_inbox_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        "authorization { users: [ { user: x, password: xpw, permissions: { publish: \">\", subscribe: \"_INBOX_x.>\" } } ] }\n",
    )
    .unwrap();
    let server = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let mut config = NatsConfig {
        url: url(&server),
        user: Some("x".into()),
        password: Some("xpw".into()),
        inbox_prefix: Some("_INBOX_x".into()),
        ..Default::default()
    };
    jetstream_answers(&config).await.unwrap();
    reaches(&config).await.unwrap();
    // Without the prefix the replies go to _INBOX.…, which this user may not read.
    config.inbox_prefix = None;
    let err = jetstream_answers(&config).await.unwrap_err();
    assert!(!err.is_empty());
}
