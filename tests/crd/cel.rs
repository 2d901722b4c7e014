//! The CRD's CEL rules (`x-kubernetes-validations`), evaluated client-side with kube-cel:
//! each compiles, the samples pass them, and bad variants of the samples are refused
//! with the rule's own message.

use kube::core::cel::{CompiledSchema, ScopeContext, Validator, analyze_rule, compile_schema};
use serde_json::{Value, json};
use sluice::policy::filters::EXACTLY_ONE_CHECK;
use sluice::policy::model::{EXACTLY_ONE_DELIVERY, EXACTLY_ONE_PASSWORD, SMARTHOST_HOST_AND_PORT};

use crate::fixtures::open_api_schema;
use crate::json_schema::{platform_with, relay_policies};

const DELIVERY_MESSAGE: &str = "exactly one of lmtp, maildir, webhook must be set";
const PASSWORD_MESSAGE: &str = "exactly one of passwordHash and passwordSecretRef must be set";
const SMARTHOST_MESSAGE: &str = "a smarthost needs a host and a port from 1 to 65535";
const CHECK_MESSAGE: &str = "exactly one of attachments, rspamd, clamav, senderAuth must be set";

/// Every rule in a compiled schema tree, with the node it sits on.
fn rules<'a>(node: &'a CompiledSchema, out: &mut Vec<(&'a CompiledSchema, String)>) {
    for compiled in &node.validations {
        match compiled {
            Ok(result) => out.push((node, result.rule.rule.clone())),
            Err(e) => panic!("a rule does not compile: {e}"),
        }
    }
    let mut children: Vec<&CompiledSchema> = node.properties.values().collect();
    children.extend(node.items.as_deref());
    children.extend(node.additional_properties.as_deref());
    for child in children {
        rules(child, out);
    }
}

#[test]
fn every_rule_compiles_and_stays_within_scope_and_cost() {
    let compiled = compile_schema(&open_api_schema());
    let mut found = Vec::new();
    rules(&compiled, &mut found);
    let mut texts: Vec<&str> = found.iter().map(|(_, r)| r.as_str()).collect();
    texts.sort();
    let mut expected = [
        EXACTLY_ONE_CHECK,
        EXACTLY_ONE_DELIVERY,
        EXACTLY_ONE_PASSWORD,
        SMARTHOST_HOST_AND_PORT,
    ];
    expected.sort();
    assert_eq!(texts, expected);
    for (node, rule) in &found {
        let warnings = analyze_rule(rule, node, ScopeContext::CrdValidation);
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}

/// The refusals of the CEL rules, as `field path: message`.
fn refusals(object: &Value) -> Vec<String> {
    match Validator::new().validate(&open_api_schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

#[test]
fn the_samples_pass_every_rule() {
    for sample in relay_policies() {
        assert_eq!(
            refusals(&sample.value),
            Vec::<String>::new(),
            "{}",
            sample.label()
        );
    }
}

#[test]
fn bad_variants_are_refused_with_the_rules_message() {
    let lmtp = json!({"address": "dovecot.mail.svc.cluster.local:24"});
    let maildir = json!({"path": "/var/mail/corp"});
    let hash = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    let secret = json!({"name": "relay-users", "key": "billing-app"});
    let delivery = "spec.localDomains[0].delivery";
    let user = "spec.users[0]";
    let smarthost = "spec.routes[0].smarthost";
    let check = "spec.filters[1]";
    let cases = [
        (
            "two delivery kinds",
            "/spec/localDomains/0/delivery",
            json!({"lmtp": lmtp, "maildir": maildir}),
            delivery,
            DELIVERY_MESSAGE,
        ),
        (
            "no delivery kind",
            "/spec/localDomains/0/delivery",
            json!({}),
            delivery,
            DELIVERY_MESSAGE,
        ),
        (
            "hash and Secret",
            "/spec/users/0",
            json!({"name": "a", "passwordHash": hash, "passwordSecretRef": secret}),
            user,
            PASSWORD_MESSAGE,
        ),
        (
            "no password",
            "/spec/users/0",
            json!({"name": "a"}),
            user,
            PASSWORD_MESSAGE,
        ),
        (
            "port 0",
            "/spec/routes/0/smarthost",
            json!({"host": "mx.partner.example", "port": 0}),
            smarthost,
            SMARTHOST_MESSAGE,
        ),
        (
            "empty host",
            "/spec/routes/0/smarthost",
            json!({"host": "", "port": 25}),
            smarthost,
            SMARTHOST_MESSAGE,
        ),
        (
            "two check kinds",
            "/spec/filters/1",
            json!({"attachments": {}, "clamav": {"addresses": ["clamd:3310"]}}),
            check,
            CHECK_MESSAGE,
        ),
        (
            "no check kind",
            "/spec/filters/1",
            json!({"exempt": ["authenticated"]}),
            check,
            CHECK_MESSAGE,
        ),
    ];
    for (what, pointer, value, path, message) in cases {
        let found = refusals(&platform_with(pointer, Some(value)));
        assert_eq!(found, [format!("{path}: {message}")], "{what}");
    }
}
