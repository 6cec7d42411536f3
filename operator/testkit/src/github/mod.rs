//! A fake GitHub Enterprise Cloud audit log, as `shared/reference/sources.md` §1 documents it.
//!
//! - `GET /enterprises/{enterprise}/audit-log`: a JSON array of events ordered by
//!   (`@timestamp`, `_document_id`), `order=desc` (default) or `asc`; `per_page` (default 30,
//!   capped at 100 as GitHub does); `phrase` with `created:>=T`, `created:>T`, `created:<=T`,
//!   `created:<T` or `created:A..B` (T a date or an RFC 3339 time; other qualifiers are
//!   accepted and ignored); `include=web|git|all`; `after` = the opaque cursor of a `Link`
//!   `rel="next"` (base64 of the last event's sort key). `rel="next"` only while more events
//!   follow, `rel="first"` always. Events persisted late (an earlier `@timestamp` than events
//!   already served) sort before a cursor already passed: a reader must re-read an overlap.
//! - Auth: `Authorization: Bearer <token>` or `token <token>`; else 401 `Bad credentials`.
//! - Primary rate limit: `rate_limit` requests per `rate_window` (GitHub: 1,750 audit-log
//!   queries per hour), `x-ratelimit-limit/-remaining/-used/-reset/-resource: audit_log` on
//!   every answer; over it 403 with remaining 0 and GitHub's message. Secondary limit
//!   ([`Fault::Secondary`]): 403 with `retry-after` and the "secondary rate limit" message.
//! - Error bodies: `{"message": ..., "documentation_url": ...}`.
//!
//! Admin API: see [`crate::saas`].

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use crate::saas::{self, Core, CoreOptions, Fault, Stored};
use crate::server::Running;

pub const DEFAULT_ENTERPRISE: &str = "acme";
const DOCS: &str = "https://docs.github.com/rest/enterprise-admin/audit-log";
const ACTIONS: &[&str] = &[
    "repo.create",
    "org.add_member",
    "team.add_repository",
    "pull_request.merge",
    "protected_branch.update",
    "oauth_application.create",
    "business.set_actions_retention_limit",
    "git.clone",
];

#[derive(Clone, Debug)]
pub struct Options {
    pub port: u16,
    pub enterprise: String,
    pub tokens: Vec<String>,
    /// Primary limit per window (GitHub: 1,750 audit-log queries per hour).
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// Base of `Link` URLs (default `http://<Host>`).
    pub public_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            enterprise: DEFAULT_ENTERPRISE.into(),
            tokens: Vec::new(),
            rate_limit: 1750,
            rate_window: Duration::from_secs(3600),
            public_url: None,
        }
    }
}

struct Gh {
    core: Arc<Core>,
    enterprise: String,
    public_url: Option<String>,
}

/// A running fake GitHub; stops when dropped.
pub struct GithubServer {
    core: Arc<Core>,
    running: Running,
}

impl GithubServer {
    pub async fn start(opts: Options) -> GithubServer {
        Self::try_start(opts)
            .await
            .expect("bind the GitHub test server")
    }

