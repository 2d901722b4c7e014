use super::*;

#[test]
fn the_authserv_id_is_the_first_token() {
    assert_eq!(
        authserv_id(b" mx.example.org; spf=pass").as_deref(),
        Some("mx.example.org")
    );
    assert_eq!(
        authserv_id(b" mx.example.org 1; none").as_deref(),
        Some("mx.example.org")
    );
    assert_eq!(
        authserv_id(b" (forged) relay.test;\r\n\tdkim=pass").as_deref(),
        Some("relay.test")
    );
    assert_eq!(
        authserv_id(b"\"relay.test\"; none").as_deref(),
        Some("relay.test")
    );
    assert_eq!(authserv_id(b" ; none"), None);
    assert_eq!(authserv_id(b" (unclosed comment"), None);
}

#[test]
fn only_results_claiming_our_name_are_forged() {
    let message = b"Authentication-Results: other.example; spf=pass\r\n\
Received: from x\r\n\
authentication-results: RELAY.test;\r\n\tdmarc=pass\r\n\
Authentication-Results: relay.test.evil.example; spf=pass\r\n\
Authentication-Results: (c) relay.test; dkim=pass\r\n\
\r\n\
Authentication-Results: relay.test; in the body\r\n";
    assert_eq!(forged_results(message, "relay.test"), vec![2, 4]);
    assert!(forged_results(message, "absent.example").is_empty());
}
