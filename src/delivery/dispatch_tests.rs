//! Where a smarthost's credentials come from: sealed in the snapshot by the operator
//! (opened with the worker's key, only for the smarthost they were sealed for), or the
//! secrets directory for files.

use super::*;
use crate::delivery::dns::DnsError;
use crate::policy::SealedCredentials;
use crate::policy::model::{CredentialsSecretRef, TlsMode as PolicyTls};
use async_trait::async_trait;

struct NoDns;

#[async_trait]
impl Resolver for NoDns {
    async fn mx(&self, _: &str) -> Result<Vec<(u16, String)>, DnsError> {
        Err(DnsError::NotFound)
    }
    async fn ips(&self, _: &str) -> Result<Vec<IpAddr>, DnsError> {
        Err(DnsError::NotFound)
    }
}

fn dispatcher(key: Option<&[u8]>, secrets_dir: Option<PathBuf>) -> Dispatcher {
    let settings = DispatchSettings {
        hostname: "relay.test".into(),
        local_names: vec![],
        per_destination: 1,
        max_connections: 1,
        mx_port: 25,
        client: ClientConfig::new("relay.test"),
        secrets_dir,
        secrets_key: key.map(|k| Arc::new(SecretsKey::from_material(k))),
        guard: Default::default(),
        max_received_headers: 3,
        webhook_timeout: Duration::from_secs(1),
    };
    Dispatcher::new(settings, Arc::new(NoDns))
}

const KEY: &[u8] = b"the-workers-and-the-operators-shared-key";

fn smarthost(host: &str, sealed_for: &str) -> Smarthost {
    let key = SecretsKey::from_material(KEY);
    let seal = |part: &str, value: &str| {
        key.seal(&context::smarthost(sealed_for, 587, part), value.as_bytes())
    };
    Smarthost {
        host: host.into(),
        port: 587,
        tls: PolicyTls::StarttlsRequired,
        credentials_secret_ref: Some(CredentialsSecretRef {
            name: "provider".into(),
            username_key: "username".into(),
            password_key: "password".into(),
        }),
        credentials: Some(SealedCredentials {
            username: seal("username", "relay"),
            password: seal("password", "pw\n"),
        }),
    }
}

#[test]
fn sealed_credentials_open_with_the_key_for_their_smarthost_only() {
    let s = smarthost("smtp.provider.test", "smtp.provider.test");
    let found = dispatcher(Some(KEY), None)
        .smarthost_credentials(&s)
        .unwrap();
    assert_eq!(found, Some(("relay".into(), "pw".into())));
    let err = dispatcher(None, None)
        .smarthost_credentials(&s)
        .unwrap_err();
    assert!(err.contains("no --secrets-key-file"), "{err}");
    let err = dispatcher(Some(b"another-key-of-at-least-32-bytes!!"), None)
        .smarthost_credentials(&s)
        .unwrap_err();
    assert!(err.contains("sealed with key"), "{err}");
    // A forged snapshot pointing the sealed password at another host: it does not open.
    let moved = smarthost("evil.test", "smtp.provider.test");
    let err = dispatcher(Some(KEY), None)
        .smarthost_credentials(&moved)
        .unwrap_err();
    assert!(err.contains("cannot open"), "{err}");
}

#[test]
fn without_sealed_credentials_the_secrets_directory_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("provider")).unwrap();
    std::fs::write(dir.path().join("provider/username"), "file-user\n").unwrap();
    std::fs::write(dir.path().join("provider/password"), "file-pw").unwrap();
    let mut s = smarthost("smtp.provider.test", "smtp.provider.test");
    s.credentials = None;
    let d = dispatcher(None, Some(dir.path().to_path_buf()));
    assert_eq!(
        d.smarthost_credentials(&s).unwrap(),
        Some(("file-user".into(), "file-pw".into()))
    );
    let err = dispatcher(None, None)
        .smarthost_credentials(&s)
        .unwrap_err();
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test]
async fn per_destination_caps_are_dropped_when_their_deliveries_end() {
    let dispatcher = Arc::new(dispatcher(None, None));
    let env = crate::queue::conformance::envelope(&["a"]);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (d, env) = (dispatcher.clone(), env.clone());
        tasks.push(tokio::spawn(async move {
            let dest = Destination::Mx {
                domain: format!("d{i}.example"),
            };
            d.deliver(&dest, &env, &env.recipients, b"x").await
        }));
    }
    for task in tasks {
        let outcomes = task.await.unwrap();
        assert!(outcomes[0].is_failed(), "{outcomes:?}");
    }
    assert_eq!(dispatcher.tracked_destinations(), 0);
}
