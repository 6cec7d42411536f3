//! Contract tests of the fake Splunk HEC.

use super::*;
use crate::test_util::client;
use crate::{ProductFault, ProductStats};

const TOKEN: &str = Options::DEFAULT_TOKEN;

async fn post(s: &HecServer, auth: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/services/collector/event", s.url()))
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn envelope(uuid: &str) -> String {
    json!({"time": 1700000000.123, "host": "okta", "sourcetype": OKTA_SOURCETYPE, "event": {"uuid": uuid, "eventType": "x"}}).to_string()
}

#[tokio::test]
async fn stacked_envelopes_are_indexed() {
    let s = HecServer::start(Options::default()).await;
    let body = format!("{}{}\n{}", envelope("a"), envelope("b"), envelope("c"));
    let (status, r) = post(&s, Some(&format!("Splunk {TOKEN}")), &body).await;
    assert_eq!((status, r), (200, json!({"text": "Success", "code": 0})));
    assert_eq!(s.received().unique(), 3);
    assert_eq!(s.received().records()[1]["event"]["uuid"], "b");
    assert_eq!(s.received().records()[1]["sourcetype"], OKTA_SOURCETYPE);
}

#[tokio::test]
async fn auth_errors_use_splunk_codes() {
    let s = HecServer::start(Options::default()).await;
    let body = envelope("a");
    assert_eq!(
        post(&s, None, &body).await,
        (401, json!({"text": "Token is required", "code": 2}))
    );
    assert_eq!(
        post(&s, Some(&format!("Bearer {TOKEN}")), &body).await.1["code"],
        3
    );
    assert_eq!(
        post(&s, Some("Splunk nope"), &body).await,
        (403, json!({"text": "Invalid token", "code": 4}))
    );
    s.disable_token(TOKEN);
    assert_eq!(
        post(&s, Some(&format!("Splunk {TOKEN}")), &body).await,
        (403, json!({"text": "Token disabled", "code": 1}))
    );
    assert_eq!(s.received().total(), 0);
}

#[tokio::test]
async fn bad_data_is_refused_after_indexing_the_envelopes_before_it() {
    let s = HecServer::start(Options {
        keep_records: false,
        ..Options::default()
    })
    .await;
    let auth = format!("Splunk {TOKEN}");
    let cases = [
        ("", 5, None),
        (r#"{"time": 1, "host": "x"}"#, 12, Some(0)),
        (r#"{"event": null}"#, 13, Some(0)),
        (r#"{"event": ""}"#, 13, Some(0)),
        (
            r#"{"event": {"uuid": "t"}, "time": "yesterday"}"#,
            6,
            Some(0),
        ),
        (r#"[{"event": {"uuid": "arr"}}]"#, 6, Some(0)),
        ("{\"event\": {\"uuid\": \"trunc\"", 6, Some(0)),
    ];
    for (body, code, n) in cases {
        let (status, r) = post(&s, Some(&auth), body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(r["code"], code, "{body}");
        assert_eq!(
            r.get("invalid-event-number").and_then(Value::as_u64),
            n.map(|n: u64| n),
            "{body}"
        );
    }
    assert_eq!(s.received().total(), 0);
    let body = format!(
        "{}{}{{\"event\": \"\"}}{}",
        envelope("a"),
        envelope("b"),
        envelope("c")
    );
    let (status, r) = post(&s, Some(&auth), &body).await;
    assert_eq!((status, r["invalid-event-number"].as_u64()), (400, Some(2)));
    assert_eq!(
        s.received().uuids(),
        ["a".to_string(), "b".to_string()].into_iter().collect()
    );
    // Numeric strings are valid times; events may be strings.
    assert_eq!(
        post(
            &s,
            Some(&auth),
            r#"{"time": "1700000000.5", "event": "plain text"}"#
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn gzip_bodies_health_and_busy() {
    use std::io::Write;
    let s = HecServer::start(Options::default()).await;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(envelope("z").as_bytes()).unwrap();
    let r = client()
        .post(format!("{}/services/collector/event", s.url()))
        .header("authorization", format!("Splunk {TOKEN}"))
        .header("content-encoding", "gzip")
        .body(e.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.received().count("z"), 1);
    let health = |s: &HecServer| {
        client()
            .get(format!("{}/services/collector/health", s.url()))
            .send()
    };
    assert_eq!(health(&s).await.unwrap().status(), 200);
    s.set_down(true);
    assert_eq!(health(&s).await.unwrap().status(), 503);
    assert_eq!(
        post(&s, Some(&format!("Splunk {TOKEN}")), &envelope("y")).await,
        (503, json!({"text": "Server is busy", "code": 9}))
    );
    s.set_down(false);
    s.inject(ProductFault::status(503, 1));
    assert_eq!(
        post(&s, Some(&format!("Splunk {TOKEN}")), &envelope("y"))
            .await
            .0,
        503
    );
    assert_eq!(
        post(&s, Some(&format!("Splunk {TOKEN}")), &envelope("y"))
            .await
            .0,
        200
    );
    let stats: ProductStats = client()
        .get(format!("{}/_admin/stats", s.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.received.unique, 2);
    assert_eq!(stats.by_status[&503], 2);
}

#[tokio::test]
async fn indexer_acknowledgement_needs_a_channel_and_reports_ack_ids_once() {
    let s = HecServer::start(Options {
        indexer_ack: true,
        ..Options::default()
    })
    .await;
    let auth = format!("Splunk {TOKEN}");
    assert_eq!(
        post(&s, Some(&auth), &envelope("a")).await.1["code"],
        10,
        "channel required"
    );
    let channel = "0f7c1b3e-8c43-4a8e-9d2a-5b8f2b3c4d5e";
    let send = |body: String| {
        client()
            .post(format!("{}/services/collector/event", s.url()))
            .header("authorization", &auth)
            .header("x-splunk-request-channel", channel)
            .body(body)
            .send()
    };
    let r: Value = send(envelope("a")).await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"text": "Success", "code": 0, "ackId": 0}));
    let r: Value = send(envelope("b")).await.unwrap().json().await.unwrap();
    assert_eq!(r["ackId"], 1);
    let ack = |ids: Value| {
        client()
            .post(format!("{}/services/collector/ack", s.url()))
            .header("authorization", &auth)
            .header("x-splunk-request-channel", channel)
            .json(&json!({ "acks": ids }))
            .send()
    };
    let r: Value = ack(json!([0, 1, 7])).await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"acks": {"0": true, "1": true, "7": false}}));
    let r: Value = ack(json!([0])).await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"acks": {"0": false}}), "an ack is reported once");
}
