//! A fake Auth0 Management API log stream, as `shared/reference/sources.md` §3 documents it.
//!
//! - `GET /api/v2/logs?from=<log_id>&take=<n>`: checkpoint mode, the logs with a `log_id` after
//!   `from`, ordered by `log_id` (persistence order, not by `date`: a log persisted late has an
//!   earlier `date` than logs before it), at most `take` (default 50, at most 100, else 400).
//!   Every other parameter is ignored. `Link: <...?from=<last>&take=n>; rel="next"` on every
//!   page; on an empty page it equals the URL requested. Log ids are 56 digits: `900`, the
//!   persistence time as `yyyymmddHHMMSS`, a 20-digit sequence and 19 random digits, so a
//!   `from` built from a time (`900<yyyymmddHHMMSS>000...`) starts there (*inferred* from real
//!   ids; any 56-digit `from` is accepted).
//! - Without `from`: search mode, `page` (0-based), `per_page` (default 50, at most 100),
//!   `sort=date:1|date:-1` (default newest first); at most 1,000 results can be paged (400).
//! - Auth: `Authorization: Bearer <token>`, else 401. Errors: `{"statusCode", "error",
//!   "message", "errorCode"}`.
//! - Rate limit: `rate_limit` requests per `rate_window`; `x-ratelimit-limit/-remaining/-reset`
//!   (epoch seconds) on every answer; over it 429 "Global limit has been reached".
//!
//! Admin API: see [`crate::saas`].

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use crate::saas::{self, Core, CoreOptions, Fault, Stored};
use crate::server::Running;

/// Most logs one checkpoint page holds.
pub const MAX_TAKE: usize = 100;

#[derive(Clone, Debug)]
pub struct Options {
    pub port: u16,
    pub tokens: Vec<String>,
    /// Requests per window (paid production tenants: 16 per second sustained).
    pub rate_limit: u32,
    pub rate_window: Duration,
    pub public_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            tokens: Vec::new(),
            rate_limit: 16,
            rate_window: Duration::from_secs(1),
            public_url: None,
        }
    }
}

struct A0 {
    core: Arc<Core>,
    public_url: Option<String>,
}

/// A running fake Auth0 tenant; stops when dropped.
pub struct Auth0Server {
    core: Arc<Core>,
    running: Running,
}

impl Auth0Server {
    pub async fn start(opts: Options) -> Auth0Server {
        Self::try_start(opts)
            .await
            .expect("bind the Auth0 test server")
    }

