//! One complete notification compared octet for octet: the header block, the fields
//! and their order, the part structure.

use super::*;

#[test]
fn a_complete_failure_notification() {
    let params = MailParams {
        envid: Some("ENV-42".into()),
        ret: Some(Ret::Headers),
        ..MailParams::default()
    };
    let env = envelope(Some("alice@example.com"), params);
    let mut bob = rcpt("bob@example.org", Some("FAILURE"));
    bob.orcpt = Some(Orcpt {
        addr_type: "rfc822".into(),
        address: "bob@example.org".into(),
    });
    let reports = [
        (
            bob,
            failed("550 5.1.1 <bob@example.org>: Recipient address rejected"),
        ),
        (
            rcpt("carol@example.org", None),
            deferred("connection timed out"),
        ),
    ];
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
    let (_, message) = report.compose(ORIGINAL, fixed_id());
    let b = format!("=_sluice_{FIXED_ID}_0");
    let want = format!(
        "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>\r\n\
To: <alice@example.com>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n\
Message-ID: <{FIXED_ID}.dsn@relay.example.net>\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"{b}\"\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--{b}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Description: Notification\r\n\
\r\n\
This is the mail system at relay.example.net.\r\n\
\r\n\
Your message could not be delivered to the recipients below. The mail\r\n\
system has given up on them: it will not try again.\r\n\
\r\n\
<bob@example.org>: host mx.example.org said:\r\n\
\x20   550 5.1.1 <bob@example.org>: Recipient address rejected\r\n\
\r\n\
<carol@example.org>:\r\n\
\x20   connection timed out\r\n\
\r\n\
Your message has queue ID {FIXED_ID} and arrived on Tue, 14 Nov 2023 22:13:20 +0000.\r\n\
\r\n\
--{b}\r\n\
Content-Type: message/delivery-status\r\n\
Content-Description: Delivery report\r\n\
\r\n\
Reporting-MTA: dns; relay.example.net\r\n\
X-Sluice-Queue-ID: {FIXED_ID}\r\n\
Original-Envelope-Id: ENV-42\r\n\
Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
\r\n\
Original-Recipient: rfc822; bob@example.org\r\n\
Final-Recipient: rfc822; bob@example.org\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mx.example.org\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected\r\n\
Last-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n\
\r\n\
Final-Recipient: rfc822; carol@example.org\r\n\
Action: failed\r\n\
Status: 4.4.7\r\n\
Diagnostic-Code: X-Sluice; connection timed out\r\n\
Last-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n\
\r\n\
--{b}\r\n\
Content-Type: text/rfc822-headers\r\n\
Content-Description: Header of the message\r\n\
\r\n\
{HEADER}\
\r\n\
--{b}--\r\n"
    );
    let got = text_of(&message);
    for (i, (g, w)) in got.split("\r\n").zip(want.split("\r\n")).enumerate() {
        assert_eq!(g, w, "line {i}");
    }
    assert_eq!(got, want);
}
