//! A fake 1Password Events API, as `shared/reference/sources.md` §2 documents it.
//!
//! - `POST /api/v1/auditevents` and `/api/v2/auditevents`: the body is a `ResetCursor`
//!   `{"limit": 1..=1000 (default 100), "start_time": RFC 3339, "end_time": RFC 3339}` (all
//!   optional) or `{"cursor": "..."}`; the answer `{"cursor", "has_more", "items"}`. Items come in
//!   persistence order (an item persisted late, with an earlier `timestamp`, comes after
//!   others: the cursor is a persistence position, never skipped). `has_more: false` = caught
//!   up; POSTing the same cursor later returns what arrived since.
//! - `GET /api/v2/auth/introspect`: `{uuid, issued_at, features, account_uuid}`.
//! - Auth: `Authorization: Bearer <token>`; else 401. Errors: `{"Error": {"Message": ...}}`;
//!   400 on a malformed body, a bad cursor or `limit` out of 1..=1000.
//! - Rate limit: `rate_limit` requests per `rate_window` (1Password: 600 per minute, 30,000 per
//!   hour), with no rate-limit headers and no `Retry-After` (none are documented): 429.
//!
//! Admin API: see [`crate::saas`].

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::saas::{self, Core, CoreOptions, Fault};
use crate::server::Running;

/// Most items one answer holds.
pub const MAX_LIMIT: usize = 1000;

#[derive(Clone, Debug)]
pub struct Options {
    pub port: u16,
    pub tokens: Vec<String>,
    /// Requests per window (1Password: 600 per minute).
    pub rate_limit: u32,
    pub rate_window: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            tokens: Vec::new(),
            rate_limit: 600,
            rate_window: Duration::from_secs(60),
        }
    }
}

/// A running fake 1Password Events API; stops when dropped.
pub struct OnePasswordServer {
    core: Arc<Core>,
    running: Running,
}

impl OnePasswordServer {
    pub async fn start(opts: Options) -> OnePasswordServer {
        Self::try_start(opts)
            .await
            .expect("bind the 1Password test server")
    }

    pub async fn try_start(opts: Options) -> std::io::Result<OnePasswordServer> {
        let core = Core::new(
            &CoreOptions {
                tokens: opts.tokens.clone(),
                rate_limit: opts.rate_limit,
                rate_window: opts.rate_window,
            },
            generate,
        );
        let router = Router::new()
            .route("/api/v1/auditevents", post(audit_events))
            .route("/api/v2/auditevents", post(audit_events))
            .route("/api/v2/auth/introspect", get(introspect))
            .with_state(core.clone())
            .merge(saas::admin_router(core.clone()));
        let running = Running::spawn(opts.port, router).await?;
        Ok(OnePasswordServer { core, running })
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

impl Drop for OnePasswordServer {
    fn drop(&mut self) {
        self.core.stop_live();
    }
}

const ACTIONS: &[&str] = &["create", "delete", "suspend", "join", "grant", "revoke"];
const OBJECTS: &[&str] = &["vault", "item", "user", "group", "invite"];

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn generate(rng: &mut StdRng, time_ms: i64, _seq: u64, _persisted: i64) -> (String, Vec<u8>) {
    let id = saas::uuid(rng);
    let v = json!({
        "uuid": id,
        "timestamp": rfc3339(time_ms),
        "actor_uuid": saas::uuid(rng),
        "action": ACTIONS[rng.random_range(0..ACTIONS.len())],
        "object_type": OBJECTS[rng.random_range(0..OBJECTS.len())],
        "object_uuid": saas::uuid(rng),
        "aux_id": rng.random_range(1..10_000u32),
        "aux_uuid": saas::uuid(rng),
        "aux_info": "",
        "session": {"uuid": saas::uuid(rng), "login_time": rfc3339(time_ms - 60_000), "device_uuid": saas::uuid(rng), "ip": "192.0.2.10"},
        "location": {"country": "CA", "region": "Ontario", "city": "Toronto", "latitude": 43.65, "longitude": -79.38},
    });
    (id, serde_json::to_vec(&v).expect("a Value serialises"))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"Error": {"Message": message}}))).into_response()
}

/// What a cursor encodes (opaque to clients).
#[derive(Serialize, Deserialize)]
struct Cursor {
    seq: u64,
    limit: usize,
    #[serde(default)]
    start: Option<i64>,
    #[serde(default)]
    end: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    cursor: Option<String>,
    limit: Option<i64>,
    start_time: Option<String>,
    end_time: Option<String>,
}

