//! The fleet for `make bench-operator`: plays every collector the operator created, writing
//! each one's state ConfigMap (`report.json` and `positions.json`, through the collector's own
//! [`Store`], so the same server-side apply with the same field manager) at a chosen cadence,
//! and makes products fail and recover at a chosen rate. It watches the ProductBindings and
//! records, for every such change, how long the operator took to show it in the binding's
//! `status.phase`.
//!
//! Cadence (`--mode`):
//! - `always`: every `--interval` (5 s), changed or not, as today's collector does; a changed
//!   state goes out with the next write.
//! - `on-change`: at once when a product's state changes, otherwise every `--heartbeat`
//!   (positions ride along), as the collector that writes only on change does.
//!
//! Each change is appended to `--results` as one JSON line `{"binding", "to", "sent", "seen"}`
//! (Unix seconds; `seen` is null when the status did not show it within `--give-up`). Runs
//! until SIGTERM or SIGINT. Requests carry the user agent `uc-fleet-load`, so the API server's
//! audit log tells them from the operator's.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use unified_connectors::api::ProductBinding;
use unified_connectors::collector::state::{Position, Positions, Store};
use unified_connectors::contract::{
    CONFIG_KEY, CONTRACT_VERSION, CollectorConfig, CollectorReport, DeliveryState, ProductHealth,
    ReportedError, SourceHealth, StateConfig,
};

#[derive(Parser, Debug)]
#[command(about = "Plays the collectors of a cluster for the operator benchmark")]
struct Args {
    /// The operator's namespace, where the collectors' ConfigMaps are.
    #[arg(long)]
    namespace: String,
    /// Wait until this many collectors exist before starting.
    #[arg(long)]
    collectors: usize,
    #[arg(long, value_enum, default_value = "always")]
    mode: Mode,
    /// `always`: time between two writes of one collector.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// `on-change`: time between two writes of one collector when nothing changed.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Product failures per minute across the whole fleet; each recovers after `--outage`.
    #[arg(long, default_value_t = 10.0)]
    failures_per_minute: f64,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    outage: Duration,
    /// A change not shown in status after this long is recorded as missed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    give_up: Duration,
    /// JSON lines, one per change (see the module docs).
    #[arg(long)]
    results: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Always,
    OnChange,
}

/// One simulated collector: its state ConfigMap and the products it serves.
struct Collector {
    state: String,
    products: Vec<String>,
}

/// A change waiting to show in a binding's status: the phase expected and when it was written.
struct Pending {
    to: &'static str,
    sent: Option<f64>,
    started: Instant,
}

type Waiting = Arc<Mutex<HashMap<String, Pending>>>;

fn unix_now() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    unified_connectors::http::install_crypto_provider();
    let args = Args::parse();
    let mut config = kube::Config::infer().await?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("uc-fleet-load"),
    ));
    let client = Client::try_from(config)?;
    let collectors = discover(&client, &args.namespace, args.collectors).await?;
    let bindings: usize = collectors.iter().map(|c| c.products.len()).sum();
    eprintln!(
        "[fleet] playing {} collectors with {bindings} products, mode {:?}",
        collectors.len(),
        args.mode
    );

    let waiting: Waiting = Arc::default();
    let results = Arc::new(Mutex::new(std::fs::File::create(&args.results)?));
    tokio::spawn(observe(client.clone(), waiting.clone(), results.clone()));
    tokio::spawn(give_up(waiting.clone(), results.clone(), args.give_up));

    // One task per collector; failures and recoveries reach it through its channel.
    let mut senders = Vec::new();
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for c in collectors {
        let (tx, rx) = mpsc::unbounded_channel();
        let products = c.products.clone();
        senders.push((tx, products));
        tokio::spawn(play(
            client.clone(),
            args.namespace.clone(),
            c,
            rx,
            Cadence {
                mode: args.mode,
                interval: args.interval,
                heartbeat: args.heartbeat,
            },
            waiting.clone(),
            (writes.clone(), errors.clone()),
        ));
    }
    tokio::spawn(fail_and_recover(
        senders,
        args.failures_per_minute,
        args.outage,
        waiting.clone(),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "[fleet] stopping: {} writes, {} failed",
        writes.load(std::sync::atomic::Ordering::Relaxed),
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    results.lock().unwrap().flush()?;
    Ok(())
}

/// Waits for `expected` collectors (their config ConfigMaps) and reads whom each one serves.
async fn discover(client: &Client, ns: &str, expected: usize) -> anyhow::Result<Vec<Collector>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let lp =
        ListParams::default().labels("app.kubernetes.io/managed-by=unified-connectors-operator");
    let started = Instant::now();
    loop {
        let mut found = Vec::new();
        for cm in api.list(&lp).await?.items {
            let Some(text) = cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)) else {
                continue;
            };
            let config: CollectorConfig = serde_saphyr::from_str(text)?;
            let StateConfig::ConfigMap { name, .. } = config.state else {
                continue;
            };
            found.push(Collector {
                state: name,
                products: config.products.into_iter().map(|p| p.id).collect(),
            });
        }
        if found.len() >= expected {
            return Ok(found);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {expected} collectors after 10 minutes",
            found.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(Clone, Copy)]
