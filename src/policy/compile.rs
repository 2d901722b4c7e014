//! Compiling one RelayPolicy document: validating every value of its spec and turning it
//! into rule pieces attributed to the policy. Merging several documents is `merge.rs`.
//!
//! Errors name the field with its path in the document (`spec.users[1].passwordHash`).

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::documents::Document;
use super::error::{Location, PolicyError};
use super::model::{
    AddressLiterals, DeliverySpec, LocalDomainSpec, Mode, RouteSpec, SecretKeyRef, SmarthostSpec,
    UserSpec,
};
use super::parse;
use super::password::{StoredHash, validate_hash};
use super::recipients::{self, RecipientTable};
use super::rules::{
    AllowedSenders, Delivery, Limits, Retry, Route, SealedCredentials, Smarthost, User,
};
use super::sealed::{Sealed, context};

/// Resolves Secret references. The operator implements it over the Kubernetes API;
/// files compiled outside Kubernetes use [`NoSecrets`].
pub trait SecretSource {
    /// A password hash for the password in the referenced Secret key of `namespace`.
    /// `Ok(None)` means this source cannot resolve Secrets at all; `Err` carries why a
    /// Secret that should be there is not usable (missing, no such key).
    fn password_hash(
        &self,
        namespace: Option<&str>,
        secret: &SecretKeyRef,
    ) -> Result<Option<String>, String>;

    /// The value of a Secret key sealed for `context` (see `sealed.rs`), for smarthost
    /// credentials and webhook keys. `Ok(None)`: this source leaves them to the worker,
    /// which reads them from its secrets directory (files); the default.
    fn sealed(
        &self,
        _namespace: Option<&str>,
        _name: &str,
        _key: &str,
        _context: &str,
    ) -> Result<Option<Sealed>, String> {
        Ok(None)
    }
}

/// The secret source for files: there are no Secrets, so every password reference fails
/// with an error telling the admin to use `passwordHash`, and smarthost and webhook
/// secrets are read by the worker from its secrets directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn password_hash(&self, _: Option<&str>, _: &SecretKeyRef) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// The validated content of one document, before merging.
#[derive(Debug)]
pub struct CompiledDoc {
    pub at: Location,
    pub id: String,
    pub mode: Mode,
    pub networks: Vec<IpNet>,
    pub local_domains: Vec<(String, Delivery, RecipientTable)>,
    pub relay_domains: Vec<String>,
    pub relay_recipients: BTreeMap<String, RecipientTable>,
    pub users: Vec<(String, User)>,
    pub routes: Vec<Route>,
    pub limits: Limits,
    pub retry: Retry,
    pub address_literals: AddressLiterals,
    /// `None` when the document has no `filters:` section.
    pub filters: Option<Vec<crate::filter::settings::CheckSettings>>,
    /// `None` when the document has no `dnsbl:` section.
    pub dnsbl: Option<crate::filter::dnsbl::DnsblSettings>,
    /// `None` when the document has no `signing:` section.
    pub signing: Option<crate::filter::settings::SigningSettings>,
}

/// Validates one document.
pub fn compile_document(
    doc: &Document,
    secrets: &dyn SecretSource,
) -> Result<CompiledDoc, PolicyError> {
    let at = &doc.at;
    let spec = &doc.policy.spec;
    let id = doc.policy.id();
    let namespace = doc.policy.metadata.namespace.as_deref();
    let relay_domains = each(at, "spec.relayDomains", &spec.relay_domains, |d| {
        parse::domain(d)
    })?;
    Ok(CompiledDoc {
        at: at.clone(),
        mode: spec.mode,
        networks: each(at, "spec.trustedNetworks", &spec.trusted_networks, |n| {
            parse::network(n)
        })?,
        local_domains: indexed(&spec.local_domains, |i, d| {
            local_domain(at, i, d, namespace, secrets)
        })?,
        relay_recipients: recipients::relay_tables(at, &spec.relay_recipients, &relay_domains)?,
        relay_domains,
        users: indexed(&spec.users, |i, u| user(at, i, u, &id, namespace, secrets))?,
        routes: indexed(&spec.routes, |i, r| {
            route(at, i, r, &id, namespace, secrets)
        })?,
        limits: limits(at, spec)?,
        retry: Retry {
            max_lifetime_secs: match &spec.retry.max_lifetime {
                Some(t) => Some(positive(
                    at,
                    "spec.retry.maxLifetime",
                    parse::duration_secs(t),
                )?),
                None => None,
            },
        },
        address_literals: spec.address_literals.unwrap_or_default(),
        filters: spec
            .filters
            .as_deref()
            .map(|f| super::filters::compile(at, f))
            .transpose()?,
        dnsbl: spec
            .dnsbl
            .as_ref()
            .map(|d| super::dnsbl::compile(at, d))
            .transpose()?,
        signing: spec
            .signing
            .as_ref()
            .map(|s| super::signing::compile(at, s))
            .transpose()?,
        id,
    })
}

