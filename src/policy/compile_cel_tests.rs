//! The CRD's CEL rules and the compiler agree: for the same inputs, `delivery()`,
//! `user_hash()` and `smarthost()` refuse exactly what the rules in the generated CRD
//! refuse. The API server runs the rules before it stores an object; the compiler runs on
//! files (`sluice standalone`) and in the operator. If they disagreed, a policy could be
//! stored and then never compile, or compile from a file and be refused by a cluster.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Map, Value, json};

use super::*;
use crate::policy::model::{RelayPolicyResource, SecretKeyRef};
use crate::policy::tests::{BILLING_HASH, error_of};

/// The schema node at a JSON pointer below the generated `openAPIV3Schema`.
fn node(pointer: &str) -> Value {
    let crd = serde_json::to_value(RelayPolicyResource::crd()).unwrap_or_default();
    let path = format!("/spec/versions/0/schema/openAPIV3Schema{pointer}");
    match crd.pointer(&path) {
        Some(node) => node.clone(),
        None => panic!("no schema node at {path}"),
    }
}

/// The API server's CEL verdict on `value` at `node`: `Err` holds the messages.
///
/// The API server treats a null in a nullable field as absent (`has()` is false; see
/// `unstructuredMap.Find` in k8s.io/apiserver/pkg/cel/common/values.go), as serde does
/// (`None`). kube-cel keeps the null, so nulls are dropped before it sees the value.
fn cel(node: &Value, value: &Value) -> Result<(), Vec<String>> {
    Validator::new()
        .validate(node, &without_nulls(value), None)
        .map_err(|errors| errors.iter().map(|e| e.message.clone()).collect())
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn at() -> Location {
    Location {
        source_name: "t.yaml".into(),
        document: 1,
        policy: Some("mail/t".into()),
    }
}

/// Asserts one verdict of both sides: they agree, it is the expected one, and a refusal
/// carries the rule's message on the CEL side and `compiler_words` on the other.
fn assert_agree<T: std::fmt::Debug, E: std::fmt::Debug + std::fmt::Display>(
    case: &Value,
    expect_ok: bool,
    compiled: Result<T, E>,
    cel: Result<(), Vec<String>>,
    rule_message: &str,
    compiler_words: &str,
) {
    assert_eq!(
        compiled.is_ok(),
        expect_ok,
        "compiler on {case}: {compiled:?}"
    );
    match (compiled, cel) {
        (Ok(_), Ok(())) => {}
        (Err(e), Err(messages)) => {
            assert_eq!(messages, [rule_message], "CEL on {case}");
            assert!(
                e.to_string().contains(compiler_words),
                "compiler on {case}: {e}"
            );
        }
        (compiled, cel) => panic!("disagree on {case}: compiler {compiled:?}, CEL {cel:?}"),
    }
}

/// Every subset of the delivery kinds, once with the others absent and once with them
/// written as `null`.
#[test]
fn delivery_rule_and_compiler_agree() {
    let node = node("/properties/spec/properties/localDomains/items/properties/delivery");
    let kinds = [
        ("lmtp", json!({"address": "dovecot.mail.svc:24"})),
        ("maildir", json!({"path": "/var/mail/corp"})),
        (
            "webhook",
            json!({"url": "http://helpdesk.apps.svc/inbound"}),
        ),
    ];
    for mask in 0..8u8 {
        for absent_as_null in [false, true] {
            let mut case = Map::new();
            for (i, (name, value)) in kinds.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    case.insert(name.to_string(), value.clone());
                } else if absent_as_null {
                    case.insert(name.to_string(), Value::Null);
                }
            }
            let case = Value::Object(case);
            let spec: DeliverySpec = match serde_json::from_value(case.clone()) {
                Ok(spec) => spec,
                Err(e) => panic!("{case}: {e}"),
            };
            let message = "exactly one of lmtp, maildir, webhook must be set";
            let (compiled, verdict) = (delivery(&spec), cel(&node, &case));
            let words = "exactly one of lmtp, maildir, webhook is required";
            assert_agree(
                &case,
                mask.count_ones() == 1,
                compiled,
                verdict,
                message,
                words,
            );
        }
    }
}

/// A source that resolves every reference to a valid hash, so only "exactly one" is at
/// stake.
struct AnySecret;

impl SecretSource for AnySecret {
    fn password_hash(&self, _: Option<&str>, _: &SecretKeyRef) -> Result<Option<String>, String> {
        Ok(Some(BILLING_HASH.to_string()))
    }
}

/// `passwordHash` and `passwordSecretRef` each absent, null or set.
#[test]
fn password_rule_and_compiler_agree() {
    let node = node("/properties/spec/properties/users/items");
    let secret = json!({"name": "relay-users", "key": "billing-app"});
    let choices = |value: Value| [None, Some(Value::Null), Some(value)];
    for hash in choices(json!(BILLING_HASH)) {
        for secret_ref in choices(secret.clone()) {
            let mut case = json!({"name": "billing-app"});
            let given = [hash.clone(), secret_ref.clone()]
                .iter()
                .filter(|v| v.as_ref().is_some_and(|v| !v.is_null()))
                .count();
            if let Some(h) = &hash {
                case["passwordHash"] = h.clone();
            }
            if let Some(r) = &secret_ref {
                case["passwordSecretRef"] = r.clone();
            }
            let spec: UserSpec = match serde_json::from_value(case.clone()) {
                Ok(spec) => spec,
                Err(e) => panic!("{case}: {e}"),
            };
            let compiled = user_hash(&at(), "spec.users[0]", &spec, Some("mail"), &AnySecret);
            let message = "exactly one of passwordHash and passwordSecretRef must be set";
            let words = if given == 0 {
                "one of passwordHash or passwordSecretRef is required"
            } else {
                "give only one of"
            };
            assert_agree(
                &case,
                given == 1,
                compiled,
                cel(&node, &case),
                message,
                words,
            );
        }
    }
}

/// Empty and real hosts against ports from 0 to the largest.
#[test]
fn smarthost_rule_and_compiler_agree() {
    let node = node("/properties/spec/properties/routes/items/properties/smarthost");
    for host in ["", "smtp.provider.example"] {
        for port in [0u16, 1, 25, 65535] {
            let case = json!({"host": host, "port": port});
            let spec: SmarthostSpec = match serde_json::from_value(case.clone()) {
                Ok(spec) => spec,
                Err(e) => panic!("{case}: {e}"),
            };
            let compiled = smarthost(&at(), "spec.routes[0].smarthost", &spec, None, &NoSecrets);
            let message = "a smarthost needs a host and a port from 1 to 65535";
            let words = if host.is_empty() {
                "host: empty domain"
            } else {
                "port: must not be 0"
            };
            let ok = !host.is_empty() && port > 0;
            assert_agree(&case, ok, compiled, cel(&node, &case), message, words);
        }
    }
}

/// What the schema refuses without CEL (tested against the CRD in tests/crd.rs), the
/// compiler refuses too. List sizes are the exception: `maxItems` bounds an object in the
/// API server, and a file on disk has no such need.
#[test]
fn the_compiler_also_refuses_what_the_schema_refuses() {
    let no_port =
        "  routes:\n    - domains: [\"*\"]\n      smarthost: { host: smtp.provider.example }";
    for (spec, words) in [
        (
            "  mode: relay-everything",
            "unknown variant `relay-everything`",
        ),
        (no_port, "missing field `port`"),
        (
            "  users:\n    - { name: printer, passwordHash: plain-text-password }",
            "spec.users[0].passwordHash",
        ),
    ] {
        let err = error_of(spec);
        assert!(err.contains(words), "{spec}: {err}");
    }
}
