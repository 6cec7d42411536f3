//! Contract tests of the fake Okta: what a collector may rely on.

use super::*;
use crate::test_util::{client, link};

const TOKEN: &str = "tok-read";

async fn server(opts: Options) -> OktaServer {
    let s = OktaServer::start(Options {
        tokens: vec![(TOKEN.into(), Permission::ReadOnlyAdmin)],
        ..opts
    })
    .await;
    s.add_token("tok-nobody", Permission::NoAdminRole);
    s
}

async fn get(url: &str, token: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("Authorization", format!("SSWS {token}"))
        .send()
        .await
        .unwrap()
}

fn uuids_of(body: &[Value]) -> Vec<String> {
    body.iter()
        .map(|e| e["uuid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn polling_pages_through_everything_in_persistence_order_then_empty_pages_keep_a_next_link() {
    let s = server(Options::default()).await;
    let expected = s.generate_events(DEFAULT_ORG, 2500, &GenerateOptions::default());
    let since = events::okta_time(Utc::now() - chrono::Duration::hours(1));
    let mut url = format!("{}/api/v1/logs?since={since}&limit=1000", s.url());
    let mut seen = Vec::new();
    let mut out_of_order = false;
    for _ in 0..4 {
        let r = get(&url, TOKEN).await;
        assert_eq!(r.status(), 200);
        assert!(link(&r, "self").is_some());
        let next = link(&r, "next").expect("next link on every page");
        assert!(
            next.contains("after=") && !next.contains("since="),
            "{next}"
        );
        assert_eq!(r.headers()["x-rate-limit-limit"], "60");
        let body: Vec<Value> = r.json().await.unwrap();
        let published: Vec<&str> = body
            .iter()
            .map(|e| e["published"].as_str().unwrap())
            .collect();
        out_of_order |= published.windows(2).any(|w| w[0] > w[1]);
        seen.extend(uuids_of(&body));
        url = next;
    }
    assert_eq!(seen, expected, "every event once, in persistence order");
    assert!(
        out_of_order,
        "published goes backwards somewhere, like real polling results"
    );
    // Caught up: the same next link yields empty pages with a next link, then new events.
    let r = get(&url, TOKEN).await;
    let again = link(&r, "next").unwrap();
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 0);
    let more = s.generate_events(DEFAULT_ORG, 3, &GenerateOptions::default());
    let r = get(&again, TOKEN).await;
    assert_eq!(uuids_of(&r.json::<Vec<Value>>().await.unwrap()), more);
    assert_eq!(s.log_requests().by_token[TOKEN], 6);
}

#[tokio::test]
async fn since_selects_by_persistence_time_and_unknown_fields_pass_through() {
    let s = server(Options::default()).await;
    let t0 = Utc::now() - chrono::Duration::minutes(30);
    let old = json!({"uuid": "old", "published": events::okta_time(t0), "eventType": "x", "version": "0", "severity": "INFO"});
    s.append_events_at(DEFAULT_ORG, vec![old], t0);
    // Published long ago but persisted now: polling since 10 minutes ago returns it.
    let late = json!({"uuid": "late", "published": events::okta_time(t0), "eventType": "x", "version": "0",
        "severity": "INFO", "someFutureField": {"nested": [1, 2]}});
    s.append_events(DEFAULT_ORG, vec![late.clone()]);
    let since = events::okta_time(Utc::now() - chrono::Duration::minutes(10));
    let r = get(&format!("{}/api/v1/logs?since={since}", s.url()), TOKEN).await;
    let body: Vec<Value> = r.json().await.unwrap();
    assert_eq!(body, vec![late]);
}

#[tokio::test]
async fn orgs_are_separate_logs_under_the_url_template() {
    let s = server(Options::default()).await;
    let a = s.generate_events("a.okta.com", 3, &GenerateOptions::default());
    let b = s.generate_events("B.okta.com", 2, &GenerateOptions::default());
    let url = s.url_template().replace("{domain}", "a.okta.com");
    let r = get(&format!("{url}/api/v1/logs"), TOKEN).await;
    let next = link(&r, "next").unwrap();
    assert!(next.starts_with(&format!("{url}/api/v1/logs?")), "{next}");
    assert_eq!(uuids_of(&r.json::<Vec<Value>>().await.unwrap()), a);
    let r = get(&format!("{}/api/v1/logs", s.org_url("b.okta.com")), TOKEN).await;
    assert_eq!(uuids_of(&r.json::<Vec<Value>>().await.unwrap()), b);
    let stats = s.log_requests();
    assert_eq!(
        (stats.by_org["a.okta.com"], stats.by_org["b.okta.com"]),
        (1, 1)
    );
}

#[tokio::test]
async fn invalid_queries_are_refused() {
    let s = server(Options::default()).await;
    for q in [
        "limit=1001",
        "limit=-1",
        "since=yesterday",
        "since=2020-01-01T00:00:00Z",
        "after=1_0&since=2026-01-01T00:00:00Z",
        "after=garbage",
        "after=1_99",
    ] {
        let r = get(&format!("{}/api/v1/logs?{q}", s.url()), TOKEN).await;
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["errorCode"].as_str().unwrap().starts_with("E0000"),
            "{q}: {body}"
        );
    }
    let r = get(&format!("{}/api/v1/logs?limit=0", s.url()), TOKEN).await;
    assert_eq!(r.status(), 200);
    assert!(link(&r, "next").is_some());
}