/// Parses each string of a list field, naming the failing element.
fn each<T>(
    at: &Location,
    field: &str,
    items: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, PolicyError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| parse(s).map_err(|r| PolicyError::invalid(at, format!("{field}[{i}]"), r)))
        .collect()
}

fn indexed<S, T>(
    items: &[S],
    f: impl Fn(usize, &S) -> Result<T, PolicyError>,
) -> Result<Vec<T>, PolicyError> {
    items.iter().enumerate().map(|(i, s)| f(i, s)).collect()
}

fn positive(at: &Location, field: &str, value: Result<u64, String>) -> Result<u64, PolicyError> {
    match value {
        Ok(0) => Err(PolicyError::invalid(at, field, "must be greater than zero")),
        Ok(v) => Ok(v),
        Err(reason) => Err(PolicyError::invalid(at, field, reason)),
    }
}

fn limits(at: &Location, spec: &super::model::RelayPolicySpec) -> Result<Limits, PolicyError> {
    let size = match &spec.limits.max_message_size {
        Some(q) => Some(positive(
            at,
            "spec.limits.maxMessageSize",
            parse::quantity(q),
        )?),
        None => None,
    };
    let recipients = match spec.limits.max_recipients {
        Some(n) => {
            let n = positive(at, "spec.limits.maxRecipients", Ok(n))?;
            let n = usize::try_from(n)
                .map_err(|_| PolicyError::invalid(at, "spec.limits.maxRecipients", "too large"))?;
            Some(n)
        }
        None => None,
    };
    let bounce_size_limit = match &spec.limits.bounce_size_limit {
        Some(q) => Some(positive(
            at,
            "spec.limits.bounceSizeLimit",
            parse::quantity(q),
        )?),
        None => None,
    };
    Ok(Limits {
        max_message_size: size,
        max_recipients: recipients,
        bounce_size_limit,
    })
}

fn local_domain(
    at: &Location,
    i: usize,
    spec: &LocalDomainSpec,
    namespace: Option<&str>,
    secrets: &dyn SecretSource,
) -> Result<(String, Delivery, RecipientTable), PolicyError> {
    let field = format!("spec.localDomains[{i}]");
    let domain = parse::domain(&spec.domain)
        .map_err(|r| PolicyError::invalid(at, format!("{field}.domain"), r))?;
    let table = recipients::local_table(
        at,
        &format!("{field}.recipients"),
        &domain,
        &spec.recipients,
    )?;
    let mut delivery = delivery(&spec.delivery)
        .map_err(|r| PolicyError::invalid(at, format!("{field}.delivery"), r))?;
    if let Delivery::Webhook {
        url,
        signing_secret_ref: Some(r),
        signing_secret,
    } = &mut delivery
    {
        let field = format!("{field}.delivery.webhook.signingSecretRef");
        *signing_secret = sealed(at, &field, namespace, secrets, &r.name, &r.key, || {
            context::webhook(url)
        })?;
    }
    Ok((domain, delivery, table))
}

/// A Secret key sealed by `secrets`, or `None` where the worker reads it itself.
fn sealed(
    at: &Location,
    field: &str,
    namespace: Option<&str>,
    secrets: &dyn SecretSource,
    name: &str,
    key: &str,
    context: impl FnOnce() -> String,
) -> Result<Option<Sealed>, PolicyError> {
    secrets
        .sealed(namespace, name, key, &context())
        .map_err(|reason| PolicyError::SecretUnavailable {
            at: at.clone(),
            field: field.to_string(),
            reason,
        })
}

fn delivery(spec: &DeliverySpec) -> Result<Delivery, String> {
    match (&spec.lmtp, &spec.maildir, &spec.webhook) {
        (Some(l), None, None) => {
            parse::lmtp_address(&l.address).map_err(|r| format!("lmtp.address: {r}"))?;
            Ok(Delivery::Lmtp {
                address: l.address.clone(),
            })
        }
        (None, Some(m), None) if m.path.trim().is_empty() => {
            Err("maildir.path: must not be empty".into())
        }
        (None, Some(m), None) => Ok(Delivery::Maildir {
            path: m.path.clone(),
        }),
        (None, None, Some(w)) => {
            parse::webhook_url(&w.url).map_err(|r| format!("webhook.url: {r}"))?;
            if let Some(r) = &w.signing_secret_ref {
                secret_ref(r).map_err(|e| format!("webhook.signingSecretRef: {e}"))?;
            }
            Ok(Delivery::Webhook {
                url: w.url.clone(),
                signing_secret_ref: w.signing_secret_ref.clone(),
                signing_secret: None,
            })
        }
        (None, None, None) => {
            Err("exactly one of lmtp, maildir, webhook is required; none is given".into())
        }
        _ => Err("exactly one of lmtp, maildir, webhook is required; several are given".into()),
    }
}

fn secret_ref(r: &SecretKeyRef) -> Result<(), String> {
    if r.name.trim().is_empty() || r.key.trim().is_empty() {
        return Err("name and key must not be empty".into());
    }
    Ok(())
}

