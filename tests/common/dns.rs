//! A small authoritative DNS server on loopback UDP, answering from an in-test zone, so
//! that delivery tests can point `SystemResolver::with_nameserver` at it: real DNS
//! messages (hickory-proto encoding) with nothing to install.
//!
//! Names not in the zone get NXDOMAIN; a name in the zone without records of the asked
//! type gets an empty NOERROR answer (NODATA); names marked `servfail` get SERVFAIL.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use sluice::delivery::dns::SystemResolver;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The records the server answers from. Names are compared case-insensitively.
#[derive(Default, Clone)]
pub struct Zone {
    records: Vec<Record>,
    servfail: HashSet<String>,
}

impl Zone {
    pub fn mx(mut self, domain: &str, preference: u16, exchange: &str) -> Self {
        let rdata = RData::MX(MX::new(preference, name(exchange)));
        self.records
            .push(Record::from_rdata(name(domain), 60, rdata));
        self
    }

    /// An A or AAAA record, by the address family.
    pub fn addr(mut self, host: &str, ip: &str) -> Self {
        let rdata = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => RData::A(A(v4)),
            Ok(IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
            Err(e) => panic!("bad address {ip} in test zone: {e}"),
        };
        self.records.push(Record::from_rdata(name(host), 60, rdata));
        self
    }

    /// A TXT record: makes the name exist without giving it an MX or an address. Text
    /// longer than a DNS character-string (255 octets, a DKIM RSA key is longer) is split
    /// into several strings, as zone files do; readers join them.
    pub fn txt(self, host: &str, text: &str) -> Self {
        self.txt_ttl(host, text, 60)
    }

    /// [`Zone::txt`] with a chosen TTL.
    pub fn txt_ttl(mut self, host: &str, text: &str, ttl: u32) -> Self {
        let strings = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let rdata = RData::TXT(TXT::new(strings));
        self.records
            .push(Record::from_rdata(name(host), ttl, rdata));
        self
    }

    /// An A or AAAA record with a chosen TTL (DNSBL answers, whose caching is tested).
    pub fn addr_ttl(mut self, host: &str, ip: &str, ttl: u32) -> Self {
        self = self.addr(host, ip);
        if let Some(last) = self.records.last_mut() {
            last.ttl = ttl;
        }
        self
    }

    pub fn servfail(mut self, host: &str) -> Self {
        self.servfail.insert(key(&name(host)));
        self
    }

    fn answer(&self, query: &Message) -> Message {
        let mut response = Message::response(query.metadata.id, query.metadata.op_code);
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.authoritative = true;
        let Some(question) = query.queries.first() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        response.add_query(question.clone());
        let asked = key(question.name());
        if self.servfail.contains(&asked) {
            response.metadata.response_code = ResponseCode::ServFail;
            return response;
        }
        let same_name: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| key(&r.name) == asked)
            .collect();
        if same_name.is_empty() {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
        let wanted = question.query_type();
        for record in same_name {
            if record.record_type() == wanted || wanted == RecordType::ANY {
                response.add_answer(record.clone());
            }
        }
        response
    }
}

fn name(text: &str) -> Name {
    let mut parsed = Name::from_utf8(text).unwrap_or_else(|e| panic!("bad name {text}: {e}"));
    parsed.set_fqdn(true);
    parsed
}

fn key(name: &Name) -> String {
    name.to_ascii().to_ascii_lowercase()
}

/// The server task; stopped when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Binds a free UDP port on 127.0.0.1 and answers from `zone`.
    pub async fn start(zone: Zone) -> DnsServer {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind DNS socket");
        let addr = socket.local_addr().expect("DNS socket address");
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if query.metadata.message_type != MessageType::Query {
                    continue;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                if let Ok(bytes) = zone.answer(&query).to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            queries,
            task,
        }
    }

    /// A resolver that asks only this server.
    pub fn resolver(&self) -> SystemResolver {
        SystemResolver::with_nameserver(self.addr).expect("resolver for the test DNS server")
    }

    /// How many queries the server has answered.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