#[tokio::test]
async fn auth_401_for_unknown_or_revoked_tokens_and_403_without_permission() {
    let s = server(Options::default()).await;
    let r = get(&format!("{}/api/v1/logs", s.url()), "nope").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "E0000011");
    let r = client()
        .get(format!("{}/api/v1/logs", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = get(&format!("{}/api/v1/logs", s.url()), "tok-nobody").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "E0000006");
    s.add_token("tok-new", Permission::CustomLogsReader);
    assert_eq!(
        get(&format!("{}/api/v1/logs", s.url()), "tok-new")
            .await
            .status(),
        200
    );
    s.revoke_token("tok-new");
    assert_eq!(
        get(&format!("{}/api/v1/logs", s.url()), "tok-new")
            .await
            .status(),
        401
    );

    let me: Value = get(&format!("{}/api/v1/users/me", s.url()), TOKEN)
        .await
        .json()
        .await
        .unwrap();
    let id = me["id"].as_str().unwrap();
    assert!(id.starts_with("00u"));
    let roles: Value = get(&format!("{}/api/v1/users/{id}/roles", s.url()), TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(roles[0]["type"], "READ_ONLY_ADMIN");
    assert_eq!(
        get(&format!("{}/api/v1/users/me", s.url()), "nope")
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn rate_limit_per_token_and_org_with_headers_then_429_until_the_window_resets() {
    let s = server(Options {
        rate_limit_per_token: 3,
        rate_limit_per_org: 5,
        rate_window: Duration::from_millis(1500),
        ..Options::default()
    })
    .await;
    s.add_token("tok-2", Permission::ReadOnlyAdmin);
    let url = format!("{}/api/v1/logs", s.url());
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get(&url, TOKEN).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-rate-limit-limit"], "3");
        remaining.push(
            r.headers()["x-rate-limit-remaining"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let reset: u64 = r.headers()["x-rate-limit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset >= rate::epoch_secs());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = get(&url, TOKEN).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "E0000047");
    // The other token has its own share, until the org's budget (5) is spent.
    assert_eq!(get(&url, "tok-2").await.status(), 200);
    assert_eq!(get(&url, "tok-2").await.status(), 200);
    assert_eq!(
        get(&url, "tok-2").await.status(),
        429,
        "org bucket exhausted"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(get(&url, TOKEN).await.status(), 200);
}

#[tokio::test]
async fn injected_faults_apply_in_order_then_service_resumes() {
    let s = server(Options::default()).await;
    s.generate_events(DEFAULT_ORG, 10, &GenerateOptions::default());
    let url = format!("{}/api/v1/logs", s.url());
    s.inject(Fault::Status {
        status: 500,
        count: 2,
    });
    s.inject(Fault::Status {
        status: 503,
        count: 1,
    });
    s.inject(Fault::Truncated { count: 1 });
    s.inject(Fault::RateLimitStorm {
        count: 1,
        reset_after_secs: 2,
    });
    s.inject(Fault::NotAnArray { count: 1 });
    s.inject(Fault::Delay {
        delay_ms: 300,
        count: 1,
    });
    for _ in 0..2 {
        let r = get(&url, TOKEN).await;
        assert_eq!(r.status(), 500);
        assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "E0000009");
    }
    assert_eq!(get(&url, TOKEN).await.status(), 503);
    let r = get(&url, TOKEN).await;
    assert_eq!(r.status(), 200);
    assert!(link(&r, "next").is_some());
    assert!(
        serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err(),
        "truncated body"
    );
    let r = get(&url, TOKEN).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-rate-limit-remaining"], "0");
    let r = get(&url, TOKEN).await;
    assert!(r.json::<Value>().await.unwrap().is_object());
    let t = std::time::Instant::now();
    let r = get(&url, TOKEN).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 10);
    assert_eq!(s.stats().pending_faults, 0);
    s.set_down(true);
    assert_eq!(get(&url, TOKEN).await.status(), 503);
}

#[tokio::test]
async fn bounded_queries_order_by_published_and_end_without_next_link() {
    let s = server(Options::default()).await;
    let base = Utc::now() - chrono::Duration::minutes(5);
    let ev = |u: &str, secs: i64| {
        json!({"uuid": u, "published": events::okta_time(base + chrono::Duration::seconds(secs)),
        "eventType": "x", "version": "0", "severity": "INFO"})
    };
    s.append_events(
        DEFAULT_ORG,
        vec![ev("c", 3), ev("a", 1), ev("b", 2), ev("z", 100)],
    );
    let since = events::okta_time(base);
    let until = events::okta_time(base + chrono::Duration::seconds(10));
    let r = get(
        &format!(
            "{}/api/v1/logs?since={since}&until={until}&limit=2",
            s.url()
        ),
        TOKEN,
    )
    .await;
    let next = link(&r, "next").unwrap();
    assert_eq!(uuids_of(&r.json::<Vec<Value>>().await.unwrap()), ["a", "b"]);
    let r = get(&next, TOKEN).await;
    assert!(link(&r, "next").is_none());
    assert_eq!(uuids_of(&r.json::<Vec<Value>>().await.unwrap()), ["c"]);
}

#[tokio::test]
async fn admin_api_drives_the_server_from_another_process() {
    let s = server(Options::default()).await;
    let c = client();
    let r = c
        .post(format!("{}/_admin/events", s.url()))
        .json(&json!({"org": "x.okta.com", "count": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["total"], 5);
    c.post(format!("{}/_admin/tokens", s.url()))
        .json(&json!({"token": "t9", "permission": "super_admin"}))
        .send()
        .await
        .unwrap();
    c.post(format!("{}/_admin/fault", s.url()))
        .json(&json!({"kind": "status", "status": 500, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&format!("{}/api/v1/logs", s.org_url("x.okta.com")), "t9")
            .await
            .status(),
        500
    );
    let r = get(&format!("{}/api/v1/logs", s.org_url("x.okta.com")), "t9").await;
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 5);
    let uuids: Vec<String> = c
        .get(format!("{}/_admin/uuids?org=x.okta.com", s.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(uuids, s.uuids("x.okta.com"));
    let stats: OktaStats = c
        .get(format!("{}/_admin/stats", s.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.requests.by_token["t9"], 2);
    assert_eq!(stats.requests.events_served, 5);
    assert_eq!(stats.events["x.okta.com"], 5);
    c.post(format!("{}/_admin/clear", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(s.log_requests(), LogRequests::default());
    assert_eq!(s.event_count("x.okta.com"), 5);
}

#[tokio::test]
async fn live_feed_appends_events() {
    let s = server(Options::default()).await;
    s.start_live("live.okta.com", 50.0);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let n = s.event_count("live.okta.com");
    assert!((10..=30).contains(&n), "{n} events after 450 ms at 50/s");
    s.stop_live("live.okta.com");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        s.event_count("live.okta.com"),
        s.event_count("live.okta.com")
    );
}

#[tokio::test]
async fn org_scoped_tokens_only_work_in_their_org() {
    let s = server(Options::default()).await;
    s.add_org_token("a.okta.com", "tok-a", Permission::ReadOnlyAdmin);
    let a = format!("{}/api/v1/logs", s.org_url("a.okta.com"));
    let b = format!("{}/api/v1/logs", s.org_url("b.okta.com"));
    assert_eq!(get(&a, "tok-a").await.status(), 200);
    assert_eq!(get(&b, "tok-a").await.status(), 401);
    assert_eq!(
        get(
            &format!("{}/api/v1/users/me", s.org_url("b.okta.com")),
            "tok-a"
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        get(&b, TOKEN).await.status(),
        200,
        "global tokens work everywhere"
    );
}

#[tokio::test]
async fn concurrency_limit_answers_429_with_zero_limit() {
    let s = server(Options {
        concurrency_limit: 1,
        ..Options::default()
    })
    .await;
    s.inject(Fault::Delay {
        delay_ms: 500,
        count: 1,
    });
    let url = format!("{}/api/v1/logs", s.url());
    let slow = tokio::spawn({
        let url = url.clone();
        async move { get(&url, TOKEN).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = get(&url, TOKEN).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        (
            r.headers()["x-rate-limit-limit"].to_str().unwrap(),
            r.headers()["x-rate-limit-remaining"].to_str().unwrap()
        ),
        ("0", "0")
    );
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(get(&url, TOKEN).await.status(), 200, "slot released");
}

#[tokio::test]
async fn link_faults_and_org_scoped_faults() {
    let s = server(Options::default()).await;
    let a = format!("{}/api/v1/logs", s.org_url("a.okta.com"));
    let b = format!("{}/api/v1/logs", s.org_url("b.okta.com"));
    s.inject_for("a.okta.com", Fault::NoNextLink { count: 1 });
    s.inject(Fault::MalformedLink { count: 1 });
    // b skips a's fault and takes the global one.
    let r = get(&b, TOKEN).await;
    assert_eq!(r.status(), 200);
    assert!(
        link(&r, "next").is_none() && link(&r, "self").is_none(),
        "malformed Link header"
    );
    let r = get(&a, TOKEN).await;
    assert!(link(&r, "self").is_some() && link(&r, "next").is_none());
    let r = get(&a, TOKEN).await;
    assert!(link(&r, "next").is_some());
    assert_eq!(s.stats().pending_faults, 0);
    // Through the admin API, scoped by ?org=.
    client()
        .post(format!("{}/_admin/fault?org=b.okta.com", s.url()))
        .json(&json!({"kind": "status", "status": 500, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&a, TOKEN).await.status(), 200);
    assert_eq!(get(&b, TOKEN).await.status(), 500);
}
