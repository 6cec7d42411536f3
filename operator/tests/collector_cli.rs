//! `unified-connectors collector --config FILE` as a process: the documented example config
//! (operator/examples/collector.yaml), pointed at the test servers, delivers everything, stops
//! cleanly on SIGTERM and leaves its positions and report in the state file.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use unified_connectors::collector::config;
use unified_connectors::contract::*;

use uc_testkit::azure::{self, AzureServer};
use uc_testkit::hec::{self, HecServer};
use uc_testkit::okta::{self, GenerateOptions, OktaServer, Permission};
use uc_testkit::webhook::{self, WebhookServer};

const EXAMPLE: &str = include_str!("../examples/collector.yaml");

#[test]
fn the_example_config_is_valid() {
    let c = config::parse(EXAMPLE)
        .expect("examples/collector.yaml is valid")
        .config;
    assert_eq!(c.products.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_example_config_and_stops_on_sigterm() {
    let okta = OktaServer::start(okta::Options::default()).await;
    okta.add_token("cli-test-token", Permission::ReadOnlyAdmin);
    let azure = AzureServer::start(azure::Options::default()).await;
    let hec = HecServer::start(hec::Options::default()).await;
    let hook = WebhookServer::start(webhook::Options::default()).await;
    let org = okta.default_org().to_string();
    let expected = okta.generate_events(
        &org,
        2_500,
        &GenerateOptions {
            start: Some(Utc::now() - chrono::Duration::minutes(20)),
            ..Default::default()
        },
    );

    let dir = std::env::temp_dir().join(format!("uc-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, value: &str| {
        let p = dir.join(name);
        std::fs::write(&p, value).unwrap();
        SecretSource::File(p)
    };
    let mut c = config::parse(EXAMPLE).unwrap().config;
    let SourceConfig::Okta(o) = &mut c.source;
    o.domain = org.clone();
    o.base_url = Some(okta.url());
    o.allow_insecure_http = true;
    o.token = file("okta-token", "cli-test-token");
    o.since = Utc::now() - chrono::Duration::hours(1);
    o.poll_interval = Duration::from_millis(300);
    for p in &mut c.products {
        p.since = Utc::now() - chrono::Duration::hours(1);
        match &mut p.sink {
            SinkConfig::Sentinel(s) => {
                let a = azure.options();
                s.endpoint = azure.url();
                s.authority_host = Some(azure.url());
                s.allow_insecure_http = true;
                s.tenant_id = file("tenant", &a.tenant_id);
                s.client_id = file("client", &a.client_id);
                s.client_secret = file("secret", &a.client_secret);
            }
            SinkConfig::SplunkHec(s) => {
                s.url = hec.url();
                s.index = None;
                s.allow_insecure_http = true;
            }
            SinkConfig::Webhook(s) => {
                s.url = hook.url();
                s.allow_insecure_http = true;
                s.signing_secret = file("whsec", hook.secret());
            }
        }
    }
    // One product with settings the collector refuses (a header name with a space): the others
    // must still deliver everything, and the report must name the refused one.
    let mut broken = c
        .products
        .iter()
        .find(|p| matches!(p.sink, SinkConfig::Webhook(_)))
        .unwrap()
        .clone();
    broken.id = "broken".into();
    if let SinkConfig::Webhook(w) = &mut broken.sink {
        w.headers.insert("X Team B".into(), "v".into());
    }
    c.products.push(broken);
    let state = dir.join("state.json");
    c.state = StateConfig::File {
        path: state.clone(),
    };
    c.tuning.persist_interval = Duration::from_millis(200);
    c.listen = "127.0.0.1:0".into();
    // Written as the operator writes it (tagged YAML).
    let path = dir.join("collector.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&c).unwrap()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_unified-connectors"))
        .args(["collector", "--config"])
        .arg(&path)
        .env("SPLUNK_HEC_TOKEN", hec::Options::DEFAULT_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(azure.received().missing(&expected).is_empty()
        && hook.received().missing(&expected).is_empty())
    {
        assert!(Instant::now() < deadline, "not delivered in time");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the collector exited early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "collector exit: {:?}\n{logs}",
        out.status
    );
    for secret in [
        "cli-test-token",
        hook.secret(),
        &azure.options().client_secret,
        hec::Options::DEFAULT_TOKEN,
    ] {
        assert!(!logs.contains(secret), "a secret appeared in the logs");
    }

    assert_eq!(azure.received().duplicates(), 0);
    assert_eq!(hook.received().duplicates(), 0);
    assert_eq!(hec.received().duplicates(), 0);
    let hec_events = hec.received().records();
    assert!(!hec_events.is_empty());
    for r in &hec_events {
        let t = r["event"]["eventType"].as_str().unwrap();
        assert!(
            t.starts_with("user.session.")
                || t.starts_with("user.authentication.")
                || t == "policy.evaluate_sign_on"
        );
    }
    let report = unified_connectors::collector::state::read_file_report(&state)
        .unwrap()
        .unwrap();
    assert_eq!(
        report.products["sentinel"].events_delivered,
        expected.len() as u64
    );
    assert_eq!(
        report.products["soar"].events_delivered,
        expected.len() as u64
    );
    assert_eq!(
        report.products["splunk"].events_delivered,
        hec_events.len() as u64
    );
    assert_eq!(report.source.events_read, expected.len() as u64);
    let broken = &report.products["broken"];
    assert_eq!(broken.state, DeliveryState::Rejected);
    let why = &broken.last_error.as_ref().unwrap().message;
    assert!(why.contains("products[3].sink.webhook.headers"), "{why}");
    std::fs::remove_dir_all(dir).ok();
}
