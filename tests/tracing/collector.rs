//! A minimal OTLP/HTTP trace receiver on loopback: `POST /v1/traces` with an
//! `application/x-protobuf` body, decoded with the official protobuf types of
//! `opentelemetry-proto`, answered `200` with an empty `ExportTraceServiceResponse`.
//! Keep-alive connections are served request after request, as the exporter's pooled
//! client sends them; sizes are bounded.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const MAX_HEADER_LINES: usize = 100;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One exported span with the service that sent it.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// An attribute as text (strings as they are, numbers and booleans formatted).
    pub fn attribute(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        kv.value.as_ref().map(text)
    }

    /// Every attribute value of the span and its events, as text.
    pub fn all_values(&self) -> Vec<String> {
        let events = self.span.events.iter().flat_map(|e| e.attributes.iter());
        let all: Vec<&KeyValue> = self.span.attributes.iter().chain(events).collect();
        all.iter()
            .filter_map(|kv| kv.value.as_ref().map(text))
            .chain(self.span.events.iter().map(|e| e.name.clone()))
            .collect()
    }
}

pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    /// Requests of any kind, including ones that were not a valid export.
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (store, log) = (spans.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, store.clone(), log.clone()));
            }
        });
        Collector {
            addr,
            spans,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, the value of `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// The request lines seen (`POST /v1/traces application/x-protobuf`, or what was
    /// wrong with them).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, spans: Arc<Mutex<Vec<Received>>>, log: Arc<Mutex<Vec<String>>>) {
    let mut io = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match io.read_line(&mut request_line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut length = 0usize;
        let mut content_type = String::new();
        for _ in 0..MAX_HEADER_LINES {
            let mut line = String::new();
            if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        if length > MAX_BODY {
            return;
        }
        let mut body = vec![0; length];
        if io.read_exact(&mut body).await.is_err() {
            return;
        }
        let summary = format!("{} {content_type}", request_line.trim_end());
        log.lock().unwrap().push(summary);
        let ok = request_line.starts_with("POST /v1/traces ")
            && content_type == "application/x-protobuf";
        let decoded = ok
            .then(|| ExportTraceServiceRequest::decode(body.as_slice()).ok())
            .flatten();
        let status = match decoded {
            Some(request) => {
                spans.lock().unwrap().extend(flatten(request));
                "200 OK"
            }
            None => "400 Bad Request",
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if io.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref().map(text))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    out
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
