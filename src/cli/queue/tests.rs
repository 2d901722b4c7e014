//! Tests of the queue tools' parsing and output.

use super::format::{RECIPIENT_INDENT, local_time};
use super::*;
use sluice::smtp::address::{MailParams, Mailbox, Notify, Orcpt, Recipient, Ret};

fn entry(id: &str, sender: Option<Mailbox>, recipients: &[&str]) -> QueueEntry {
    let recipients = recipients
        .iter()
        .map(|r| Recipient {
            address: Mailbox::new(*r, "example.net"),
            notify: None,
            orcpt: None,
        })
        .collect();
    QueueEntry {
        envelope: Envelope {
            id: QueueId::parse(id).unwrap(),
            reverse_path: sender,
            params: MailParams::default(),
            recipients,
            received_at_ms: 1_700_000_000_000,
            client_ip: "192.0.2.7".parse().unwrap(),
            helo: "client.example".into(),
            authenticated_user: None,
            sender_trust: sluice::envelope::SenderTrust::Untrusted,
            attempts: 0,
            last_error: None,
            delay_warned_at_ms: None,
            trace: None,
        },
        size: 1500,
        due_at_ms: 1_700_000_000_000,
        leased: false,
    }
}

#[test]
fn list_is_laid_out_like_postqueue() {
    let mut deferred = entry(
        "01HF0000000000000000000001",
        Some(Mailbox::new("a", "sender.example")),
        &["b", "c"],
    );
    deferred.envelope.attempts = 2;
    deferred.envelope.last_error = Some("451 4.7.1 greylisted,\r\n try later".into());
    let mut active = entry("01HF0000000000000000000002", None, &["d"]);
    active.leased = true;
    active.size = 600;
    let table = list_table(&[deferred, active]);
    let time = local_time(1_700_000_000_000, "%a %b %e %H:%M:%S");
    let indent = " ".repeat(RECIPIENT_INDENT);
    let expected = format!(
        "-Queue ID-                  --Size-- ----Arrival Time----  -Sender/Recipient-------\n\
         01HF0000000000000000000001      1500  {time}  a@sender.example\n\
         (451 4.7.1 greylisted, try later)\n\
         {indent}b@example.net\n\
         {indent}c@example.net\n\
         \n\
         01HF0000000000000000000002*      600  {time}  MAILER-DAEMON\n\
         {indent}d@example.net\n\
         \n\
         -- 3 Kbytes in 2 requests.\n"
    );
    assert_eq!(table, expected);
    assert_eq!(list_table(&[]), "Mail queue is empty\n");
}

#[test]
fn show_prints_the_envelope_then_the_content() {
    let mut e = entry(
        "01HF0000000000000000000003",
        Some(Mailbox::new("a", "s.example")),
        &["b", "c"],
    );
    e.envelope.params.size = Some(42);
    e.envelope.params.ret = Some(Ret::Headers);
    e.envelope.recipients[0].notify = Some(Notify {
        never: false,
        success: true,
        failure: true,
        delay: false,
    });
    e.envelope.recipients[0].orcpt = Some(Orcpt {
        addr_type: "rfc822".into(),
        address: "B@Example.NET".into(),
    });
    e.envelope.attempts = 1;
    e.envelope.last_error = Some("451 later".into());
    e.due_at_ms += 60_000;
    let shown = Shown {
        entry: e,
        message: "Subject: hi\r\n\r\nbody\r\n".into(),
    };
    let text = show_text(&shown, 1_700_000_000_000);
    for line in [
        "Queue ID:       01HF0000000000000000000003\n",
        "Status:         deferred until ",
        "Size:           1500 bytes\n",
        "Client:         client.example [192.0.2.7]\n",
        "Sender:         <a@s.example>\n",
        "Parameters:     SIZE=42 RET=HDRS\n",
        "Recipients:     <b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@Example.NET\n",
        "                <c@example.net>\n",
        "Attempts:       1\n",
        "Last error:     451 later\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    assert!(
        text.ends_with("\n*** MESSAGE CONTENTS ***\nSubject: hi\n\nbody\n"),
        "{text}"
    );
}
