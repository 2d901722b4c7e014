use super::*;

fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn settings(zones: &[(&str, u32)], threshold: u32, fail_mode: FailMode) -> DnsblSettings {
    DnsblSettings {
        zones: zones
            .iter()
            .map(|(zone, weight)| ZoneSettings {
                zone: zone.to_string(),
                weight: *weight,
                answers: Vec::new(),
            })
            .collect(),
        threshold,
        timeout_ms: 5_000,
        fail_mode,
        exempt: vec![Exemption::Authenticated, Exemption::TrustedNetworks],
    }
}

#[test]
fn ipv4_query_names_reverse_the_octets() {
    let ip: IpAddr = "192.0.2.99".parse().unwrap();
    assert_eq!(query_name(ip, "zen.example"), "99.2.0.192.zen.example");
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(query_name(loopback, "bl.test"), "1.0.0.127.bl.test");
    let mapped: IpAddr = "::ffff:192.0.2.99".parse().unwrap();
    assert_eq!(query_name(mapped, "zen.example"), "99.2.0.192.zen.example");
}

#[test]
fn ipv6_query_names_are_the_32_reversed_nibbles() {
    // RFC 5782 2.4's own example.
    let ip: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
    assert_eq!(
        query_name(ip, "ugly.example.com"),
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
    );
    let zero: IpAddr = "::1".parse().unwrap();
    let name = query_name(zero, "z.test");
    assert_eq!(name.split('.').count(), 32 + 2);
    assert!(name.starts_with("1.0.0.0."), "{name}");
}

#[test]
fn answers_in_127_8_are_listings_and_the_error_range_is_not() {
    assert_eq!(classify(&[], &[]), ZoneAnswer::Clear);
    assert_eq!(
        classify(&[v4("127.0.0.2")], &[]),
        ZoneAnswer::Listed(v4("127.0.0.2"))
    );
    for code in ["127.255.255.252", "127.255.255.254", "127.255.255.255"] {
        assert_eq!(
            classify(&[v4(code)], &[]),
            ZoneAnswer::Error(ZoneError::ListError(v4(code))),
            "{code}"
        );
    }
    // An error code beside a listing still means the list did not judge.
    assert!(matches!(
        classify(&[v4("127.0.0.2"), v4("127.255.255.254")], &[]),
        ZoneAnswer::Error(ZoneError::ListError(_))
    ));
    // A resolver that answers every name (NXDOMAIN hijacking).
    assert_eq!(
        classify(&[v4("198.51.100.7")], &[]),
        ZoneAnswer::Error(ZoneError::NotAReturnCode(v4("198.51.100.7")))
    );
    assert_eq!(ZoneAnswer::Clear.label(), "clear");
}

#[test]
fn the_answers_filter_decides_which_codes_count() {
    let only: Vec<Ipv4Net> = vec![
        "127.0.0.2/32".parse().unwrap(),
        "127.0.0.4/30".parse().unwrap(),
    ];
    assert_eq!(classify(&[v4("127.0.0.3")], &only), ZoneAnswer::Clear);
    assert_eq!(classify(&[v4("127.0.0.10")], &only), ZoneAnswer::Clear);
    assert_eq!(
        classify(&[v4("127.0.0.10"), v4("127.0.0.6")], &only),
        ZoneAnswer::Listed(v4("127.0.0.6"))
    );
    assert_eq!(
        classify(&[v4("127.0.0.2")], &only),
        ZoneAnswer::Listed(v4("127.0.0.2"))
    );
    // Error codes stay errors whatever the filter.
    assert!(matches!(
        classify(&[v4("127.255.255.255")], &only),
        ZoneAnswer::Error(_)
    ));
}