    pub async fn try_start(opts: Options) -> std::io::Result<GithubServer> {
        let core = Core::new(
            &CoreOptions {
                tokens: opts.tokens.clone(),
                rate_limit: opts.rate_limit,
                rate_window: opts.rate_window,
            },
            generate,
        );
        let gh = Arc::new(Gh {
            core: core.clone(),
            enterprise: opts.enterprise,
            public_url: opts.public_url,
        });
        let router = Router::new()
            .route("/enterprises/{enterprise}/audit-log", get(audit_log))
            .with_state(gh)
            .merge(saas::admin_router(core.clone()));
        let running = Running::spawn(opts.port, router).await?;
        Ok(GithubServer { core, running })
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    /// The shared state: events, faults, counters (see [`crate::saas::Core`]).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

impl Drop for GithubServer {
    fn drop(&mut self) {
        self.core.stop_live();
    }
}

fn generate(rng: &mut StdRng, time_ms: i64, _seq: u64, _persisted: i64) -> (String, Vec<u8>) {
    let id: String = (0..22)
        .map(|_| {
            let c = rng.random_range(0..64u8);
            (match c {
                0..=25 => b'A' + c,
                26..=51 => b'a' + c - 26,
                52..=61 => b'0' + c - 52,
                62 => b'-',
                _ => b'_',
            }) as char
        })
        .collect();
    let action = ACTIONS[rng.random_range(0..ACTIONS.len())];
    let actor_id: u32 = rng.random_range(1000..99999);
    let v = json!({
        "@timestamp": time_ms,
        "_document_id": id,
        "action": action,
        "actor": format!("user{actor_id}"),
        "actor_id": actor_id,
        "actor_location": {"country_code": "US", "country_name": "United States"},
        "business": DEFAULT_ENTERPRISE,
        "business_id": 4242,
        "created_at": time_ms,
        "operation_type": action.rsplit('.').next().unwrap_or("modify"),
        "org": "acme-org",
        "org_id": 777,
        "repo": format!("acme-org/repo-{}", rng.random_range(1..50)),
        "transport_protocol_name": "http",
        "user_agent": "Mozilla/5.0",
        "data": {"request_id": saas::hex_id(rng, 16)},
    });
    (id, serde_json::to_vec(&v).expect("a Value serialises"))
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "documentation_url": DOCS, "status": status.as_u16().to_string()})),
    )
        .into_response()
}

fn rate_headers(resp: &mut Response, limit: u32, remaining: u32, reset: u64) {
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert(
        "x-ratelimit-used",
        HeaderValue::from(limit.saturating_sub(remaining)),
    );
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    h.insert(
        "x-ratelimit-resource",
        HeaderValue::from_static("audit_log"),
    );
}

/// Parsed query.
struct Q {
    per_page: usize,
    asc: bool,
    from_ms: Option<(i64, bool)>,
    until_ms: Option<(i64, bool)>,
    after: Option<(i64, String)>,
    rest: Vec<(String, String)>,
}

fn parse_time(t: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis())
}

fn parse_query(q: &[(String, String)]) -> Result<Q, String> {
    let mut out = Q {
        per_page: 30,
        asc: false,
        from_ms: None,
        until_ms: None,
        after: None,
        rest: Vec::new(),
    };
    for (k, v) in q {
        match k.as_str() {
            "per_page" => {
                out.per_page = v
                    .parse::<usize>()
                    .map_err(|_| format!("per_page must be an integer, not {v:?}"))?
                    .clamp(1, 100)
            }
            "order" => match v.as_str() {
                "asc" => out.asc = true,
                "desc" => out.asc = false,
                _ => return Err(format!("order must be asc or desc, not {v:?}")),
            },
            "include" if !matches!(v.as_str(), "web" | "git" | "all") => {
                return Err(format!("include must be web, git or all, not {v:?}"));
            }
            "phrase" => {
                for term in v.split([' ', '+']).filter(|t| !t.is_empty()) {
                    let Some(c) = term.strip_prefix("created:") else {
                        continue;
                    };
                    let bad = || format!("phrase: cannot parse {term:?}");
                    if let Some((a, b)) = c.split_once("..") {
                        out.from_ms = Some((parse_time(a).ok_or_else(bad)?, true));
                        out.until_ms = Some((parse_time(b).ok_or_else(bad)?, true));
                    } else if let Some(t) = c.strip_prefix(">=") {
                        out.from_ms = Some((parse_time(t).ok_or_else(bad)?, true));
                    } else if let Some(t) = c.strip_prefix('>') {
                        out.from_ms = Some((parse_time(t).ok_or_else(bad)?, false));
                    } else if let Some(t) = c.strip_prefix("<=") {
                        out.until_ms = Some((parse_time(t).ok_or_else(bad)?, true));
                    } else if let Some(t) = c.strip_prefix('<') {
                        out.until_ms = Some((parse_time(t).ok_or_else(bad)?, false));
                    } else {
                        return Err(bad());
                    }
                }
            }
            "after" => {
                let raw = URL_SAFE_NO_PAD
                    .decode(v)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or("after: invalid cursor")?;
                let (ms, id) = raw.split_once('|').ok_or("after: invalid cursor")?;
                out.after = Some((ms.parse().map_err(|_| "after: invalid cursor")?, id.into()));
                continue;
            }
            "before" | "page" => {}
            _ => {}
        }
        out.rest.push((k.clone(), v.clone()));
    }
    Ok(out)
}

