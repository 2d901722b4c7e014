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
    let built = build(&env, &reports, kind, original, "relay.example.net", now());
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
fn large_messages_return_their_header_unless_ret_full() {
    let mut big = ORIGINAL.to_vec();
    while big.len() <= FULL_RETURN_LIMIT {
        big.extend_from_slice(&[b'x'; 78]);
        big.extend_from_slice(b"\r\n");
    }
    let (full, header) = returned_part(None, ReportKind::Failure, &big);
    assert_eq!((full, header.as_deref()), (None, Some(HEADER)));
    let (full, header) = returned_part(Some(Ret::Full), ReportKind::Failure, &big);
    assert_eq!(full.map(|f| f.len()), Some(big.len()));
    assert_eq!(header, None);
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
    assert_eq!(original::header_block(b"\r\nbody\r\n"), b"");
    assert_eq!(original::header_block(b"A: b\r\n"), b"A: b\r\n");
    assert_eq!(original::header_block(b"A: b\r\n\r\n"), b"A: b\r\n");
    assert_eq!(original::header_block(b""), b"");
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
