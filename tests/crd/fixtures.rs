//! What the CRD tests read: the committed CRD, the samples in examples/kubernetes/ as
//! JSON values, and a `SecretSource` over the sample Secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use sluice::policy::model::SecretKeyRef;
use sluice::policy::{SecretSource, hash_password};

/// The committed CRD, relative to the repository root.
pub const CRD_FILE: &str = "crds/relaypolicies.sluice.dev.yaml";
/// The Kubernetes samples, relative to the repository root.
pub const SAMPLES_DIR: &str = "examples/kubernetes";

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every non-empty document of a YAML text, as JSON.
pub fn documents(text: &str) -> Vec<Value> {
    // serde-saphyr skips empty and null documents.
    serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("bad YAML: {e}"))
}

/// The committed CRD as JSON.
pub fn crd() -> Value {
    let mut docs = documents(&read(CRD_FILE));
    assert_eq!(docs.len(), 1, "{CRD_FILE} holds one document");
    docs.remove(0)
}

/// The `openAPIV3Schema` of the CRD's one version.
pub fn open_api_schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// One document of a sample file.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The file name within examples/kubernetes/.
    pub file: String,
    pub value: Value,
}

impl Sample {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"].as_str().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    /// `file: kind namespace/name`, for assertion messages.
    pub fn label(&self) -> String {
        format!(
            "{}: {} {}/{}",
            self.file,
            self.kind(),
            self.namespace(),
            self.name()
        )
    }
}

/// The YAML files of examples/kubernetes/, sorted by name as `kubectl apply -f` takes
/// them, with their text.
pub fn sample_files() -> Vec<(String, String)> {
    let dir = repo_path(SAMPLES_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let text = read(&format!("{SAMPLES_DIR}/{name}"));
            (name, text)
        })
        .collect()
}

/// Every document of every sample file.
pub fn samples() -> Vec<Sample> {
    sample_files()
        .into_iter()
        .flat_map(|(file, text)| {
            documents(&text).into_iter().map(move |value| Sample {
                file: file.clone(),
                value,
            })
        })
        .collect()
}

pub fn samples_of_kind(kind: &str) -> Vec<Sample> {
    samples().into_iter().filter(|s| s.kind() == kind).collect()
}

/// The sample Secrets' `stringData`, by namespace and name.
#[derive(Debug, Default)]
pub struct SampleSecrets {
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl SampleSecrets {
    pub fn load() -> SampleSecrets {
        let mut out = SampleSecrets::default();
        for s in samples_of_kind("Secret") {
            let data: BTreeMap<String, String> =
                serde_json::from_value(s.value["stringData"].clone())
                    .unwrap_or_else(|e| panic!("{}: stringData: {e}", s.label()));
            let key = (s.namespace().to_string(), s.name().to_string());
            out.secrets.insert(key, data);
        }
        out
    }

    /// The value of one key, or why there is none.
    pub fn value(&self, namespace: &str, name: &str, key: &str) -> Result<&str, String> {
        let secret = self
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| format!("no Secret {namespace}/{name}"))?;
        secret
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("Secret {namespace}/{name} has no key {key}"))
    }
}

/// What the operator does with a `passwordSecretRef`: read the password from the Secret
/// in the policy's namespace and hash it.
impl SecretSource for SampleSecrets {
    fn password_hash(
        &self,
        namespace: Option<&str>,
        secret: &SecretKeyRef,
    ) -> Result<Option<String>, String> {
        let password = self.value(namespace.unwrap_or("default"), &secret.name, &secret.key)?;
        Ok(Some(hash_password(password)))
    }
}
