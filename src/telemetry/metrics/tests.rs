use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// What the hand-written encoder rendered before `prometheus-client` (captured from it
/// with every family forced to show, the operator's included): (sample name, type of its
/// family, its label names but `le`). Dashboards were built on these; they must not move.
const BEFORE_PROMETHEUS_CLIENT: &[(&str, &str, &str)] = &[
    ("sluice_admin_requests_refused_total", "counter", "reason"),
    ("sluice_auth_lockouts_total", "counter", "scope"),
    ("sluice_auth_total", "counter", "result"),
    ("sluice_commands_total", "counter", "verb"),
    ("sluice_connections_active", "gauge", ""),
    ("sluice_connections_refused_total", "counter", "reason"),
    ("sluice_connections_total", "counter", "listener"),
    ("sluice_deliveries_total", "counter", "route,status"),
    ("sluice_delivery_duplicates_suppressed_total", "counter", ""),
    ("sluice_delivery_replies_total", "counter", "class"),
    ("sluice_delivery_seconds_bucket", "histogram", ""),
    ("sluice_delivery_seconds_count", "histogram", ""),
    ("sluice_delivery_seconds_sum", "histogram", ""),
    ("sluice_delivery_tls_fallbacks_total", "counter", ""),
    ("sluice_dkim_signatures_total", "counter", "result"),
    ("sluice_dnsbl_lookups_total", "counter", "zone,result"),
    ("sluice_enqueue_seconds_bucket", "histogram", ""),
    ("sluice_enqueue_seconds_count", "histogram", ""),
    ("sluice_enqueue_seconds_sum", "histogram", ""),
    ("sluice_events_lost_total", "counter", "reason"),
    ("sluice_filter_seconds_bucket", "histogram", ""),
    ("sluice_filter_seconds_count", "histogram", ""),
    ("sluice_filter_seconds_sum", "histogram", ""),
    ("sluice_filter_verdicts_total", "counter", "check,result"),
    ("sluice_memory_budget_bytes", "gauge", ""),
    ("sluice_memory_in_flight_bytes", "gauge", ""),
    ("sluice_messages_accepted_total", "counter", ""),
    ("sluice_messages_rejected_total", "counter", "reason"),
    ("sluice_messages_spilled_total", "counter", ""),
    ("sluice_operator_compiles_total", "counter", ""),
    ("sluice_operator_failures_total", "counter", "reason"),
    ("sluice_operator_last_compile_seconds", "gauge", ""),
    ("sluice_operator_leader", "gauge", ""),
    ("sluice_operator_password_hashes_total", "counter", ""),
    ("sluice_operator_policies", "gauge", "verdict"),
    ("sluice_operator_reconciles_total", "counter", "result"),
    ("sluice_operator_snapshot_writes_total", "counter", ""),
    ("sluice_operator_status_writes_total", "counter", ""),
    ("sluice_policy_in_force_info", "gauge", "revision"),
    ("sluice_policy_reloads_total", "counter", "result"),
    ("sluice_policy_revision_info", "gauge", "revision"),
    ("sluice_queue_invalid_messages_total", "counter", "reason"),
    ("sluice_queue_messages", "gauge", ""),
    ("sluice_queue_oldest_age_seconds", "gauge", ""),
    ("sluice_queue_redeliveries_total", "counter", ""),
    ("sluice_received_bytes_total", "counter", ""),
];

