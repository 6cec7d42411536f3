//! A fake Splunk HTTP Event Collector.
//!
//! `POST /services/collector/event` (also `/services/collector` and `/services/collector/event/1.0`)
//! with `Authorization: Splunk <token>` and a body of event envelopes stacked one after another
//! (not a JSON array), optionally gzip-compressed. Answers as Splunk does:
//! - no `Authorization` -> 401 `{"text":"Token is required","code":2}`; not `Splunk <token>` ->
//!   401 code 3 "Invalid authorization"; unknown token -> 403 code 4 "Invalid token"; disabled
//!   token -> 403 code 1 "Token disabled";
//! - empty body -> 400 code 5 "No data"; an envelope that is not a JSON object or whose `time`
//!   is not a number (or numeric string) -> 400 code 6 "Invalid data format"; no `event` -> 400
//!   code 12 "Event field is required"; `event` null or `""` -> 400 code 13 "Event field cannot be
//!   blank"; an `index` not allowed -> 400 code 7 "Incorrect index". Error answers carry
//!   `invalid-event-number`, and — as Splunk does — the envelopes *before* the invalid one are
//!   indexed (a sender retrying the whole batch after a 400 creates duplicates);
//! - busy (down, or an injected 503) -> 503 code 9 "Server is busy";
//! - success -> 200 `{"text":"Success","code":0}`.
//!
//! `GET /services/collector/health` -> 200 code 17 "HEC is healthy" (503 code 18 while down).
//! Stored records are whole envelopes; their uuid is `event.uuid`.
//!
//! With [`Options::indexer_ack`], requests need a channel (`X-Splunk-Request-Channel: <GUID>`,
//! else 400 code 10/11), successes carry `"ackId": n` (per channel, from 0), and
//! `POST /services/collector/ack` with `{"acks":[ids]}` answers `{"acks":{"id":true|false}}`
//! (every indexed batch is acknowledged at once; an id reads `true` once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::probe::{Shape, UuidField};
use crate::product::{MAX_REQUEST_BYTES, ProductCore, decode_body};
use crate::received::Item;
use crate::server::Running;

/// The sourcetype of Okta events in Splunk's Okta add-on.
pub const OKTA_SOURCETYPE: &str = "OktaIM2:log";

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// `0` = a free port.
    pub port: u16,
    /// Valid HEC tokens (GUIDs in Splunk). Default: one, [`Options::DEFAULT_TOKEN`].
    pub tokens: Vec<String>,
    /// Indexes a sender may name in `index`; `None` = any.
    pub allowed_indexes: Option<Vec<String>>,
    /// Splunk's `max_content_length` (limits.conf, default 800 MB) -> 413 beyond.
    pub max_content_length: usize,
    /// Indexer acknowledgement: requests need a channel, answers carry `ackId`, and
    /// `POST /services/collector/ack` reports them.
    pub indexer_ack: bool,
    /// Keep whole envelopes (tests) or only counters and uuids (benchmarks).
    pub keep_records: bool,
}

impl Options {
    pub const DEFAULT_TOKEN: &'static str = "11111111-2222-4333-8444-555555555555";
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            tokens: vec![Options::DEFAULT_TOKEN.into()],
            allowed_indexes: None,
            max_content_length: 800 * 1024 * 1024,
            keep_records: true,
            indexer_ack: false,
        }
    }
}

struct Shared {
    core: Arc<ProductCore>,
    /// Token -> enabled.
    tokens: Mutex<HashMap<String, bool>>,
    allowed_indexes: Option<HashSet<String>>,
    max_content_length: usize,
    /// Channels and their ack ids, when indexer acknowledgement is on.
    acks: Option<Mutex<HashMap<String, Channel>>>,
}

/// A running fake HEC; stops when dropped.
pub struct HecServer {
    shared: Arc<Shared>,
    running: Running,
}

impl HecServer {
    /// Starts on `127.0.0.1:<opts.port>`; panics if the port cannot be bound.
    pub async fn start(opts: Options) -> HecServer {
        Self::try_start(opts)
            .await
            .expect("bind the HEC test server")
    }

