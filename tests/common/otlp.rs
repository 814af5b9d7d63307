//! In-test OTLP/HTTP receiver: actix-web on its own thread and System, POST /v1/traces with
//! `application/x-protobuf`, decoded with prost via opentelemetry-proto.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use prost::Message as _;

#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    pub event_names: Vec<String>,
    pub event_attributes: Vec<BTreeMap<String, String>>,
    pub resource: BTreeMap<String, String>,
}

impl ReceivedSpan {
    /// Every string the span carries (names, keys, values), for leak scans.
    pub fn strings(&self) -> Vec<String> {
        let mut out = vec![self.name.clone()];
        for map in
            std::iter::once(&self.attributes).chain(self.event_attributes.iter()).chain(std::iter::once(&self.resource))
        {
            for (k, v) in map {
                out.push(k.clone());
                out.push(v.clone());
            }
        }
        out.extend(self.event_names.iter().cloned());
        out
    }
}

#[derive(Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    /// Raw request bodies, as received.
    bodies: Vec<Vec<u8>>,
    rejected: Vec<String>,
}

pub struct Receiver {
    pub port: u16,
    store: Arc<Mutex<Store>>,
    server: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Self {
        let store = Arc::new(Mutex::new(Store::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = store.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let data = web::Data::new(shared);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                            .route("/v1/traces", web::post().to(traces))
                    })
                    .workers(1)
                    .disable_signals()
                    .bind(("127.0.0.1", 0))
                    .expect("bind");
                    let port = server.addrs()[0].port();
                    let server = server.run();
                    tx.send((port, server.handle())).unwrap();
                    server.await.unwrap();
                })
            })
            .unwrap();
        let (port, server) = rx.recv().unwrap();
        Self { port, store, server, thread: Some(thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().unwrap().spans.clone()
    }

    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.store.lock().unwrap().bodies.clone()
    }

    pub fn rejected(&self) -> Vec<String> {
        self.store.lock().unwrap().rejected.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // stop() completes on the server's own System; block on it with a tiny executor.
        let stop = self.server.stop(false);
        std::thread::spawn(move || actix_web::rt::System::new().block_on(stop)).join().ok();
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

async fn traces(req: HttpRequest, body: web::Bytes, store: web::Data<Arc<Mutex<Store>>>) -> HttpResponse {
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type != "application/x-protobuf" {
        store.lock().unwrap().rejected.push(format!("content-type {content_type:?}"));
        return HttpResponse::UnsupportedMediaType().finish();
    }
    let request = match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            store.lock().unwrap().rejected.push(format!("decode: {e}"));
            return HttpResponse::BadRequest().finish();
        }
    };
    let mut spans = Vec::new();
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().map(|r| attributes(&r.attributes)).unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                spans.push(ReceivedSpan {
                    name: s.name.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: attributes(&s.attributes),
                    event_names: s.events.iter().map(|e| e.name.clone()).collect(),
                    event_attributes: s.events.iter().map(|e| attributes(&e.attributes)).collect(),
                    resource: resource.clone(),
                });
            }
        }
    }
    {
        let mut s = store.lock().unwrap();
        s.bodies.push(body.to_vec());
        s.spans.extend(spans);
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(any_to_string).unwrap_or_default())).collect()
}

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => a.values.iter().map(any_to_string).collect::<Vec<_>>().join(","),
        Some(Value::KvlistValue(l)) => format!("{:?}", attributes(&l.values)),
        Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
