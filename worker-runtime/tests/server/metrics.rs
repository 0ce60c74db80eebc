//! `/metrics` is Prometheus text that a parser reads, and its numbers follow what happened.

use std::time::Duration;

use worker_runtime::ServeArgs;

use crate::common::{SseReader, TestServer, sample, scrape};

#[tokio::test]
async fn metrics_parse_and_count_requests_jobs_and_outputs() {
    let server = TestServer::start(ServeArgs::default(), Duration::from_millis(50)).await;
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 3, "step_ms": 5}"#)
        .send()
        .await
        .unwrap();
    let events = SseReader::new(response).rest().await;
    let metrics = events
        .iter()
        .find(|event| event.event == "metrics")
        .expect("a metrics event");
    assert_eq!(metrics.data["outputs"], 3);
    assert!(metrics.data["time_to_first_output_ms"].as_f64().unwrap() >= 5.0);
    assert!(metrics.data["outputs_per_second"].as_f64().unwrap() > 0.0);
    client.get(server.url("/nowhere")).send().await.unwrap();

    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let samples = scrape(&server, &client).await;
    let requests = |route: &str, status: &str| {
        sample(
            &samples,
            "worker_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("/v1/count", "200"), Some(1.0));
    assert_eq!(requests("unmatched", "404"), Some(1.0));
    assert_eq!(sample(&samples, "worker_outputs_total", &[]), Some(3.0));
    assert_eq!(sample(&samples, "worker_queue_depth", &[]), Some(0.0));
    assert_eq!(sample(&samples, "worker_jobs_running", &[]), Some(0.0));
    assert_eq!(sample(&samples, "worker_ready", &[]), Some(1.0));
    assert_eq!(sample(&samples, "worker_model_memory_bytes", &[]), Some(1234.0));
    assert!(sample(&samples, "worker_model_load_seconds", &[]).unwrap() >= 0.05);
    // Histograms: one first output, two gaps between outputs.
    assert_eq!(
        sample(&samples, "worker_time_to_first_output_seconds", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "worker_time_between_outputs_seconds", &[]),
        Some(2.0)
    );
    server.stop().await.unwrap();
}

/// Reads an exposition from stdin with prometheus_client's strict OpenMetrics parser; prints the samples.
const STRICT_PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = [
    {"family": f.name, "type": f.type, "name": s.name, "labels": s.labels, "value": s.value}
    for f in text_string_to_metric_families(sys.stdin.read())
    for s in f.samples
]
print(json.dumps(samples))
"#;

#[tokio::test]
async fn metrics_pass_prometheus_clients_strict_openmetrics_parser() {
    let server = TestServer::start(ServeArgs::default(), Duration::ZERO).await;
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 2}"#)
        .send()
        .await
        .unwrap();
    SseReader::new(response).rest().await;
    let exposition = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let mut child = std::process::Command::new(crate::common::python())
        .args(["-c", STRICT_PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the parser refused the exposition:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let find = |name: &str| {
        samples
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(find("worker_outputs_total")["type"], "counter");
    assert_eq!(find("worker_outputs_total")["value"], 2.0);
    assert_eq!(find("worker_queue_depth")["type"], "gauge");
    assert_eq!(
        find("worker_time_to_first_output_seconds_count")["type"],
        "histogram"
    );
    assert_eq!(find("worker_time_to_first_output_seconds_count")["value"], 1.0);
    let requests = samples
        .iter()
        .find(|s| s["name"] == "worker_http_requests_total" && s["labels"]["route"] == "/v1/count")
        .expect("the request counter has the route");
    assert_eq!(requests["labels"]["status"], "200");
    assert_eq!(requests["value"], 1.0);
    server.stop().await.unwrap();
}
