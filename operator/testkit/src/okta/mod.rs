//! A fake Okta org (or several) serving the System Log API the way Okta documents it.
//!
//! Routes (each also under `/orgs/{domain}`, so one server plays several orgs; the plain paths
//! serve [`Options::default_org`]):
//! - `GET /api/v1/logs`: System Log. Polling mode (no `until`): events in persistence order,
//!   `since` (RFC 3339, default 7 days ago, at most 180 days back -> 400 `E0000053`) selects by
//!   persistence time on the first request, `limit` 0..=1000 (default 100, else 400 `E0000001`),
//!   `Link: <...>; rel="self"` and `Link: <...>; rel="next"` on every page, empty ones included;
//!   the next link carries an opaque `after` cursor (`<persisted-ms>_<position>`), which cannot
//!   be combined with `since` (400). `published` may go backwards between consecutive events
//!   (generated events are published up to a few seconds before they are persisted). Bounded
//!   mode (`until` given, or `sortOrder=DESCENDING`) orders by `published` within
//!   `[since, until)` and its last page has no next link. `filter` and `q` are not implemented
//!   (400, so a collector relying on them notices).
//! - `GET /api/v1/users/me`, `GET /api/v1/users/{id}/roles`: connect-time checks.
//!
//! Authentication: `Authorization: SSWS <token>`; unknown token -> 401 `E0000011`; a token whose
//! admin has no role able to read logs ([`Permission::NoAdminRole`]) -> 403 `E0000006`.
//!
//! Rate limits on `/api/v1/logs`: one bucket per org and one per (org, token), each a budget of
//! requests per window ([`Options::rate_window`], about 60 s, starting at the first request).
//! Every authenticated answer carries `X-Rate-Limit-Limit` (the token's budget),
//! `X-Rate-Limit-Remaining` (the smaller remainder) and `X-Rate-Limit-Reset` (epoch seconds);
//! over budget -> 429 `E0000047`.
//!
//! Faults ([`Fault`]) queue up and apply, in order, to the next `/api/v1/logs` requests.
//!
//! Admin API (JSON, for other processes): `GET /_admin/stats` ([`OktaStats`]),
//! `GET /_admin/requests` ([`LoggedRequest`]s), `GET /_admin/uuids?org=D` (uuids in persistence
//! order), `POST /_admin/fault[?org=D]` ([`Fault`], for one org or any), `POST /_admin/down` ([`crate::admin::Down`]),
//! `POST /_admin/tokens` ([`TokenChange`]), `POST /_admin/events` ([`AddEvents`]),
//! `POST /_admin/live` ([`Live`]), `POST /_admin/rate_limit` ([`RateLimits`]),
//! `POST /_admin/clear` (request counters, journal and faults; events stay).

pub mod events;
mod log;
pub(crate) mod rate;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::admin::Down;
use crate::server::Running;
use log::OrgLog;
use rate::{Bucket, Take};

/// The org served by the plain (unprefixed) paths unless [`Options::default_org`] says otherwise.
pub const DEFAULT_ORG: &str = "example.okta.com";

/// Longest page Okta serves.
pub const MAX_LIMIT: usize = 1000;

/// What the admin who created a token may do.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// `SUPER_ADMIN`: reads logs (more than a collector needs).
    SuperAdmin,
    /// `READ_ONLY_ADMIN`: the least-privilege role for a log collector.
    ReadOnlyAdmin,
    /// A `CUSTOM` role granting `okta.logs.read`.
    CustomLogsReader,
    /// A user without admin role: `/users/me` works, `/logs` and `/roles` answer 403 `E0000006`.
    NoAdminRole,
}

impl Permission {
    fn reads_logs(self) -> bool {
        !matches!(self, Permission::NoAdminRole)
    }
}

/// Server configuration. `Options::default()` is a faithful Workforce Identity org: 120 requests
/// per minute per org, 60 per token, and no tokens (add them with [`OktaServer::add_token`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// `0` = a free port.
    pub port: u16,
    /// Org served by the unprefixed paths.
    pub default_org: String,
    /// Tokens known from the start.
    pub tokens: Vec<(String, Permission)>,
    /// Requests per window per (org, token) (Okta: 50% of the org's budget by default).
    pub rate_limit_per_token: u32,
    /// Requests per window per org, all tokens together.
    pub rate_limit_per_org: u32,
    /// Rate-limit window (Okta: about 60 s). Shorten it in tests.
    pub rate_window: Duration,
    /// Base of the URLs in `Link` headers; default `http://<Host header>`.
    pub public_url: Option<String>,
    /// Simultaneous `/api/v1/logs` requests per org (Okta: 15 / 35 / 75 by plan); beyond it,
    /// 429 with `X-Rate-Limit-Limit: 0` and `-Remaining: 0`.
    pub concurrency_limit: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            default_org: DEFAULT_ORG.into(),
            tokens: Vec::new(),
            rate_limit_per_token: 60,
            rate_limit_per_org: 120,
            rate_window: Duration::from_secs(60),
            public_url: None,
            concurrency_limit: 75,
        }
    }
}

impl Options {
    /// Options with effectively no rate limit (benchmarks).
    pub fn unlimited() -> Options {
        Options {
            rate_limit_per_token: u32::MAX,
            rate_limit_per_org: u32::MAX,
            ..Options::default()
        }
    }
}

