//! The Secrets that RelayPolicies reference, as the operator's [`SecretSource`]: client
//! passwords become argon2id hashes, smarthost credentials and webhook keys are sealed
//! for the workers (`policy::sealed`). Nothing from a Secret reaches the snapshot in
//! clear.
//!
//! Hashing costs tens of milliseconds by design, so hashes are cached by the Secret key
//! and a digest of its value: a reconcile, or a change to another key of the same
//! Secret, does not hash again. Salts derive from the secrets key, so a restarted or
//! second operator computes the very same hashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};

use crate::policy::model::SecretKeyRef;
use crate::policy::sealed::{Sealed, SecretsKey};
use crate::policy::{SecretSource, hash_password_with_salt};

/// The Secrets of the namespaces whose policies count, one watched store each.
#[derive(Clone, Default)]
pub struct SecretStores(pub BTreeMap<String, Store<Secret>>);

impl SecretStores {
    fn value(&self, namespace: &str, name: &str, key: &str) -> Result<Vec<u8>, String> {
        let secret = self
            .0
            .get(namespace)
            .and_then(|store| store.get(&ObjectRef::new(name).within(namespace)))
            .ok_or_else(|| format!("Secret {namespace}/{name} not found"))?;
        value_of(&secret, key)
            .ok_or_else(|| format!("Secret {namespace}/{name} has no key {key:?}"))
    }
}

/// A key's value; `stringData` too, which a real API server folds into `data` but an
/// emulated one may keep.
fn value_of(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    let value = match secret.data.as_ref().and_then(|d| d.get(key)) {
        Some(bytes) => bytes.0.clone(),
        None => secret.string_data.as_ref()?.get(key)?.clone().into_bytes(),
    };
    // Mounted files and `--from-file` often end in a newline that is not part of it.
    let end = value.trim_ascii_end().len();
    Some(value[..end].to_vec())
}

/// Password hashes by Secret key and value digest.
#[derive(Default)]
pub struct HashCache {
    entries: Mutex<HashMap<String, ([u8; 32], String)>>,
    /// Hashes computed (not taken from the cache), for tests and the benchmark.
    computed: AtomicU64,
}

impl HashCache {
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Forgets the entries that the last compile did not use (Secrets or users gone).
    pub fn retain(&self, used: &HashSet<String>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| used.contains(k));
    }
}

/// One compile's view of the Secrets.
pub struct KubeSecrets<'a> {
    pub stores: &'a SecretStores,
    pub key: &'a SecretsKey,
    pub cache: &'a HashCache,
    /// The cache keys this compile used.
    pub used: Mutex<HashSet<String>>,
}

impl<'a> KubeSecrets<'a> {
    pub fn new(stores: &'a SecretStores, key: &'a SecretsKey, cache: &'a HashCache) -> Self {
        KubeSecrets {
            stores,
            key,
            cache,
            used: Mutex::default(),
        }
    }

    /// Drops cache entries this compile did not use.
    pub fn finish(self) {
        let used = self.used.into_inner().unwrap_or_else(|e| e.into_inner());
        self.cache.retain(&used);
    }
}

impl SecretSource for KubeSecrets<'_> {
    fn password_hash(
        &self,
        namespace: Option<&str>,
        secret: &SecretKeyRef,
    ) -> Result<Option<String>, String> {
        let namespace = namespace.unwrap_or_default();
        let value = self.stores.value(namespace, &secret.name, &secret.key)?;
        let password = String::from_utf8(value).map_err(|_| {
            format!(
                "Secret {namespace}/{} key {:?} is not UTF-8 text",
                secret.name, secret.key
            )
        })?;
        if password.is_empty() {
            return Err(format!(
                "Secret {namespace}/{} key {:?} is empty",
                secret.name, secret.key
            ));
        }
        let place = format!("{namespace}/{}/{}", secret.name, secret.key);
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(place.clone());
        let mut entries = self.cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, hash)) = entries.get(&place)
            && *d == digest
        {
            return Ok(Some(hash.clone()));
        }
        let salt = self.key.password_salt(&place, &password);
        let hash = hash_password_with_salt(&password, &salt);
        self.cache.computed.fetch_add(1, Ordering::Relaxed);
        entries.insert(place, (digest, hash.clone()));
        Ok(Some(hash))
    }

    fn sealed(
        &self,
        namespace: Option<&str>,
        name: &str,
        key: &str,
        context: &str,
    ) -> Result<Option<Sealed>, String> {
        let namespace = namespace.unwrap_or_default();
        let value = self.stores.value(namespace, name, key)?;
        Ok(Some(self.key.seal(context, &value)))
    }
}
