//! Traces: the real service exports OTLP to a receiver of the test's own, which decodes every
//! span. A sampled frame is one trace, decode -> batch -> inference -> tracking -> event ->
//! publish, across the decode thread, the device thread, a connector actor and the publisher
//! task; spans name the camera by id and never carry its URL or password. Latency observations
//! of traced frames carry the trace id as an exemplar.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::otlp::{ReceivedSpan, Receiver};
use common::{Service, TestEnv};
use serde_json::json;

const PASSWORD: &str = "Trace-Leak-4412";
const QUERY_SECRET: &str = "Query-Leak-8830";

/// The chain of span names from `span` up to its root.
fn ancestry<'a>(span: &'a ReceivedSpan, by_id: &HashMap<&str, &'a ReceivedSpan>) -> Vec<&'a str> {
    let mut names = vec![span.name.as_str()];
    let mut current = span;
    while !current.parent_span_id.is_empty() {
        let parent = by_id
            .get(current.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("{}'s parent {} was not exported", current.name, current.parent_span_id));
        assert_eq!(parent.trace_id, current.trace_id, "a parent in another trace");
        names.push(parent.name.as_str());
        current = parent;
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sampled_frame_is_one_trace_from_decode_to_publish() {
    let receiver = Receiver::start();
    // base64("admin:Trace-Leak-4412")
    let basic = "YWRtaW46VHJhY2UtTGVhay00NDEy".to_string();
    let clip = std::fs::read(common::clip("overpass_video03.avi")).unwrap();
    let (port, _served) = common::camera_with_password(clip, basic).await;
    let env = TestEnv::new().await;
    let endpoint = receiver.endpoint();
    let svc = Service::start_with(
        &env,
        &[("ITS__TRACING__OTLP_ENDPOINT", endpoint.as_str()), ("ITS__TRACING__SAMPLING_RATIO", "0.1")],
    )
    .await;
    let client = common::client();
    let body = json!({
        "id": "traced-cam",
        "url": format!("http://admin:{PASSWORD}@127.0.0.1:{port}/cam.avi?token={QUERY_SECRET}"),
        "fps": 10,
        "geometry": common::overpass_geometry(),
    });
    let r = client.post(svc.url("/api/v1/cameras")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Batches leave every 5 s; wait for a traced event's publish span.
    common::eventually("a traced event to be published", Duration::from_secs(120), || async {
        receiver.spans().iter().any(|s| s.name == "publish").then_some(())
    })
    .await;
    let metrics = client.get(svc.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let (status, log) = svc.terminate();
    assert!(status.success(), "{log}");

    // Everything queued was exported at exit; every span's parent was exported too.
    let spans = receiver.spans();
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    let by_id: HashMap<&str, &ReceivedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut chains: HashMap<&str, usize> = HashMap::new();
    for span in &spans {
        let chain = ancestry(span, &by_id);
        let expected: &[&str] = match span.name.as_str() {
            "frame" => &["frame"],
            "decode" => &["decode", "frame"],
            "batch" => &["batch", "frame"],
            "inference" => &["inference", "batch", "frame"],
            "tracking" => &["tracking", "frame"],
            "event" => &["event", "tracking", "frame"],
            "publish" => &["publish", "event", "tracking", "frame"],
            other => panic!("unexpected span {other:?} in {chain:?}"),
        };
        assert_eq!(chain, expected);
        *chains.entry(span.name.as_str()).or_default() += 1;
    }
    for name in ["frame", "decode", "batch", "inference", "tracking", "event", "publish"] {
        assert!(chains.get(name).copied().unwrap_or(0) > 0, "no {name} span: {chains:?}");
    }
    // One frame, one trace: each root's trace holds its own stages only.
    let roots: Vec<_> = spans.iter().filter(|s| s.name == "frame").collect();
    let traces: std::collections::HashSet<_> = roots.iter().map(|s| &s.trace_id).collect();
    assert_eq!(traces.len(), roots.len(), "two frames in one trace");
    for root in &roots {
        assert_eq!(root.attributes.get("camera_id").map(String::as_str), Some("traced-cam"), "{root:?}");
        assert!(root.attributes.contains_key("frame_seq"), "{root:?}");
        assert_eq!(root.resource.get("service.name").map(String::as_str), Some("its-analytics"));
    }
    // About a tenth of the frames were traced: frame numbers run without gaps, traced or not.
    let seqs: Vec<u64> = roots.iter().map(|r| r.attributes["frame_seq"].parse().unwrap()).collect();
    let span = seqs.iter().max().unwrap() - seqs.iter().min().unwrap() + 1;
    let share = roots.len() as f64 / span as f64;
    assert!(span >= 100 && (0.04..0.2).contains(&share), "{} of {span} frames traced", roots.len());

    // The latency histogram points at traces that exist.
    let exemplar = metrics
        .lines()
        .filter(|l| l.starts_with("analytics_latency_seconds_bucket"))
        .find_map(|l| l.split("trace_id=\"").nth(1).and_then(|rest| rest.split('"').next()))
        .unwrap_or_else(|| panic!("no exemplar on analytics_latency_seconds:\n{metrics}"));
    assert!(spans.iter().any(|s| s.trace_id == exemplar), "exemplar {exemplar} names no exported trace");

    // No credential in any span, attribute or raw export body.
    for span in &spans {
        for text in span.strings() {
            for secret in [PASSWORD, QUERY_SECRET, "admin:"] {
                assert!(!text.contains(secret), "credential in {span:?}");
            }
        }
    }
    for body in receiver.bodies() {
        for secret in [PASSWORD, QUERY_SECRET] {
            assert!(!common::otlp::contains(&body, secret.as_bytes()), "credential in an export body");
        }
    }
    assert!(!log.contains(PASSWORD) && !log.contains(QUERY_SECRET));
}

#[tokio::test]
async fn bad_tracing_settings_are_refused_together() {
    let out = std::process::Command::new(common::binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("serve")
        .env("ITS__TRACING__OTLP_ENDPOINT", "ftp://user:pw@collector:4318")
        .env("ITS__TRACING__SAMPLING_RATIO", "1.5")
        .env("ITS__TRACING__PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["tracing.otlp_endpoint", "tracing.sampling_ratio", "tracing.protocol"] {
        assert!(stderr.contains(needle), "{needle} missing in: {stderr}");
    }
    assert!(!stderr.contains("pw@"), "{stderr}");
}
