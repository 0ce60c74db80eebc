//! The bounded queue: jobs run one at a time, a few wait, the rest are refused at once; nothing hangs.

use std::time::Duration;

use worker_runtime::ServeArgs;

use crate::common::{SseReader, TestServer, sample, scrape};

#[tokio::test]
async fn sixteen_clients_each_get_a_whole_answer_or_a_503() {
    let args = ServeArgs {
        concurrency: 1,
        max_waiting: 4,
        ..ServeArgs::default()
    };
    let server = TestServer::start(args, Duration::ZERO).await;
    server.wait_ready().await;
    let url = server.url("/v1/count");
    let clients = (0..16).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .body(r#"{"steps": 4, "step_ms": 20}"#)
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                200 => Ok(SseReader::new(response).rest().await),
                503 => {
                    assert!(
                        response.headers().contains_key("retry-after"),
                        "a 503 says when to retry"
                    );
                    let body: serde_json::Value = response.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "queue_full");
                    Err(())
                }
                other => panic!("unexpected status {other}"),
            }
        })
    });
    let answers = tokio::time::timeout(Duration::from_secs(20), futures_util::future::join_all(clients))
        .await
        .expect("no client hangs");
    let mut served = 0;
    for answer in answers {
        if let Ok(events) = answer.unwrap() {
            served += 1;
            let outputs: Vec<u64> = events
                .iter()
                .filter(|event| event.event == "output")
                .map(|event| event.data["output"]["value"].as_u64().unwrap())
                .collect();
            assert_eq!(
                outputs,
                [0, 1, 2, 3],
                "a served client gets every output in order"
            );
            let end = events.last().unwrap();
            assert_eq!(end.event, "end");
            assert_eq!(end.data["stop_reason"], "complete");
            assert_eq!(end.data["counts"]["output"], 4);
        }
    }
    // One running plus four waiting are admitted at least; the rest may be refused.
    assert!((5..=16).contains(&served), "{served} served");
    let samples = scrape(&server, &reqwest::Client::new()).await;
    assert_eq!(sample(&samples, "worker_queue_depth", &[]), Some(0.0));
    assert_eq!(sample(&samples, "worker_jobs_running", &[]), Some(0.0));
    assert_eq!(
        sample(&samples, "worker_jobs_total", &[("outcome", "complete")]),
        Some(served as f64)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn with_concurrency_two_two_jobs_run_at_once() {
    let args = ServeArgs {
        concurrency: 2,
        max_waiting: 0,
        ..ServeArgs::default()
    };
    let server = TestServer::start(args, Duration::ZERO).await;
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let first = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 50, "step_ms": 20}"#)
        .send()
        .await
        .unwrap();
    let second = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 50, "step_ms": 20}"#)
        .send()
        .await
        .unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let (mut first, mut second) = (SseReader::new(first), SseReader::new(second));
    // Both start without waiting for the other.
    assert_eq!(first.next().await.unwrap().event, "started");
    assert_eq!(second.next().await.unwrap().event, "started");
    let third = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        third.status(),
        503,
        "no waiting room: the third is refused at once"
    );
    drop((first, second));
    server.stop().await.unwrap();
}
