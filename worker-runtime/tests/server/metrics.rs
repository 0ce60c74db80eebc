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
