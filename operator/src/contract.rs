//! The contract between the operator and the collector. They never talk directly: both meet at the
//! API server through two documents.
//!
//! 1. [`CollectorConfig`] — written by the operator into the collector's ConfigMap (key
//!    [`CONFIG_KEY`]) and read by the collector at start-up. The same format is the standalone
//!    collector's config file (`unified-connectors collector --config FILE`). It never holds a
//!    secret value: secrets are referenced as files ([`SecretSource`]), which in Kubernetes are
//!    keys of the collector's Secret mounted at [`SECRETS_DIR`].
//! 2. [`CollectorReport`] — written by the collector into its state ConfigMap (key
//!    [`REPORT_KEY`], next to its persisted positions under [`POSITIONS_KEY`]) and watched by the
//!    operator, which rolls it up into the status of every connector and binding it serves.
//!
//! Both are versioned by [`CONTRACT_VERSION`]; readers reject a version they do not know.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the documents in this module.
pub const CONTRACT_VERSION: u32 = 1;
/// Key of the collector ConfigMap that holds the YAML [`CollectorConfig`].
pub const CONFIG_KEY: &str = "collector.yaml";
/// Key of the state ConfigMap that holds the JSON [`CollectorReport`].
pub const REPORT_KEY: &str = "report.json";
/// Key of the state ConfigMap that holds the collector's persisted positions (owned by the collector).
pub const POSITIONS_KEY: &str = "positions.json";
/// Where the collector pod mounts its config ConfigMap.
pub const CONFIG_DIR: &str = "/etc/unified-connectors/config";
/// Where the collector pod mounts its Secret (one file per key).
pub const SECRETS_DIR: &str = "/etc/unified-connectors/secrets";
/// Secret key holding the Okta API token in the collector's Secret.
pub const OKTA_TOKEN_KEY: &str = "okta-token";

/// Everything one collector process needs: one source, the products it feeds, where it keeps state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectorConfig {
    /// Must equal [`CONTRACT_VERSION`].
    pub version: u32,
    pub source: SourceConfig,
    /// Products this collector delivers to; each has its own position, filter and health.
    #[serde(default)]
    pub products: Vec<ProductConfig>,
    pub state: StateConfig,
    #[serde(default)]
    pub tuning: Tuning,
    /// Address of the collector's `/metrics`, `/healthz` and `/readyz` server.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "0.0.0.0:9090".into()
}

/// The one source a collector reads. One variant per source type (externally tagged).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SourceConfig {
    Okta(OktaSourceConfig),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OktaSourceConfig {
    /// Host name of the Okta org, such as `example.okta.com`.
    pub domain: String,
    /// Overrides `https://{domain}` (test servers). `http://` is refused unless `allowInsecureHttp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// The SSWS API token. Re-read on every request batch, so a rotated Secret applies without restart.
    pub token: SecretSource,
    /// Where reading starts when no position has been persisted yet.
    pub since: DateTime<Utc>,
    /// Wait between polls once caught up (an empty page).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Fraction (0, 1] of the token's rate limit this collector may use.
    #[serde(default = "default_rate_limit_share")]
    pub rate_limit_share: f64,
    /// Page size, 1..=1000.
    #[serde(default = "default_page_limit")]
    pub page_limit: u32,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_rate_limit_share() -> f64 {
    0.5
}
fn default_page_limit() -> u32 {
    1000
}

/// A secret value the collector reads at run time, never stored in the config itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretSource {
    /// A file whose whole content (trimmed) is the value; re-read when it changes.
    File(PathBuf),
    /// An environment variable (standalone use).
    Env(String),
}

/// One destination product fed by the collector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductConfig {
    /// Stable id: `<namespace>/<ProductBinding name>` in Kubernetes; any unique string standalone.
    /// Positions and health are keyed by it.
    pub id: String,
    /// Where this product starts when it has no persisted position (its connector's creation
    /// time minus the look-back). A product joining a running collector later catches up from here.
    pub since: DateTime<Utc>,
    #[serde(default)]
    pub filter: EventFilter,
    pub sink: SinkConfig,
}

/// Which events a product wants. Empty = all.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventFilter {
    /// Okta `eventType` values; an entry ending in `*` matches by prefix (`user.session.*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
}

/// Product-specific delivery settings. One variant per product type (externally tagged).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SinkConfig {
    Sentinel(SentinelSink),
    SplunkHec(SplunkHecSink),
    Webhook(WebhookSink),
}

