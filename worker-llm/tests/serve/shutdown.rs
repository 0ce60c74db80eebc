//! The real `worker-llm serve` binary (`--model-path`, the shared flags): SIGTERM during a job
//! cancels it after the grace, ends its stream, and the process exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Model, sse_events};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_job_ends_it_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_worker-llm"))
        .arg("serve")
        .arg("--model-path")
        .arg(Model::SmolLm2.path())
        .args(["--port", "0", "--shutdown-grace-secs", "1"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log names the address the OS picked: `... listening; loading the model address=127.0.0.1:PORT`.
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = log
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let at = line.find("address=")? + "address=".len();
            line[at..].split_whitespace().next().map(str::to_owned)
        })
        .expect("the server logs its address");
    std::thread::spawn(move || log.for_each(drop));
    let base = format!("http://{address}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get(format!("{base}/ready")).send().await.unwrap();
        if ready.status() == 200 {
            let body: serde_json::Value = ready.json().await.unwrap();
            let path = Model::SmolLm2.path();
            assert_eq!(body["model_id"], format!("file:{}", path.display()));
            break;
        }
        assert!(Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let request = json!({"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true});
    let mut response = client
        .post(format!("{base}/v1/generate"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = String::new();
    while !received.contains("event: output") {
        received.push_str(std::str::from_utf8(&response.chunk().await.unwrap().unwrap()).unwrap());
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let rest = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends after the grace")
        .unwrap();
    received.push_str(&rest);
    let events = sse_events(&received);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "end", "{received}");
    let end: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(end["stop_reason"], "cancelled");
    assert!(end["counts"]["output"].as_u64().unwrap() < 4000);

    let exit = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
