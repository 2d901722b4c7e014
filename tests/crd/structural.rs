//! The checks the API server makes on a CRD's `openAPIV3Schema` when it is created,
//! offline: the structural-schema rules (Kubernetes docs, "Specifying a structural
//! schema") and the static checks of apiextensions' `validation.go` that a schema
//! generated from Rust types could plausibly break. kubernetes-validate (in crd.rs) checks
//! the CRD object's shape; this checks what it means.

use serde_json::{Map, Value};

use crate::fixtures::open_api_schema;
use crate::json_schema::to_json_schema;

/// The keywords of apiextensions/v1 `JSONSchemaProps`.
#[rustfmt::skip]
const KNOWN: &[&str] = &[
    "$ref", "$schema", "additionalItems", "additionalProperties", "allOf", "anyOf",
    "default", "definitions", "dependencies", "description", "enum", "example",
    "exclusiveMaximum", "exclusiveMinimum", "externalDocs", "format", "id", "items",
    "maxItems", "maxLength", "maxProperties", "maximum", "minItems", "minLength",
    "minProperties", "minimum", "multipleOf", "not", "nullable", "oneOf", "pattern",
    "patternProperties", "properties", "required", "title", "type", "uniqueItems",
    "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
];

/// Known to JSONSchemaProps but refused in a CRD.
#[rustfmt::skip]
const FORBIDDEN: &[&str] = &[
    "$ref", "$schema", "additionalItems", "definitions", "dependencies", "id",
    "patternProperties",
];

/// What the root schema may hold (`allowedFieldsAtRootSchema`).
#[rustfmt::skip]
const AT_ROOT: &[&str] = &[
    "description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "multipleOf", "required", "items", "properties", "externalDocs",
    "example", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
];

/// String formats the API server validates; any other format draws a warning
/// ("unrecognized format") on every apply of the CRD and is ignored.
#[rustfmt::skip]
const STRING_FORMATS: &[&str] = &[
    "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid",
    "uuid3", "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor",
    "rgbcolor", "byte", "password", "date", "duration", "datetime", "quantity",
];

/// Every way `schema` falls short, as `path: problem`.
pub fn violations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let root = schema.as_object().expect("the schema is an object");
    for key in root.keys().filter(|k| !AT_ROOT.contains(&k.as_str())) {
        out.push(format!("<root>: {key} is not allowed at the root"));
    }
    if root.get("type") != Some(&Value::from("object")) {
        out.push("<root>: type must be object".into());
    }
    walk(schema, "<root>", false, &mut out);
    out
}

fn walk(node: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(s) = node.as_object() else {
        return out.push(format!("{path}: not a schema object"));
    };
    keywords(s, path, out);
    if in_junctor {
        junctor(s, path, out);
    } else {
        typed(s, path, out);
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), in_junctor, out);
        }
    }
    match s.get("items") {
        Some(items @ Value::Object(_)) => walk(items, &format!("{path}[]"), in_junctor, out),
        Some(_) => out.push(format!("{path}: items must be one schema, not a list")),
        None => {}
    }
    if let Some(extra @ Value::Object(_)) = s.get("additionalProperties") {
        walk(extra, &format!("{path}{{}}"), in_junctor, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if junctor == "anyOf" && is_int_or_string_pattern(s) {
            continue;
        }
        for (i, branch) in s
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(branch, &format!("{path}.{junctor}[{i}]"), true, out);
        }
    }
    if let Some(not) = s.get("not") {
        walk(not, &format!("{path}.not"), true, out);
    }
}

/// The one `anyOf` with types in it that the API server allows: an int-or-string's
/// `[{type: integer}, {type: string}]`.
fn is_int_or_string_pattern(s: &Map<String, Value>) -> bool {
    s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        && s.get("anyOf") == Some(&serde_json::json!([{"type": "integer"}, {"type": "string"}]))
}

