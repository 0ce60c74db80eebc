//! `worker-sd serve`'s routes over loopback HTTP with the tiny pipeline: OpenAI-style generations,
//! the streaming endpoint's progress, previews and images, 400s naming the field, and cancellation.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use worker_runtime::{ServeArgs, Server, WorkerInfo};
use worker_sd::server::{SdBackend, routes};

use crate::common::pipeline;

struct TestServer {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), worker_runtime::ServeError>>,
}

impl TestServer {
    async fn start() -> TestServer {
        let args = ServeArgs {
            port: 0,
            ..ServeArgs::default()
        };
        let info = WorkerInfo::new(
            artifacts_contract::WorkerKind::Sd,
            "tiny-sd15",
            artifacts_contract::DeviceKind::Cpu,
            &args,
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = Server::<SdBackend>::new(info, args)
            .routes(routes)
            .shutdown_on(async move {
                let _ = rx.await;
            });
        let listener = server.bind().await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(server.serve(listener, || Ok(SdBackend::new(Box::new(pipeline()), 0))));
        let server = TestServer {
            base: format!("http://127.0.0.1:{port}"),
            stop: tx,
            handle,
        };
        for _ in 0..500 {
            if let Ok(r) = reqwest::get(server.url("/ready")).await
                && r.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server never became ready");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn png_base64(image: &image::RgbImage) -> String {
    let png = worker_sd::output::png_bytes(image, "").unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}

fn gray_png_base64(w: u32, h: u32) -> String {
    let mut bytes = Vec::new();
    image::GrayImage::new(w, h)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Server-Sent Events of a response, in order.
async fn events(response: reqwest::Response) -> Vec<(String, Value)> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let event = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))?
                .trim()
                .to_string();
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).collect();
            Some((event, serde_json::from_str(data.trim()).ok()?))
        })
        .collect()
}

#[tokio::test]
async fn openai_generations_return_pngs_with_their_parameters() {
    let server = TestServer::start().await;
    let body =
        json!({"prompt": "a red cat", "n": 2, "size": "64x64", "steps": 2, "seed": 5, "scheduler": "DDIM"});
    let response = server.post("/v1/images/generations", body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        let png = base64::engine::general_purpose::STANDARD
            .decode(item["b64_json"].as_str().unwrap())
            .unwrap();
        let image = image::load_from_memory(&png).unwrap();
        assert_eq!((image.width(), image.height()), (64, 64));
        let parameters = worker_sd::output::read_parameters(&png).unwrap();
        assert!(parameters.contains(&format!("Seed: {}", 5 + i)), "{parameters}");
        assert!(parameters.contains("Sampler: DDIM, "), "{parameters}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_stream_carries_progress_previews_and_images() {
    let server = TestServer::start().await;
    let body =
        json!({"prompt": "a red cat", "n": 2, "width": 64, "height": 64, "steps": 3, "preview_every": 1});
    let events = events(server.post("/v1/images/stream", body).await).await;
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter(|(e, _)| e == "progress")
        .map(|(_, d)| (d["step"].as_u64().unwrap(), d["total"].as_u64().unwrap()))
        .collect();
    assert_eq!(progress, (1..=6).map(|s| (s, 6)).collect::<Vec<_>>());
    let outputs: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e == "output")
        .map(|(_, d)| &d["output"])
        .collect();
    let previews = outputs.iter().filter(|o| o["kind"] == "preview").count();
    assert_eq!(
        previews, 4,
        "steps 1 and 2 of each image (the last step is the image itself)"
    );
    let images: Vec<_> = outputs.iter().filter(|o| o["kind"] == "image").collect();
    assert_eq!(images.len(), 2);
    let preview = outputs.iter().find(|o| o["kind"] == "preview").unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(preview["b64_png"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        image::load_from_memory(&png).unwrap().width(),
        8,
        "one pixel per latent"
    );
    assert_eq!(events.last().unwrap().0, "end");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let server = TestServer::start().await;
    let (_dir, misshapen) = crate::lora::misshapen();
    let image = png_base64(&image::RgbImage::new(64, 64));
    let cases = [
        (json!({"prompt": "x", "image": "not base64!"}), "image"),
        (
            json!({"prompt": "x", "size": "64x64", "image": png_base64(&image::RgbImage::new(128, 64))}),
            "image",
        ),
        (
            json!({"prompt": "x", "image": image, "mask": gray_png_base64(64, 72)}),
            "mask",
        ),
        (json!({"prompt": "x", "mask": gray_png_base64(64, 64)}), "mask"),
        (json!({"prompt": "x", "steps": 0}), "steps"),
        (json!({"prompt": "x", "steps": 1000}), "steps"),
        (json!({"prompt": "x", "size": "60x64"}), "size"),
        (json!({"prompt": "x", "size": "big"}), "size"),
        (json!({"prompt": "x", "width": 100}), "width"),
        (json!({"prompt": "x", "strength": 2.0}), "strength"),
        (json!({"prompt": "x", "scheduler": "nope"}), "scheduler"),
        (json!({"prompt": "x", "n": 100}), "n"),
        // A LoRA whose tensors do not fit the model, and an embedding that does not exist: 400s before
        // the request queues, on the stream too.
        (
            json!({"prompt": "x", "loras": [{"model": misshapen, "weight": 1.0}]}),
            "loras",
        ),
        (json!({"prompt": format!("x <lora:{misshapen}:0.5>")}), "loras"),
        (
            json!({"prompt": "x", "negative_prompt": "embedding:nothing"}),
            "embeddings",
        ),
    ];
    for (body, field) in cases {
        for path in ["/v1/images/generations", "/v1/images/stream"] {
            let response = server.post(path, body.clone()).await;
            assert_eq!(response.status(), 400, "{path} {body}");
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"]["param"], field, "{path} {body}: {error}");
            assert!(
                error["error"]["message"].as_str().unwrap().contains(field),
                "{error}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_job_within_a_step() {
    let server = TestServer::start().await;
    let body = json!({"prompt": "a red cat", "n": 8, "size": "256x256", "steps": 150});
    let response = server.post("/v1/images/stream", body).await;
    assert_eq!(response.status(), 200);
    let mut response = response;
    // Wait for the first progress event, then leave.
    let mut seen = String::new();
    while !seen.contains("event: progress") && !seen.contains("event:progress") {
        let chunk = response.chunk().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    // The worker is free again long before the 1200 steps would end.
    let started = std::time::Instant::now();
    let small = json!({"prompt": "a red cat", "size": "64x64", "steps": 1});
    let response = server.post("/v1/images/generations", small).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the cancelled job kept the worker"
    );
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("worker_jobs_total{") && l.contains("cancelled") && l.ends_with(" 1")),
        "{metrics}"
    );
    server.stop().await;
}