/// Azure Monitor Logs Ingestion API with an Entra ID client-credentials token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SentinelSink {
    /// Logs ingestion endpoint of the DCR or DCE, such as `https://my-dce.eastus-1.ingest.monitor.azure.com`.
    pub endpoint: String,
    pub dcr_immutable_id: String,
    /// `Custom-...` stream declared in the DCR.
    pub stream_name: String,
    /// Destination table (informational; the DCR routes the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Entra ID authority, default `https://login.microsoftonline.com` (override for test servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_host: Option<String>,
    pub tenant_id: SecretSource,
    pub client_id: SecretSource,
    pub client_secret: SecretSource,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// Splunk HTTP Event Collector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SplunkHecSink {
    /// Base URL, such as `https://splunk.example.com:8088`.
    pub url: String,
    pub token: SecretSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_sourcetype() -> String {
    "OktaIM2:log".into()
}

/// A generic HTTPS endpoint receiving JSON batches signed per Standard Webhooks 1.0.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSink {
    pub url: String,
    /// `whsec_<base64>` signing secret.
    pub signing_secret: SecretSource,
    /// Extra headers sent with every request (not secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// Where the collector persists its positions and publishes its report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StateConfig {
    /// Standalone: a local JSON file holding positions and the last report.
    File { path: PathBuf },
    /// In Kubernetes: the state ConfigMap, keys [`POSITIONS_KEY`] and [`REPORT_KEY`].
    ConfigMap { namespace: String, name: String },
}

/// Knobs with safe defaults; exposed for benchmarks and unusual deployments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Tuning {
    /// Maximum events held in memory for one product before it falls back to re-reading the source.
    pub max_backlog_events: usize,
    /// A batch is sent when it reaches this many events ...
    pub batch_max_events: usize,
    /// ... or this many bytes of JSON ...
    pub batch_max_bytes: usize,
    /// ... or when its oldest event is this old.
    #[serde(with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// How often positions and the report are persisted.
    #[serde(with = "humantime_serde")]
    pub persist_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_backlog_events: 20_000,
            batch_max_events: 500,
            batch_max_bytes: 900 * 1024,
            batch_max_age: Duration::from_secs(2),
            persist_interval: Duration::from_secs(5),
        }
    }
}

/// Health the collector publishes for the operator. Written to the state ConfigMap under [`REPORT_KEY`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CollectorReport {
    pub version: u32,
    /// When the collector wrote this report; the operator treats an old report as a stalled collector.
    pub updated_at: Option<DateTime<Utc>>,
    /// Hash of the config the collector is running (the operator knows whether its latest change is live).
    #[serde(default)]
    pub config_hash: String,
    pub source: SourceHealth,
    /// Keyed by [`ProductConfig::id`].
    #[serde(default)]
    pub products: BTreeMap<String, ProductHealth>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourceHealth {
    pub last_successful_poll: Option<DateTime<Utc>>,
    pub events_read: u64,
    /// `X-Rate-Limit-Remaining` / `-Limit` of the last response.
    pub rate_limit_remaining: Option<u32>,
    pub rate_limit_limit: Option<u32>,
    /// Seconds between now and the `published` time of the newest event read.
    pub lag_seconds: Option<f64>,
    /// Last failure (never contains a secret), cleared by the next success.
    pub last_error: Option<ReportedError>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProductHealth {
    pub state: DeliveryState,
    pub last_successful_delivery: Option<DateTime<Utc>>,
    pub events_delivered: u64,
    /// Events the product refused as bad records (reported, not retried).
    pub events_rejected: u64,
    /// Events waiting for this product (in memory or still to re-read from the source).
    pub backlog: u64,
    pub lag_seconds: Option<f64>,
    pub last_error: Option<ReportedError>,
}

/// What the collector can say about one product's delivery.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeliveryState {
    /// Nothing delivered yet and nothing failed.
    #[default]
    Pending,
    /// The last attempt succeeded.
    Delivering,
    /// Retrying after transient failures (5xx, 429, timeouts); backlog is kept.
    Retrying,
    /// The product refuses us: bad credentials, 401/403, 404, 410, or records rejected as invalid.
    Rejected,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportedError {
    pub at: DateTime<Utc>,
    /// Human-readable, actionable; never contains a secret.
    pub message: String,
    /// HTTP status when the failure was an HTTP answer.
    pub status: Option<u16>,
}
