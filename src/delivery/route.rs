//! Routing: which next hop each recipient of a message goes to. A local domain is handed
//! to its local delivery, a domain matching a route goes to that route's smarthost, and
//! everything else goes to the domain's MX hosts (resolved in `mx.rs`).
//!
//! A message to several domains is split per [`Destination`], so that each next hop gets
//! one transaction with all of its recipients, and per-destination concurrency limits can
//! key on the destination.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::policy::{Delivery, PolicySnapshot, Smarthost};
use crate::smtp::address::Recipient;

/// Where one recipient is delivered. Usable as a `HashMap` key: two recipients with equal
/// destinations can share one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local domain of the policy, delivered by LMTP, Maildir or webhook. `domain` is in
    /// the form the policy stores (lower case, no trailing dot).
    Local { domain: String, delivery: Delivery },
    /// A smarthost route. Recipient domains that route to the same smarthost (same host,
    /// port, TLS mode and credentials) share one destination.
    Smarthost(Smarthost),
    /// The recipient domain's MX hosts. `domain` is lower case without a trailing dot; it
    /// may be an address literal (`[192.0.2.1]`), and is empty for `<Postmaster>` when
    /// the policy has no local domain (see [`destination`]).
    Mx { domain: String },
}

// Hash over the identifying fields only: the policy's types carry no `Hash`, and equal
// destinations have equal identifying fields, so this agrees with `Eq`.
impl Hash for Destination {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Destination::Local { domain, .. } | Destination::Mx { domain } => domain.hash(state),
            Destination::Smarthost(s) => {
                s.host.hash(state);
                s.port.hash(state);
            }
        }
    }
}

impl Destination {
    /// A short label for logs and metrics: `local:corp.example`, `smarthost:host:587`,
    /// `mx:example.org`.
    pub fn label(&self) -> String {
        match self {
            Destination::Local { domain, .. } => format!("local:{domain}"),
            Destination::Smarthost(s) => format!("smarthost:{}:{}", s.host, s.port),
            Destination::Mx { domain } => format!("mx:{domain}"),
        }
    }
}

/// The destination of one recipient domain, per ARCHITECTURE.md: a local domain → its
/// local delivery; else the most specific matching route (exact, then the longest
/// `*.suffix`, then `*`) → that smarthost; else → MX. Case and a trailing dot are ignored.
///
/// The empty domain is the special forward-path `<Postmaster>` (RFC 5321 4.1.1.3), which
/// names the postmaster of this relay: it goes to the first local domain (in the policy's
/// sorted order) as `Local`. With no local domain there is nowhere to put it, and the
/// result is `Mx { domain: "" }`, which `mx::mx_hosts` fails permanently with a reply
/// saying so. Routes never apply to it: sending it to a smarthost would reach the
/// smarthost's postmaster, not ours.
pub fn destination(policy: &PolicySnapshot, domain: &str) -> Destination {
    let domain = normalize_domain(domain);
    if domain.is_empty() {
        return postmaster(policy);
    }
    if let Some(delivery) = policy.local_delivery(&domain) {
        return Destination::Local {
            domain,
            delivery: delivery.clone(),
        };
    }
    match policy.route_for(&domain) {
        Some(route) => Destination::Smarthost(route.smarthost.clone()),
        None => Destination::Mx { domain },
    }
}

fn postmaster(policy: &PolicySnapshot) -> Destination {
    match policy.rules().local_domains.iter().next() {
        Some((domain, local)) => Destination::Local {
            domain: domain.clone(),
            delivery: local.delivery.clone(),
        },
        None => Destination::Mx {
            domain: String::new(),
        },
    }
}

/// Splits a message's recipients by destination. Destinations come in the order of their
/// first recipient, and recipients keep their order within a destination, so that the
/// result (and the RCPT order towards each next hop) is deterministic.
pub fn group_by_destination(
    policy: &PolicySnapshot,
    recipients: &[Recipient],
) -> Vec<(Destination, Vec<Recipient>)> {
    let mut groups: Vec<(Destination, Vec<Recipient>)> = Vec::new();
    let mut index: HashMap<Destination, usize> = HashMap::new();
    for recipient in recipients {
        let dest = destination(policy, &recipient.address.domain);
        match index.get(&dest) {
            Some(&i) => groups[i].1.push(recipient.clone()),
            None => {
                index.insert(dest.clone(), groups.len());
                groups.push((dest, vec![recipient.clone()]));
            }
        }
    }
    groups
}

