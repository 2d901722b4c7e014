//! Attachment rules through `sluice standalone`: refusals naming the file, strip with
//! every other octet kept, the front-end filter (`everyAttachment`), exemptions.

use super::support::{
    self, Client, TRUSTED, UNTRUSTED, assert_reply, delivered, message, metric, relay, send,
};

#[tokio::test]
async fn executables_are_refused_naming_the_file_and_counted() {
    let (relay, sink) = relay("    - attachments: {}\n").await;
    let from = Client::From(UNTRUSTED);
    let exe = send(&relay, from, "exe").await;
    assert_reply(&exe, 550, &["5.7.1", "\"setup.exe\"", "blocked file type"]);
    let renamed = send(&relay, from, "renamed").await;
    assert_reply(&renamed, 550, &["5.7.1", "\"report.pdf\""]);
    let double = send(&relay, from, "double").await;
    assert_reply(&double, 550, &["5.7.1", "\"invoice.pdf.exe\""]);
    assert_reply(&send(&relay, from, "clean").await, 250, &[]);
    delivered(&sink, &["clean"]).await;
    let count = |result: &'static str| {
        let label = format!("result=\"{result}\"");
        async move {
            metric(
                relay.admin,
                "sluice_filter_verdicts_total",
                &["check=\"attachments\"", &label],
            )
            .await
        }
    };
    assert_eq!(count("reject").await, 3.0);
    assert_eq!(count("accept").await, 1.0);
    let rejected = metric(
        relay.admin,
        "sluice_messages_rejected_total",
        &["reason=\"filter\""],
    )
    .await;
    assert_eq!(rejected, 3.0);
}

/// Where the part whose headers name `file` lies in `message`: from its first header
/// octet to the CRLF before the next boundary line.
fn part_range(message: &[u8], file: &str) -> (usize, usize) {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let rfind = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).rposition(|w| w == needle);
    let name = format!("filename=\"{file}\"");
    let at = find(message, name.as_bytes()).expect("the part's file name");
    let boundary = rfind(&message[..at], b"\r\n--").expect("boundary before the part");
    let start = boundary + 2 + find(&message[boundary + 2..], b"\r\n").unwrap() + 2;
    let end = at + find(&message[at..], b"\r\n--").expect("boundary after the part");
    (start, end)
}

#[tokio::test]
async fn strip_replaces_the_part_and_keeps_every_other_octet() {
    let filters = "    - attachments: {blockedExtensions: {action: strip, extensions: [js]}}\n";
    let (relay, sink) = relay(filters).await;
    let reply = send(&relay, Client::From(UNTRUSTED), "mixed_js").await;
    assert_reply(&reply, 250, &[]);
    let got = delivered(&sink, &["mixed_js"])
        .await
        .remove("mixed_js")
        .unwrap();

    let sent = message("mixed_js");
    let (start, end) = part_range(&sent, "evil.js");
    let (prefix, suffix) = (&sent[..start], &sent[end..]);
    assert!(got.ends_with(suffix), "the octets after the part changed");
    let at = got
        .windows(prefix.len())
        .position(|w| w == prefix)
        .expect("the octets before the part, unchanged");
    // Before them only the relay's own trace field(s).
    let trace = String::from_utf8_lossy(&got[..at]);
    assert!(trace.starts_with("Received: "), "{trace}");
    assert!(
        trace
            .split("\r\n")
            .all(|l| l.is_empty() || l.starts_with("Received: ") || l.starts_with([' ', '\t'])),
        "{trace}"
    );
    let notice = String::from_utf8_lossy(&got[at + prefix.len()..got.len() - suffix.len()]);
    assert!(
        notice.starts_with("Content-Type: text/plain; charset=utf-8\r\n"),
        "{notice}"
    );

    let parsed = support::python_parts(&got);
    assert_eq!(parsed["defects"], serde_json::json!([]), "{parsed}");
    let parts = parsed["parts"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["text/plain", "application/pdf", "text/plain"],
        "{parsed}"
    );
    assert!(
        parts[0]["text"]
            .as_str()
            .unwrap()
            .contains("please find the file")
    );
    assert_eq!(parts[1]["filename"], "paper.pdf");
    let text = parts[2]["text"].as_str().unwrap();
    assert!(
        text.contains("\"evil.js\"") && text.contains("removed"),
        "{text}"
    );
    let strips = metric(
        relay.admin,
        "sluice_filter_verdicts_total",
        &["check=\"attachments\"", "result=\"strip\""],
    )
    .await;
    assert_eq!(strips, 1.0);
}

#[tokio::test]
async fn front_end_filter_strips_every_attachment_and_refuses_a_lone_one() {
    let filters = "    - attachments: {everyAttachment: {action: strip}, blockedExtensions: {action: strip, extensions: [exe]}, blockedRealTypes: null}\n";
    let (relay, sink) = relay(filters).await;
    let from = Client::From(UNTRUSTED);
    assert_reply(&send(&relay, from, "every").await, 250, &[]);
    // The message is itself the attachment: nothing to cut it out of.
    let lone = send(&relay, from, "single_exe").await;
    assert_reply(&lone, 550, &["5.7.1", "\"x.exe\""]);
    let lone = send(&relay, from, "single_pdf").await;
    assert_reply(
        &lone,
        550,
        &["5.7.1", "\"x.pdf\"", "every attachment is removed"],
    );
    let got = delivered(&sink, &["every"]).await.remove("every").unwrap();
    let parsed = support::python_parts(&got);
    assert_eq!(parsed["defects"], serde_json::json!([]), "{parsed}");
    let parts = parsed["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{parsed}");
    assert!(
        parts[0]["text"]
            .as_str()
            .unwrap()
            .contains("please find the file")
    );
    for (part, file) in parts[1..].iter().zip(["paper.pdf", "logo.png"]) {
        assert_eq!(part["type"], "text/plain", "{parsed}");
        assert_eq!(part["filename"], serde_json::Value::Null, "{parsed}");
        let text = part["text"].as_str().unwrap();
        assert!(
            text.contains(&format!("\"{file}\"")) && text.contains("every attachment is removed"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn authenticated_or_trusted_senders_can_be_exempt() {
    let (relay, sink) = relay("    - attachments: {}\n      exempt: [authenticated]\n").await;
    assert_reply(&send(&relay, Client::Alice, "alice_exe").await, 250, &[]);
    let refused = send(&relay, Client::From(UNTRUSTED), "exe").await;
    assert_reply(&refused, 550, &["\"setup.exe\""]);
    let refused = send(&relay, Client::From(TRUSTED), "double").await;
    assert_reply(&refused, 550, &["\"invoice.pdf.exe\""]);
    delivered(&sink, &["alice_exe"]).await;
    let exempt = metric(
        relay.admin,
        "sluice_filter_verdicts_total",
        &["check=\"attachments\"", "result=\"exempt\""],
    )
    .await;
    assert_eq!(exempt, 1.0);

    let (relay, sink) =
        support::relay("    - attachments: {}\n      exempt: [trusted-networks]\n").await;
    assert_reply(&send(&relay, Client::From(TRUSTED), "exe").await, 250, &[]);
    let refused = send(&relay, Client::From(UNTRUSTED), "double").await;
    assert_reply(&refused, 550, &["\"invoice.pdf.exe\""]);
    let refused = send(&relay, Client::Alice, "alice_exe").await;
    assert_reply(&refused, 550, &["\"setup.exe\""]);
    delivered(&sink, &["exe"]).await;
}
