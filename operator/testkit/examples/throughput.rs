//! How much the test servers cost per event: `cargo run --release -p uc-testkit --example throughput`.
//! The collector benchmark runs against these servers on the same cores, so they must stay cheap.

use std::time::Instant;

use std::io::Write;

use uc_testkit::{azure, hec, okta, webhook};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = 200_000;
    let s = okta::OktaServer::start(okta::Options {
        tokens: vec![("t".into(), okta::Permission::SuperAdmin)],
        ..okta::Options::unlimited()
    })
    .await;
    let t = Instant::now();
    s.generate_events(
        okta::DEFAULT_ORG,
        n,
        &okta::GenerateOptions {
            start: Some(chrono::Utc::now() - chrono::Duration::minutes(30)),
            ..Default::default()
        },
    );
    let gen_secs = t.elapsed().as_secs_f64();
    println!(
        "generate: {n} events in {gen_secs:.2} s ({:.0} events/s)",
        n as f64 / gen_secs
    );

    let client = reqwest::Client::new();
    let mut url = format!(
        "{}/api/v1/logs?limit=1000&since={}",
        s.url(),
        okta::events::okta_time(chrono::Utc::now() - chrono::Duration::hours(1))
    );
    let t = Instant::now();
    let mut got = 0;
    let mut bytes = 0;
    loop {
        let r = client
            .get(&url)
            .header("Authorization", "SSWS t")
            .send()
            .await
            .unwrap();
        let next = r
            .headers()
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|l| l.contains("rel=\"next\""))
            .unwrap();
        let body = r.bytes().await.unwrap();
        bytes += body.len();
        url = next[1..next.find('>').unwrap()].to_string();
        if body.len() <= 2 {
            break;
        }
        got += 1000;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "okta pages: {got} events, {} MB in {secs:.2} s ({:.0} events/s, client included)",
        bytes / 1_000_000,
        got as f64 / secs
    );

    let h = hec::HecServer::start(hec::Options {
        keep_records: false,
        ..Default::default()
    })
    .await;
    let batch: String = (0..500)
        .map(|i| format!(r#"{{"time":1700000000.5,"sourcetype":"OktaIM2:log","event":{{"uuid":"u-{i}","eventType":"user.session.start","pad":"{}"}}}}"#, "x".repeat(1500)))
        .collect();
    let t = Instant::now();
    let rounds = 200;
    for _ in 0..rounds {
        let r = client
            .post(format!("{}/services/collector/event", h.url()))
            .header(
                "Authorization",
                format!("Splunk {}", hec::Options::DEFAULT_TOKEN),
            )
            .body(batch.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "hec: {} envelopes in {secs:.2} s ({:.0} events/s, client included)",
        rounds * 500,
        (rounds * 500) as f64 / secs
    );

    // Azure: ~1 MB uncompressed batches, gzipped, as the SDKs send them.
    let a = azure::AzureServer::start(azure::Options {
        keep_records: false,
        ..Default::default()
    })
    .await;
    let o = a.options().clone();
    let token: serde_json::Value = client
        .post(a.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &o.client_id),
            ("client_secret", &o.client_secret),
            ("scope", azure::SCOPE),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let per_batch = 500;
    let records: Vec<serde_json::Value> =
        (0..per_batch).map(|i| serde_json::json!({"uuid": format!("a-{i}"), "eventType": "user.session.start", "pad": "x".repeat(1500)})).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&serde_json::to_vec(&records).unwrap())
        .unwrap();
    let body = gz.finish().unwrap();
    let t = Instant::now();
    for _ in 0..rounds {
        let r = client
            .post(a.ingestion_url())
            .bearer_auth(&token)
            .header("content-encoding", "gzip")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "azure (gzip): {} records in {secs:.2} s ({:.0} events/s, client included)",
        rounds * per_batch,
        (rounds * per_batch) as f64 / secs
    );

    // Webhook: signed 500-record batches.
    let w = webhook::WebhookServer::start(webhook::Options {
        keep_records: false,
        ..Default::default()
    })
    .await;
    let body = serde_json::to_vec(&records).unwrap();
    let t = Instant::now();
    for i in 0..rounds {
        let id = format!("msg_{i}");
        let ts = chrono::Utc::now().timestamp();
        let sig = webhook::sign(w.secret(), &id, ts, &body);
        let r = client
            .post(w.url())
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "webhook (signed): {} records in {secs:.2} s ({:.0} events/s, client signing included)",
        rounds * per_batch,
        (rounds * per_batch) as f64 / secs
    );
}
