//! The data plane: one process per unique source, reading it once and delivering to every product.
//!
//! `unified-connectors collector --config FILE` calls [`run`]. Tests and benchmarks use
//! [`start`], which returns a [`RunningCollector`] that can be stopped gracefully (as on SIGTERM)
//! or killed (as on a crash). See `pipeline.rs` for how one request stream feeds every product
//! without loss.

pub mod config;
pub mod event;
pub mod metrics;
pub mod pipeline;
pub mod product;
pub mod source;
pub mod state;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::contract::{CollectorReport, SourceConfig};
use config::LoadedConfig;
use metrics::Metrics;
use pipeline::{BatchLimits, Hub, HubConfig, ProductSpec, Timings};
use product::{AnyProduct, Product};
use source::okta::OktaSource;
use state::Store;

/// Options that are not part of the config (tests, benchmarks).
#[derive(Clone, Debug)]
pub struct Options {
    /// Overrides `listen` (tests bind `127.0.0.1:0`).
    pub listen: Option<SocketAddr>,
    /// How long a graceful stop may spend flushing in-flight batches.
    pub drain_timeout: Duration,
    pub timings: Timings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: None,
            drain_timeout: Duration::from_secs(20),
            timings: Timings::default(),
        }
    }
}

/// A started collector.
pub struct RunningCollector {
    hub: Arc<Mutex<Hub>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    metrics_addr: SocketAddr,
    stop_reading: CancellationToken,
    hard_stop: CancellationToken,
    source: JoinHandle<()>,
    products: Vec<JoinHandle<()>>,
    persister: JoinHandle<()>,
    server: JoinHandle<()>,
    drain_timeout: Duration,
}

/// Reads the config and runs until SIGTERM or SIGINT, then stops gracefully.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    crate::http::check_extra_ca()?;
    let loaded = config::load(config_path)?;
    let c = start(loaded, Options::default()).await?;
    info!(metrics = %c.metrics_addr(), "collector running");
    c.run_until_signal().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Loads state and starts every task of a collector.
pub async fn start(loaded: LoadedConfig, opts: Options) -> anyhow::Result<RunningCollector> {
    let cfg = loaded.config;
    let SourceConfig::Okta(okta) = &cfg.source;
    let metrics = Metrics::new();
    let source = Arc::new(OktaSource::new(okta, metrics.clone())?);
    let store = Arc::new(Store::new(&cfg.state).await?);
    let saved = store.load().await?;
    let products: Vec<(String, Arc<AnyProduct>)> = cfg
        .products
        .iter()
        .map(|p| Ok((p.id.clone(), Arc::new(AnyProduct::new(&p.sink, okta)?))))
        .collect::<anyhow::Result<_>>()?;
    let specs: Vec<ProductSpec> = cfg
        .products
        .iter()
        .map(|p| ProductSpec {
            id: p.id.clone(),
            filter: p.filter.clone(),
            since: p.since,
        })
        .collect();
    let src = source.clone();
    let mut hub = Hub::new(
        HubConfig {
            poll_interval: okta.poll_interval,
            slow_grace: opts.timings.slow_product_grace,
            page_limit: okta.page_limit as usize,
            max_backlog: cfg.tuning.max_backlog_events,
            source_since: okta.since,
            config_hash: loaded.hash.clone(),
            source_id: source.logs_url().to_string(),
        },
        &specs,
        saved,
        move |since| src.initial_url(since),
        metrics.clone(),
    );
    for (id, why) in &loaded.refused {
        warn!(product = %id, error = %why, "product settings refused; delivering to the others");
    }
    hub.refuse(&loaded.refused, chrono::Utc::now());
    let hub = Arc::new(Mutex::new(hub));
    let stop_reading = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    let listen: SocketAddr = match opts.listen {
        Some(a) => a,
        None => cfg.listen.parse().context("listen")?,
    };
    let (metrics_addr, server) = metrics::serve(listen, metrics.clone(), hard_stop.clone())
        .await
        .with_context(|| format!("cannot serve metrics on {listen}"))?;
    let wake = Arc::new(Notify::new());
    let source_task = tokio::spawn(pipeline::source_task(
        hub.clone(),
        source,
        wake.clone(),
        stop_reading.clone(),
        opts.timings,
    ));
    let tuning = &cfg.tuning;
    let product_tasks = products
        .into_iter()
        .enumerate()
        .map(|(i, (id, p))| {
            let lim = BatchLimits {
                max_events: tuning.batch_max_events,
                max_bytes: tuning.batch_max_bytes.min(p.max_batch_bytes()),
                overhead: p.overhead_per_event(),
                max_age: tuning.batch_max_age,
            };
            tokio::spawn(
                pipeline::ProductTask {
                    hub: hub.clone(),
                    slot: i,
                    id,
                    product: p,
                    lim,
                    source_wake: wake.clone(),
                    hard_stop: hard_stop.clone(),
                    timings: opts.timings,
                    metrics: metrics.clone(),
                }
                .run(),
            )
        })
        .collect();
    let persister = tokio::spawn(persist_loop(
        hub.clone(),
        store.clone(),
        cfg.tuning.persist_interval,
        hard_stop.clone(),
    ));
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(RunningCollector {
        hub,
        store,
        metrics,
        metrics_addr,
        stop_reading,
        hard_stop,
        source: source_task,
        products: product_tasks,
        persister,
        server,
        drain_timeout: opts.drain_timeout,
    })
}