fn key(e: &Stored) -> (i64, &str) {
    (e.time_ms, e.id.as_str())
}

async fn audit_log(
    State(gh): State<Arc<Gh>>,
    Path(enterprise): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let core = &gh.core;
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
        _ => return answer(error(StatusCode::UNAUTHORIZED, "Bad credentials"), 0),
    }
    if enterprise != gh.enterprise {
        return answer(error(StatusCode::NOT_FOUND, "Not Found"), 0);
    }
    let (limit, take) = core.take();
    if !take.allowed {
        let mut r = error(
            StatusCode::FORBIDDEN,
            "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
        );
        rate_headers(&mut r, limit, 0, take.reset_epoch);
        return answer(r, 0);
    }
    let mut truncated = false;
    let mut malformed = false;
    match core.next_fault() {
        Some(Fault::Status { status, .. }) => {
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return answer(error(s, "Server Error"), 0);
        }
        Some(Fault::RateLimitStorm {
            reset_after_secs, ..
        }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "API rate limit exceeded");
            rate_headers(&mut r, limit, 0, saas::reset_in(reset_after_secs));
            return answer(r, 0);
        }
        Some(Fault::Secondary {
            retry_after_secs, ..
        }) => {
            let mut r = error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            rate_headers(&mut r, limit, take.remaining, take.reset_epoch);
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after_secs));
            return answer(r, 0);
        }
        Some(Fault::Delay { delay_ms, .. }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await
        }
        Some(Fault::Truncated { .. }) => truncated = true,
        Some(Fault::NotAnArray { .. }) => malformed = true,
        None => {}
    }
    let q = match parse_query(&q) {
        Ok(q) => q,
        Err(m) => return answer(error(StatusCode::UNPROCESSABLE_ENTITY, &m), 0),
    };
    let mut events: Vec<Arc<Stored>> = core
        .snapshot()
        .into_iter()
        .filter(|e| {
            q.from_ms
                .is_none_or(|(t, inc)| e.time_ms > t || (inc && e.time_ms == t))
                && q.until_ms
                    .is_none_or(|(t, inc)| e.time_ms < t || (inc && e.time_ms == t))
        })
        .collect();
    events.sort_by(|a, b| key(a).cmp(&key(b)));
    if !q.asc {
        events.reverse();
    }
    if let Some((ms, id)) = &q.after {
        let k = (*ms, id.as_str());
        events.retain(|e| if q.asc { key(e) > k } else { key(e) < k });
    }
    let more = events.len() > q.per_page;
    events.truncate(q.per_page);
    let mut body = if malformed {
        br#"{"message":"unexpected"}"#.to_vec()
    } else {
        saas::json_array(events.iter().map(|e| &e.raw[..]))
    };
    if truncated {
        body = saas::truncate(body);
    }
    let base = saas::base_url(&gh.public_url, &headers);
    let page_url = |after: Option<String>| {
        let mut ser = saas::url_query(&q.rest);
        if let Some(a) = after {
            if !ser.is_empty() {
                ser.push('&');
            }
            ser.push_str("after=");
            ser.push_str(&a);
        }
        format!("{base}/enterprises/{enterprise}/audit-log?{ser}")
    };
    let mut link = format!("<{}>; rel=\"first\"", page_url(None));
    if more && let Some(last) = events.last() {
        let cursor = URL_SAFE_NO_PAD.encode(format!("{}|{}", last.time_ms, last.id));
        link = format!("<{}>; rel=\"next\", {link}", page_url(Some(cursor)));
    }
    let n = events.len();
    let mut r = (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response();
    rate_headers(&mut r, limit, take.remaining, take.reset_epoch);
    r.headers_mut()
        .insert("link", HeaderValue::from_str(&link).expect("ASCII URL"));
    answer(r, n)
}
