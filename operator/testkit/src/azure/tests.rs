//! Contract tests of the fake Entra ID + Logs Ingestion API.

use std::io::Write;

use super::*;
use crate::ProductFault;
use crate::test_util::client;

async fn get_token(s: &AzureServer, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(s.token_url())
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn good_token(s: &AzureServer) -> String {
    let o = s.options().clone();
    let r = get_token(
        s,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    body["access_token"].as_str().unwrap().to_string()
}

fn records(n: usize, prefix: &str) -> Vec<Value> {
    (0..n).map(|i| json!({"uuid": format!("{prefix}-{i}"), "eventType": "user.session.start", "pad": "x".repeat(100)})).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

async fn ingest(s: &AzureServer, token: &str, body: Vec<u8>, gzipped: bool) -> reqwest::Response {
    let mut req = client()
        .post(s.ingestion_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body);
    if gzipped {
        req = req.header("content-encoding", "gzip");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn token_endpoint_checks_client_credentials_like_entra() {
    let s = AzureServer::start(Options::default()).await;
    let o = s.options().clone();
    type Form<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Form, u16, &str)] = &[
        (
            &[
                ("grant_type", "password"),
                ("client_id", &o.client_id),
                ("client_secret", &o.client_secret),
                ("scope", SCOPE),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nope"),
                ("client_secret", &o.client_secret),
                ("scope", SCOPE),
            ],
            400,
            "unauthorized_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &o.client_id),
                ("client_secret", "wrong"),
                ("scope", SCOPE),
            ],
            401,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &o.client_id),
                ("client_secret", &o.client_secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
            400,
            "invalid_scope",
        ),
    ];
    for (form, status, error) in cases {
        let r = get_token(&s, form).await;
        assert_eq!(r.status(), *status, "{error}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], *error);
    }
    let r = client()
        .post(format!("{}/other-tenant/oauth2/v2.0/token", s.url()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    good_token(&s).await;
    assert_eq!(s.tokens_issued(), 1);
}

#[tokio::test]
async fn ingestion_accepts_plain_and_gzip_arrays_with_a_valid_token() {
    let s = AzureServer::start(Options::default()).await;
    let token = good_token(&s).await;
    let r = ingest(
        &s,
        &token,
        serde_json::to_vec(&records(3, "a")).unwrap(),
        false,
    )
    .await;
    assert_eq!(r.status(), 204);
    let r = ingest(
        &s,
        &token,
        gzip(&serde_json::to_vec(&records(2, "b")).unwrap()),
        true,
    )
    .await;
    assert_eq!(r.status(), 204);
    let r = ingest(
        &s,
        &token,
        serde_json::to_vec(&records(1, "a")).unwrap(),
        false,
    )
    .await;
    assert_eq!(r.status(), 204);
    let got = s.received();
    assert_eq!((got.total(), got.unique(), got.duplicates()), (6, 5, 1));
    assert_eq!(got.count("a-0"), 2);
    assert!(got.missing(["a-1", "b-1", "c-0"]) == ["c-0"]);
    assert_eq!(got.records()[3]["uuid"], "b-0");
    assert_eq!(s.stats().by_status[&204], 3);
}

#[tokio::test]
async fn ingestion_refuses_bad_tokens_paths_sizes_and_bodies() {
    let s = AzureServer::start(Options {
        token_lifetime: Duration::from_secs(3599),
        ..Options::default()
    })
    .await;
    let token = good_token(&s).await;
    let ok = serde_json::to_vec(&records(1, "a")).unwrap();
    assert_eq!(ingest(&s, "forged", ok.clone(), false).await.status(), 401);
    assert_eq!(
        client()
            .post(s.ingestion_url())
            .body(ok.clone())
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong_dcr = s
        .ingestion_url()
        .replace(&s.options().dcr_immutable_id, "dcr-other");
    assert_eq!(
        client()
            .post(wrong_dcr)
            .bearer_auth(&token)
            .body(ok.clone())
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let wrong_version = s.ingestion_url().replace(API_VERSION, "2021-11-01-preview");
    assert_eq!(
        client()
            .post(wrong_version)
            .bearer_auth(&token)
            .body(ok.clone())
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    for bad in [
        &b"{\"uuid\":\"x\"}"[..],
        b"[{\"uuid\":\"x\"}",
        b"[1,2]",
        b"not json",
    ] {
        let r = ingest(&s, &token, bad.to_vec(), false).await;
        assert_eq!(r.status(), 400, "{}", String::from_utf8_lossy(bad));
        assert!(r.json::<Value>().await.unwrap()["error"]["code"].is_string());
    }
    assert_eq!(
        ingest(&s, &token, b"garbage".to_vec(), true).await.status(),
        400,
        "invalid gzip"
    );
    // 1 MB as sent: an uncompressed body just over it is refused; the same gzipped passes.
    let mut big = records(1, "big");
    big[0]["pad"] = Value::from("y".repeat(MAX_BODY_BYTES));
    let big = serde_json::to_vec(&big).unwrap();
    let r = ingest(&s, &token, big.clone(), false).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "ContentLengthLimitExceeded"
    );
    assert_eq!(ingest(&s, &token, gzip(&big), true).await.status(), 204);
    assert_eq!(s.received().total(), 1);
    // Expired tokens are refused until a new one is fetched.
    s.expire_tokens();
    assert_eq!(ingest(&s, &token, ok.clone(), false).await.status(), 401);
    let fresh = good_token(&s).await;
    assert_eq!(ingest(&s, &fresh, ok, false).await.status(), 204);
}

#[tokio::test]
async fn throttling_and_outages_carry_retry_after_and_store_nothing() {
    let s = AzureServer::start(Options::default()).await;
    let token = good_token(&s).await;
    let body = serde_json::to_vec(&records(2, "a")).unwrap();
    s.inject(ProductFault::status_retry_after(429, 2, 7));
    for _ in 0..2 {
        let r = ingest(&s, &token, body.clone(), false).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    s.set_down(true);
    let r = ingest(&s, &token, body.clone(), false).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    s.set_down(false);
    assert_eq!(s.received().total(), 0);
    assert_eq!(ingest(&s, &token, body, false).await.status(), 204);
    assert!(
        s.received()
            .wait_for_unique(2, Duration::from_secs(1))
            .await
    );
    let stats = s.stats();
    assert_eq!(
        (
            stats.by_status[&429],
            stats.by_status[&503],
            stats.by_status[&204]
        ),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn counters_only_mode_still_finds_uuids_at_a_configured_path() {
    let s = AzureServer::start(Options {
        keep_records: false,
        uuid_path: vec!["Event".into(), "uuid".into()],
        ..Options::default()
    })
    .await;
    let token = good_token(&s).await;
    let body = json!([{"TimeGenerated": "2026-01-01T00:00:00Z", "Event": {"uuid": "e1", "x": [1]}}, {"Event": {}}]);
    assert_eq!(
        ingest(&s, &token, serde_json::to_vec(&body).unwrap(), false)
            .await
            .status(),
        204
    );
    let stats = s.received().stats();
    assert_eq!((stats.total, stats.unique, stats.without_uuid), (2, 1, 1));
    assert!(s.received().records().is_empty());
}
