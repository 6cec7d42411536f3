//! Contract tests of the Standard Webhooks receiver.

use super::*;
use crate::ProductFault;
use crate::test_util::client;

async fn send(s: &WebhookServer, id: &str, ts: i64, sig: &str, body: &[u8]) -> reqwest::Response {
    client()
        .post(format!("{}/hooks/okta", s.url()))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[test]
fn signature_matches_the_standard_webhooks_test_vector() {
    // From the Standard Webhooks specification's reference implementations.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    assert_eq!(
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[tokio::test]
async fn valid_signatures_are_accepted_and_records_stored() {
    let s = WebhookServer::start(Options::default()).await;
    let body = br#"[{"uuid":"u1"},{"uuid":"u2"}]"#;
    let now = chrono::Utc::now().timestamp();
    let sig = format!("v1,bm90IGl0 {}", sign(s.secret(), "msg_1", now, body));
    assert_eq!(send(&s, "msg_1", now, &sig, body).await.status(), 204);
    assert_eq!(s.received().unique(), 2);
    // A retry of the same message reuses its id: counted as a repeat.
    assert_eq!(send(&s, "msg_1", now, &sig, body).await.status(), 204);
    assert_eq!(s.repeated_message_ids(), 1);
    assert_eq!(s.received().duplicates(), 2);
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_missing_headers_and_non_arrays_are_refused() {
    let s = WebhookServer::start(Options::default()).await;
    let body = br#"[{"uuid":"u1"}]"#;
    let now = chrono::Utc::now().timestamp();
    let other = generate_secret();
    assert_eq!(
        send(&s, "m", now, &sign(&other, "m", now, body), body)
            .await
            .status(),
        401,
        "wrong secret"
    );
    assert_eq!(
        send(&s, "m", now, &sign(s.secret(), "m2", now, body), body)
            .await
            .status(),
        401,
        "signed another id"
    );
    assert_eq!(
        send(
            &s,
            "m",
            now,
            &sign(s.secret(), "m", now, body),
            br#"[{"uuid":"u9"}]"#
        )
        .await
        .status(),
        401,
        "tampered body"
    );
    let old = now - 600;
    assert_eq!(
        send(&s, "m", old, &sign(s.secret(), "m", old, body), body)
            .await
            .status(),
        401,
        "stale"
    );
    let r = client()
        .post(s.url())
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no headers");
    let obj = br#"{"uuid":"u1"}"#;
    assert_eq!(
        send(&s, "m", now, &sign(s.secret(), "m", now, obj), obj)
            .await
            .status(),
        400,
        "not an array"
    );
    assert_eq!(s.received().total(), 0);
    // Rotation: the new secret is accepted once configured.
    s.set_secrets(&[s.secret(), &other]);
    assert_eq!(
        send(&s, "m", now, &sign(&other, "m", now, body), body)
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn injected_410_429_and_outage() {
    let s = WebhookServer::start(Options::default()).await;
    let body = br#"[{"uuid":"u1"}]"#;
    let now = chrono::Utc::now().timestamp();
    let sig = sign(s.secret(), "m", now, body);
    s.inject(ProductFault::status_retry_after(429, 1, 3));
    s.inject(ProductFault::status(410, 1));
    let r = send(&s, "m", now, &sig, body).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "3")
    );
    assert_eq!(send(&s, "m", now, &sig, body).await.status(), 410);
    s.set_down(true);
    assert_eq!(send(&s, "m", now, &sig, body).await.status(), 503);
    s.set_down(false);
    assert_eq!(send(&s, "m", now, &sig, body).await.status(), 204);
    assert_eq!(s.received().total(), 1);
}
