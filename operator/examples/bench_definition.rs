//! The Okta System Log read through the declarative engine (`definitions/okta-system-log.yaml`)
//! and through the coded `OktaSource`, from the same fake Okta org of 300,000 events of about
//! 1.8 KB: requests, missing, duplicates and events/s of the source alone (no products), on one
//! thread. `cargo run --release -p unified-connectors --example bench_definition`
//! (`UC_BENCH_EVENTS` changes the count).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use uc_testkit::okta::{self, GenerateOptions, OktaServer, Permission};
use unified_connectors::collector::metrics::Metrics;
use unified_connectors::collector::source::Source;
use unified_connectors::collector::source::okta::OktaSource;
use unified_connectors::contract::{OktaSourceConfig, SecretSource};
use unified_connectors::definition::engine::{Engine, EngineOptions};
use unified_connectors::definition::{BUILT_IN, parse};

const TOKEN: &str = "bench-token";

/// Reads from `since` until caught up; returns (events read, unique, missing, seconds).
async fn read(src: &impl Source, expected: &HashSet<String>) -> (usize, usize, usize, f64) {
    let mut pos = src.start_position(Utc::now() - chrono::Duration::hours(3));
    let mut seen = HashSet::with_capacity(expected.len());
    let mut read = 0;
    let t = Instant::now();
    loop {
        let page = match src.fetch(&pos).await {
            Ok(p) => p,
            Err(e) => panic!("fetch failed: {e}"),
        };
        if page.events.is_empty() {
            break;
        }
        read += page.events.len();
        for e in page.events {
            seen.insert(e.uuid.to_string());
        }
        pos = page.next;
    }
    let secs = t.elapsed().as_secs_f64();
    let missing = expected.iter().filter(|u| !seen.contains(*u)).count();
    (read, seen.len(), missing, secs)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n: usize = std::env::var("UC_BENCH_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300_000);
        let server = OktaServer::start(okta::Options::unlimited()).await;
        server.add_token(TOKEN, Permission::ReadOnlyAdmin);
        let org = server.default_org().to_string();
        let mut expected = HashSet::with_capacity(n);
        let mut done = 0;
        while done < n {
            let k = 50_000.min(n - done);
            expected.extend(server.generate_events(
                &org,
                k,
                &GenerateOptions {
                    start: Some(Utc::now() - chrono::Duration::minutes(120) + chrono::Duration::seconds(done as i64 / 100)),
                    spacing_ms: 1,
                    ..Default::default()
                },
            ));
            done += k;
        }
        let token = std::env::temp_dir().join(format!("uc-bench-def-{}.token", std::process::id()));
        std::fs::write(&token, TOKEN).unwrap();
        let secret = SecretSource::File(token.clone());
        println!("{n} Okta events of ~1.8 KB, read until caught up (source alone, one thread):");

        let cfg = OktaSourceConfig {
            domain: org.clone(),
            base_url: Some(server.url()),
            allow_insecure_http: true,
            token: secret.clone(),
            since: Utc::now(),
            poll_interval: Duration::from_secs(15),
            rate_limit_share: 1.0,
            page_limit: 1000,
        };
        let coded = OktaSource::new(&cfg, Metrics::new()).unwrap();
        let before = server.log_requests().total;
        let (read_c, uniq_c, miss_c, secs_c) = read(&coded, &expected).await;
        let req_c = server.log_requests().total - before;
        println!(
            "  coded OktaSource:      {req_c} requests, {} missing, {} duplicates, {:.0} events/s ({secs_c:.2} s)",
            miss_c,
            read_c - uniq_c,
            read_c as f64 / secs_c
        );

        let text = BUILT_IN.iter().find(|(f, _)| *f == "okta-system-log.yaml").unwrap().1;
        let def = parse(text).unwrap();
        let params = BTreeMap::from([("domain".to_string(), org.clone())]);
        let engine = Engine::new(
            "okta-system-log",
            &def.spec,
            &params,
            Some(secret),
            EngineOptions {
                base_url: Some(server.url()),
                allow_insecure_http: true,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let before = server.log_requests().total;
        let (read_e, uniq_e, miss_e, secs_e) = read(&engine, &expected).await;
        let req_e = server.log_requests().total - before;
        println!(
            "  definition via engine: {req_e} requests, {} missing, {} duplicates, {:.0} events/s ({secs_e:.2} s)",
            miss_e,
            read_e - uniq_e,
            read_e as f64 / secs_e
        );
        let _ = std::fs::remove_file(token);
    });
}
