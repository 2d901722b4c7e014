//! The third part: the original message or its header, and the boundary around it.

use super::*;

fn returned_part(
    ret: Option<Ret>,
    kind: ReportKind,
    original: &[u8],
) -> (Option<String>, Option<String>) {
    let params = MailParams {
        ret,
        ..MailParams::default()
    };
    let env = envelope(Some("alice@example.com"), params);
    let outcome = match kind {
        ReportKind::Failure => failed("550 5.1.1 unknown"),
        ReportKind::Delay => deferred("451 4.4.1 no answer"),
        ReportKind::Success => delivered(),
    };
    let reports = [(
        rcpt("bob@example.org", Some("SUCCESS,FAILURE,DELAY")),
        outcome,
    )];
    let built = build(
        &env,
        &reports,
        kind,
        original,
        "relay.example.net",
        LIMIT,
        now(),
    );
    let message = text_of(&built.map(|(_, m)| m).unwrap_or_default());
    (
        part_content(&message, "message/rfc822"),
        part_content(&message, "text/rfc822-headers"),
    )
}

#[test]
fn ret_hdrs_returns_only_the_header() {
    let (full, header) = returned_part(Some(Ret::Headers), ReportKind::Failure, ORIGINAL);
    assert_eq!(full, None);
    assert_eq!(header.as_deref(), Some(HEADER));
}

#[test]
fn ret_full_or_absent_returns_the_message() {
    for ret in [Some(Ret::Full), None] {
        let (full, header) = returned_part(ret, ReportKind::Failure, ORIGINAL);
        assert_eq!(
            full.as_deref().map(str::as_bytes),
            Some(ORIGINAL),
            "{ret:?}"
        );
        assert_eq!(header, None);
    }
}

#[test]
fn messages_over_the_limit_return_their_header_whatever_ret_says() {
    let mut big = ORIGINAL.to_vec();
    while big.len() <= LIMIT {
        big.extend_from_slice(&[b'x'; 78]);
        big.extend_from_slice(b"\r\n");
    }
    for ret in [None, Some(Ret::Full)] {
        let (full, header) = returned_part(ret, ReportKind::Failure, &big);
        assert_eq!((full, header.as_deref()), (None, Some(HEADER)), "{ret:?}");
    }
    // Exactly at the limit still comes back whole.
    big.truncate(LIMIT);
    let (full, _) = returned_part(Some(Ret::Full), ReportKind::Failure, &big);
    assert_eq!(full.map(|f| f.len()), Some(LIMIT));
}

#[test]
fn a_header_over_the_limit_is_cut_at_a_whole_field() {
    let mut header = String::new();
    let mut i = 0;
    while header.len() <= LIMIT {
        header += &format!(
            "X-Filler-{i}: {}\r\n\t{}\r\n",
            "a".repeat(60),
            "b".repeat(60)
        );
        i += 1;
    }
    let message = format!("{header}\r\nbody\r\n");
    let (full, returned) = returned_part(Some(Ret::Full), ReportKind::Failure, message.as_bytes());
    assert_eq!(full, None);
    let returned = returned.expect("a header part");
    assert!(returned.len() <= LIMIT, "{}", returned.len());
    assert!(header.starts_with(&returned));
    // Ends after a folded field's last line, not between its two lines.
    assert!(returned.ends_with(&format!("\t{}\r\n", "b".repeat(60))));
    assert!(!returned.contains("body"));
}

#[test]
fn headers_only_never_returns_a_body() {
    let cases: [(&[u8], &[u8]); 7] = [
        // No empty line: the header ends at the first line that is not a field.
        (
            b"Subject: x\r\nthis is body text\r\nmore\r\n",
            b"Subject: x\r\n",
        ),
        // No header at all.
        (b"just a body line\r\n\r\nsecret\r\n", b""),
        (b"Subject: x\r\n\r\nsecret\r\n", b"Subject: x\r\n"),
        // Bare LF line endings end the header too.
        (b"Subject: x\n\nsecret\n", b"Subject: x\n"),
        // A folded field is header; a last line without a line ending is not.
        (b"Subject: a\r\n b\r\nTo: c", b"Subject: a\r\n b\r\n"),
        (b": no name\r\n", b""),
        (b"Bad Name: x\r\n", b""),
    ];
    for (message, header) in cases {
        assert_eq!(
            original::header_block(message, LIMIT),
            header,
            "{}",
            String::from_utf8_lossy(message)
        );
    }
    let (full, header) = returned_part(
        Some(Ret::Headers),
        ReportKind::Failure,
        b"no header here\r\nsecret body\r\n",
    );
    assert_eq!((full, header), (None, None));
}

#[test]
fn delay_and_success_reports_return_the_header() {
    for kind in [ReportKind::Delay, ReportKind::Success] {
        let (full, header) = returned_part(Some(Ret::Full), kind, ORIGINAL);
        assert_eq!((full, header.as_deref()), (None, Some(HEADER)), "{kind:?}");
    }
}

#[test]
fn overlong_lines_are_not_returned() {
    let long = "y".repeat(999);
    let body_line = format!("{HEADER}\r\n{long}\r\n");
    let (full, header) = returned_part(Some(Ret::Full), ReportKind::Failure, body_line.as_bytes());
    assert_eq!((full, header.as_deref()), (None, Some(HEADER)));
    let header_line = format!("X-Long: {long}\r\n\r\nbody\r\n");
    let (full, header) =
        returned_part(Some(Ret::Full), ReportKind::Failure, header_line.as_bytes());
    assert_eq!((full, header), (None, None));
    let fits = format!("X-Long: {}\r\n\r\nbody\r\n", &long[..990]);
    let (full, _) = returned_part(Some(Ret::Full), ReportKind::Failure, fits.as_bytes());
    assert_eq!(full.as_deref(), Some(fits.as_str()));
}

#[test]
fn header_block_edges() {
    assert_eq!(original::header_block(b"\r\nbody\r\n", LIMIT), b"");
    assert_eq!(original::header_block(b"A: b\r\n", LIMIT), b"A: b\r\n");
    assert_eq!(original::header_block(b"A: b\r\n\r\n", LIMIT), b"A: b\r\n");
    assert_eq!(original::header_block(b"", LIMIT), b"");
    assert_eq!(original::header_block(b"A: b\r\nC: d\r\n", 7), b"A: b\r\n");
}

#[test]
fn the_boundary_avoids_the_content() {
    let env = envelope(Some("alice@example.com"), MailParams::default());
    let reports = [(rcpt("bob@example.org", None), failed("550 5.1.1 unknown"))];
    let report = Report::select(
        &env,
        &reports,
        ReportKind::Failure,
        "relay.example.net",
        LIMIT,
        now(),
    );
    let Some(report) = report else {
        panic!("a report is due");
    };
    let first = format!("=_sluice_{FIXED_ID}_0");
    let (_, plain) = report.compose(ORIGINAL, fixed_id());
    assert!(text_of(&plain).contains(&format!("boundary=\"{first}\"")));
    let tricky = format!("Subject: x\r\n\r\n--{first}\r\n--=_sluice_{FIXED_ID}_1--\r\n");
    let (_, message) = report.compose(tricky.as_bytes(), fixed_id());
    let message = text_of(&message);
    assert!(
        message.contains(&format!("boundary=\"=_sluice_{FIXED_ID}_2\"")),
        "{message}"
    );
}