    pub async fn try_start(opts: Options) -> std::io::Result<HecServer> {
        let shared = Arc::new(Shared {
            core: ProductCore::new(opts.keep_records),
            tokens: Mutex::new(opts.tokens.iter().map(|t| (t.clone(), true)).collect()),
            allowed_indexes: opts.allowed_indexes.map(|v| v.into_iter().collect()),
            max_content_length: opts.max_content_length,
            acks: opts.indexer_ack.then(Default::default),
        });
        let router = Router::new()
            .route("/services/collector/event", post(collect))
            .route("/services/collector/event/1.0", post(collect))
            .route("/services/collector", post(collect))
            .route("/services/collector/health", get(health))
            .route("/services/collector/ack", post(ack))
            .with_state(shared.clone())
            .merge(shared.core.admin_router())
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES));
        let running = Running::spawn(opts.port, router).await?;
        Ok(HecServer { shared, running })
    }

    /// `http://127.0.0.1:PORT`, the HEC base URL.
    pub fn url(&self) -> String {
        self.running.url()
    }

    /// Adds (or re-enables) a token.
    pub fn add_token(&self, token: &str) {
        self.shared
            .tokens
            .lock()
            .unwrap()
            .insert(token.into(), true);
    }

    /// Disables a token (403 code 1) without deleting it.
    pub fn disable_token(&self, token: &str) {
        if let Some(enabled) = self.shared.tokens.lock().unwrap().get_mut(token) {
            *enabled = false;
        }
    }

    /// Deletes a token (403 code 4).
    pub fn remove_token(&self, token: &str) {
        self.shared.tokens.lock().unwrap().remove(token);
    }

    crate::product::product_server_methods!("While down, everything answers 503 code 9.");
}

fn hec(status: StatusCode, text: &str, code: u32, invalid_event: Option<usize>) -> Response {
    let mut body = json!({ "text": text, "code": code });
    if let Some(n) = invalid_event {
        body["invalid-event-number"] = n.into();
    }
    (status, Json(body)).into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let stats = s.core.stats();
    if stats.down {
        hec(
            StatusCode::SERVICE_UNAVAILABLE,
            "HEC is unhealthy, queues are full",
            18,
            None,
        )
    } else {
        hec(StatusCode::OK, "HEC is healthy", 17, None)
    }
}

async fn collect(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let resp = collect_inner(&s, &headers, &body).await;
    s.core.count(resp.status().as_u16());
    resp
}

/// The parts of an envelope the server validates; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    time: Option<Value>,
    #[serde(default)]
    event: UuidField,
    #[serde(default)]
    index: Option<String>,
}

/// Checks `Authorization: Splunk <token>` the way Splunk answers.
fn authorize(s: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return Err(Box::new(hec(
            StatusCode::UNAUTHORIZED,
            "Token is required",
            2,
            None,
        )));
    };
    let Some(token) = auth
        .to_str()
        .ok()
        .and_then(|a| a.strip_prefix("Splunk "))
        .map(str::trim)
    else {
        return Err(Box::new(hec(
            StatusCode::UNAUTHORIZED,
            "Invalid authorization",
            3,
            None,
        )));
    };
    match s.tokens.lock().unwrap().get(token) {
        None => {
            return Err(Box::new(hec(
                StatusCode::FORBIDDEN,
                "Invalid token",
                4,
                None,
            )));
        }
        Some(false) => {
            return Err(Box::new(hec(
                StatusCode::FORBIDDEN,
                "Token disabled",
                1,
                None,
            )));
        }
        Some(true) => {}
    }
    Ok(())
}

/// With indexer acknowledgement on, the request's channel (header `X-Splunk-Request-Channel`
/// or query `channel`, a GUID); `None` when acknowledgement is off.
fn channel(s: &Shared, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    let Some(acks) = &s.acks else { return Ok(None) };
    let Some(ch) = headers
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Box::new(hec(
            StatusCode::BAD_REQUEST,
            "Data channel is missing",
            10,
            None,
        )));
    };
    if uuid::Uuid::parse_str(ch.trim()).is_err() {
        return Err(Box::new(hec(
            StatusCode::BAD_REQUEST,
            "Invalid data channel",
            11,
            None,
        )));
    }
    acks.lock()
        .unwrap()
        .entry(ch.trim().to_string())
        .or_default();
    Ok(Some(ch.trim().to_string()))
}

/// Per channel: the next ack id, and the ids issued and not yet queried.
#[derive(Default)]
struct Channel {
    next: u64,
    pending: HashSet<u64>,
}

#[derive(Deserialize)]
struct AckQuery {
    acks: Vec<u64>,
}