/// Every series of every label value shows (the operator's metrics included).
fn all_shown() -> Metrics {
    fn each<A: Label>(f: impl Fn(A)) {
        A::ALL.iter().copied().for_each(f);
    }
    fn pairs<A: Label, B: Label>(c: &Counters<Two<A, B>>) {
        each(|a: A| each(|b: B| c.inc(a, b)));
    }
    let m = Metrics::operator();
    each(|v| m.connections.inc(v));
    each(|v| m.connections_refused.inc(v));
    each(|v| m.commands.inc(v));
    each(|v| m.messages_rejected.inc(v));
    each(|v| m.auth.inc(v));
    each(|v| m.auth_lockouts.inc(v));
    each(|v| m.policy_reloads.inc(v));
    m.policy_revision.set("abc1");
    pairs(&m.filter_verdicts);
    each(|v| m.dnsbl_lookups.inc("zen.example", v));
    each(|v| m.dkim_signatures.inc(v));
    pairs(&m.deliveries);
    each(|v| m.delivery_replies.inc(v));
    each(|v| m.events_lost.inc(v));
    each(|v| m.queue_invalid_messages.inc(v));
    each(|v| m.admin_requests_refused.inc(v));
    let o = m.operator.as_ref().expect("operator metrics");
    each(|v| o.reconciles.inc(v));
    each(|v| o.failures.inc(v));
    o.set_in_force("abc1");
    m
}

/// One family as scraped: its type and, per label name, the values seen.
#[derive(Debug, Default, PartialEq)]
struct Scraped {
    kind: String,
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// Reads a text exposition the way a scraper does: sample names with the type of the
/// family whose `# TYPE` line precedes them, and their labels (but `le`).
fn scrape(text: &str) -> BTreeMap<String, Scraped> {
    let mut out: BTreeMap<String, Scraped> = BTreeMap::new();
    let mut kind = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            kind = rest.rsplit(' ').next().unwrap_or_default().to_string();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let sample = out.entry(name.to_string()).or_default();
        sample.kind = kind.clone();
        let labels = line
            .split_once('{')
            .and_then(|(_, rest)| rest.rsplit_once('}'))
            .map_or("", |(labels, _)| labels);
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once("=\"").expect("a label");
            if name != "le" {
                let value = value.trim_end_matches('"').to_string();
                sample
                    .labels
                    .entry(name.to_string())
                    .or_default()
                    .insert(value);
            }
        }
    }
    out
}

#[test]
fn names_types_and_label_names_are_those_of_before() {
    let now: BTreeSet<(String, String, String)> = scrape(&all_shown().render())
        .into_iter()
        .map(|(name, s)| {
            let labels: Vec<String> = s.labels.into_keys().collect();
            (name, s.kind, labels.join(","))
        })
        .collect();
    let before: BTreeSet<(String, String, String)> = BEFORE_PROMETHEUS_CLIENT
        .iter()
        .map(|(n, t, l)| {
            let mut labels: Vec<&str> = l.split(',').filter(|l| !l.is_empty()).collect();
            labels.sort();
            (n.to_string(), t.to_string(), labels.join(","))
        })
        .collect();
    let gone: Vec<_> = before.difference(&now).collect();
    let new: Vec<_> = now.difference(&before).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "gone: {gone:?}\nnew: {new:?}"
    );
}

#[test]
fn the_content_type_is_the_text_format_of_before() {
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    let text = all_shown().render();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE sluice_connections_total counter\n"),
        "{text}"
    );
}

/// A row of the README's metrics table: its type, and the label names outside
/// parentheses in its labels column (the values and explanations are inside).
fn readme_rows() -> BTreeMap<String, (String, BTreeSet<String>, String)> {
    // Read at run time, not `include_str!`: the image's build context holds only what a
    // build of the binary reads (tests/image.rs), and the README is not part of it.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let start = readme
        .find("\n### Metrics\n")
        .expect("a ### Metrics section");
    let mut rows = BTreeMap::new();
    for line in readme[start..].lines().skip(2) {
        if line.starts_with("## ") || line.starts_with("### ") {
            break;
        }
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(cells.len() == 6, "a row of four cells: {line}");
        let cells = &cells[1..5];
        let name = cells[0].trim_matches('`').to_string();
        let (mut depth, mut outside) = (0, String::new());
        for c in cells[2].chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => outside.push(c),
                _ => {}
            }
        }
        let labels = outside
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        rows.insert(name, (cells[1].to_string(), labels, cells[2].to_string()));
    }
    rows
}

