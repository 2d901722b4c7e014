//! The CRD's `openAPIV3Schema` read as JSON Schema (draft 4, which OpenAPI 3.0's schema
//! object is based on): every RelayPolicy sample fits it, and it refuses what it claims
//! to refuse.

use serde_json::{Map, Value, json};

use crate::fixtures::{Sample, open_api_schema, samples_of_kind};

/// Translates the openAPIV3 dialect into plain JSON Schema:
///
/// - `nullable: true` admits `null` too. The API server keeps such a null, CEL's `has()`
///   treats it as absent, and serde reads it as `None`: all three agree it is "not set".
/// - `x-kubernetes-int-or-string` becomes "integer or string"; a JSON Schema validator
///   would ignore the marker and admit anything.
/// - The other `x-kubernetes-*` keywords are dropped (CEL rules are tested with kube-cel).
/// - Objects with `properties` get `additionalProperties: false`. The API server prunes
///   unknown fields (kubectl only warns), so in a sample an unknown field is a typo that
///   would silently vanish; here it is an error.
/// - The root also describes `apiVersion`, `kind` and `metadata`, which the API server
///   checks itself.
pub fn to_json_schema(open_api: &Value) -> Value {
    let mut root = translate(open_api);
    let props = root["properties"].as_object_mut().expect("root properties");
    props.insert(
        "apiVersion".into(),
        json!({"enum": ["sluice.dev/v1alpha1"]}),
    );
    props.insert("kind".into(), json!({"enum": ["RelayPolicy"]}));
    props.insert(
        "metadata".into(),
        json!({"type": "object", "required": ["name", "namespace"]}),
    );
    root["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    root
}

fn translate(node: &Value) -> Value {
    let Some(map) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let value = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .expect("properties is an object")
                    .iter()
                    .map(|(name, schema)| (name.clone(), translate(schema)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => translate(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(translate)
                    .collect(),
            ),
            k if k.starts_with("x-kubernetes-") || k == "nullable" => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("anyOf");
        out.insert("type".into(), json!(["integer", "string"]));
    }
    if out.contains_key("properties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        admit_null(&mut out);
    }
    Value::Object(out)
}

fn admit_null(schema: &mut Map<String, Value>) {
    match schema.get_mut("type") {
        Some(Value::String(t)) => {
            let t = t.clone();
            schema.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) => types.push(json!("null")),
        _ => {}
    }
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.push(Value::Null);
    }
}

pub fn validator() -> jsonschema::Validator {
    let schema = to_json_schema(&open_api_schema());
    jsonschema::draft4::new(&schema).unwrap_or_else(|e| panic!("the schema does not build: {e}"))
}

/// Each error as `instance path: message`.
pub fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

pub fn relay_policies() -> Vec<Sample> {
    let policies = samples_of_kind("RelayPolicy");
    assert!(
        policies.len() >= 2,
        "the samples hold the platform's and a team's policy"
    );
    policies
}

#[test]
fn every_relay_policy_sample_fits_the_schema() {
    let v = validator();
    for sample in relay_policies() {
        let errs = errors(&v, &sample.value);
        assert!(errs.is_empty(), "{}: {errs:#?}", sample.label());
    }
}

/// The platform sample with the value at a JSON pointer replaced (`Some`) or removed.
pub fn platform_with(pointer: &str, value: Option<Value>) -> Value {
    let mut policy = relay_policies()
        .into_iter()
        .find(|s| s.namespace() == "mail")
        .expect("the platform sample")
        .value;
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    let parent = policy
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent}"));
    match (parent, value) {
        (Value::Object(m), None) => {
            m.remove(key);
        }
        (Value::Object(m), Some(v)) => {
            m.insert(key.to_string(), v);
        }
        (Value::Array(a), Some(v)) => a[key.parse::<usize>().expect("an index")] = v,
        (other, _) => panic!("cannot change {pointer} in {other}"),
    }
    policy
}

#[test]
fn the_schema_refuses_what_it_declares() {
    let networks: Vec<String> = (0..257).map(|i| format!("10.{i}.0.0/16")).collect();
    let plain = json!({"name": "printer", "passwordHash": "plain-text-password"});
    let cases = [
        (
            "/spec/mode",
            Some(json!("relay-everything")),
            "/spec/mode",
            "relay-everything",
        ),
        (
            "/spec/routes/0/smarthost/port",
            None,
            "/spec/routes/0/smarthost",
            "\"port\" is a required property",
        ),
        (
            "/spec/trustedNetworks",
            Some(json!(networks)),
            "/spec/trustedNetworks",
            "has more than 256 items",
        ),
        (
            "/spec/users/0",
            Some(plain),
            "/spec/users/0/passwordHash",
            "does not match",
        ),
        (
            "/spec/trustedNetwork",
            Some(json!(["10.0.0.0/8"])),
            "/spec",
            "trustedNetwork",
        ),
        (
            "/spec/routes/0/smarthost/tls",
            Some(json!("starttls")),
            "/spec/routes/0/smarthost/tls",
            "starttls",
        ),
        (
            "/spec/limits/maxMessageSize",
            Some(json!([25])),
            "/spec/limits/maxMessageSize",
            "integer",
        ),
    ];
    let v = validator();
    for (pointer, value, path, words) in cases {
        let errs = errors(&v, &platform_with(pointer, value));
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(words)),
            "{pointer}: expected an error at {path} mentioning {words:?}, got {errs:#?}"
        );
    }
}

#[test]
fn nullable_fields_admit_null_and_quantities_take_both_forms() {
    let v = validator();
    for (pointer, value) in [
        ("/spec/limits/maxRecipients", Value::Null),
        ("/spec/users/0/passwordHash", Value::Null),
        ("/spec/limits/maxMessageSize", json!(26_214_400)),
        ("/spec/limits/maxMessageSize", json!("10M")),
    ] {
        let errs = errors(&v, &platform_with(pointer, Some(value)));
        assert!(errs.is_empty(), "{pointer}: {errs:#?}");
    }
}
