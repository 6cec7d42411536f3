//! The collector against the contract-faithful test servers: every event to every product
//! exactly once, through pagination, out-of-order `published`, restarts, a product down,
//! backlog overflow, rate limits and 429 storms, token rotation and malformed source answers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use unified_connectors::collector::config::{LoadedConfig, validate};
use unified_connectors::collector::pipeline::{Backoff, Timings};
use unified_connectors::collector::{Options, RunningCollector, start};
use unified_connectors::contract::*;

use uc_testkit::Received;
use uc_testkit::azure::{self, AzureServer};
use uc_testkit::hec::{self, HecServer};
use uc_testkit::okta::{self, Fault, GenerateOptions, OktaServer, Permission};
use uc_testkit::webhook::{self, WebhookServer};

const TOKEN: &str = "00aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789-_";

struct Env {
    okta: OktaServer,
    azure: AzureServer,
    hec: HecServer,
    hook: WebhookServer,
    dir: PathBuf,
}

/// The temporary directory (secret files, state) goes with the test's servers.
impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    async fn new() -> Env {
        Env::with_okta(okta::Options::default()).await
    }

    async fn with_okta(opts: okta::Options) -> Env {
        let okta = OktaServer::start(opts).await;
        okta.add_token(TOKEN, Permission::ReadOnlyAdmin);
        let dir = std::env::temp_dir().join(format!("uc-collector-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("okta-token"), TOKEN).unwrap();
        let azure = AzureServer::start(azure::Options::default()).await;
        let hec = HecServer::start(hec::Options::default()).await;
        let hook = WebhookServer::start(webhook::Options::default()).await;
        let a = azure.options();
        for (name, value) in [
            ("tenant", a.tenant_id.clone()),
            ("client-id", a.client_id.clone()),
            ("client-secret", a.client_secret.clone()),
            ("hec-token", hec::Options::DEFAULT_TOKEN.to_string()),
            ("webhook-secret", hook.secret().to_string()),
        ] {
            std::fs::write(dir.join(name), value).unwrap();
        }
        Env {
            okta,
            azure,
            hec,
            hook,
            dir,
        }
    }

    fn org(&self) -> String {
        self.okta.default_org().to_string()
    }

    /// Generates `n` events persisted in the past hour (published out of order).
    fn generate(&self, n: usize) -> Vec<String> {
        self.okta.generate_events(
            &self.org(),
            n,
            &GenerateOptions {
                start: Some(Utc::now() - chrono::Duration::minutes(30)),
                max_published_lag_ms: 5000,
                ..Default::default()
            },
        )
    }

    fn secret(&self, name: &str) -> SecretSource {
        SecretSource::File(self.dir.join(name))
    }

    fn product(&self, kind: &str) -> ProductConfig {
        let a = self.azure.options();
        let sink = match kind {
            "sentinel" => SinkConfig::Sentinel(SentinelSink {
                endpoint: self.azure.url(),
                dcr_immutable_id: a.dcr_immutable_id.clone(),
                stream_name: a.stream_name.clone(),
                table: None,
                authority_host: Some(self.azure.url()),
                tenant_id: self.secret("tenant"),
                client_id: self.secret("client-id"),
                client_secret: self.secret("client-secret"),
                allow_insecure_http: true,
            }),
            "hec" => SinkConfig::SplunkHec(SplunkHecSink {
                url: self.hec.url(),
                token: self.secret("hec-token"),
                index: None,
                sourcetype: "OktaIM2:log".into(),
                allow_insecure_http: true,
            }),
            _ => SinkConfig::Webhook(WebhookSink {
                url: self.hook.url(),
                signing_secret: self.secret("webhook-secret"),
                headers: Default::default(),
                allow_insecure_http: true,
            }),
        };
        ProductConfig {
            id: format!("ns/{kind}"),
            since: Utc::now() - chrono::Duration::hours(1),
            filter: EventFilter::default(),
            sink,
        }
    }

    fn config(&self, products: &[&str], tune: impl FnOnce(&mut CollectorConfig)) -> LoadedConfig {
        let mut c = CollectorConfig {
            version: CONTRACT_VERSION,
            source: SourceConfig::Okta(OktaSourceConfig {
                domain: self.org(),
                base_url: Some(self.okta.url()),
                allow_insecure_http: true,
                token: self.secret("okta-token"),
                since: Utc::now() - chrono::Duration::hours(1),
                poll_interval: Duration::from_millis(200),
                rate_limit_share: 1.0,
                page_limit: 1000,
            }),
            products: products.iter().map(|p| self.product(p)).collect(),
            state: StateConfig::File {
                path: self.dir.join("state.json"),
            },
            tuning: Tuning {
                max_backlog_events: 20_000,
                batch_max_events: 500,
                batch_max_bytes: 900 * 1024,
                batch_max_age: Duration::from_millis(50),
                persist_interval: Duration::from_millis(100),
            },
            listen: "127.0.0.1:0".into(),
        };
        tune(&mut c);
        validate(&c).expect("valid test config");
        LoadedConfig {
            config: c,
            hash: "test".into(),
            refused: Default::default(),
        }
    }

    fn received(&self, kind: &str) -> &Received {
        match kind {
            "sentinel" => self.azure.received(),
            "hec" => self.hec.received(),
            _ => self.hook.received(),
        }
    }

    fn okta_requests(&self) -> u64 {
        self.okta.log_requests().total
    }
}

fn opts() -> Options {
    let fast = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(300),
    };
    Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        drain_timeout: Duration::from_secs(10),
        timings: Timings {
            source_backoff: fast,
            source_auth_backoff: fast,
            product_backoff: fast,
            product_fatal_backoff: fast,
            slow_product_grace: Duration::from_secs(10),
        },
    }
}