/// A misbehaviour of `/api/v1/logs`. Faults queue up; each applies to the next `count` requests
/// (authenticated, within budget) before the next fault starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer `status`: 500 has Okta's `E0000009` body (its 30 s query time-out), other codes a
    /// plain-text body as a load balancer would send.
    Status { status: u16, count: u32 },
    /// Wait `delay_ms`, then answer normally (slow responses, client time-outs).
    Delay { delay_ms: u64, count: u32 },
    /// 200 with the normal headers (next link included) but a body cut in the middle: the
    /// client must not advance its cursor.
    Truncated { count: u32 },
    /// 200 with a JSON object instead of an array.
    NotAnArray { count: u32 },
    /// 429 `E0000047` regardless of the budget, `Remaining: 0`, reset in `reset_after_secs`.
    RateLimitStorm {
        count: u32,
        #[serde(default = "one")]
        reset_after_secs: u64,
    },
    /// 429 for too many concurrent requests: Okta reports `Limit: 0`, `Remaining: 0`.
    ConcurrencyLimit { count: u32 },
    /// 200 with the page but without the `rel="next"` link (only `self`).
    NoNextLink { count: u32 },
    /// 200 with the page but a `Link` header that is not `<url>; rel="..."` syntax.
    MalformedLink { count: u32 },
}

fn one() -> u64 {
    1
}

impl Fault {
    fn count_mut(&mut self) -> &mut u32 {
        match self {
            Fault::Status { count, .. }
            | Fault::Delay { count, .. }
            | Fault::Truncated { count }
            | Fault::NotAnArray { count }
            | Fault::RateLimitStorm { count, .. }
            | Fault::ConcurrencyLimit { count }
            | Fault::NoNextLink { count }
            | Fault::MalformedLink { count } => count,
        }
    }
}

/// How [`OktaServer::generate_events`] shapes its events.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct GenerateOptions {
    /// Persistence time of the first event (default: now). Put it in the past for a backlog.
    pub start: Option<DateTime<Utc>>,
    /// Persistence time between consecutive events.
    pub spacing_ms: u64,
    /// Each event's `published` is up to this much before its persistence time, at random, so
    /// `published` is out of order in persistence order (as in real polling results).
    pub max_published_lag_ms: u64,
    /// Event types to use, round-robin; empty = a realistic random mix ([`events::EVENT_TYPES`]).
    pub event_types: Vec<String>,
    /// Seed for reproducible events; default random.
    pub seed: Option<u64>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            start: None,
            spacing_ms: 0,
            max_published_lag_ms: 3000,
            event_types: Vec::new(),
            seed: None,
        }
    }
}

/// Counters of `/api/v1/logs` requests (all outcomes), from [`OktaServer::log_requests`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LogRequests {
    pub total: u64,
    pub by_org: BTreeMap<String, u64>,
    /// Keyed by token value (test tokens only); `""` for requests without a token.
    pub by_token: BTreeMap<String, u64>,
    pub by_status: BTreeMap<u16, u64>,
    /// Events returned in 200 answers.
    pub events_served: u64,
}

/// One `/api/v1/logs` request, as remembered by [`OktaServer::requests`] (the last 10,000).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub org: String,
    pub token: Option<String>,
    /// The raw query string.
    pub query: String,
    pub status: u16,
    /// Events in the answer.
    pub events: usize,
}

/// `GET /_admin/stats` of the Okta server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct OktaStats {
    pub requests: LogRequests,
    /// Events stored per org.
    pub events: BTreeMap<String, usize>,
    pub down: bool,
    pub pending_faults: usize,
}

/// Body of `POST /_admin/tokens`: add (or change) a token, or revoke it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TokenChange {
    pub token: String,
    #[serde(default)]
    pub permission: Option<Permission>,
    #[serde(default)]
    pub revoke: bool,
    /// Make the token known to this org only (default: every org).
    #[serde(default)]
    pub org: Option<String>,
}

/// Body of `POST /_admin/events`: append `events` as given, or `count` generated ones.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AddEvents {
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub events: Vec<Value>,
    #[serde(default)]
    pub count: usize,
    #[serde(default)]
    pub options: GenerateOptions,
}

/// Body of `POST /_admin/live`: `events_per_sec <= 0` stops the org's live feed.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Live {
    #[serde(default)]
    pub org: Option<String>,
    pub events_per_sec: f64,
}

/// Body of `POST /_admin/rate_limit`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RateLimits {
    pub per_token: u32,
    pub per_org: u32,
}

struct TokenInfo {
    perm: Permission,
    user_id: String,
    /// The org the token belongs to; `None` = valid in every org (convenient in tests).
    org: Option<String>,
}

const JOURNAL: usize = 10_000;

struct Shared {
    default_org: String,
    window: Duration,
    public_url: Option<String>,
    addr: OnceLock<std::net::SocketAddr>,
    limits: Mutex<(u32, u32)>,
    orgs: RwLock<HashMap<String, Arc<RwLock<OrgLog>>>>,
    tokens: RwLock<HashMap<String, TokenInfo>>,
    org_buckets: Mutex<HashMap<String, Bucket>>,
    token_buckets: Mutex<HashMap<(String, String), Bucket>>,
    /// Queued faults, each for one org or (`None`) for any.
    faults: Mutex<VecDeque<(Option<String>, Fault)>>,
    down: AtomicBool,
    stats: Mutex<LogRequests>,
    journal: Mutex<VecDeque<LoggedRequest>>,
    live: Mutex<HashMap<String, JoinHandle<()>>>,
    concurrency_limit: u32,
    in_flight: Mutex<HashMap<String, u32>>,
}

/// A running fake Okta; stops when dropped.
pub struct OktaServer {
    shared: Arc<Shared>,
    running: Running,
}