    pub async fn try_start(opts: Options) -> std::io::Result<Auth0Server> {
        let core = Core::new(
            &CoreOptions {
                tokens: opts.tokens.clone(),
                rate_limit: opts.rate_limit,
                rate_window: opts.rate_window,
            },
            generate,
        );
        let a0 = Arc::new(A0 {
            core: core.clone(),
            public_url: opts.public_url,
        });
        let router = Router::new()
            .route("/api/v2/logs", get(logs))
            .with_state(a0)
            .merge(saas::admin_router(core.clone()));
        let running = Running::spawn(opts.port, router).await?;
        Ok(Auth0Server { core, running })
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

impl Drop for Auth0Server {
    fn drop(&mut self) {
        self.core.stop_live();
    }
}

const TYPES: &[(&str, &str)] = &[
    ("s", "Successful login"),
    ("f", "Failed login"),
    ("slo", "Successful logout"),
    (
        "seacft",
        "Successful exchange of authorization code for access token",
    ),
    ("w", "Warnings during login"),
    (
        "api_limit",
        "Rate limit on the Authentication or Management APIs",
    ),
];

/// The log id of the `seq`-th log persisted at `persisted_ms`.
pub fn log_id(rng: &mut StdRng, seq: u64, persisted_ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(persisted_ms).unwrap_or_default();
    let tail: String = (0..19)
        .map(|_| char::from_digit(rng.random_range(0..10), 10).unwrap())
        .collect();
    format!("900{}{seq:020}{tail}", t.format("%Y%m%d%H%M%S"))
}

fn generate(rng: &mut StdRng, time_ms: i64, seq: u64, persisted: i64) -> (String, Vec<u8>) {
    let id = log_id(rng, seq, persisted);
    let (ty, description) = TYPES[rng.random_range(0..TYPES.len())];
    let date = DateTime::<Utc>::from_timestamp_millis(time_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let user = rng.random_range(1..5000u32);
    let v = json!({
        "date": date,
        "type": ty,
        "description": description,
        "connection": "Username-Password-Authentication",
        "connection_id": "con_2yD8hJXqYk4mPz1A",
        "client_id": "AaiyAPdpYdesoKnqjj8HJqRn4T5titww",
        "client_name": "Acme Portal",
        "ip": "198.51.100.7",
        "user_agent": "Chrome 120.0.0 / Mac OS X 14.2.0",
        "user_id": format!("auth0|{user:024x}"),
        "user_name": format!("user{user}@acme.example"),
        "hostname": "acme.us.auth0.com",
        "details": {"prompts": [], "stats": {"loginsCount": user % 97}},
        "isMobile": false,
        "log_id": id,
        "_id": id,
    });
    (id, serde_json::to_vec(&v).expect("a Value serialises"))
}

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    (
        status,
        Json(json!({"statusCode": status.as_u16(), "error": reason, "message": message, "errorCode": code})),
    )
        .into_response()
}

fn rate_headers(resp: &mut Response, limit: u32, remaining: u32, reset: u64) {
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
}

/// `(length, text)`: log ids compare as numbers.
fn id_key(id: &str) -> (usize, &str) {
    (id.len(), id)
}

async fn logs(
    State(a0): State<Arc<A0>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let core = &a0.core;
    let answer = |resp: Response, events: usize| {
        core.record(resp.status().as_u16(), events);
        resp
    };
    if core.is_down() {
        return answer(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "service_unavailable",
            ),
            0,
        );
    }
    match saas::bearer(&headers) {
        Some(t) if core.token_ok(t) => {}
        _ => {
            return answer(
                error(StatusCode::UNAUTHORIZED, "Invalid token", "invalid_token"),
                0,
            );
        }
    }
    let (limit, take) = core.take();
    if !take.allowed {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "Global limit has been reached",
            "too_many_requests",
        );
        rate_headers(&mut r, limit, 0, take.reset_epoch);
        return answer(r, 0);
    }
    let mut truncated = false;
    let mut malformed = false;
    match core.next_fault() {
        Some(Fault::Status { status, .. }) => {
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = error(s, "Internal Server Error", "internal_error");
            rate_headers(&mut r, limit, take.remaining, take.reset_epoch);
            return answer(r, 0);
        }
        Some(Fault::RateLimitStorm {
            reset_after_secs, ..
        })
        | Some(Fault::Secondary {
            retry_after_secs: reset_after_secs,
            ..
        }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Global limit has been reached",
                "too_many_requests",
            );
            rate_headers(&mut r, limit, 0, saas::reset_in(reset_after_secs));
            return answer(r, 0);
        }
        Some(Fault::Delay { delay_ms, .. }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await
        }
        Some(Fault::Truncated { .. }) => truncated = true,
        Some(Fault::NotAnArray { .. }) => malformed = true,
        None => {}
    }
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let bad = |m: String| {
        let mut r = error(StatusCode::BAD_REQUEST, &m, "invalid_query_string");
        rate_headers(&mut r, limit, take.remaining, take.reset_epoch);
        r
    };
    let size = |name: &str, default: usize| -> Result<usize, String> {
        match get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_TAKE).contains(&n) => Ok(n),
                _ => Err(format!(
                    "Query validation error: 'Invalid value \"{v}\" for parameter \"{name}\"' on property {name} (must be between 1 and 100)."
                )),
            },
        }
    };
    let events = core.snapshot();
    let (page, next): (Vec<Arc<Stored>>, Option<String>) = if let Some(from) = get("from") {
        let n = match size("take", 50) {
            Ok(n) => n,
            Err(m) => return answer(bad(m), 0),
        };
        if from.is_empty() || !from.bytes().all(|b| b.is_ascii_digit()) {
            return answer(
                bad(format!(
                    "Query validation error: 'Invalid value \"{from}\" for parameter \"from\"'."
                )),
                0,
            );
        }
        let start = events.partition_point(|e| id_key(&e.id) <= id_key(from));
        let page: Vec<_> = events[start..].iter().take(n).cloned().collect();
        let last = page.last().map_or(from.to_string(), |e| e.id.clone());
        let base = saas::base_url(&a0.public_url, &headers);
        let next = format!(
            "{base}/api/v2/logs?{}",
            saas::url_query(&[("from".into(), last), ("take".into(), n.to_string())])
        );
        (page, Some(next))
    } else {
        let per_page = match size("per_page", 50) {
            Ok(n) => n,
            Err(m) => return answer(bad(m), 0),
        };
        let page_no: usize = get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        if (page_no + 1) * per_page > 1000 {
            return answer(
                bad(format!(
                    "You can only page through the first 1000 records. Requesting page {page_no} exceeds the allowed maximum of 1000 records."
                )),
                0,
            );
        }
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| e.time_ms);
        if get("sort") != Some("date:1") {
            sorted.reverse();
        }
        let page = sorted
            .into_iter()
            .skip(page_no * per_page)
            .take(per_page)
            .collect();
        (page, None)
    };
    let mut body = if malformed {
        br#"{"logs":"unexpected"}"#.to_vec()
    } else {
        saas::json_array(page.iter().map(|e| &e.raw[..]))
    };
    if truncated {
        body = saas::truncate(body);
    }
    let mut r = (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response();
    rate_headers(&mut r, limit, take.remaining, take.reset_epoch);
    if let Some(next) = next {
        r.headers_mut().insert(
            "link",
            HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).expect("ASCII URL"),
        );
    }
    answer(r, page.len())
}