#[test]
fn weights_are_summed_against_the_threshold() {
    let s = settings(
        &[("a.test", 1), ("b.test", 1), ("c.test", 2)],
        2,
        FailMode::Open,
    );
    let listed = ZoneAnswer::Listed(v4("127.0.0.2"));
    let error = ZoneAnswer::Error(ZoneError::Timeout);
    let clear = ZoneAnswer::Clear;
    assert_eq!(
        verdict(&s, &[listed.clone(), clear.clone(), clear.clone()]),
        Verdict::Clear
    );
    assert_eq!(
        verdict(&s, &[listed.clone(), listed.clone(), clear.clone()]),
        Verdict::Listed(vec!["a.test".into(), "b.test".into()])
    );
    assert_eq!(
        verdict(&s, &[clear.clone(), clear.clone(), listed.clone()]),
        Verdict::Listed(vec!["c.test".into()])
    );
    // Fail open: errors count as not listing.
    assert_eq!(
        verdict(&s, &[error.clone(), error.clone(), error.clone()]),
        Verdict::Clear
    );
    let closed = DnsblSettings {
        fail_mode: FailMode::Closed,
        ..s.clone()
    };
    // One listing and one error could have made two.
    assert_eq!(
        verdict(&closed, &[listed.clone(), error.clone(), clear.clone()]),
        Verdict::Unavailable
    );
    // An error that could not have reached the threshold changes nothing.
    assert_eq!(
        verdict(&closed, &[error.clone(), clear.clone(), clear.clone()]),
        Verdict::Clear
    );
    assert_eq!(
        verdict(&closed, &[listed.clone(), listed, error]),
        Verdict::Listed(vec!["a.test".into(), "b.test".into()])
    );
}

#[test]
fn the_refusal_names_the_client_and_the_lists_within_bounds() {
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let reply = listed_reply(ip, &["zen.example".into(), "bl.example".into()]);
    assert_eq!(reply.code, 554);
    assert_eq!(
        String::from_utf8(reply.to_bytes()).unwrap(),
        "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example, bl.example\r\n"
    );
    let long: Vec<String> = (0..16)
        .map(|i| format!("{}.{i}.test", "x".repeat(60)))
        .collect();
    let text = String::from_utf8(listed_reply(ip, &long).to_bytes()).unwrap();
    assert!(text.len() < 512, "{}", text.len());
    assert!(text.contains(" more"), "{text}");
    assert_eq!(
        String::from_utf8(unavailable_reply().to_bytes()).unwrap(),
        "451 4.7.1 Client check unavailable, try again later\r\n"
    );
}

#[test]
fn the_session_hears_the_verdict_as_a_refusal_with_its_reason() {
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(Verdict::Clear.for_session(ip), ClientVerdict::Clear);
    let ClientVerdict::Refused(listed) = Verdict::Listed(vec!["b.test".into()]).for_session(ip)
    else {
        panic!("a listed client is refused");
    };
    assert_eq!(
        listed.reply.to_string().trim_end(),
        "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using b.test"
    );
    assert_eq!(listed.reason, "dnsbl");
    assert!(listed.detail.contains("b.test"), "{}", listed.detail);
    let ClientVerdict::Refused(unavailable) = Verdict::Unavailable.for_session(ip) else {
        panic!("failing closed refuses");
    };
    assert_eq!(
        (unavailable.reply.code, unavailable.reply.status),
        (451, Some("4.7.1"))
    );
    assert_eq!(unavailable.reason, "dnsbl_unavailable");
}

#[test]
fn ttls_come_from_the_records_or_the_soa_and_are_capped() {
    assert_eq!(answer_ttl(&[300, 20], None), Duration::from_secs(20));
    assert_eq!(answer_ttl(&[86_400], None), MAX_CACHE_TTL);
    assert_eq!(answer_ttl(&[], Some((900, 30))), Duration::from_secs(30));
    assert_eq!(answer_ttl(&[], Some((10, 3_600))), Duration::from_secs(10));
    assert_eq!(answer_ttl(&[], None), DEFAULT_NEGATIVE_TTL);
}