/// Lower-cases an org domain, the key of its event log.
pub fn normalize_org(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl OktaServer {
    /// Starts the server on `127.0.0.1:<opts.port>`; panics if the port cannot be bound
    /// (use [`OktaServer::try_start`] for a fixed port).
    pub async fn start(opts: Options) -> OktaServer {
        Self::try_start(opts)
            .await
            .expect("bind the Okta test server")
    }

    pub async fn try_start(opts: Options) -> std::io::Result<OktaServer> {
        let shared = Arc::new(Shared {
            default_org: normalize_org(&opts.default_org),
            window: opts.rate_window,
            public_url: opts.public_url.map(|u| u.trim_end_matches('/').to_string()),
            addr: OnceLock::new(),
            limits: Mutex::new((opts.rate_limit_per_token, opts.rate_limit_per_org)),
            orgs: RwLock::default(),
            tokens: RwLock::default(),
            org_buckets: Mutex::default(),
            token_buckets: Mutex::default(),
            faults: Mutex::default(),
            down: AtomicBool::new(false),
            stats: Mutex::default(),
            journal: Mutex::default(),
            live: Mutex::default(),
            concurrency_limit: opts.concurrency_limit,
            in_flight: Mutex::default(),
        });
        for (token, perm) in opts.tokens {
            shared.add_token(&token, perm, None);
        }
        let running = Running::spawn(opts.port, router(shared.clone())).await?;
        let _ = shared.addr.set(running.addr);
        Ok(OktaServer { shared, running })
    }

    /// `http://127.0.0.1:PORT`: base URL of [`Options::default_org`].
    pub fn url(&self) -> String {
        self.running.url()
    }

    /// Base URL of one org: `http://127.0.0.1:PORT/orgs/{domain}`.
    pub fn org_url(&self, domain: &str) -> String {
        format!("{}/orgs/{}", self.url(), normalize_org(domain))
    }

    /// The operator's `--okta-url-template`: `http://127.0.0.1:PORT/orgs/{domain}`.
    pub fn url_template(&self) -> String {
        format!("{}/orgs/{{domain}}", self.url())
    }

    /// The org served by the unprefixed paths.
    pub fn default_org(&self) -> &str {
        &self.shared.default_org
    }

    /// Adds a token (or changes its permission); valid for every org.
    pub fn add_token(&self, token: &str, perm: Permission) {
        self.shared.add_token(token, perm, None);
    }

    /// Adds a token that only `org` knows, as with real Okta orgs: the same token sent to
    /// another org gets 401 (tests that the operator wires each org's own token).
    pub fn add_org_token(&self, org: &str, token: &str, perm: Permission) {
        self.shared.add_token(token, perm, Some(normalize_org(org)));
    }

    /// Makes a token unknown (401 from now on).
    pub fn revoke_token(&self, token: &str) {
        self.shared.tokens.write().unwrap().remove(token);
    }

    /// Changes the budgets of new and current windows.
    pub fn set_rate_limits(&self, per_token: u32, per_org: u32) {
        *self.shared.limits.lock().unwrap() = (per_token, per_org);
    }

    /// Appends events to `org`'s log as persisted now (kept byte-for-byte as serialised, unknown
    /// fields included). Returns their uuids (events without a string `uuid` are kept but
    /// contribute nothing).
    pub fn append_events(&self, org: &str, events: Vec<Value>) -> Vec<String> {
        self.append_events_at(org, events, Utc::now())
    }

    /// Like [`OktaServer::append_events`] with an explicit persistence time (clamped so that
    /// persistence order never goes backwards).
    pub fn append_events_at(
        &self,
        org: &str,
        events: Vec<Value>,
        persisted: DateTime<Utc>,
    ) -> Vec<String> {
        self.shared.append(org, events, persisted)
    }

    /// Appends raw bytes as one event, unvalidated (malformed-source tests: the page is then not
    /// valid JSON, or holds an event without `uuid`...). Persisted now.
    pub fn append_raw(&self, org: &str, raw: &[u8]) {
        let log = self.shared.org(org);
        log.write()
            .unwrap()
            .push(raw, Utc::now().timestamp_millis(), i64::MIN, None);
    }

    /// Generates `n` realistic events into `org`'s log and returns their uuids in persistence order.
    pub fn generate_events(&self, org: &str, n: usize, opts: &GenerateOptions) -> Vec<String> {
        self.shared.generate(org, n, opts)
    }

    /// Appends `events_per_sec` generated events per second to `org` until stopped, replaced,
    /// or the server is dropped (`make demo`).
    pub fn start_live(&self, org: &str, events_per_sec: f64) {
        self.shared.start_live(org, events_per_sec);
    }

    pub fn stop_live(&self, org: &str) {
        if let Some(t) = self.shared.live.lock().unwrap().remove(&normalize_org(org)) {
            t.abort();
        }
    }

    /// Uuids of `org`'s events in persistence order (the expected set for completeness checks).
    pub fn uuids(&self, org: &str) -> Vec<String> {
        self.shared.org(org).read().unwrap().uuids()
    }

    /// Number of events in `org`'s log.
    pub fn event_count(&self, org: &str) -> usize {
        self.shared.org(org).read().unwrap().len()
    }

    /// Counters of `/api/v1/logs` requests.
    pub fn log_requests(&self) -> LogRequests {
        self.shared.stats.lock().unwrap().clone()
    }

    /// The last requests to `/api/v1/logs`, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared
            .journal
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// Queues a fault for the next `/api/v1/logs` requests.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.lock().unwrap().push_back((None, fault));
    }

    /// Queues a fault for the next `/api/v1/logs` requests to `org` only (other orgs served
    /// by the same server are unaffected, and skip over it).
    pub fn inject_for(&self, org: &str, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .push_back((Some(normalize_org(org)), fault));
    }

    /// Forgets request counters, the request journal and queued faults (events stay).
    pub fn clear_counters(&self) {
        self.shared.clear_counters();
    }

    /// Drops queued faults.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// While down, every request gets 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    pub fn stats(&self) -> OktaStats {
        self.shared.stats()
    }
}