#[test]
fn the_readme_table_lists_exactly_the_registered_families() {
    let rows = readme_rows();
    let mut families = BTreeMap::new();
    for (name, s) in scrape(&all_shown().render()) {
        // A histogram's rows are its family's: `_bucket`, `_sum` and `_count` share it.
        let family = match s.kind.as_str() {
            "histogram" => name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(&name)
                .to_string(),
            _ => name,
        };
        families.insert(family, s);
    }
    let documented: BTreeSet<&String> = rows.keys().collect();
    let registered: BTreeSet<&String> = families.keys().collect();
    assert_eq!(
        documented, registered,
        "README ### Metrics against the registry"
    );
    for (name, s) in &families {
        let (kind, labels, cell) = &rows[name];
        assert_eq!(kind, &s.kind, "{name}: type");
        let names: BTreeSet<String> = s.labels.keys().cloned().collect();
        assert_eq!(labels, &names, "{name}: label names");
        // Each value the code can give a label is documented (the dynamic ones aside).
        for (label, values) in &s.labels {
            if label == "zone" || label == "revision" {
                continue;
            }
            for value in values {
                assert!(
                    cell.contains(&format!("`{value}`")),
                    "{name}: `{value}` of {label} undocumented"
                );
            }
        }
    }
}

#[test]
fn renders_counters_labels_and_cumulative_buckets() {
    let m = Metrics::default();
    m.messages_rejected.inc(RejectReason::RelayDenied);
    m.messages_rejected.add(RejectReason::RelayDenied, 2);
    m.enqueue_seconds.observe(Duration::from_micros(300));
    m.enqueue_seconds.observe(Duration::from_millis(20));
    m.delivery_tls_fallbacks.inc_by(2);
    let text = m.render();
    assert!(
        text.contains("sluice_delivery_tls_fallbacks_total 2\n"),
        "{text}"
    );
    assert!(text.contains("sluice_messages_rejected_total{reason=\"relay_denied\"} 3\n"));
    assert!(text.contains("sluice_enqueue_seconds_bucket{le=\"0.0005\"} 1\n"));
    assert!(text.contains("sluice_enqueue_seconds_bucket{le=\"0.025\"} 2\n"));
    assert!(
        text.contains("sluice_enqueue_seconds_bucket{le=\"1\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("sluice_enqueue_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert!(text.contains("sluice_enqueue_seconds_count 2\n"));
    m.deliveries.inc(RouteLabel::Mx, DeliveryStatus::Sent);
    m.deliveries.inc(RouteLabel::Mx, DeliveryStatus::Sent);
    let text = m.render();
    assert!(text.contains("sluice_deliveries_total{route=\"mx\",status=\"sent\"} 2\n"));
    assert_eq!(m.deliveries.get(RouteLabel::Mx, DeliveryStatus::Sent), 2);
}

#[test]
fn histograms_keep_their_buckets() {
    let text = Metrics::default().render();
    for (name, bounds) in [
        ("sluice_enqueue_seconds", ENQUEUE_BUCKETS),
        ("sluice_filter_seconds", FILTER_BUCKETS),
        ("sluice_delivery_seconds", DELIVERY_BUCKETS),
    ] {
        let prefix = format!("{name}_bucket{{le=\"");
        let les: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|l| l.split('"').next())
            .collect();
        // As before: the bounds as Go writes them (`1`, not `1.0`), then `+Inf`.
        let mut expected: Vec<String> = bounds.iter().map(|b| b.to_string()).collect();
        expected.push("+Inf".to_string());
        assert_eq!(les, expected, "{name}");
    }
}

#[test]
fn renders_the_redelivery_duplicate_and_event_loss_counters() {
    let m = Metrics::default();
    let text = m.render();
    assert!(
        text.contains(
            "# TYPE sluice_queue_redeliveries_total counter\nsluice_queue_redeliveries_total 0\n"
        ),
        "{text}"
    );
    assert!(text.contains("\nsluice_delivery_duplicates_suppressed_total 0\n"));
    m.queue_redeliveries.inc_by(2);
    m.delivery_duplicates_suppressed.inc_by(3);
    m.events_lost.inc(EventLoss::BacklogFull);
    let text = m.render();
    assert!(
        text.contains("\nsluice_queue_redeliveries_total 2\n"),
        "{text}"
    );
    assert!(text.contains(
        "# TYPE sluice_delivery_duplicates_suppressed_total counter\nsluice_delivery_duplicates_suppressed_total 3\n"
    ));
    assert!(text.contains("\nsluice_events_lost_total{reason=\"backlog_full\"} 1\n"));
}

#[test]
fn dnsbl_zones_are_labels_bounded_in_number() {
    let m = Metrics::default();
    m.dnsbl_lookups.inc("zen.example", DnsblResult::Listed);
    m.dnsbl_lookups.inc("zen.example", DnsblResult::Listed);
    m.dnsbl_lookups.inc("bl.example", DnsblResult::Error);
    let text = m.render();
    assert!(
        text.contains("\nsluice_dnsbl_lookups_total{zone=\"zen.example\",result=\"listed\"} 2\n"),
        "{text}"
    );
    assert_eq!(m.dnsbl_lookups.get("bl.example", DnsblResult::Error), 1);
    for i in 0..ZoneCounters::<DnsblResult>::MAX_SERIES {
        m.dnsbl_lookups
            .inc(&format!("z{i}.example"), DnsblResult::Clear);
    }
    assert!(m.dnsbl_lookups.get("other", DnsblResult::Clear) > 0);
    // A zone counted before the cap keeps its own series.
    m.dnsbl_lookups.inc("zen.example", DnsblResult::Listed);
    assert_eq!(m.dnsbl_lookups.get("zen.example", DnsblResult::Listed), 3);
    let series = m.render().matches("sluice_dnsbl_lookups_total{").count();
    assert!(
        series <= ZoneCounters::<DnsblResult>::MAX_SERIES + 1,
        "{series}"
    );
}

#[test]
fn the_policy_revision_is_one_series_that_changes() {
    let m = Metrics::default();
    let text = m.render();
    assert!(
        text.contains("# TYPE sluice_policy_revision_info gauge\n# HELP"),
        "no series before a policy: {text}"
    );
    m.policy_revision.set("abc1");
    m.policy_revision.set("def2");
    let text = m.render();
    assert!(
        text.contains("\nsluice_policy_revision_info{revision=\"def2\"} 1\n"),
        "{text}"
    );
    assert_eq!(text.matches("sluice_policy_revision_info{").count(), 1);
    assert_eq!(m.policy_revision.get().as_deref(), Some("def2"));
}

#[test]
fn renders_the_queue_gauges_in_seconds() {
    let m = Metrics::default();
    let text = m.render();
    assert!(text.contains("\nsluice_queue_messages 0\n"), "{text}");
    assert!(
        text.contains("\nsluice_queue_oldest_age_seconds 0.0\n"),
        "{text}"
    );
    m.set_queue(3, Duration::from_millis(90_250));
    let text = m.render();
    assert!(text.contains("# TYPE sluice_queue_messages gauge\nsluice_queue_messages 3\n"));
    assert!(text.contains(
        "# TYPE sluice_queue_oldest_age_seconds gauge\nsluice_queue_oldest_age_seconds 90.25\n"
    ));
}

#[test]
fn verbs_are_read_in_any_case() {
    assert_eq!(Verb::of(b"ehlo client.example"), Verb::Ehlo);
    assert_eq!(Verb::of(b"StartTLS"), Verb::Starttls);
    assert_eq!(Verb::of(b"XYZZY"), Verb::Invalid);
    assert_eq!(Verb::of(b"invalid"), Verb::Invalid);
    assert_eq!(Verb::of(b""), Verb::Invalid);
}