#[test]
fn cached_answers_expire_with_their_ttl() {
    let mut cache = Cache::new(10);
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let t0 = Instant::now();
    let listed = ZoneAnswer::Listed(v4("127.0.0.2"));
    cache.insert("a.test", ip, listed.clone(), Duration::from_secs(2), t0);
    cache.insert("b.test", ip, ZoneAnswer::Clear, Duration::from_secs(60), t0);
    assert_eq!(
        cache.get("a.test", ip, t0 + Duration::from_secs(1)),
        Some(listed)
    );
    assert_eq!(cache.get("a.test", ip, t0 + Duration::from_secs(2)), None);
    assert_eq!(cache.len(), 1, "the expired entry is gone");
    assert_eq!(
        cache.get("b.test", ip, t0 + Duration::from_secs(59)),
        Some(ZoneAnswer::Clear)
    );
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    assert_eq!(cache.get("b.test", other, t0), None, "per client");
    // Errors are never kept, nor is a zero TTL.
    cache.insert(
        "c.test",
        ip,
        ZoneAnswer::Error(ZoneError::Timeout),
        Duration::from_secs(60),
        t0,
    );
    cache.insert("d.test", ip, ZoneAnswer::Clear, Duration::ZERO, t0);
    assert_eq!(cache.get("c.test", ip, t0), None);
    assert_eq!(cache.get("d.test", ip, t0), None);
    // A TTL beyond the cap is cut to it.
    cache.insert(
        "e.test",
        ip,
        ZoneAnswer::Clear,
        Duration::from_secs(86_400),
        t0,
    );
    assert!(cache.get("e.test", ip, t0 + MAX_CACHE_TTL).is_none());
}

#[test]
fn a_full_cache_drops_the_entry_that_expires_first() {
    let mut cache = Cache::new(3);
    let t0 = Instant::now();
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
    cache.insert(
        "z.test",
        ip(1),
        ZoneAnswer::Clear,
        Duration::from_secs(30),
        t0,
    );
    cache.insert(
        "z.test",
        ip(2),
        ZoneAnswer::Clear,
        Duration::from_secs(10),
        t0,
    );
    cache.insert(
        "z.test",
        ip(3),
        ZoneAnswer::Clear,
        Duration::from_secs(20),
        t0,
    );
    cache.insert(
        "z.test",
        ip(4),
        ZoneAnswer::Clear,
        Duration::from_secs(40),
        t0,
    );
    assert_eq!(cache.len(), 3);
    assert!(cache.get("z.test", ip(2), t0).is_none());
    assert!(cache.get("z.test", ip(1), t0).is_some());
    // Replacing an entry does not count twice.
    cache.insert(
        "z.test",
        ip(1),
        ZoneAnswer::Clear,
        Duration::from_secs(50),
        t0,
    );
    assert_eq!(cache.len(), 3);
    // Expired entries go before live ones.
    let later = t0 + Duration::from_secs(25);
    cache.insert(
        "z.test",
        ip(5),
        ZoneAnswer::Clear,
        Duration::from_secs(5),
        later,
    );
    assert!(cache.get("z.test", ip(4), later).is_some());
    assert!(cache.get("z.test", ip(1), later).is_some());
    assert!(cache.get("z.test", ip(5), later).is_some());
}

#[test]
fn warnings_are_limited_per_zone_and_minute() {
    let mut limiter = WarnLimiter::default();
    let t0 = Instant::now();
    assert!(limiter.allow("a.test", t0));
    assert!(!limiter.allow("a.test", t0 + Duration::from_secs(59)));
    assert!(limiter.allow("b.test", t0 + Duration::from_secs(1)));
    assert!(limiter.allow("a.test", t0 + Duration::from_secs(60)));
}

#[test]
fn exemptions_follow_the_senders_trust() {
    let s = settings(&[("a.test", 1)], 1, FailMode::Open);
    assert!(s.exempts(SenderTrust::Authenticated));
    assert!(s.exempts(SenderTrust::TrustedNetwork));
    assert!(!s.exempts(SenderTrust::Untrusted));
    let none = DnsblSettings {
        exempt: Vec::new(),
        ..s
    };
    assert!(!none.exempts(SenderTrust::Authenticated));
}