/// Keywords, formats, CEL rule texts: checked on every node.
fn keywords(s: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    for key in s.keys() {
        if !KNOWN.contains(&key.as_str()) {
            out.push(format!("{path}: unknown keyword {key}"));
        } else if FORBIDDEN.contains(&key.as_str()) {
            out.push(format!("{path}: {key} is not supported in a CRD"));
        }
    }
    if s.get("uniqueItems") == Some(&Value::Bool(true)) {
        out.push(format!("{path}: uniqueItems cannot be true"));
    }
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(format!(
            "{path}: x-kubernetes-preserve-unknown-fields must be true or absent"
        ));
    }
    if s.contains_key("properties") && s.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if let Some(format) = s.get("format").and_then(Value::as_str) {
        let known = match s.get("type").and_then(Value::as_str) {
            Some("integer") => ["int32", "int64"].contains(&format),
            Some("number") => ["float", "double"].contains(&format),
            Some("string") | None => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
            Some(_) => false,
        };
        if !known {
            out.push(format!(
                "{path}: the API server does not know format {format}"
            ));
        }
    }
    for rule in s
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = rule["rule"].as_str().unwrap_or("").trim();
        let message = rule["message"].as_str().unwrap_or("");
        if text.is_empty() {
            out.push(format!("{path}: a validation without a rule"));
        }
        if message.contains(['\n', '\r']) {
            out.push(format!("{path}: the message of {text:?} has a line break"));
        }
        if text.contains(['\n', '\r']) && message.trim().is_empty() {
            out.push(format!("{path}: a rule with line breaks needs a message"));
        }
    }
}

/// A node that values are checked against: it has a type (or is int-or-string or
/// preserves unknown fields), and an array says what its items are.
fn typed(s: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    match s.get("type").and_then(Value::as_str) {
        Some(_) if int_or_string => {
            out.push(format!("{path}: an int-or-string must have no type"));
        }
        Some("object" | "string" | "integer" | "number" | "boolean") => {}
        Some("array") if !s.contains_key("items") => {
            out.push(format!("{path}: an array needs items"));
        }
        Some("array") => {}
        Some(other) => out.push(format!("{path}: type {other} is not supported")),
        None if int_or_string || preserve => {}
        None => out.push(format!("{path}: type must not be empty")),
    }
}

/// Inside allOf/anyOf/oneOf/not only value validations may appear. The API server allows
/// `properties` and `items` there when the same field is also declared outside; none of
/// ours need that, so this refuses them outright.
fn junctor(s: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    for key in s.keys() {
        let generic =
            ["description", "type", "title", "default", "nullable"].contains(&key.as_str());
        let structure = ["properties", "items", "additionalProperties"].contains(&key.as_str());
        if generic || structure || key.starts_with("x-kubernetes-") {
            out.push(format!("{path}: {key} must not appear inside a junctor"));
        }
    }
}

/// Each `default`, with the JSON pointer of the node that declares it.
fn defaults(node: &Value, pointer: &str, out: &mut Vec<(String, Value)>) {
    let Some(s) = node.as_object() else { return };
    if let Some(default) = s.get("default") {
        out.push((pointer.to_string(), default.clone()));
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        for (name, child) in props {
            defaults(child, &format!("{pointer}/properties/{name}"), out);
        }
    }
    if let Some(items) = s.get("items") {
        defaults(items, &format!("{pointer}/items"), out);
    }
}

#[test]
fn the_schema_is_structural() {
    let problems = violations(&open_api_schema());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_checker_sees_what_the_api_server_would_refuse() {
    let bad = serde_json::json!({
        "type": "object",
        "nullable": true,
        "properties": {
            "a": {"properties": {}},
            "b": {"type": "array"},
            "c": {"type": "integer", "format": "uint16"},
            "d": {"type": "string", "anyOf": [{"type": "string", "maxLength": 3}]},
            "ok": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "e": {"type": "object", "properties": {}, "additionalProperties": false},
            "f": {"type": "string", "$ref": "#/definitions/f"},
        }
    });
    let found = violations(&bad).join("\n");
    assert!(!found.contains("<root>.ok"), "{found}");
    for expected in [
        "<root>: nullable is not allowed at the root",
        "<root>.a: type must not be empty",
        "<root>.b: an array needs items",
        "<root>.c: the API server does not know format uint16",
        "<root>.d.anyOf[0]: type must not appear inside a junctor",
        "<root>.e: properties and additionalProperties are mutually exclusive",
        "<root>.f: $ref is not supported in a CRD",
    ] {
        assert!(
            found.contains(expected),
            "missing {expected:?} in:\n{found}"
        );
    }
}

/// The API server refuses a CRD whose defaults do not validate against their own schema.
#[test]
fn every_default_fits_its_schema() {
    let open_api = open_api_schema();
    let schema = to_json_schema(&open_api);
    let mut found = Vec::new();
    defaults(&open_api, "", &mut found);
    assert!(found.len() >= 5, "the spec has defaults: {found:?}");
    for (pointer, default) in found {
        let node = schema
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("{pointer}"));
        let v = jsonschema::draft4::new(node).unwrap_or_else(|e| panic!("{pointer}: {e}"));
        assert!(
            v.is_valid(&default),
            "{pointer}: default {default} does not fit"
        );
    }
}
