//! Contract tests of the fake GitHub audit log.

use super::*;
use crate::okta::GenerateOptions;
use crate::test_util::{client, link};

const TOKEN: &str = "ghp_test";

async fn server(rate_limit: u32) -> GithubServer {
    GithubServer::start(Options {
        tokens: vec![TOKEN.into()],
        rate_limit,
        rate_window: Duration::from_secs(60),
        ..Options::default()
    })
    .await
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).bearer_auth(TOKEN).send().await.unwrap()
}

#[tokio::test]
async fn asc_pages_follow_next_links_until_the_last_page_has_none() {
    let s = server(1000).await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    let ids = s.core().generate(
        250,
        &GenerateOptions {
            start: Some(start),
            spacing_ms: 1000,
            ..GenerateOptions::default()
        },
    );
    let mut url = format!(
        "{}/enterprises/acme/audit-log?order=asc&per_page=100&phrase=created:>={}",
        s.url(),
        (start - chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let mut seen = Vec::new();
    let mut last_ts = 0;
    loop {
        let r = get(&url).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-resource"], "audit_log");
        let next = link(&r, "next");
        let page: Vec<serde_json::Value> = r.json().await.unwrap();
        assert!(page.len() <= 100);
        for e in &page {
            let ts = e["@timestamp"].as_i64().unwrap();
            assert!(ts >= last_ts, "ascending @timestamp");
            last_ts = ts;
            seen.push(e["_document_id"].as_str().unwrap().to_string());
        }
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    let mut want = ids.clone();
    want.sort();
    seen.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn auth_limits_and_errors_are_githubs() {
    let s = server(2).await;
    let url = format!("{}/enterprises/acme/audit-log", s.url());
    let r = client()
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Bad credentials");
    assert!(body["documentation_url"].is_string());
    assert_eq!(
        get(&format!("{}/enterprises/other/audit-log", s.url()))
            .await
            .status(),
        404
    );
    assert_eq!(get(&format!("{url}?order=sideways")).await.status(), 422);
    // The 422 and one page spend the budget of 2 (401 and 404 come before the limiter): then
    // the primary limit, 403 with remaining 0.
    assert_eq!(get(&url).await.status(), 200);
    let r = get(&url).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.text().await.unwrap().contains("rate limit exceeded"));
    let s = server(100).await;
    s.core().inject(Fault::Secondary {
        count: 1,
        retry_after_secs: 7,
    });
    let r = get(&format!("{}/enterprises/acme/audit-log", s.url())).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_ne!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.text().await.unwrap().contains("secondary rate limit"));
}

#[tokio::test]
async fn a_late_event_sorts_before_a_cursor_already_passed() {
    let s = server(1000).await;
    let now = chrono::Utc::now();
    s.core().generate(
        3,
        &GenerateOptions {
            start: Some(now),
            max_published_lag_ms: 0,
            ..GenerateOptions::default()
        },
    );
    let url = format!(
        "{}/enterprises/acme/audit-log?order=asc&per_page=2",
        s.url()
    );
    let r = get(&url).await;
    let next = link(&r, "next").unwrap();
    let late = s.core().generate(
        1,
        &GenerateOptions {
            start: Some(now - chrono::Duration::seconds(30)),
            max_published_lag_ms: 0,
            ..GenerateOptions::default()
        },
    );
    let page: Vec<serde_json::Value> = get(&next).await.json().await.unwrap();
    assert_eq!(page.len(), 1, "only the third event follows the cursor");
    assert_ne!(page[0]["_document_id"], late[0].as_str());
}
