//! Graceful shutdown: no new jobs, the running one finishes within the grace or is cancelled, exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use worker_runtime::ServeArgs;

use crate::common::{SseReader, TestServer};

#[tokio::test]
async fn a_job_that_fits_in_the_grace_finishes() {
    let server = TestServer::start(
        ServeArgs {
            shutdown_grace_secs: 10,
            ..ServeArgs::default()
        },
        Duration::ZERO,
    )
    .await;
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 10, "step_ms": 30}"#)
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    while events.next().await.unwrap().event != "output" {}
    server.signal();
    let rest = events.rest().await;
    let end = rest.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["stop_reason"], "complete");
    assert_eq!(rest.iter().filter(|event| event.event == "output").count(), 9);
    server.join().await.unwrap();
}

/// Set in the child process that serves for the SIGTERM test.
const CHILD: &str = "WORKER_RUNTIME_SIGTERM_CHILD";

/// The child side of the SIGTERM test: serves until SIGTERM; the test harness's exit status is
/// then `serve`'s success. Ignored unless run by the parent test.
#[tokio::test]
#[ignore = "run as a child process by sigterm_during_a_job_cancels_it_and_exits_zero"]
async fn sigterm_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let args = ServeArgs {
        port: 0,
        shutdown_grace_secs: 1,
        ..ServeArgs::default()
    };
    let (server, listener) = crate::common::build(args).await;
    println!("PORT={}", listener.local_addr().unwrap().port());
    let steps_run = Default::default();
    server
        .serve(listener, move || Ok(crate::common::Counter { steps_run }))
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_during_a_job_cancels_it_and_exits_zero() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "shutdown::sigterm_child", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = stdout
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("PORT=")
                .map(|port| port.trim().parse().unwrap())
        })
        .expect("the child prints its port");
    // Keep reading, so the child's last lines do not hit a closed pipe.
    std::thread::spawn(move || stdout.for_each(drop));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let response = client
        .post(format!("{base}/v1/count"))
        .body(r#"{"steps": 10000, "step_ms": 10}"#)
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    while events.next().await.unwrap().event != "output" {}

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest = tokio::time::timeout(Duration::from_secs(10), events.rest())
        .await
        .expect("the stream ends");
    let end = rest.last().expect("an end event");
    assert_eq!(end.event, "end");
    assert_eq!(
        end.data["stop_reason"], "cancelled",
        "the 1 s grace is shorter than the job"
    );
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "the worker exits 0 after SIGTERM: {exit:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "took {:?}",
        signalled.elapsed()
    );
}