/// `POST /services/collector/ack`: every indexed batch is acknowledged at once; an id reads
/// `true` once and is then forgotten, as Splunk does.
async fn ack(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return *r;
    }
    let Some(acks) = &s.acks else {
        return hec(StatusCode::BAD_REQUEST, "ACK is disabled", 14, None);
    };
    let ch = match channel(&s, &headers) {
        Ok(Some(c)) => c,
        Ok(None) => unreachable!("acks are on"),
        Err(r) => return *r,
    };
    let Ok(q) = serde_json::from_slice::<AckQuery>(&body) else {
        return hec(StatusCode::BAD_REQUEST, "Invalid data format", 6, None);
    };
    let mut acks = acks.lock().unwrap();
    let chan = acks.entry(ch).or_default();
    let answer: serde_json::Map<String, Value> = q
        .acks
        .iter()
        .map(|id| (id.to_string(), Value::Bool(chan.pending.remove(id))))
        .collect();
    Json(json!({ "acks": answer })).into_response()
}

async fn collect_inner(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(rej) = s.core.gate().await {
        return rej.answer(if rej.status == StatusCode::SERVICE_UNAVAILABLE {
            hec(rej.status, "Server is busy", 9, None)
        } else {
            hec(rej.status, "Internal server error (injected)", 8, None)
        });
    }
    if let Err(r) = authorize(s, headers) {
        return *r;
    }
    let channel = match channel(s, headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if body.len() > s.max_content_length {
        return hec(StatusCode::PAYLOAD_TOO_LARGE, "Content too large", 27, None);
    }
    let data = match decode_body(headers, body, s.max_content_length) {
        Ok(d) => d,
        Err(_) => return hec(StatusCode::BAD_REQUEST, "Invalid data format", 6, Some(0)),
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        return hec(StatusCode::BAD_REQUEST, "No data", 5, None);
    }
    let keep = s.core.received.keeps_records();
    let mut items = Vec::new();
    let mut error = None;
    // Splunk indexes the envelopes preceding the first invalid one.
    let mut check = |n: usize, env: Result<Envelope, String>, record: Option<Value>| -> bool {
        let env = match env {
            Ok(e) => e,
            Err(_) => {
                error = Some(hec(
                    StatusCode::BAD_REQUEST,
                    "Invalid data format",
                    6,
                    Some(n),
                ));
                return false;
            }
        };
        let time_ok = match &env.time {
            None | Some(Value::Null) | Some(Value::Number(_)) => true,
            Some(Value::String(t)) => t.parse::<f64>().is_ok(),
            Some(_) => false,
        };
        let failure = match (&env.event.0, time_ok) {
            (_, false) => Some(("Invalid data format", 6)),
            (Shape::Missing, _) => Some(("Event field is required", 12)),
            (Shape::Null | Shape::String { empty: true }, _) => {
                Some(("Event field cannot be blank", 13))
            }
            _ => None,
        };
        let failure = failure.or_else(|| match (&s.allowed_indexes, &env.index) {
            (Some(allowed), Some(index)) if !allowed.contains(index) => {
                Some(("Incorrect index", 7))
            }
            _ => None,
        });
        if let Some((text, code)) = failure {
            error = Some(hec(StatusCode::BAD_REQUEST, text, code, Some(n)));
            return false;
        }
        let uuid = match env.event.0 {
            Shape::Object { found } => found,
            _ => None,
        };
        items.push(Item { uuid, record });
        true
    };
    if keep {
        for (n, v) in serde_json::Deserializer::from_slice(&data)
            .into_iter::<Value>()
            .enumerate()
        {
            let ok = match v {
                Ok(v) => check(
                    n,
                    Envelope::deserialize(&v).map_err(|e| e.to_string()),
                    Some(v),
                ),
                Err(e) => check(n, Err(e.to_string()), None),
            };
            if !ok {
                break;
            }
        }
    } else {
        for (n, env) in serde_json::Deserializer::from_slice(&data)
            .into_iter::<Envelope>()
            .enumerate()
        {
            if !check(n, env.map_err(|e| e.to_string()), None) {
                break;
            }
        }
    }
    if !items.is_empty() {
        s.core.received.accept(items);
    }
    if let Some(e) = error {
        return e;
    }
    match (&s.acks, channel) {
        (Some(acks), Some(ch)) => {
            let mut acks = acks.lock().unwrap();
            let chan = acks.entry(ch).or_default();
            let id = chan.next;
            chan.next += 1;
            chan.pending.insert(id);
            Json(json!({ "text": "Success", "code": 0, "ackId": id })).into_response()
        }
        _ => hec(StatusCode::OK, "Success", 0, None),
    }
}

#[cfg(test)]
mod tests;
