//! Contract tests of the fake Auth0 logs API.

use super::*;
use crate::okta::GenerateOptions;
use crate::test_util::{client, link};

const TOKEN: &str = "auth0-mgmt-token";

async fn get(url: &str) -> reqwest::Response {
    client().get(url).bearer_auth(TOKEN).send().await.unwrap()
}

#[tokio::test]
async fn checkpoint_pages_in_log_id_order_and_an_empty_page_links_to_itself() {
    let s = Auth0Server::start(Options {
        tokens: vec![TOKEN.into()],
        rate_limit: 1000,
        ..Options::default()
    })
    .await;
    let ids = s.core().generate(
        150,
        &GenerateOptions {
            max_published_lag_ms: 60_000,
            ..GenerateOptions::default()
        },
    );
    let seed = format!(
        "900{}{}",
        (Utc::now() - chrono::Duration::minutes(5)).format("%Y%m%d%H%M%S"),
        "0".repeat(39)
    );
    let mut url = format!("{}/api/v2/logs?from={seed}&take=100", s.url());
    let mut seen = Vec::new();
    loop {
        let r = get(&url).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-ratelimit-reset"));
        let next = link(&r, "next").unwrap();
        let page: Vec<serde_json::Value> = r.json().await.unwrap();
        if page.is_empty() {
            assert_eq!(next, url, "an empty page's next link is the URL requested");
            break;
        }
        seen.extend(
            page.iter()
                .map(|l| l["log_id"].as_str().unwrap().to_string()),
        );
        url = next;
    }
    assert_eq!(seen, ids, "log_id (persistence) order, whatever the dates");
}

#[tokio::test]
async fn take_auth_and_rate_limit_errors_are_auth0s() {
    let s = Auth0Server::start(Options {
        tokens: vec![TOKEN.into()],
        rate_limit: 3,
        rate_window: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    let url = format!("{}/api/v2/logs", s.url());
    let r = client().get(&url).bearer_auth("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["statusCode"], 401);
    let r = get(&format!("{url}?from=900&take=101")).await;
    assert_eq!(r.status(), 400);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["errorCode"], "invalid_query_string");
    assert_eq!(get(&format!("{url}?from=900&take=100")).await.status(), 200);
    get(&url).await;
    let r = get(&url).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["message"], "Global limit has been reached");
}
