use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Route {
    host: String,
    port: u16,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    names: BTreeMap<String, String>,
}

fn error_of<T: DeserializeOwned + fmt::Debug>(text: &str) -> String {
    from_str::<T>(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_path_line_and_column_on_one_line() {
    let err = error_of::<Spec>("routes:\n  - {host: a, port: 25}\n  - {host: b}\n");
    assert_eq!(err, "routes[1]: missing field `port` at line 3, column 6");
    let err = error_of::<Spec>("routes: []\nroute: []\n");
    assert!(err.starts_with("route: unknown field `route`"), "{err}");
    assert!(err.ends_with("at line 2, column 1"), "{err}");
    let err = error_of::<Spec>("routes:\n  - {host: a, port: 70000}\n");
    assert!(err.starts_with("routes[0].port: "), "{err}");
    assert!(err.ends_with("at line 2, column 21"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn malformed_yaml_is_an_error_with_its_place() {
    let err = from_str::<Spec>("routes: [\n  {host: a\n").unwrap_err();
    let YamlError::Parse(parse) = &err else {
        panic!("{err}");
    };
    assert!(parse.line_column().is_some(), "{err}");
    assert!(from_str::<Spec>("\t- x: : :\n").is_err());
}

#[test]
fn duplicate_keys_and_merge_keys_are_refused() {
    let err = error_of::<Spec>("routes: []\nroutes: []\n");
    assert!(err.contains("duplicate"), "{err}");
    assert!(err.ends_with("at line 2, column 1"), "{err}");
    let err = error_of::<Spec>("names: {a: b, a: c}\n");
    assert!(err.contains("duplicate"), "{err}");
    let err = error_of::<Spec>("names:\n  <<: {a: b}\n");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn anchors_and_aliases_work_within_bounds() {
    let spec: Spec =
        from_str("routes:\n  - &r {host: a, port: 25}\n  - *r\nnames: {x: &n y, z: *n}\n").unwrap();
    assert_eq!(spec.routes.len(), 2);
    assert_eq!(spec.routes[0], spec.routes[1]);
    assert_eq!(spec.names["z"], "y");
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    // Ten levels of ten aliases each: 10^10 scalars if expanded.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let started = std::time::Instant::now();
    let err = from_str::<serde_json::Value>(&text).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{err}"
    );
}

#[test]
fn deep_nesting_and_huge_texts_are_refused() {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert!(from_str::<serde_json::Value>(&deep).is_err());
    let huge = format!("names: {{a: \"{}\"}}\n", "x".repeat(MAX_TEXT_BYTES));
    assert!(matches!(
        from_str::<Spec>(&huge),
        Err(YamlError::TooLarge { .. })
    ));
    assert!(matches!(documents(&huge), Err(YamlError::TooLarge { .. })));
}

#[test]
fn documents_count_the_empty_ones_and_keep_file_lines() {
    let text =
        "---\nroutes: []\n---\n# only a comment\n---\n\nroutes:\n  - {host: b}\n--- null\n...\n";
    let docs = documents(text).unwrap();
    let empty: Vec<bool> = docs.iter().map(Document::is_empty).collect();
    assert_eq!(empty, [false, true, false, true]);
    assert_eq!(docs[0].parse::<Spec>().unwrap().routes, []);
    let err = docs[2].parse::<Spec>().unwrap_err().to_string();
    assert_eq!(err, "routes[0]: missing field `port` at line 8, column 6");
}

#[test]
fn documents_on_one_line_and_after_an_end_marker() {
    let docs = documents("--- {routes: []}\n--- {names: {a: b}}\n...\n---\nroutes: []\n").unwrap();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[1].parse::<Spec>().unwrap().names["a"], "b");
    docs[2].parse::<Spec>().unwrap();
    let docs = documents("routes: []\n---\nroutes: [\n").unwrap();
    assert_eq!(docs.len(), 2);
    let err = docs[1].parse::<Spec>().unwrap_err();
    let YamlError::Parse(parse) = &err else {
        panic!("{err}");
    };
    assert_eq!(
        parse.line_column().map(|(line, _)| line >= 3),
        Some(true),
        "{err}"
    );
}

#[test]
fn too_many_documents_are_refused() {
    let text = "---\na: 1\n".repeat(MAX_DOCUMENTS + 1);
    assert!(matches!(documents(&text), Err(YamlError::TooManyDocuments)));
    assert_eq!(documents(&"---\na: 1\n".repeat(3)).unwrap().len(), 3);
}