fn parse_request(body: &[u8]) -> Result<Cursor, String> {
    let r: Request = if body.iter().all(u8::is_ascii_whitespace) {
        Request {
            cursor: None,
            limit: None,
            start_time: None,
            end_time: None,
        }
    } else {
        serde_json::from_slice(body).map_err(|e| format!("malformed request body: {e}"))?
    };
    if let Some(c) = r.cursor {
        return STANDARD
            .decode(&c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| "invalid cursor".to_string());
    }
    let limit = r.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT as i64).contains(&limit) {
        return Err(format!("limit must be between 1 and 1000, not {limit}"));
    }
    let time = |t: Option<String>, name: &str| -> Result<Option<i64>, String> {
        t.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|d| d.timestamp_millis())
                .map_err(|_| format!("{name} must be RFC 3339, not {t:?}"))
        })
        .transpose()
    };
    Ok(Cursor {
        seq: 0,
        limit: limit as usize,
        start: time(r.start_time, "start_time")?,
        end: time(r.end_time, "end_time")?,
    })
}

async fn introspect(State(core): State<Arc<Core>>, headers: HeaderMap) -> Response {
    match saas::bearer(&headers) {
        Some(t) if core.token_ok(t) => Json(json!({
            "uuid": "OK41XEGLRTH4YKO5YRTCPNX3IU",
            "issued_at": "2026-01-01T00:00:00Z",
            "features": ["auditevents"],
            "account_uuid": "M4E2SWNZAZFTRGQGDNS2E5A4MU",
        }))
        .into_response(),
        _ => error(StatusCode::UNAUTHORIZED, "Unauthorized"),
    }
}

async fn audit_events(State(core): State<Arc<Core>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = |resp: Response, events: usize| {
        core.record(resp.status().as_u16(), events);
        resp
    };
    if core.is_down() {
        return answer(
            error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            0,
        );
    }
    match saas::bearer(&headers) {
        Some(t) if core.token_ok(t) => {}
        _ => return answer(error(StatusCode::UNAUTHORIZED, "Unauthorized"), 0),
    }
    let (_, take) = core.take();
    if !take.allowed {
        return answer(error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"), 0);
    }
    let mut truncated = false;
    let mut malformed = false;
    match core.next_fault() {
        Some(Fault::Status { status, .. }) => {
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return answer(error(s, "Internal Server Error"), 0);
        }
        Some(Fault::RateLimitStorm { .. }) | Some(Fault::Secondary { .. }) => {
            return answer(error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"), 0);
        }
        Some(Fault::Delay { delay_ms, .. }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await
        }
        Some(Fault::Truncated { .. }) => truncated = true,
        Some(Fault::NotAnArray { .. }) => malformed = true,
        None => {}
    }
    let cursor = match parse_request(&body) {
        Ok(c) => c,
        Err(m) => return answer(error(StatusCode::BAD_REQUEST, &m), 0),
    };
    let events = core.snapshot();
    let rest = saas::after_seq(&events, cursor.seq);
    let matches = |t: i64| cursor.start.is_none_or(|s| t >= s) && cursor.end.is_none_or(|e| t <= e);
    let mut items = Vec::new();
    let mut scanned = cursor.seq;
    let mut has_more = false;
    for e in rest {
        if !matches(e.time_ms) {
            scanned = e.seq;
            continue;
        }
        if items.len() == cursor.limit {
            has_more = true;
            break;
        }
        scanned = e.seq;
        items.push(e.clone());
    }
    let next = Cursor {
        seq: scanned,
        ..cursor
    };
    let next = STANDARD.encode(serde_json::to_vec(&next).expect("serialises"));
    let mut body = Vec::with_capacity(256 + items.len() * 600);
    body.extend_from_slice(b"{\"cursor\":");
    body.extend_from_slice(&serde_json::to_vec(&next).expect("serialises"));
    body.extend_from_slice(format!(",\"has_more\":{has_more},\"items\":").as_bytes());
    if malformed {
        body.extend_from_slice(b"{\"unexpected\":true}");
    } else {
        body.extend_from_slice(&saas::json_array(items.iter().map(|e| &e.raw[..])));
    }
    body.push(b'}');
    if truncated {
        body = saas::truncate(body);
    }
    let n = items.len();
    answer(
        (StatusCode::OK, [("content-type", "application/json")], body).into_response(),
        n,
    )
}