impl Drop for OktaServer {
    fn drop(&mut self) {
        for (_, t) in self.shared.live.lock().unwrap().drain() {
            t.abort();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/logs", get(logs_default))
        .route("/orgs/{domain}/api/v1/logs", get(logs_org))
        .route("/api/v1/users/me", get(me_default))
        .route("/orgs/{domain}/api/v1/users/me", get(me_org))
        .route("/api/v1/users/{id}/roles", get(roles_default))
        .route("/orgs/{domain}/api/v1/users/{id}/roles", get(roles_org))
        .route(
            "/_admin/stats",
            get(|State(s): State<Arc<Shared>>| async move { Json(s.stats()) }),
        )
        .route(
            "/_admin/requests",
            get(|State(s): State<Arc<Shared>>| async move {
                Json(
                    s.journal
                        .lock()
                        .unwrap()
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>(),
                )
            }),
        )
        .route("/_admin/uuids", get(admin_uuids))
        .route(
            "/_admin/clear",
            post(|State(s): State<Arc<Shared>>| async move {
                s.clear_counters();
                Json(s.stats())
            }),
        )
        .route(
            "/_admin/fault",
            post(
                |State(s): State<Arc<Shared>>, Query(q): Query<OrgQuery>, Json(f): Json<Fault>| async move {
                    s.faults.lock().unwrap().push_back((q.org.as_deref().map(normalize_org), f));
                    Json(s.stats())
                },
            ),
        )
        .route(
            "/_admin/down",
            post(
                |State(s): State<Arc<Shared>>, Json(d): Json<Down>| async move {
                    s.down.store(d.down, Ordering::SeqCst);
                    Json(s.stats())
                },
            ),
        )
        .route("/_admin/tokens", post(admin_tokens))
        .route("/_admin/events", post(admin_events))
        .route(
            "/_admin/live",
            post(
                |State(s): State<Arc<Shared>>, Json(l): Json<Live>| async move {
                    let org = l.org.unwrap_or_else(|| s.default_org.clone());
                    s.start_live(&org, l.events_per_sec);
                    Json(s.stats())
                },
            ),
        )
        .route(
            "/_admin/rate_limit",
            post(
                |State(s): State<Arc<Shared>>, Json(r): Json<RateLimits>| async move {
                    *s.limits.lock().unwrap() = (r.per_token, r.per_org);
                    Json(s.stats())
                },
            ),
        )
        .with_state(shared)
}

type Params = Query<Vec<(String, String)>>;

async fn logs_default(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Params,
) -> Response {
    let org = s.default_org.clone();
    s.logs(&org, "", &headers, &uri, &q).await
}

async fn logs_org(
    State(s): State<Arc<Shared>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Params,
) -> Response {
    let org = normalize_org(&domain);
    s.logs(&org, &format!("/orgs/{org}"), &headers, &uri, &q)
        .await
}

async fn me_default(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let org = s.default_org.clone();
    s.me(&org, &headers)
}

async fn me_org(
    State(s): State<Arc<Shared>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.me(&normalize_org(&domain), &headers)
}

async fn roles_default(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let org = s.default_org.clone();
    s.roles(&org, &id, &headers)
}

async fn roles_org(
    State(s): State<Arc<Shared>>,
    Path((domain, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    s.roles(&normalize_org(&domain), &id, &headers)
}

#[derive(Deserialize)]
struct OrgQuery {
    org: Option<String>,
}

async fn admin_uuids(State(s): State<Arc<Shared>>, Query(q): Query<OrgQuery>) -> Response {
    let org = q.org.unwrap_or_else(|| s.default_org.clone());
    Json(s.org(&org).read().unwrap().uuids()).into_response()
}

async fn admin_tokens(State(s): State<Arc<Shared>>, Json(t): Json<TokenChange>) -> Response {
    if t.revoke {
        s.tokens.write().unwrap().remove(&t.token);
    } else {
        s.add_token(
            &t.token,
            t.permission.unwrap_or(Permission::ReadOnlyAdmin),
            t.org.as_deref().map(normalize_org),
        );
    }
    Json(s.stats()).into_response()
}

async fn admin_events(State(s): State<Arc<Shared>>, Json(a): Json<AddEvents>) -> Response {
    let org = a.org.unwrap_or_else(|| s.default_org.clone());
    let mut added = 0;
    if !a.events.is_empty() {
        added += a.events.len();
        s.append(&org, a.events, Utc::now());
    }
    if a.count > 0 {
        added += s.generate(&org, a.count, &a.options).len();
    }
    Json(json!({ "org": org, "added": added, "total": s.org(&org).read().unwrap().len() }))
        .into_response()
}

/// An error answer, boxed (a `Response` is large to carry in every `Result`).
type Refusal = Box<Response>;

/// Okta's error body.
fn okta_error(status: StatusCode, code: &str, summary: &str) -> Response {
    let id = format!("oae{}", events::okta_id(&mut rand::rng(), ""));
    let body = json!({
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": id,
        "errorCauses": []
    });
    (status, Json(body)).into_response()
}

fn bad_request(summary: &str) -> Refusal {
    Box::new(okta_error(
        StatusCode::BAD_REQUEST,
        "E0000001",
        &format!("Api validation failed: {summary}"),
    ))
}

fn add_rate_headers(resp: &mut Response, limit: u32, remaining: u32, reset: u64) {
    let h = resp.headers_mut();
    h.insert("x-rate-limit-limit", HeaderValue::from(limit));
    h.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
    h.insert("x-rate-limit-reset", HeaderValue::from(reset));
}

fn ssws_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("SSWS")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Parsed `/api/v1/logs` query.
struct LogQuery<'a> {
    since: Option<&'a str>,
    until: Option<&'a str>,
    after: Option<&'a str>,
    limit: usize,
    descending: bool,
}

fn parse_query(q: &[(String, String)]) -> Result<LogQuery<'_>, Refusal> {
    let mut out = LogQuery {
        since: None,
        until: None,
        after: None,
        limit: 100,
        descending: false,
    };
    for (k, v) in q {
        match k.as_str() {
            "since" => out.since = Some(v),
            "until" => out.until = Some(v),
            "after" => out.after = Some(v),
            "limit" => {
                out.limit = match v.parse::<usize>() {
                    Ok(n) if n <= MAX_LIMIT => n,
                    _ => return Err(bad_request("limit: must be an integer between 0 and 1000")),
                }
            }
            "sortOrder" => match v.as_str() {
                "ASCENDING" => out.descending = false,
                "DESCENDING" => out.descending = true,
                _ => return Err(bad_request("sortOrder: must be ASCENDING or DESCENDING")),
            },
            "filter" | "q" => {
                return Err(bad_request(&format!(
                    "{k}: not supported by the unified-connectors test server"
                )));
            }
            _ => {}
        }
    }
    if out.after.is_some() && out.since.is_some() {
        return Err(bad_request("after: cannot be combined with since"));
    }
    Ok(out)
}

fn parse_time(name: &str, v: &str) -> Result<i64, Refusal> {
    let t = DateTime::parse_from_rfc3339(v).map_err(|_| {
        Box::new(okta_error(
            StatusCode::BAD_REQUEST,
            "E0000030",
            &format!("Bad request. Invalid date for '{name}': dates must be RFC 3339, like 2024-01-01T00:00:00.000Z"),
        ))
    })?;
    let ms = t.timestamp_millis();
    if ms < Utc::now().timestamp_millis() - 180 * 86_400_000 {
        return Err(Box::new(okta_error(
            StatusCode::BAD_REQUEST,
            "E0000053",
            &format!("Invalid date. '{name}' must be within the last 180 days"),
        )));
    }
    Ok(ms)
}

/// Cursor `<ms>_<n>`.
fn parse_cursor(v: &str) -> Result<(i64, usize), Refusal> {
    v.split_once('_')
        .and_then(|(ms, n)| Some((ms.parse().ok()?, n.parse().ok()?)))
        .ok_or_else(|| bad_request("after: invalid cursor"))
}

const SEVEN_DAYS_MS: i64 = 7 * 86_400_000;

impl Shared {
    fn add_token(&self, token: &str, perm: Permission, org: Option<String>) {
        let mut tokens = self.tokens.write().unwrap();
        let user_id = tokens
            .get(token)
            .map(|t| t.user_id.clone())
            .unwrap_or_else(|| events::okta_id(&mut rand::rng(), "00u"));
        tokens.insert(token.to_string(), TokenInfo { perm, user_id, org });
    }

    /// The permission and user id of `token` in `org`, if `org` knows it.
    /// Counts a request in flight for `org`, or `None` when the org's concurrency limit is reached.
    fn enter(&self, org: &str) -> Option<InFlight<'_>> {
        let mut m = self.in_flight.lock().unwrap();
        let n = m.entry(org.to_string()).or_insert(0);
        if *n >= self.concurrency_limit {
            return None;
        }
        *n += 1;
        Some(InFlight {
            shared: self,
            org: org.to_string(),
        })
    }

    fn token_info(&self, org: &str, token: &str) -> Option<(Permission, String)> {
        let tokens = self.tokens.read().unwrap();
        let info = tokens.get(token)?;
        match &info.org {
            Some(o) if o != org => None,
            _ => Some((info.perm, info.user_id.clone())),
        }
    }

    fn append(&self, org: &str, events: Vec<Value>, persisted: DateTime<Utc>) -> Vec<String> {
        let log = self.org(org);
        let mut log = log.write().unwrap();
        let mut uuids = Vec::with_capacity(events.len());
        for e in events {
            let uuid = e.get("uuid").and_then(Value::as_str).map(str::to_string);
            let published = e
                .get("published")
                .and_then(Value::as_str)
                .and_then(|p| DateTime::parse_from_rfc3339(p).ok())
                .map_or(i64::MIN, |p| p.timestamp_millis());
            let json = serde_json::to_vec(&e).expect("a Value serialises");
            log.push(&json, persisted.timestamp_millis(), published, uuid.clone());
            uuids.extend(uuid);
        }
        uuids
    }

    fn org(&self, org: &str) -> Arc<RwLock<OrgLog>> {
        let org = normalize_org(org);
        if let Some(log) = self.orgs.read().unwrap().get(&org) {
            return log.clone();
        }
        self.orgs.write().unwrap().entry(org).or_default().clone()
    }

    /// Forgets request counters, the request journal and queued faults (events stay).
    fn clear_counters(&self) {
        *self.stats.lock().unwrap() = LogRequests::default();
        self.journal.lock().unwrap().clear();
        self.faults.lock().unwrap().clear();
    }

    fn stats(&self) -> OktaStats {
        OktaStats {
            requests: self.stats.lock().unwrap().clone(),
            events: self
                .orgs
                .read()
                .unwrap()
                .iter()
                .map(|(o, l)| (o.clone(), l.read().unwrap().len()))
                .collect(),
            down: self.down.load(Ordering::SeqCst),
            pending_faults: self.faults.lock().unwrap().len(),
        }
    }

    fn generate(&self, org: &str, n: usize, opts: &GenerateOptions) -> Vec<String> {
        let mut rng = match opts.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_rng(&mut rand::rng()),
        };
        let start = opts.start.unwrap_or_else(Utc::now).timestamp_millis();
        let log = self.org(org);
        let mut uuids = Vec::with_capacity(n);
        // Large batches render from pre-serialised templates (fast); small ones (live feeds)
        // build each event from scratch (more variety, no template set-up cost).
        let templates = (n >= 256).then(|| events::Templates::new(&mut rng, &opts.event_types));
        let mut buf = Vec::new();
        // Serialise outside the lock; append in chunks so readers are not blocked for long.
        for chunk_start in (0..n).step_by(1000) {
            buf.clear();
            let mut chunk = Vec::with_capacity(1000);
            for i in chunk_start..n.min(chunk_start + 1000) {
                let persisted = start + (i as i64) * opts.spacing_ms as i64;
                let lag = if opts.max_published_lag_ms > 0 {
                    rng.random_range(0..=opts.max_published_lag_ms)
                } else {
                    0
                };
                let published = persisted - lag as i64;
                let t = DateTime::from_timestamp_millis(published).unwrap_or_else(Utc::now);
                let from = buf.len();
                let uuid = match &templates {
                    Some(templates) => templates.render(&mut rng, i, t, &mut buf),
                    None => {
                        let ty = (!opts.event_types.is_empty())
                            .then(|| opts.event_types[i % opts.event_types.len()].as_str());
                        let e = events::log_event(&mut rng, t, ty);
                        serde_json::to_writer(&mut buf, &e).expect("a Value serialises");
                        e["uuid"]
                            .as_str()
                            .expect("generated events have a uuid")
                            .to_string()
                    }
                };
                chunk.push((from..buf.len(), persisted, published, uuid));
            }
            let mut log = log.write().unwrap();
            for (range, persisted, published, uuid) in chunk {
                log.push(&buf[range], persisted, published, Some(uuid.clone()));
                uuids.push(uuid);
            }
        }
        uuids
    }

