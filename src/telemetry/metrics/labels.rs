//! The values of every metric label that the code fixes, one enum per label. The README's
//! metrics table documents them; a test checks that it names each.

use super::family::label_values;

label_values! {
    /// The kind of listener that accepted a connection.
    pub enum ListenerLabel as "listener" {
        Relay = "relay",
        Submission = "submission",
        Submissions = "submissions",
    }
}

label_values! {
    /// Why a connection was refused before its session began.
    pub enum ConnectionRefusal as "reason" {
        MaxConnections = "max_connections",
        MaxPerIp = "max_per_ip",
        MaxPerIpv6Prefix = "max_per_ipv6_prefix",
        QueueUnavailable = "queue_unavailable",
        ProxyUntrusted = "proxy_untrusted",
        ProxyHeaderInvalid = "proxy_header_invalid",
        ProxyHeaderTimeout = "proxy_header_timeout",
        ProxyHeaderIncomplete = "proxy_header_incomplete",
    }
}

label_values! {
    /// The verb of a command line; `invalid` when it names none of ours.
    pub enum Verb as "verb" {
        Ehlo = "EHLO",
        Helo = "HELO",
        Mail = "MAIL",
        Rcpt = "RCPT",
        Data = "DATA",
        Bdat = "BDAT",
        Rset = "RSET",
        Noop = "NOOP",
        Quit = "QUIT",
        Vrfy = "VRFY",
        Help = "HELP",
        Starttls = "STARTTLS",
        Auth = "AUTH",
        Invalid = "invalid",
    }
}

impl Verb {
    /// The verb of `line`, in any case.
    pub fn of(line: &[u8]) -> Verb {
        use super::Label;
        let verb = line.split(|b| *b == b' ').next().unwrap_or_default();
        Verb::ALL
            .iter()
            .copied()
            .filter(|v| *v != Verb::Invalid)
            .find(|v| verb.eq_ignore_ascii_case(v.as_str().as_bytes()))
            .unwrap_or(Verb::Invalid)
    }
}

label_values! {
    /// The result of an AUTH.
    pub enum AuthResult as "result" {
        Success = "success",
        Failure = "failure",
        LockedOut = "locked_out",
        Busy = "busy",
    }
}

label_values! {
    /// What a lockout of AUTH covers.
    pub enum LockoutScope as "scope" {
        Ip = "ip",
        User = "user",
    }
}

label_values! {
    /// Whether a policy reload was applied.
    pub enum ReloadResult as "result" {
        Applied = "applied",
        Invalid = "invalid",
    }
}

label_values! {
    /// The kind of a filter check.
    pub enum FilterCheck as "check" {
        Attachments = "attachments",
        Rspamd = "rspamd",
        Clamav = "clamav",
        SenderAuth = "sender-auth",
    }
}

label_values! {
    /// A filter check's result.
    pub enum FilterResult as "result" {
        Accept = "accept",
        Reject = "reject",
        Tempfail = "tempfail",
        Rewrite = "rewrite",
        Strip = "strip",
        Quarantine = "quarantine",
        Exempt = "exempt",
        Error = "error",
        Tag = "tag",
    }
}

label_values! {
    /// A block list's answer about a client.
    pub enum DnsblResult as "result" {
        Listed = "listed",
        Clear = "clear",
        Error = "error",
    }
}

label_values! {
    /// The DKIM signing of a message of our senders.
    pub enum SigningResult as "result" {
        Signed = "signed",
        Unsigned = "unsigned",
        Error = "error",
    }
}

label_values! {
    /// The kind of route a delivery took.
    pub enum RouteLabel as "route" {
        Mx = "mx",
        Smarthost = "smarthost",
        Lmtp = "lmtp",
        Maildir = "maildir",
        Webhook = "webhook",
    }
}

label_values! {
    /// What a delivery attempt did for its recipient.
    pub enum DeliveryStatus as "status" {
        Sent = "sent",
        Deferred = "deferred",
        Bounced = "bounced",
    }
}

label_values! {
    /// The class of a delivery attempt's reply; `other` when there was no SMTP reply.
    pub enum ReplyClass as "class" {
        Success = "2xx",
        Transient = "4xx",
        Permanent = "5xx",
        Other = "other",
    }
}

label_values! {
    /// Why a delivery event was dropped.
    pub enum EventLoss as "reason" {
        BacklogFull = "backlog_full",
        PublishFailed = "publish_failed",
        Closed = "closed",
    }
}

label_values! {
    /// Why a JetStream message was terminated undelivered.
    pub enum InvalidMessage as "reason" {
        Undecodable = "undecodable",
        Invalid = "invalid",
    }
}

label_values! {
    /// Why an admin request was refused.
    pub enum AdminRefusal as "reason" {
        Host = "host",
        Token = "token",
        Disabled = "disabled",
    }
}

label_values! {
    /// The refusal of a message, a sender or a recipient.
    pub enum RejectReason as "reason" {
        RelayDenied = "relay_denied",
        RoutingDenied = "routing_denied",
        AddressLiteralDenied = "address_literal_denied",
        UnknownRecipient = "unknown_recipient",
        SenderNotOwned = "sender_not_owned",
        TooManyHops = "too_many_hops",
        MessageTooBig = "message_too_big",
        LineTooLong = "line_too_long",
        BareLineEnding = "bare_line_ending",
        QueueError = "queue_error",
        InsufficientStorage = "insufficient_storage",
        Dnsbl = "dnsbl",
        DnsblUnavailable = "dnsbl_unavailable",
        Filter = "filter",
    }
}

label_values! {
    /// How a reconcile of a RelayPolicy ended.
    pub enum ReconcileResult as "result" {
        Ok = "ok",
        Error = "error",
        SkippedFollower = "skipped_follower",
    }
}

label_values! {
    /// What failed in a failed reconcile.
    pub enum ReconcileFailure as "reason" {
        ReadSnapshot = "read_snapshot",
        WriteSnapshot = "write_snapshot",
        PatchStatus = "patch_status",
        Compile = "compile",
    }
}

label_values! {
    /// A RelayPolicy's verdict at the last compile.
    pub enum PolicyVerdict as "verdict" {
        Accepted = "accepted",
        Refused = "refused",
    }
}
