//! The roles reach NATS as a Kubernetes Secret would let them: user and password, a
//! token, an NKey seed file, and TLS with a private CA. Each against a real `nats-server`
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
