//! `uc-testkit serve` as the e2e suite and `make demo` use it: a separate process, configured by
//! flags, announcing its URLs on stdout, driven through `/_admin/`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// Kills the server process even when an assertion fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_announces_urls_and_is_driven_through_admin_apis() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let child = Command::new(env!("CARGO_BIN_EXE_uc-testkit"))
        .args([
            "serve",
            "--token",
            "t1",
            "--org",
            "acme.okta.com",
            "--seed-events",
            "300",
            "--counters-only",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    let c = reqwest::Client::new();

    let okta = info["okta"]["url_template"]
        .as_str()
        .unwrap()
        .replace("{domain}", "acme.okta.com");
    let r = c
        .get(format!("{okta}/api/v1/logs?limit=1000"))
        .header("Authorization", "SSWS t1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Vec<Value>>().await.unwrap().len(),
        300,
        "seeded over the last hour, within the default 7 days"
    );

    let hec = info["hec"]["url"].as_str().unwrap();
    let token = info["hec"]["tokens"][0].as_str().unwrap();
    c.post(format!("{hec}/_admin/fault"))
        .json(&json!({"kind": "status", "status": 503, "count": 1}))
        .send()
        .await
        .unwrap();
    let send = || {
        c.post(format!("{hec}/services/collector/event"))
            .header("Authorization", format!("Splunk {token}"))
            .body(r#"{"time": 1, "event": {"uuid": "u1"}}"#)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 503);
    assert_eq!(send().await.unwrap().status(), 200);
    let stats: Value = c
        .get(format!("{hec}/_admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["received"]["unique"], 1);
    assert_eq!(stats["by_status"]["503"], 1);

    let okta_stats: Value = c
        .get(format!(
            "{}/_admin/stats",
            info["okta"]["url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(okta_stats["requests"]["by_org"]["acme.okta.com"], 1);
}
