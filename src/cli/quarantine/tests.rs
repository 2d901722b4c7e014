//! Tests of the quarantine tools' output.

use super::*;
use crate::cli::queue::format::{RECIPIENT_INDENT, local_time};
use sluice::envelope::{Envelope, SenderTrust};
use sluice::smtp::address::{MailParams, Mailbox, Recipient};

fn held(id: &str, recipients: &[&str]) -> HeldMessage {
    HeldMessage {
        envelope: Envelope {
            id: QueueId::parse(id).unwrap(),
            reverse_path: Some(Mailbox::new("a", "sender.example")),
            params: MailParams::default(),
            recipients: recipients
                .iter()
                .map(|r| Recipient {
                    address: Mailbox::new(*r, "example.net"),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            received_at_ms: 1_700_000_000_000,
            client_ip: "192.0.2.7".parse().unwrap(),
            helo: "client.example".into(),
            authenticated_user: None,
            sender_trust: SenderTrust::Untrusted,
            attempts: 0,
            last_error: None,
            delay_warned_at_ms: None,
            trace: None,
        },
        reason: "attachment: invoice.pdf.exe (executable)".into(),
        held_at_ms: 1_700_000_060_000,
        size: 2048,
    }
}

#[test]
fn list_is_laid_out_like_the_queue_list() {
    let table = list_table(&[held("01HF0000000000000000000001", &["b", "c"])]);
    let time = local_time(1_700_000_060_000, "%a %b %e %H:%M:%S");
    let indent = " ".repeat(RECIPIENT_INDENT);
    let expected = format!(
        "-Queue ID-                  --Size-- ------Held Time-----  -Sender/Recipient-------\n\
         01HF0000000000000000000001      2048  {time}  a@sender.example\n\
         (attachment: invoice.pdf.exe (executable))\n\
         {indent}b@example.net\n\
         {indent}c@example.net\n\
         \n\
         -- 2 Kbytes in 1 held message.\n"
    );
    assert_eq!(table, expected);
    assert_eq!(list_table(&[]), "Quarantine is empty\n");
}

#[test]
fn show_prints_the_record_then_the_original() {
    let shown = Shown {
        held: held("01HF0000000000000000000002", &["b"]),
        message: "Subject: hi\r\n\r\nbody\r\n".into(),
    };
    let text = show_text(&shown);
    for line in [
        "Queue ID:       01HF0000000000000000000002\n",
        "Reason:         attachment: invoice.pdf.exe (executable)\n",
        "Size:           2048 bytes\n",
        "Sender:         <a@sender.example>\n",
        "Recipients:     <b@example.net>\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    assert!(text.ends_with("\n*** MESSAGE CONTENTS ***\nSubject: hi\n\nbody\n"));
}