async fn persist_loop(
    hub: Arc<Mutex<Hub>>,
    store: Arc<Store>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = persist(&hub, &store).await {
            warn!(error = %format!("{e:#}"), "persisting positions failed; will retry");
        }
    }
}

async fn persist(hub: &Mutex<Hub>, store: &Store) -> anyhow::Result<()> {
    let (positions, report) = {
        let h = hub.lock().unwrap();
        (h.positions(), h.report())
    };
    store.save(&positions, &report).await
}

impl RunningCollector {
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn report(&self) -> CollectorReport {
        self.hub.lock().unwrap().report()
    }

    pub fn positions(&self) -> state::Positions {
        self.hub.lock().unwrap().positions()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs until SIGTERM/SIGINT, then stops gracefully; fails (rather than hang) if a task dies.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let died = {
            let tasks = std::iter::once(&mut self.source).chain(self.products.iter_mut());
            tokio::select! {
                _ = wait_for_signal() => None,
                (res, index, _) = futures::future::select_all(tasks) => Some((res, index)),
            }
        };
        match died {
            None => {
                info!(
                    "stop requested: no more reads, flushing in-flight batches, persisting positions"
                );
                self.shutdown().await
            }
            Some((res, index)) => {
                self.kill();
                let what = if index == 0 {
                    "source reader".to_string()
                } else {
                    format!("delivery task #{index}")
                };
                anyhow::bail!(
                    "the collector's {what} stopped unexpectedly ({res:?}); exiting so that it is restarted"
                )
            }
        }
    }

    /// Graceful stop (SIGTERM): stop reading, flush what is in memory (bounded by the drain
    /// timeout), persist positions.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop_reading.cancel();
        let _ = self.source.await;
        self.hub.lock().unwrap().drain();
        let drained =
            tokio::time::timeout(self.drain_timeout, futures::future::join_all(self.products))
                .await;
        if drained.is_err() {
            warn!("drain timeout: some batches were not flushed; they are re-read after restart");
        }
        self.hard_stop.cancel();
        let _ = self.persister.await;
        let _ = self.server.await;
        persist(&self.hub, &self.store).await
    }

    /// Abrupt stop (a crash): nothing is flushed or persisted beyond what already was.
    pub fn kill(self) {
        self.hard_stop.cancel();
        self.stop_reading.cancel();
        self.source.abort();
        self.persister.abort();
        self.server.abort();
        for p in self.products {
            p.abort();
        }
    }
}