struct Cadence {
    mode: Mode,
    interval: Duration,
    heartbeat: Duration,
}

/// A product's state change, sent to the collector that serves it.
struct Change {
    product: String,
    failing: bool,
}

/// One collector: keeps its report and positions moving and writes them at the cadence.
async fn play(
    client: Client,
    ns: String,
    c: Collector,
    mut changes: mpsc::UnboundedReceiver<Change>,
    cadence: Cadence,
    waiting: Waiting,
    (writes, errors): (
        Arc<std::sync::atomic::AtomicU64>,
        Arc<std::sync::atomic::AtomicU64>,
    ),
) {
    let store = Store::ConfigMap {
        api: Box::new(Api::namespaced(client, &ns)),
        name: c.state.clone(),
    };
    let period = match cadence.mode {
        Mode::Always => cadence.interval,
        Mode::OnChange => cadence.heartbeat,
    };
    // Collectors started at different times: spread the first writes over one period.
    let offset = fastrand::u64(0..period.as_millis().max(1) as u64);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(offset),
        period,
    );
    let mut report = CollectorReport {
        version: CONTRACT_VERSION,
        config_hash: String::new(),
        source: SourceHealth {
            rate_limit_limit: Some(60),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut page: u64 = 0;
    let mut unsent: Vec<String> = Vec::new();
    loop {
        let write_now = tokio::select! {
            _ = tick.tick() => true,
            Some(change) = changes.recv() => {
                let p = report.products.entry(change.product.clone()).or_default();
                if change.failing {
                    p.state = DeliveryState::Retrying;
                    p.last_error = Some(ReportedError {
                        at: Utc::now(),
                        message: "503 Service Unavailable from the product; retrying".into(),
                        status: Some(503),
                    });
                } else {
                    p.state = DeliveryState::Delivering;
                    p.last_error = None;
                }
                unsent.push(change.product);
                cadence.mode == Mode::OnChange
            }
        };
        if !write_now {
            continue;
        }
        // Time passes for the source and every product: events read, delivered, cursors move.
        let now = Utc::now();
        page += 1;
        let delivered = fastrand::u64(0..50);
        report.updated_at = Some(now);
        report.source.last_successful_poll = Some(now);
        report.source.events_read += delivered;
        report.source.rate_limit_remaining = Some(fastrand::u32(30..60));
        report.source.lag_seconds = Some(1.0 + fastrand::f64() * 19.0);
        let mut positions = Positions {
            version: 1,
            source: format!("https://{}/api/v1/logs", c.state),
            head: Some(format!("cursor-{page}")),
            head_published: Some(now),
            products: BTreeMap::new(),
        };
        for id in &c.products {
            let p: &mut ProductHealth = report.products.entry(id.clone()).or_default();
            if p.state != DeliveryState::Retrying {
                p.state = DeliveryState::Delivering;
                p.last_successful_delivery = Some(now);
                p.events_delivered += delivered;
                p.backlog = 0;
            } else {
                p.backlog += delivered;
            }
            p.lag_seconds = Some(1.0 + fastrand::f64() * 19.0);
            positions.products.insert(
                id.clone(),
                Position {
                    cursor: format!("cursor-{page}"),
                    handled: (0..delivered.min(8))
                        .map(|i| format!("{:032x}", page * 100 + i))
                        .collect(),
                },
            );
        }
        let sent = unix_now();
        {
            let mut w = waiting.lock().unwrap();
            for id in unsent.drain(..) {
                if let Some(p) = w.get_mut(&id) {
                    p.sent.get_or_insert(sent);
                }
            }
        }
        match store.save(&positions, &report).await {
            Ok(()) => writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            Err(_) => errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
    }
}

/// Picks a random healthy product every 60/rate seconds, fails it, and recovers it later.
async fn fail_and_recover(
    collectors: Vec<(mpsc::UnboundedSender<Change>, Vec<String>)>,
    per_minute: f64,
    outage: Duration,
    waiting: Waiting,
) {
    if per_minute <= 0.0 || collectors.is_empty() {
        return;
    }
    let every = Duration::from_secs_f64(60.0 / per_minute);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let (i, j) = {
            let i = fastrand::usize(0..collectors.len());
            (i, fastrand::usize(0..collectors[i].1.len().max(1)))
        };
        let (tx, products) = &collectors[i];
        let Some(product) = products.get(j).cloned() else {
            continue;
        };
        if !expect(&waiting, &product, "Warning") {
            continue; // still recovering from an earlier failure
        }
        let _ = tx.send(Change {
            product: product.clone(),
            failing: true,
        });
        let (tx, waiting) = (tx.clone(), waiting.clone());
        tokio::spawn(async move {
            tokio::time::sleep(outage).await;
            // Recover only once the failure was seen (or given up): one change at a time.
            while waiting.lock().unwrap().contains_key(&product) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            expect(&waiting, &product, "Ready");
            let _ = tx.send(Change {
                product,
                failing: false,
            });
        });
    }
}

/// Registers the phase a product's binding should show next; false if one is already awaited.
fn expect(waiting: &Waiting, product: &str, to: &'static str) -> bool {
    let mut w = waiting.lock().unwrap();
    if w.contains_key(product) {
        return false;
    }
    w.insert(
        product.to_string(),
        Pending {
            to,
            sent: None,
            started: Instant::now(),
        },
    );
    true
}

fn record(results: &Mutex<std::fs::File>, binding: &str, p: &Pending, seen: Option<f64>) {
    let line = serde_json::json!({"binding": binding, "to": p.to, "sent": p.sent, "seen": seen});
    let _ = writeln!(results.lock().unwrap(), "{line}");
}

/// Watches every ProductBinding; a status showing an awaited phase resolves its change.
async fn observe(client: Client, waiting: Waiting, results: Arc<Mutex<std::fs::File>>) {
    let api: Api<ProductBinding> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(b) = event else { continue };
        let seen = unix_now();
        let id = format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any());
        let phase = b
            .status
            .as_ref()
            .and_then(|s| s.common.phase)
            .map(|p| p.as_str());
        let mut w = waiting.lock().unwrap();
        let done = w
            .get(&id)
            .is_some_and(|p| p.sent.is_some() && phase == Some(p.to));
        if done && let Some(p) = w.remove(&id) {
            record(&results, &id, &p, Some(seen));
        }
    }
}

/// Records as missed every change not shown within `after`.
async fn give_up(waiting: Waiting, results: Arc<Mutex<std::fs::File>>, after: Duration) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut w = waiting.lock().unwrap();
        let late: Vec<String> = w
            .iter()
            .filter(|(_, p)| p.started.elapsed() > after)
            .map(|(k, _)| k.clone())
            .collect();
        for id in late {
            if let Some(p) = w.remove(&id) {
                record(&results, &id, &p, None);
            }
        }
    }
}
