//! Contract tests of the fake 1Password Events API.

use super::*;
use crate::okta::GenerateOptions;
use crate::test_util::client;

const TOKEN: &str = "op-events-token";

async fn post(url: &str, token: &str, body: serde_json::Value) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cursor_pages_until_has_more_is_false_then_the_same_cursor_returns_new_items() {
    let s = OnePasswordServer::start(Options {
        tokens: vec![TOKEN.into()],
        ..Options::default()
    })
    .await;
    let ids = s.core().generate(250, &GenerateOptions::default());
    let url = format!("{}/api/v2/auditevents", s.url());
    let start = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let mut body = json!({"limit": 100, "start_time": start});
    let mut seen = Vec::new();
    let cursor = loop {
        let r: serde_json::Value = post(&url, TOKEN, body).await.json().await.unwrap();
        for i in r["items"].as_array().unwrap() {
            seen.push(i["uuid"].as_str().unwrap().to_string());
        }
        let c = r["cursor"].as_str().unwrap().to_string();
        body = json!({"cursor": c});
        if !r["has_more"].as_bool().unwrap() {
            break c;
        }
    };
    assert_eq!(seen, ids);
    let more = s.core().generate(2, &GenerateOptions::default());
    let r: serde_json::Value = post(&url, TOKEN, json!({"cursor": cursor}))
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(got, more);
}

#[tokio::test]
async fn errors_limits_and_auth_are_1passwords() {
    let s = OnePasswordServer::start(Options {
        tokens: vec![TOKEN.into()],
        rate_limit: 3,
        ..Options::default()
    })
    .await;
    let url = format!("{}/api/v1/auditevents", s.url());
    let r = post(&url, "nope", json!({})).await;
    assert_eq!(r.status(), 401);
    let b: serde_json::Value = r.json().await.unwrap();
    assert!(b["Error"]["Message"].is_string());
    assert_eq!(
        post(&url, TOKEN, json!({"limit": 1001})).await.status(),
        400
    );
    assert_eq!(
        post(&url, TOKEN, json!({"cursor": "garbage"}))
            .await
            .status(),
        400
    );
    assert_eq!(post(&url, TOKEN, json!({"limit": 10})).await.status(), 200);
    let r = post(&url, TOKEN, json!({})).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
}