async fn run(cfg: LoadedConfig) -> RunningCollector {
    start(cfg, opts()).await.expect("collector starts")
}

/// [`wait_complete`] with the usual 30 s limit.
async fn wait(env: &Env, products: &[&str], expected: &[String]) {
    wait_complete(env, products, expected, Duration::from_secs(30)).await
}

fn okta(c: &mut CollectorConfig) -> &mut OktaSourceConfig {
    let SourceConfig::Okta(o) = &mut c.source;
    o
}

/// Waits until every product holds every expected uuid (or panics after `limit`).
async fn wait_complete(env: &Env, products: &[&str], expected: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let done = products
            .iter()
            .all(|p| env.received(p).missing(expected).is_empty());
        if done {
            return;
        }
        if Instant::now() > deadline {
            for p in products {
                let r = env.received(p);
                eprintln!(
                    "{p}: unique {} total {} missing {}",
                    r.unique(),
                    r.total(),
                    r.missing(expected).len()
                );
            }
            panic!("not every product got every event within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_exactly_once(env: &Env, products: &[&str], expected: &[String]) {
    for p in products {
        let r = env.received(p);
        assert!(r.missing(expected).is_empty(), "{p} misses events");
        assert_eq!(
            r.duplicates(),
            0,
            "{p} got duplicates: {:?}",
            &r.duplicated()[..r.duplicated().len().min(5)]
        );
        assert_eq!(
            r.unique(),
            expected.len(),
            "{p} got events that were never sent"
        );
    }
}

const ALL: [&str; 3] = ["sentinel", "hec", "webhook"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_to_every_product_once_with_one_request_stream() {
    let env = Env::new().await;
    let mut expected = env.generate(5_500);
    let c = run(env.config(&ALL, |_| {})).await;
    wait(&env, &ALL, &expected).await;
    // Live events after catching up (polling the same next link).
    expected.extend(env.generate(250));
    wait(&env, &ALL, &expected).await;
    let report = c.report();
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &ALL, &expected);

    // One stream: 6 full pages + the live page + the empty "caught up" polls, never one per product.
    let requests = env.okta.requests();
    let with_events: Vec<_> = requests.iter().filter(|r| r.events > 0).collect();
    assert!(
        with_events.len() <= 8,
        "pages with events fetched more than once: {}",
        with_events.len()
    );
    let served: usize = requests.iter().map(|r| r.events).sum();
    assert_eq!(
        served,
        expected.len(),
        "each event served by Okta exactly once"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.query.contains("after=") || r.query.contains("since="))
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.query.contains("since="))
            .count()
            == 1,
        "since only on the first request"
    );

    for p in ALL {
        let h = &report.products[&format!("ns/{p}")];
        assert_eq!(h.events_delivered, expected.len() as u64, "{p}");
        assert_eq!(h.state, DeliveryState::Delivering);
        assert_eq!(h.backlog, 0);
    }
    assert_eq!(report.source.events_read, expected.len() as u64);
    assert!(report.source.last_successful_poll.is_some());
    // HEC envelopes carry published as time and the default sourcetype.
    let rec = &env.hec.received().records()[0];
    assert_eq!(rec["sourcetype"], "OktaIM2:log");
    let published =
        chrono::DateTime::parse_from_rfc3339(rec["event"]["published"].as_str().unwrap()).unwrap();
    assert!(
        (rec["time"].as_f64().unwrap() - published.timestamp_millis() as f64 / 1000.0).abs()
            < 0.001
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_at_random_points_lose_nothing() {
    let env = Env::new().await;
    let mut expected = env.generate(3_000);
    let mut kills = 0;
    for round in 0..8u64 {
        let mut cfg = env.config(&ALL, |c| {
            okta(c).page_limit = 300;
            c.tuning.batch_max_events = 100;
        });
        cfg.hash = format!("round-{round}");
        let c = run(cfg).await;
        let wait = 30 + (round * 37 + fastrand::u64(..120)) % 250;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        expected.extend(env.generate(100));
        if round % 2 == 0 {
            c.kill();
            kills += 1;
        } else {
            c.shutdown().await.unwrap();
        }
    }
    let c = run(env.config(&ALL, |_| {})).await;
    wait_complete(&env, &ALL, &expected, Duration::from_secs(60)).await;
    c.shutdown().await.unwrap();
    for p in ALL {
        let r = env.received(p);
        assert!(r.missing(&expected).is_empty(), "{p} lost events");
        assert_eq!(r.unique(), expected.len());
        // A crash can repeat only what was delivered after the last persisted position.
        eprintln!("{p}: {} duplicates after {kills} kills", r.duplicates());
        assert!(
            r.duplicates() <= kills * 1_000,
            "{p}: {} duplicates",
            r.duplicates()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restarts_deliver_exactly_once() {
    let env = Env::new().await;
    let mut expected = env.generate(2_000);
    for round in 0..4u64 {
        let c = run(env.config(&ALL, |c| {
            okta(c).page_limit = 250;
        }))
        .await;
        tokio::time::sleep(Duration::from_millis(40 + round * 60)).await;
        expected.extend(env.generate(77));
        c.shutdown().await.unwrap();
    }
    let c = run(env.config(&ALL, |_| {})).await;
    wait(&env, &ALL, &expected).await;
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &ALL, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_product_does_not_hold_back_the_others_and_catches_up() {
    let env = Env::new().await;
    env.hec.set_down(true);
    let mut expected = env.generate(3_000);
    let c = run(env.config(&ALL, |_| {})).await;
    wait(&env, &["sentinel", "webhook"], &expected).await;
    assert_eq!(env.hec.received().unique(), 0);
    let h = c.report().products["ns/hec"].clone();
    assert_eq!(h.state, DeliveryState::Retrying);
    assert!(h.backlog > 0 && h.last_error.is_some());
    expected.extend(env.generate(500));
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.hec.set_down(false);
    wait(&env, &ALL, &expected).await;
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &ALL, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_the_bound_is_reread_from_the_source_not_dropped() {
    let env = Env::new().await;
    env.webhook_down(true);
    let mut expected = env.generate(4_000);
    let c = run(env.config(&ALL, |c| {
        c.tuning.max_backlog_events = 700;
        okta(c).page_limit = 500;
    }))
    .await;
    wait(&env, &["sentinel", "hec"], &expected).await;
    let before = env.okta_requests();
    // The down product costs no source requests while it is down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let idle = env.okta_requests() - before;
    assert!(
        idle <= 6,
        "only the head's caught-up polls while a product is down: {idle}"
    );
    expected.extend(env.generate(300));
    env.webhook_down(false);
    wait(&env, &ALL, &expected).await;
    // Once re-joined, the replay stops: no extra stream at steady state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = env.okta_requests();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let steady = env.okta_requests() - settled;
    assert!(
        steady <= 7,
        "one poll stream after re-joining: {steady} requests in 1 s at 200 ms polls"
    );
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &ALL, &expected);
}

impl Env {
    fn webhook_down(&self, down: bool) {
        self.hook.set_down(down);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_respected_and_429_storms_waited_out() {
    // 8 requests per 1 s window for the token; our share is half: 4 per window.
    let env = Env::with_okta(okta::Options {
        rate_limit_per_token: 8,
        rate_limit_per_org: 16,
        rate_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let expected = env.generate(3_000);
    let c = run(env.config(&["webhook"], |c| {
        okta(c).page_limit = 250;
        okta(c).rate_limit_share = 0.5;
    }))
    .await;
    wait_complete(&env, &["webhook"], &expected, Duration::from_secs(60)).await;
    let stats = env.okta.log_requests();
    assert_eq!(
        stats.by_status.get(&429),
        None,
        "the budget keeps us under the limit: {stats:?}"
    );
    let report = c.report();
    assert!(report.source.rate_limit_limit.is_some());
    // A storm of 429s: waited out, nothing skipped.
    env.okta.inject(Fault::RateLimitStorm {
        count: 4,
        reset_after_secs: 1,
    });
    env.okta.inject(Fault::ConcurrencyLimit { count: 1 });
    let mut expected = expected;
    expected.extend(env.generate(400));
    wait_complete(&env, &["webhook"], &expected, Duration::from_secs(60)).await;
    c.shutdown().await.unwrap();
    assert!(
        env.okta
            .log_requests()
            .by_status
            .get(&429)
            .copied()
            .unwrap_or(0)
            >= 5
    );
    assert_exactly_once(&env, &["webhook"], &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_token_rotation_applies_without_restart() {
    let env = Env::new().await;
    let mut expected = env.generate(1_000);
    let c = run(env.config(&["hec"], |_| {})).await;
    wait(&env, &["hec"], &expected).await;
    // Rotate: the old token stops working, the Secret file changes.
    env.okta.revoke_token(TOKEN);
    expected.extend(env.generate(200));
    let deadline = Instant::now() + Duration::from_secs(15);
    while c
        .report()
        .source
        .last_error
        .as_ref()
        .is_none_or(|e| e.status != Some(401))
    {
        assert!(Instant::now() < deadline, "the 401 is reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret_leaked = c
        .report()
        .source
        .last_error
        .unwrap()
        .message
        .contains(TOKEN);
    assert!(!secret_leaked, "the token never appears in the report");
    env.okta
        .add_token("rotated-token-value", Permission::ReadOnlyAdmin);
    std::fs::write(env.dir.join("okta-token"), "rotated-token-value\n").unwrap();
    wait(&env, &["hec"], &expected).await;
    assert!(c.report().source.last_error.is_none());
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &["hec"], &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_source_answers_are_retried_without_skipping() {
    let env = Env::new().await;
    let expected = env.generate(2_500);
    env.okta.inject(Fault::Truncated { count: 2 });
    env.okta.inject(Fault::NotAnArray { count: 1 });
    env.okta.inject(Fault::Status {
        status: 500,
        count: 2,
    });
    env.okta.inject(Fault::Status {
        status: 503,
        count: 1,
    });
    env.okta.inject(Fault::Delay {
        delay_ms: 300,
        count: 1,
    });
    let c = run(env.config(&["sentinel", "webhook"], |c| {
        okta(c).page_limit = 400;
    }))
    .await;
    wait(&env, &["sentinel", "webhook"], &expected).await;
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &["sentinel", "webhook"], &expected);
    let m = env.okta.log_requests();
    assert!(m.by_status.get(&500).copied().unwrap_or(0) >= 2, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_added_later_catches_up_from_its_own_since() {
    let env = Env::new().await;
    let mut expected = env.generate(2_000);
    let c = run(env.config(&["sentinel", "hec"], |_| {})).await;
    wait(&env, &["sentinel", "hec"], &expected).await;
    c.shutdown().await.unwrap();
    expected.extend(env.generate(100));
    // The webhook joins with a since before everything read so far.
    let c = run(env.config(&ALL, |_| {})).await;
    wait(&env, &ALL, &expected).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &ALL, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_is_reported_and_skipped_and_filters_apply() {
    let env = Env::new().await;
    let mut expected = env.generate(300);
    // An event larger than the Logs Ingestion limit: Sentinel refuses it (413) on its own.
    let huge = serde_json::json!({
        "uuid": "0f0f0f0f-0000-4000-8000-000000000001",
        "published": Utc::now().to_rfc3339(),
        "eventType": "user.session.start",
        // Incompressible: still over 1 MB after gzip.
        "padding": (0..1_600_000).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"[fastrand::usize(..64)])).collect::<String>(),
    });
    env.okta.append_events(&env.org(), vec![huge]);
    expected.push("0f0f0f0f-0000-4000-8000-000000000001".into());
    expected.extend(env.generate(300));
    let c = run(env.config(&["sentinel", "hec"], |c| {
        c.products[1].filter.event_types = vec!["user.session.*".into()];
    }))
    .await;
    let others: Vec<String> = expected
        .iter()
        .filter(|u| !u.starts_with("0f0f0f0f"))
        .cloned()
        .collect();
    wait_complete(&env, &["sentinel"], &others, Duration::from_secs(30)).await;
    // The HEC product only wants user.session.* events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = c.report();
    c.shutdown().await.unwrap();
    let s = &report.products["ns/sentinel"];
    assert_eq!(s.events_rejected, 1);
    assert_eq!(s.events_delivered, others.len() as u64);
    assert_eq!(
        env.azure
            .received()
            .count("0f0f0f0f-0000-4000-8000-000000000001"),
        0
    );
    assert_eq!(env.azure.received().duplicates(), 0);
    let hec_records = env.hec.received().records();
    assert!(!hec_records.is_empty());
    assert!(hec_records.iter().all(|r| {
        r["event"]["eventType"]
            .as_str()
            .unwrap()
            .starts_with("user.session.")
    }));
    assert_eq!(env.hec.received().duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_fetches_a_new_token_when_its_token_expires() {
    let env = Env::new().await;
    let mut expected = env.generate(500);
    let c = run(env.config(&["sentinel"], |_| {})).await;
    wait(&env, &["sentinel"], &expected).await;
    let issued = env.azure.tokens_issued();
    assert_eq!(issued, 1, "the token is cached");
    env.azure.expire_tokens();
    expected.extend(env.generate(500));
    wait(&env, &["sentinel"], &expected).await;
    assert_eq!(env.azure.tokens_issued(), 2);
    let metrics = reqwest::get(format!("http://{}/metrics", c.metrics_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("uc_collector_events_delivered_total{product=\"ns/sentinel\"} 1000"),
        "{metrics}"
    );
    assert!(metrics.contains("uc_collector_source_requests_total{code=\"200\"}"));
    let ready = reqwest::get(format!("http://{}/readyz", c.metrics_addr()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &["sentinel"], &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_product_is_detached_instead_of_slowing_the_others() {
    let env = Env::new().await;
    // HEC takes 300 ms per request for a while: far slower than the source.
    env.hec.inject(uc_testkit::ProductFault::delay(
        Duration::from_millis(300),
        25,
    ));
    let expected = env.generate(8_000);
    let t0 = Instant::now();
    let mut o = opts();
    o.timings.slow_product_grace = Duration::from_secs(2);
    let c = start(env.config(&ALL, |c| c.tuning.max_backlog_events = 3_000), o)
        .await
        .unwrap();
    wait(&env, &["sentinel", "webhook"], &expected).await;
    let fast_done = t0.elapsed();
    assert!(
        env.hec.received().unique() < expected.len(),
        "the slow product was still behind when the others finished"
    );
    wait_complete(&env, &ALL, &expected, Duration::from_secs(60)).await;
    eprintln!(
        "others done after {fast_done:?}, slow product after {:?}",
        t0.elapsed()
    );
    c.shutdown().await.unwrap();
    assert_exactly_once(&env, &ALL, &expected);
}