    fn start_live(self: &Arc<Self>, org: &str, events_per_sec: f64) {
        let org = normalize_org(org);
        if let Some(t) = self.live.lock().unwrap().remove(&org) {
            t.abort();
        }
        if events_per_sec <= 0.0 {
            return;
        }
        let weak: Weak<Shared> = Arc::downgrade(self);
        let key = org.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut due = 0.0f64;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                due += events_per_sec / 10.0;
                let n = due.floor() as usize;
                due -= n as f64;
                if n > 0 {
                    shared.generate(&org, n, &GenerateOptions::default());
                }
            }
        });
        self.live.lock().unwrap().insert(key, task);
    }

    fn record(
        &self,
        org: &str,
        token: Option<&str>,
        query: Option<&str>,
        status: u16,
        events: usize,
    ) {
        {
            let mut s = self.stats.lock().unwrap();
            s.total += 1;
            *s.by_org.entry(org.to_string()).or_insert(0) += 1;
            *s.by_token
                .entry(token.unwrap_or("").to_string())
                .or_insert(0) += 1;
            *s.by_status.entry(status).or_insert(0) += 1;
            if status == 200 {
                s.events_served += events as u64;
            }
        }
        let mut j = self.journal.lock().unwrap();
        if j.len() == JOURNAL {
            j.pop_front();
        }
        j.push_back(LoggedRequest {
            org: org.to_string(),
            token: token.map(str::to_string),
            query: query.unwrap_or("").to_string(),
            status,
            events,
        });
    }

    /// Takes one request from the org's and the token's buckets.
    fn take(&self, org: &str, token: &str) -> (u32, Take) {
        let (per_token, per_org) = *self.limits.lock().unwrap();
        let mut tb = self.token_buckets.lock().unwrap();
        let tbucket = tb
            .entry((org.to_string(), token.to_string()))
            .or_insert_with(|| Bucket::new(self.window));
        let t = tbucket.take(per_token, self.window);
        let mut ob = self.org_buckets.lock().unwrap();
        let obucket = ob
            .entry(org.to_string())
            .or_insert_with(|| Bucket::new(self.window));
        let o = obucket.take(per_org, self.window);
        if t.allowed && !o.allowed {
            tbucket.give_back();
        } else if o.allowed && !t.allowed {
            obucket.give_back();
        }
        let reset = if !o.allowed && t.allowed {
            o.reset_epoch
        } else {
            t.reset_epoch
        };
        (
            per_token,
            Take {
                allowed: t.allowed && o.allowed,
                remaining: t.remaining.min(o.remaining),
                reset_epoch: reset,
            },
        )
    }

    /// Takes one request's worth of the first queued fault that applies to `org`.
    fn next_fault(&self, org: &str) -> Option<Fault> {
        let mut q = self.faults.lock().unwrap();
        q.retain_mut(|(_, f)| *f.count_mut() > 0);
        let at = q
            .iter()
            .position(|(o, _)| o.as_deref().is_none_or(|o| o == org))?;
        let f = &mut q[at].1;
        *f.count_mut() -= 1;
        let mut one = f.clone();
        if *f.count_mut() == 0 {
            q.remove(at);
        }
        *one.count_mut() = 1;
        Some(one)
    }

    fn base(&self, headers: &HeaderMap, prefix: &str) -> String {
        let base = match &self.public_url {
            Some(u) => u.clone(),
            None => match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
                Some(host) => format!("http://{host}"),
                None => format!("http://{}", self.addr.get().expect("set at start")),
            },
        };
        format!("{base}{prefix}/api/v1/logs")
    }

    async fn logs(
        &self,
        org: &str,
        prefix: &str,
        headers: &HeaderMap,
        uri: &Uri,
        q: &[(String, String)],
    ) -> Response {
        let token = ssws_token(headers);
        let (resp, events) = self.logs_inner(org, prefix, headers, uri, q, token).await;
        self.record(org, token, uri.query(), resp.status().as_u16(), events);
        resp
    }

    async fn logs_inner(
        &self,
        org: &str,
        prefix: &str,
        headers: &HeaderMap,
        uri: &Uri,
        q: &[(String, String)],
        token: Option<&str>,
    ) -> (Response, usize) {
        if self.down.load(Ordering::SeqCst) {
            return (
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
                0,
            );
        }
        let perm = token.and_then(|t| self.token_info(org, t).map(|i| i.0));
        let (Some(token), Some(perm)) = (token, perm) else {
            return (
                okta_error(
                    StatusCode::UNAUTHORIZED,
                    "E0000011",
                    "Invalid token provided",
                ),
                0,
            );
        };
        let Some(_slot) = self.enter(org) else {
            let mut r = too_many();
            add_rate_headers(&mut r, 0, 0, rate::epoch_secs() + 1);
            return (r, 0);
        };
        let (limit, take) = self.take(org, token);
        let with_rate = |mut r: Response| {
            add_rate_headers(&mut r, limit, take.remaining, take.reset_epoch);
            (r, 0)
        };
        if !take.allowed {
            return with_rate(too_many());
        }
        if !perm.reads_logs() {
            return with_rate(okta_error(
                StatusCode::FORBIDDEN,
                "E0000006",
                "You do not have permission to perform the requested action",
            ));
        }
        let fault = self.next_fault(org);
        match &fault {
            Some(Fault::Status { status, .. }) => {
                let status =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return with_rate(if status == StatusCode::INTERNAL_SERVER_ERROR {
                    okta_error(status, "E0000009", "Internal Server Error")
                } else {
                    (
                        status,
                        status.canonical_reason().unwrap_or("error").to_string(),
                    )
                        .into_response()
                });
            }
            Some(Fault::RateLimitStorm {
                reset_after_secs, ..
            }) => {
                let mut r = too_many();
                add_rate_headers(&mut r, limit, 0, rate::epoch_secs() + reset_after_secs);
                return (r, 0);
            }
            Some(Fault::ConcurrencyLimit { .. }) => {
                let mut r = too_many();
                add_rate_headers(&mut r, 0, 0, rate::epoch_secs() + 1);
                return (r, 0);
            }
            Some(Fault::Delay { delay_ms, .. }) => {
                tokio::time::sleep(Duration::from_millis(*delay_ms)).await
            }
            _ => {}
        }
        let page = match parse_query(q).and_then(|lq| self.page(org, prefix, headers, uri, &lq)) {
            Ok(p) => p,
            Err(r) => return with_rate(*r),
        };
        let mut body = page.body;
        match fault {
            Some(Fault::Truncated { .. }) => body.truncate((body.len() / 2).max(1)),
            Some(Fault::NotAnArray { .. }) => body = br#"{"errorSummary":"not a page"}"#.to_vec(),
            _ => {}
        }
        let mut r = Response::new(Body::from(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let links = match fault {
            Some(Fault::NoNextLink { .. }) => page.links.into_iter().take(1).collect(),
            Some(Fault::MalformedLink { .. }) => {
                vec!["http://127.0.0.1/api/v1/logs?after=x; next".to_string()]
            }
            _ => page.links,
        };
        for link in links {
            h.append(
                header::LINK,
                HeaderValue::try_from(link).expect("links are ASCII"),
            );
        }
        add_rate_headers(&mut r, limit, take.remaining, take.reset_epoch);
        (r, page.events)
    }

    /// Builds one page of `org`'s log for a validated query.
    fn page(
        &self,
        org: &str,
        prefix: &str,
        headers: &HeaderMap,
        uri: &Uri,
        q: &LogQuery,
    ) -> Result<Page, Refusal> {
        let endpoint = self.base(headers, prefix);
        let self_link = match uri.query() {
            Some(query) => format!("<{endpoint}?{query}>; rel=\"self\""),
            None => format!("<{endpoint}>; rel=\"self\""),
        };
        let now = Utc::now().timestamp_millis();
        let log = self.org(org);
        let log = log.read().unwrap();
        if q.until.is_some() || q.descending {
            return self.bounded_page(&log, &endpoint, self_link, q, now);
        }
        let (start, since_ms) = match q.after {
            Some(after) => {
                let (ms, pos) = parse_cursor(after)?;
                if pos > log.len() {
                    return Err(bad_request("after: invalid cursor"));
                }
                (pos, ms)
            }
            None => {
                let since = match q.since {
                    Some(s) => parse_time("since", s)?,
                    None => now - SEVEN_DAYS_MS,
                };
                (log.position_since(since), since)
            }
        };
        let end = (start + q.limit).min(log.len());
        let mut body = Vec::with_capacity(log.page_bytes(start, end) + 2);
        log.write_page(start, end, &mut body);
        let cursor_ms = if end > 0 {
            log.persisted_at(end - 1).max(since_ms.min(now))
        } else {
            since_ms
        };
        let next = format!(
            "<{endpoint}?limit={}&after={cursor_ms}_{end}>; rel=\"next\"",
            q.limit
        );
        Ok(Page {
            body,
            links: vec![self_link, next],
            events: end - start,
        })
    }

    /// Bounded query: events with `since <= published < until`, ordered by `published`; the
    /// cursor is `<since-ms>_<offset>`; the last page has no next link.
    fn bounded_page(
        &self,
        log: &OrgLog,
        endpoint: &str,
        self_link: String,
        q: &LogQuery,
        now: i64,
    ) -> Result<Page, Refusal> {
        let until = match q.until {
            Some(u) => parse_time("until", u)?,
            None => now,
        };
        let (since, offset) = match q.after {
            Some(after) => parse_cursor(after)?,
            None => (
                match q.since {
                    Some(s) => parse_time("since", s)?,
                    None => until - SEVEN_DAYS_MS,
                },
                0,
            ),
        };
        let mut matching: Vec<usize> = (0..log.len())
            .filter(|&i| (since..until).contains(&log.published_at(i)))
            .collect();
        matching.sort_by_key(|&i| log.published_at(i));
        if q.descending {
            matching.reverse();
        }
        let page: &[usize] = matching.get(offset..).unwrap_or(&[]);
        let page = &page[..page.len().min(q.limit)];
        let mut body = vec![b'['];
        for (n, &i) in page.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(log.event(i));
        }
        body.push(b']');
        let mut links = vec![self_link];
        if offset + page.len() < matching.len() {
            let until =
                events::okta_time(DateTime::from_timestamp_millis(until).unwrap_or_default());
            let order = if q.descending {
                "&sortOrder=DESCENDING"
            } else {
                ""
            };
            links.push(format!(
                "<{endpoint}?limit={}&until={until}{order}&after={since}_{}>; rel=\"next\"",
                q.limit,
                offset + page.len()
            ));
        }
        Ok(Page {
            body,
            links,
            events: page.len(),
        })
    }

    /// The caller's token info, or the 401 answer.
    fn caller(&self, org: &str, headers: &HeaderMap) -> Result<(Permission, String), Refusal> {
        ssws_token(headers)
            .and_then(|t| self.token_info(org, t))
            .ok_or_else(|| {
                Box::new(okta_error(
                    StatusCode::UNAUTHORIZED,
                    "E0000011",
                    "Invalid token provided",
                ))
            })
    }

    fn me(&self, org: &str, headers: &HeaderMap) -> Response {
        match self.caller(org, headers) {
            Err(r) => *r,
            Ok((_, id)) => Json(json!({
                "id": id,
                "status": "ACTIVE",
                "created": "2024-01-02T03:04:05.000Z",
                "activated": "2024-01-02T03:04:05.000Z",
                "lastLogin": events::okta_time(Utc::now()),
                "profile": {
                    "login": format!("collector-admin@{org}"),
                    "email": format!("collector-admin@{org}"),
                    "firstName": "Collector",
                    "lastName": "Admin",
                },
                "credentials": { "provider": { "type": "OKTA", "name": "OKTA" } },
            }))
            .into_response(),
        }
    }

    fn roles(&self, org: &str, id: &str, headers: &HeaderMap) -> Response {
        let caller = match self.caller(org, headers) {
            Err(r) => return *r,
            Ok(c) => c,
        };
        if !caller.0.reads_logs() {
            return okta_error(
                StatusCode::FORBIDDEN,
                "E0000006",
                "You do not have permission to perform the requested action",
            );
        }
        let target = if id == caller.1 {
            Some(caller.0)
        } else {
            self.tokens
                .read()
                .unwrap()
                .values()
                .find(|t| t.user_id == id && t.org.as_deref().is_none_or(|o| o == org))
                .map(|t| t.perm)
        };
        let Some(perm) = target else {
            return okta_error(
                StatusCode::NOT_FOUND,
                "E0000007",
                &format!("Not found: Resource not found: {id} (User)"),
            );
        };
        let role = |ty: &str, label: &str| {
            json!({
                "id": format!("ra1{}", &id[3.min(id.len())..]),
                "label": label,
                "type": ty,
                "status": "ACTIVE",
                "created": "2024-01-02T03:04:05.000Z",
                "lastUpdated": "2024-01-02T03:04:05.000Z",
                "assignmentType": "USER",
            })
        };
        let roles = match perm {
            Permission::SuperAdmin => vec![role("SUPER_ADMIN", "Super Administrator")],
            Permission::ReadOnlyAdmin => vec![role("READ_ONLY_ADMIN", "Read Only Administrator")],
            Permission::CustomLogsReader => vec![role("CUSTOM", "System Log reader")],
            Permission::NoAdminRole => vec![],
        };
        Json(roles).into_response()
    }
}

/// A request in flight, counted against its org's concurrency limit until dropped.
struct InFlight<'a> {
    shared: &'a Shared,
    org: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.shared.in_flight.lock().unwrap().get_mut(&self.org) {
            *n = n.saturating_sub(1);
        }
    }
}

struct Page {
    body: Vec<u8>,
    links: Vec<String>,
    events: usize,
}

fn too_many() -> Response {
    okta_error(
        StatusCode::TOO_MANY_REQUESTS,
        "E0000047",
        "API call exceeded rate limit due to too many requests.",
    )
}

#[cfg(test)]
mod tests;