fn user(
    at: &Location,
    i: usize,
    spec: &UserSpec,
    policy: &str,
    namespace: Option<&str>,
    secrets: &dyn SecretSource,
) -> Result<(String, User), PolicyError> {
    let field = format!("spec.users[{i}]");
    if spec.name.is_empty()
        || spec
            .name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(PolicyError::invalid(
            at,
            format!("{field}.name"),
            "must be non-empty, without spaces or control characters",
        ));
    }
    let hash = user_hash(at, &field, spec, namespace, secrets)?;
    // An empty allowedSenders means "any sender": that is how Postfix behaves until
    // smtpd_sender_login_maps is configured, and what admins moving from it expect.
    let allowed_senders = match spec.allowed_senders.is_empty() {
        true => AllowedSenders::Any,
        false => AllowedSenders::Only(each(
            at,
            &format!("{field}.allowedSenders"),
            &spec.allowed_senders,
            parse::sender_pattern,
        )?),
    };
    let user = User {
        password_hash: hash,
        allowed_senders,
        policy: policy.to_string(),
    };
    Ok((spec.name.clone(), user))
}

fn user_hash(
    at: &Location,
    field: &str,
    spec: &UserSpec,
    namespace: Option<&str>,
    secrets: &dyn SecretSource,
) -> Result<StoredHash, PolicyError> {
    let hash = match (&spec.password_hash, &spec.password_secret_ref) {
        (Some(h), None) => h.as_str().to_string(),
        (None, Some(r)) => resolve(at, field, r, namespace, secrets)?,
        (None, None) => {
            return Err(PolicyError::invalid(
                at,
                field,
                "one of passwordHash or passwordSecretRef is required",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(PolicyError::invalid(
                at,
                field,
                "give only one of passwordHash and passwordSecretRef",
            ));
        }
    };
    validate_hash(&hash)
        .map_err(|r| PolicyError::invalid(at, format!("{field}.passwordHash"), r))?;
    Ok(StoredHash::new(hash))
}

fn resolve(
    at: &Location,
    field: &str,
    r: &SecretKeyRef,
    namespace: Option<&str>,
    secrets: &dyn SecretSource,
) -> Result<String, PolicyError> {
    let field = format!("{field}.passwordSecretRef");
    secret_ref(r).map_err(|e| PolicyError::invalid(at, &field, e))?;
    match secrets.password_hash(namespace, r) {
        Ok(Some(hash)) => Ok(hash),
        Ok(None) => Err(PolicyError::UnresolvableSecret {
            at: at.clone(),
            field,
            secret: format!("{}/{}", r.name, r.key),
        }),
        Err(reason) => Err(PolicyError::SecretUnavailable {
            at: at.clone(),
            field,
            reason,
        }),
    }
}

fn route(
    at: &Location,
    i: usize,
    spec: &RouteSpec,
    policy: &str,
    namespace: Option<&str>,
    secrets: &dyn SecretSource,
) -> Result<Route, PolicyError> {
    let field = format!("spec.routes[{i}]");
    if spec.domains.is_empty() {
        return Err(PolicyError::invalid(
            at,
            format!("{field}.domains"),
            "must list at least one pattern",
        ));
    }
    let domains = each(
        at,
        &format!("{field}.domains"),
        &spec.domains,
        parse::domain_pattern,
    )?;
    let smarthost = smarthost(
        at,
        &format!("{field}.smarthost"),
        &spec.smarthost,
        namespace,
        secrets,
    )?;
    Ok(Route {
        domains,
        smarthost,
        policy: policy.to_string(),
    })
}

fn smarthost(
    at: &Location,
    field: &str,
    s: &SmarthostSpec,
    namespace: Option<&str>,
    secrets: &dyn SecretSource,
) -> Result<Smarthost, PolicyError> {
    let host =
        parse::host(&s.host).map_err(|r| PolicyError::invalid(at, format!("{field}.host"), r))?;
    if s.port == 0 {
        return Err(PolicyError::invalid(
            at,
            format!("{field}.port"),
            "must not be 0",
        ));
    }
    if let Some(c) = &s.credentials_secret_ref
        && [&c.name, &c.username_key, &c.password_key]
            .iter()
            .any(|v| v.trim().is_empty())
    {
        return Err(PolicyError::invalid(
            at,
            format!("{field}.credentialsSecretRef"),
            "name, usernameKey and passwordKey must not be empty",
        ));
    }
    let credentials = match &s.credentials_secret_ref {
        None => None,
        Some(c) => {
            let field = format!("{field}.credentialsSecretRef");
            let part = |key: &str, part: &str| {
                sealed(at, &field, namespace, secrets, &c.name, key, || {
                    context::smarthost(&host, s.port, part)
                })
            };
            match (
                part(&c.username_key, "username")?,
                part(&c.password_key, "password")?,
            ) {
                (Some(username), Some(password)) => Some(SealedCredentials { username, password }),
                _ => None,
            }
        }
    };
    Ok(Smarthost {
        host,
        port: s.port,
        tls: s.tls,
        credentials_secret_ref: s.credentials_secret_ref.clone(),
        credentials,
    })
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "compile_cel_tests.rs"]
mod cel_tests;
