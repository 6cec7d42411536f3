//! The operator's Prometheus metrics and its `/metrics`, `/healthz`, `/readyz` server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Cheap to clone: every field is an `Arc` inside.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub connectors: IntGaugeVec,
    pub bindings: IntGaugeVec,
    pub collectors: IntGauge,
    pub token_checks: IntCounterVec,
    pub status_writes: IntCounterVec,
    pub collector_applies: IntCounterVec,
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("unified_connectors".into()), None).expect("static prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time spent in one reconcile")
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            &["controller"],
        )
        .expect("static metric");
        registry
            .register(Box::new(reconcile_duration.clone()))
            .expect("registered once");
        Metrics {
            reconciliations: counter(
                "reconciliations_total",
                "Reconciles run, by controller",
                &["controller"],
            ),
            reconcile_errors: counter(
                "reconcile_errors_total",
                "Reconciles that failed, by controller and error kind",
                &["controller", "error"],
            ),
            reconcile_duration,
            connectors: gauge_vec("connectors", "UnifiedConnectors by phase", &["phase"]),
            bindings: gauge_vec(
                "bindings",
                "ProductBindings by phase and product",
                &["phase", "product"],
            ),
            collectors: gauge(
                "collectors",
                "Collector Deployments managed (one per unique source)",
            ),
            token_checks: counter(
                "token_checks_total",
                "Okta token validations sent to Okta, by result",
                &["result"],
            ),
            status_writes: counter(
                "status_writes_total",
                "Status patches written, by kind",
                &["kind"],
            ),
            collector_applies: counter(
                "collector_object_writes_total",
                "Collector objects applied or deleted, by kind and action",
                &["kind", "action"],
            ),
            leader: gauge("leader", "1 when this replica holds the leader Lease"),
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// Readiness: true once this replica's caches have synced (leaders) or it is standing by (followers).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(addr: &str, metrics: Metrics, ready: Readiness) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State((m, _)): State<(Metrics, Readiness)>| async move { m.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State((_, r)): State<(Metrics, Readiness)>| async move {
                if r.get() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state((metrics, ready));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics server to {addr}: {e}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
