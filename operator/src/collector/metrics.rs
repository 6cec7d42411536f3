//! Prometheus metrics of one collector, and its `/metrics`, `/healthz`, `/readyz` server.
//!
//! A registry per collector (not the global one) so that several collectors can run in one test
//! process. Labels carry product ids and status codes, never secrets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

pub struct Metrics {
    pub registry: Registry,
    pub events_read: IntCounter,
    pub source_requests: IntCounterVec,
    pub rate_limit_remaining: IntGauge,
    pub rate_limit_limit: IntGauge,
    pub source_lag: Gauge,
    pub delivered: IntCounterVec,
    pub failed: IntCounterVec,
    pub backlog: IntGaugeVec,
    pub lag: GaugeVec,
    pub batch_size: HistogramVec,
    pub delivery_seconds: HistogramVec,
    pub product_requests: IntCounterVec,
    /// Set once start-up (config, state) is done; `/readyz` answers 200 from then on.
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let p = &["product"];
        Arc::new(Metrics {
            events_read: reg(
                &registry,
                IntCounter::new(
                    "uc_collector_events_read_total",
                    "Events read by the head (duplicates dropped; re-reads for catching-up products not counted)",
                )
                .unwrap(),
            ),
            source_requests: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "uc_collector_source_requests_total",
                        "Requests to the source by HTTP status code",
                    ),
                    &["code"],
                )
                .unwrap(),
            ),
            rate_limit_remaining: reg(
                &registry,
                IntGauge::new(
                    "uc_collector_source_rate_limit_remaining",
                    "X-Rate-Limit-Remaining of the last source response",
                )
                .unwrap(),
            ),
            rate_limit_limit: reg(
                &registry,
                IntGauge::new(
                    "uc_collector_source_rate_limit_limit",
                    "X-Rate-Limit-Limit of the last source response (the alert's denominator)",
                )
                .unwrap(),
            ),
            source_lag: reg(
                &registry,
                Gauge::new(
                    "uc_collector_source_lag_seconds",
                    "Now minus the published time of the newest event read",
                )
                .unwrap(),
            ),
            delivered: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "uc_collector_events_delivered_total",
                        "Events accepted by a product",
                    ),
                    p,
                )
                .unwrap(),
            ),
            failed: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "uc_collector_events_failed_total",
                        "Events a product rejected as bad records (reported and skipped)",
                    ),
                    p,
                )
                .unwrap(),
            ),
            backlog: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "uc_collector_backlog_events",
                        "Events waiting for a product",
                    ),
                    p,
                )
                .unwrap(),
            ),
            lag: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "uc_collector_lag_seconds",
                        "Now minus the published time of the last event delivered to a product",
                    ),
                    p,
                )
                .unwrap(),
            ),
            batch_size: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "uc_collector_batch_size_events",
                        "Events per delivered batch",
                    )
                    .buckets(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0]),
                    p,
                )
                .unwrap(),
            ),
            delivery_seconds: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "uc_collector_delivery_seconds",
                        "Latency of one delivery request to a product",
                    ),
                    p,
                )
                .unwrap(),
            ),
            product_requests: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "uc_collector_product_requests_total",
                        "Requests to products by HTTP status code (0: no answer)",
                    ),
                    &["product", "code"],
                )
                .unwrap(),
            ),
            ready: AtomicBool::new(false),
            registry,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding does not fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// Serves the endpoints until `stop` is cancelled. Returns the bound address (port 0 allowed).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok((bound, handle))
}