/// The form the policy stores domains in: lower case, without the trailing dot.
pub(crate) fn normalize_domain(domain: &str) -> String {
    domain.strip_suffix('.').unwrap_or(domain).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::TlsMode;
    use crate::smtp::address::Mailbox;

    const POLICY: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {name: routes, namespace: mail}
spec:
  localDomains:
    - domain: Corp.Example
      delivery: {lmtp: {address: "dovecot:24"}}
    - domain: archive.corp.example
      delivery: {maildir: {path: /var/mail/archive}}
  routes:
    - domains: ["partner.example", "other-partner.example"]
      smarthost: {host: mx.partner.example, port: 25}
    - domains: ["*.partner.example"]
      smarthost: {host: "10.9.8.7", port: 2525, tls: opportunistic}
    - domains: ["*.eu.example"]
      smarthost: {host: eu-relay.example, port: 587}
"#;

    fn snapshot(yaml: &str) -> PolicySnapshot {
        PolicySnapshot::from_yaml(&[("t".into(), yaml.to_string())]).unwrap()
    }

    fn with_default_route() -> PolicySnapshot {
        snapshot(&format!(
            "{POLICY}    - domains: [\"*\"]\n      smarthost: {{host: smtp.provider.example, port: 587}}\n"
        ))
    }

    fn smarthost_of(dest: &Destination) -> Option<(&str, u16, TlsMode)> {
        match dest {
            Destination::Smarthost(s) => Some((s.host.as_str(), s.port, s.tls)),
            _ => None,
        }
    }

    fn rcpt(address: &str) -> Recipient {
        let (local, domain) = address.split_once('@').unwrap_or((address, ""));
        Recipient {
            address: Mailbox::new(local, domain),
            notify: None,
            orcpt: None,
        }
    }

    #[test]
    fn local_domains_go_to_their_delivery() {
        let snap = snapshot(POLICY);
        let dest = destination(&snap, "CORP.example.");
        assert_eq!(
            dest,
            Destination::Local {
                domain: "corp.example".into(),
                delivery: Delivery::Lmtp {
                    address: "dovecot:24".into()
                }
            }
        );
        // A local subdomain is local even though a `*.` route could not match it anyway.
        assert!(matches!(
            destination(&snap, "archive.corp.example"),
            Destination::Local {
                delivery: Delivery::Maildir { .. },
                ..
            }
        ));
        // Local wins over a `*` route.
        assert!(matches!(
            destination(&with_default_route(), "corp.example"),
            Destination::Local { .. }
        ));
    }

    #[test]
    fn routes_match_exact_then_suffix_then_star() {
        for snap in [snapshot(POLICY), with_default_route()] {
            let route =
                |d: &str| smarthost_of(&destination(&snap, d)).map(|(h, p, _)| (h.to_string(), p));
            assert_eq!(
                route("Partner.Example"),
                Some(("mx.partner.example".into(), 25))
            );
            assert_eq!(route("eu.partner.example"), Some(("10.9.8.7".into(), 2525)));
            assert_eq!(
                route("a.b.partner.example"),
                Some(("10.9.8.7".into(), 2525))
            );
            assert_eq!(
                route("de.eu.example"),
                Some(("eu-relay.example".into(), 587))
            );
        }
        let tls = smarthost_of(&destination(&snapshot(POLICY), "x.partner.example")).map(|s| s.2);
        assert_eq!(tls, Some(TlsMode::Opportunistic));
    }

    #[test]
    fn no_route_means_mx_and_star_catches_the_rest() {
        let snap = snapshot(POLICY);
        // `*.eu.example` matches subdomains only.
        for domain in ["example.org", "eu.example", "notpartner.example"] {
            assert_eq!(
                destination(&snap, &domain.to_uppercase()),
                Destination::Mx {
                    domain: domain.into()
                }
            );
        }
        assert_eq!(
            destination(&snap, "[192.0.2.1]"),
            Destination::Mx {
                domain: "[192.0.2.1]".into()
            }
        );
        let star = with_default_route();
        let host = smarthost_of(&destination(&star, "example.org")).map(|s| s.0.to_string());
        assert_eq!(host.as_deref(), Some("smtp.provider.example"));
    }

    #[test]
    fn postmaster_goes_to_the_first_local_domain_or_nowhere() {
        let dest = destination(&with_default_route(), "");
        assert!(
            matches!(&dest, Destination::Local { domain, .. } if domain == "archive.corp.example"),
            "{dest:?}"
        );
        let no_local = snapshot(
            "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: p}\nspec:\n  \
             routes: [{domains: [\"*\"], smarthost: {host: s.example, port: 25}}]\n",
        );
        assert_eq!(
            destination(&no_local, ""),
            Destination::Mx {
                domain: String::new()
            }
        );
    }

    #[test]
    fn mixed_recipients_are_grouped_per_destination_in_order() {
        let snap = snapshot(POLICY);
        let list: Vec<Recipient> = [
            "a@example.org",
            "b@corp.example",
            "c@partner.example",
            "d@Example.ORG",
            "e@other-partner.example",
            "f@x.partner.example",
            "g@example.net",
            "h@CORP.example",
        ]
        .iter()
        .map(|a| rcpt(a))
        .collect();
        let groups = group_by_destination(&snap, &list);
        let shown: Vec<(String, Vec<String>)> = groups
            .iter()
            .map(|(d, r)| {
                (
                    d.label(),
                    r.iter().map(|r| r.address.local.clone()).collect(),
                )
            })
            .collect();
        let expect = [
            ("mx:example.org", vec!["a", "d"]),
            ("local:corp.example", vec!["b", "h"]),
            ("smarthost:mx.partner.example:25", vec!["c", "e"]),
            ("smarthost:10.9.8.7:2525", vec!["f"]),
            ("mx:example.net", vec!["g"]),
        ];
        let expect: Vec<(String, Vec<String>)> = expect
            .iter()
            .map(|(l, r)| (l.to_string(), r.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert_eq!(shown, expect);
        assert!(group_by_destination(&snap, &[]).is_empty());
    }

    #[test]
    fn destinations_work_as_map_keys() {
        let snap = with_default_route();
        let mut caps: HashMap<Destination, u32> = HashMap::new();
        for d in [
            "a.example",
            "b.example",
            "partner.example",
            "other-partner.example",
        ] {
            *caps.entry(destination(&snap, d)).or_default() += 1;
        }
        // a/b share the `*` smarthost; the two partner domains share theirs.
        assert_eq!(caps.len(), 2);
        assert!(caps.values().all(|&n| n == 2));
    }
}
