//! A client that goes away cancels its job: the backend stops within a step and the next job runs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use worker_runtime::ServeArgs;

use crate::common::{SseReader, TestServer, sample, scrape};

#[tokio::test]
async fn a_disconnecting_client_frees_the_worker() {
    let server = TestServer::start(ServeArgs::default(), Duration::ZERO).await;
    server.wait_ready().await;
    let leaver = reqwest::Client::new();
    let response = leaver
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 10000, "step_ms": 10}"#)
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    let mut outputs = 0;
    while outputs < 3 {
        if events.next().await.unwrap().event == "output" {
            outputs += 1;
        }
    }
    drop(events);
    drop(leaver);

    // The job stops: the step counter settles within a few steps of the disconnect.
    let mut settled = None;
    for _ in 0..100 {
        let before = server.steps_run.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if server.steps_run.load(Ordering::SeqCst) == before {
            settled = Some(before);
            break;
        }
    }
    let settled = settled.expect("the cancelled job stops");
    assert!(settled < 100, "the job ran {settled} steps after its client left");

    // The next job gets the worker at once and runs to its end.
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = tokio::time::timeout(Duration::from_secs(5), SseReader::new(response).rest())
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().data["stop_reason"], "complete");

    let samples = scrape(&server, &client).await;
    assert_eq!(
        sample(&samples, "worker_jobs_total", &[("outcome", "cancelled")]),
        Some(1.0)
    );
    assert_eq!(sample(&samples, "worker_jobs_running", &[]), Some(0.0));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_while_waiting_leaves_the_queue() {
    let args = ServeArgs {
        concurrency: 1,
        max_waiting: 1,
        ..ServeArgs::default()
    };
    let server = TestServer::start(args, Duration::ZERO).await;
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let running = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 30, "step_ms": 20}"#)
        .send()
        .await
        .unwrap();
    let mut running = SseReader::new(running);
    assert_eq!(running.next().await.unwrap().event, "started");
    // A non-streaming request waits in the queue; its client gives up after a moment.
    let waiter = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let gave_up = waiter
        .post(server.url("/v1/count/whole"))
        .body(r#"{"steps": 1}"#)
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    drop(waiter);
    // Its place is free again: another job is admitted to wait (it would be refused if the line were full).
    let mut queued = None;
    for _ in 0..50 {
        let samples = scrape(&server, &client).await;
        if sample(&samples, "worker_queue_depth", &[]) == Some(0.0) {
            let response = client
                .post(server.url("/v1/count/whole"))
                .body(r#"{"steps": 1}"#)
                .send()
                .await
                .unwrap();
            queued = Some(response.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(queued.map(|status| status.as_u16()), Some(200));
    drop(running);
    server.stop().await.unwrap();
}
