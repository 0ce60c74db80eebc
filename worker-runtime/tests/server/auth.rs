//! With an API key, every route but /health needs `Authorization: Bearer <key>`.

use std::time::Duration;

use worker_runtime::ServeArgs;

use crate::common::TestServer;

#[tokio::test]
async fn the_api_key_guards_every_route_but_health() {
    let args = ServeArgs {
        api_key: Some("s3cret".to_owned()),
        ..ServeArgs::default()
    };
    let server = TestServer::start(args, Duration::ZERO).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(server.url("/health")).send().await.unwrap().status(),
        200
    );
    for path in ["/ready", "/metrics"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} without a key");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let response = client
            .get(server.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} with a wrong key");
    }
    let response = client
        .post(server.url("/v1/count"))
        .body(r#"{"steps": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    for _ in 0..200 {
        let response = client
            .get(server.url("/ready"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let response = client
        .post(server.url("/v1/count/whole"))
        .bearer_auth("s3cret")
        .body(r#"{"steps": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(server.url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await.unwrap();
}
