//! MX resolution end to end: `mx_hosts` through `SystemResolver` against a real DNS server
//! on loopback (tests/common/dns.rs), and the rules that depend on lookups (implicit MX,
//! skipped hosts, temporary failures) against a table resolver.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use common::dns::{DnsServer, Zone};
use sluice::delivery::dns::{DnsError, Resolver};
use sluice::delivery::mx::{MxError, MxHost, mx_hosts};

/// Every lookup in these tests is on loopback; a hang is a bug, not a slow network.
const BOUND: Duration = Duration::from_secs(20);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn names(hosts: &[MxHost]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

fn own(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn zone() -> Zone {
    Zone::default()
        // Two MX hosts, one dual-stack.
        .mx("good.test", 20, "mx2.good.test")
        .mx("good.test", 10, "mx1.good.test")
        .addr("mx1.good.test", "127.0.0.11")
        .addr("mx1.good.test", "::1")
        .addr("mx2.good.test", "127.0.0.12")
        // Two MX, the better one without an address (it exists, with a TXT only), and one
        // that does not exist at all.
        .mx("half.test", 10, "noaddr.half.test")
        .mx("half.test", 15, "gone.half.test")
        .mx("half.test", 20, "mx.half.test")
        .txt("noaddr.half.test", "no address here")
        .addr("mx.half.test", "127.0.0.21")
        // RFC 7505 null MX.
        .mx("null.test", 0, ".")
        // No MX, an A record: the implicit MX.
        .addr("plain.test", "127.0.0.30")
        // Neither MX nor address.
        .txt("bare.test", "v=spf1 -all")
        // Equal preferences.
        .mx("equal.test", 10, "a.equal.test")
        .mx("equal.test", 10, "b.equal.test")
        .addr("a.equal.test", "127.0.0.41")
        .addr("b.equal.test", "127.0.0.42")
        // We are the best MX of loop.test and the backup of backup.test.
        .mx("loop.test", 10, "relay.sluice.test")
        .mx("loop.test", 20, "mx.half.test")
        .mx("backup.test", 10, "mx.half.test")
        .mx("backup.test", 20, "relay.sluice.test")
        .addr("relay.sluice.test", "127.0.0.2")
        // An internationalised domain, stored in its A-label form.
        .mx("xn--bcher-kva.test", 10, "mx.half.test")
        // Broken DNS.
        .servfail("servfail.test")
        .mx("lame.test", 10, "mx.servfail.test")
        .servfail("mx.servfail.test")
}

async fn hosts(server: &DnsServer, domain: &str, local: &[&str]) -> Result<Vec<MxHost>, MxError> {
    let resolver = server.resolver();
    tokio::time::timeout(BOUND, mx_hosts(&resolver, domain, &own(local)))
        .await
        .expect("mx_hosts finished in time")
}

#[tokio::test]
async fn mx_records_in_preference_order_with_both_address_families() {
    let server = DnsServer::start(zone()).await;
    let found = hosts(&server, "Good.Test.", &[]).await.unwrap();
    let expect = [
        MxHost {
            name: "mx1.good.test".into(),
            preference: 10,
            addrs: vec![ip("::1"), ip("127.0.0.11")],
        },
        MxHost {
            name: "mx2.good.test".into(),
            preference: 20,
            addrs: vec![ip("127.0.0.12")],
        },
    ];
    assert_eq!(found, expect);
}

#[tokio::test]
async fn hosts_without_addresses_are_skipped() {
    let server = DnsServer::start(zone()).await;
    let found = hosts(&server, "half.test", &[]).await.unwrap();
    assert_eq!(names(&found), ["mx.half.test"]);
    assert_eq!(found[0].addrs, [ip("127.0.0.21")]);
}

#[tokio::test]
async fn null_mx_nxdomain_and_no_address_are_permanent() {
    let server = DnsServer::start(zone()).await;
    let null = hosts(&server, "null.test", &[]).await.unwrap_err();
    assert_eq!(
        null,
        MxError::NullMx {
            domain: "null.test".into()
        }
    );
    assert_eq!(
        null.to_outcome().reply(),
        "556 5.1.10 domain null.test accepts no mail (null MX)"
    );
    let nx = hosts(&server, "nowhere.test", &[]).await.unwrap_err();
    assert_eq!(
        nx,
        MxError::NoSuchDomain {
            domain: "nowhere.test".into()
        }
    );
    assert!(nx.to_outcome().is_failed());
    let bare = hosts(&server, "bare.test", &[]).await.unwrap_err();
    assert_eq!(
        bare,
        MxError::NoAddresses {
            domain: "bare.test".into()
        }
    );
}

#[tokio::test]
async fn no_mx_means_the_domains_own_address() {
    let server = DnsServer::start(zone()).await;
    let found = hosts(&server, "plain.test", &[]).await.unwrap();
    let expect = MxHost {
        name: "plain.test".into(),
        preference: 0,
        addrs: vec![ip("127.0.0.30")],
    };
    assert_eq!(found, [expect]);
}

#[tokio::test]
async fn equal_preferences_come_in_both_orders() {
    let server = DnsServer::start(zone()).await;
    let resolver = server.resolver();
    let mut orders = HashSet::new();
    for _ in 0..60 {
        let found = tokio::time::timeout(BOUND, mx_hosts(&resolver, "equal.test", &[])).await;
        orders.insert(names(&found.unwrap().unwrap()).join(","));
    }
    let both = HashSet::from([
        "a.equal.test,b.equal.test".into(),
        "b.equal.test,a.equal.test".into(),
    ]);
    assert_eq!(orders, both);
}

#[tokio::test]
async fn our_own_name_among_the_mx_hosts() {
    let server = DnsServer::start(zone()).await;
    let local = ["relay.sluice.test"];
    let err = hosts(&server, "loop.test", &local).await.unwrap_err();
    let expect = MxError::Loop {
        domain: "loop.test".into(),
        host: "relay.sluice.test".into(),
    };
    assert_eq!(err, expect);
    assert_eq!(err.to_outcome().reply().get(..9), Some("554 5.4.6"));
    let backup = hosts(&server, "backup.test", &local).await.unwrap();
    assert_eq!(names(&backup), ["mx.half.test"]);
    // Without knowing our names, the loop would be invisible.
    assert_eq!(hosts(&server, "loop.test", &[]).await.unwrap().len(), 2);
}

#[tokio::test]
async fn dns_failures_defer() {
    let server = DnsServer::start(zone()).await;
    for domain in ["servfail.test", "lame.test"] {
        let err = hosts(&server, domain, &[]).await.unwrap_err();
        assert!(
            matches!(err, MxError::Temporary { .. }),
            "{domain}: {err:?}"
        );
        let outcome = err.to_outcome();
        assert!(
            !outcome.is_failed() && !outcome.is_delivered(),
            "{outcome:?}"
        );
        assert!(
            outcome.reply().starts_with("451 4.4.3 DNS lookup for "),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn utf8_domains_and_address_literals() {
    let server = DnsServer::start(zone()).await;
    assert_eq!(
        names(&hosts(&server, "Bücher.test", &[]).await.unwrap()),
        ["mx.half.test"]
    );
    let before = server.queries();
    let literal = hosts(&server, "[127.0.0.9]", &[]).await.unwrap();
    assert_eq!(literal[0].addrs, [ip("127.0.0.9")]);
    assert_eq!(server.queries(), before, "an address literal needs no DNS");
}

#[tokio::test]
async fn the_resolver_classifies_answers() {
    let server = DnsServer::start(zone()).await;
    let r = server.resolver();
    let mut mx = r.mx("good.test").await.unwrap();
    mx.sort();
    assert_eq!(
        mx,
        [
            (10, "mx1.good.test".to_string()),
            (20, "mx2.good.test".to_string())
        ]
    );
    assert_eq!(r.mx("null.test").await, Ok(vec![(0, String::new())]));
    assert_eq!(r.mx("plain.test").await, Ok(vec![]), "exists, no MX");
    assert_eq!(r.mx("nowhere.test").await, Err(DnsError::NotFound));
    assert!(matches!(
        r.mx("servfail.test").await,
        Err(DnsError::Temporary(_))
    ));
    assert_eq!(r.ips("bare.test").await, Err(DnsError::NoRecords));
    assert_eq!(r.ips("gone.half.test").await, Err(DnsError::NotFound));
    assert_eq!(r.ips("10.9.8.7").await, Ok(vec![ip("10.9.8.7")]));
}

type MxAnswer = Result<Vec<(u16, String)>, DnsError>;

/// Answers from tables; a name in neither table does not exist.
#[derive(Default)]
struct Table {
    mx: HashMap<&'static str, MxAnswer>,
    ips: HashMap<&'static str, Result<Vec<IpAddr>, DnsError>>,
}

#[async_trait]
impl Resolver for Table {
    async fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        self.mx
            .get(domain)
            .cloned()
            .unwrap_or(Err(DnsError::NotFound))
    }
    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.ips
            .get(host)
            .cloned()
            .unwrap_or(Err(DnsError::NotFound))
    }
}

impl Table {
    fn mx(mut self, domain: &'static str, records: &[(u16, &str)]) -> Self {
        let records = records.iter().map(|(p, n)| (*p, n.to_string())).collect();
        self.mx.insert(domain, Ok(records));
        self
    }
    fn mx_err(mut self, domain: &'static str, e: DnsError) -> Self {
        self.mx.insert(domain, Err(e));
        self
    }
    fn host(mut self, name: &'static str, result: Result<&[&str], DnsError>) -> Self {
        self.ips
            .insert(name, result.map(|a| a.iter().map(|a| ip(a)).collect()));
        self
    }
}

fn timeout() -> DnsError {
    DnsError::Temporary("timeout".into())
}

#[tokio::test]
async fn table_implicit_mx_cases() {
    let r = Table::default()
        .mx("empty.example", &[])
        .host("empty.example", Ok(&["192.0.2.5"]))
        .mx_err("nodata.example", DnsError::NoRecords)
        .host("nodata.example", Ok(&["2001:db8::5"]))
        .mx("bare.example", &[])
        .host("bare.example", Err(DnsError::NoRecords))
        .mx("noips.example", &[])
        .host("noips.example", Ok(&[]))
        .mx("slow.example", &[])
        .host("slow.example", Err(timeout()))
        .mx("vanished.example", &[]);
    assert_eq!(
        names(&mx_hosts(&r, "empty.example", &[]).await.unwrap()),
        ["empty.example"]
    );
    assert_eq!(
        mx_hosts(&r, "nodata.example", &[]).await.unwrap()[0].addrs,
        [ip("2001:db8::5")]
    );
    assert!(matches!(
        mx_hosts(&r, "bare.example", &[]).await,
        Err(MxError::NoAddresses { .. })
    ));
    assert!(matches!(
        mx_hosts(&r, "noips.example", &[]).await,
        Err(MxError::NoAddresses { .. })
    ));
    assert!(matches!(
        mx_hosts(&r, "slow.example", &[]).await,
        Err(MxError::Temporary { .. })
    ));
    assert!(matches!(
        mx_hosts(&r, "vanished.example", &[]).await,
        Err(MxError::NoSuchDomain { .. })
    ));
    let own = own(&["EMPTY.example."]);
    assert!(matches!(
        mx_hosts(&r, "empty.example", &own).await,
        Err(MxError::Loop { .. })
    ));
}

#[tokio::test]
async fn table_skipped_hosts_and_temporary_failures() {
    let r = Table::default()
        .mx(
            "skip.example",
            &[
                (10, "gone.example"),
                (20, "empty.example"),
                (25, "slow.example"),
                (30, "ok.example"),
            ],
        )
        .host("empty.example", Err(DnsError::NoRecords))
        .host("slow.example", Err(timeout()))
        .host("ok.example", Ok(&["192.0.2.20"]))
        .mx(
            "dead.example",
            &[(10, "gone.example"), (20, "empty.example")],
        )
        .mx(
            "flaky.example",
            &[(10, "gone.example"), (20, "slow.example")],
        )
        .mx_err("servfail.example", timeout());
    let found = mx_hosts(&r, "skip.example", &[]).await.unwrap();
    assert_eq!(
        names(&found),
        ["ok.example"],
        "a failing backup does not hold up a working one"
    );
    assert_eq!(found[0].preference, 30);
    let dead = mx_hosts(&r, "dead.example", &[]).await;
    assert_eq!(
        dead,
        Err(MxError::NoAddresses {
            domain: "dead.example".into()
        })
    );
    let flaky = mx_hosts(&r, "flaky.example", &[]).await.unwrap_err();
    assert!(matches!(&flaky, MxError::Temporary { reason, .. } if reason.contains("slow.example")));
    let servfail = mx_hosts(&r, "servfail.example", &[]).await;
    assert!(matches!(servfail, Err(MxError::Temporary { .. })));
    assert_eq!(mx_hosts(&r, "", &[]).await, Err(MxError::NoDomain));
}
