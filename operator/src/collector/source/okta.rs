//! Okta System Log in polling mode: one GET per cursor, the cursor being the `rel="next"` link.
//!
//! This module only fetches one page at a time and keeps the token's rate-limit budget; which
//! cursor to fetch next, and for whom, is the pipeline's business (see `pipeline.rs`). The token
//! is re-read before every request, so a rotated Secret applies without a restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK};
use url::Url;

use super::{FetchError, MAX_BUDGET_WAIT, Page, RateBudget, Source, link};
use crate::collector::config::read_secret;
use crate::collector::event::parse_page;
use crate::collector::metrics::Metrics;
use crate::contract::{OktaSourceConfig, SecretSource};

/// Okta keeps System Log events this long.
pub const RETENTION_DAYS: i64 = 90;

/// Reads pages from one Okta org.
pub struct OktaSource {
    http: reqwest::Client,
    logs_url: String,
    origin: url::Origin,
    token: SecretSource,
    page_limit: u32,
    budget: Mutex<RateBudget>,
    metrics: Arc<Metrics>,
}

impl OktaSource {
    pub fn new(cfg: &OktaSourceConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let base = cfg
            .base_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", cfg.domain));
        let base_url = Url::parse(&base)?;
        Ok(OktaSource {
            http: crate::http::client(Duration::from_secs(40)),
            logs_url: format!("{}/api/v1/logs", base.trim_end_matches('/')),
            origin: base_url.origin(),
            token: cfg.token.clone(),
            page_limit: cfg.page_limit,
            budget: Mutex::new(RateBudget::new(cfg.rate_limit_share)),
            metrics,
        })
    }

    /// The first cursor of a polling read starting at `since` (ascending, no `until`). A `since`
    /// older than Okta's 90-day retention is clamped to it (Okta refuses > 180 days with a 400,
    /// and holds nothing older than 90 days anyway).
    pub fn initial_url(&self, since: DateTime<Utc>) -> String {
        let oldest =
            Utc::now() - chrono::Duration::days(RETENTION_DAYS) + chrono::Duration::minutes(1);
        let since = since.max(oldest);
        let mut u = Url::parse(&self.logs_url).expect("validated base URL");
        u.query_pairs_mut()
            .append_pair("since", &since.to_rfc3339_opts(SecondsFormat::Millis, true))
            .append_pair("sortOrder", "ASCENDING")
            .append_pair("limit", &self.page_limit.to_string());
        u.into()
    }

    /// `{base}/api/v1/logs`: identifies the source persisted positions belong to.
    pub fn logs_url(&self) -> &str {
        &self.logs_url
    }

    pub fn page_limit(&self) -> usize {
        self.page_limit as usize
    }

    /// How long the rate budget says to wait before the next request.
    pub fn budget_wait(&self) -> Option<Duration> {
        let now = Utc::now().timestamp_millis() as f64 / 1000.0;
        self.budget.lock().unwrap().wait(now)
    }

    pub fn budget(&self) -> RateBudget {
        self.budget.lock().unwrap().clone()
    }

    /// Fetches one page at `cursor`. Never follows a cursor to another origin (the token would leak).
    pub async fn fetch(&self, cursor: &str) -> Result<Page, FetchError> {
        let url = Url::parse(cursor).map_err(|e| {
            FetchError::Transient(format!("cursor {cursor:?} is not a URL: {e}"), None)
        })?;
        if url.origin() != self.origin {
            return Err(FetchError::Transient(
                format!(
                    "refusing to follow a next link to another origin: {}",
                    url.origin().ascii_serialization()
                ),
                None,
            ));
        }
        let token = read_secret(&self.token)
            .await
            .map_err(|e| FetchError::Auth(format!("Okta token unavailable: {e:#}"), None))?;
        let resp = self
            .http
            .get(url)
            .header(AUTHORIZATION, format!("SSWS {token}"))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                FetchError::Transient(format!("Okta request failed: {}", without_url(&e)), None)
            })?;
        let status = resp.status().as_u16();
        self.metrics
            .source_requests
            .with_label_values(&[&status.to_string()])
            .inc();
        let (limit, remaining, reset) = rate_headers(resp.headers());
        {
            let mut b = self.budget.lock().unwrap();
            b.record(limit, remaining, reset);
            if let Some(r) = b.remaining() {
                self.metrics.rate_limit_remaining.set(r as i64);
            }
            if let Some(l) = limit {
                self.metrics.rate_limit_limit.set(l as i64);
            }
        }
        if status == 429 {
            let now = Utc::now().timestamp();
            let wait = reset
                .filter(|r| *r > now)
                .map(|r| Duration::from_secs((r - now) as u64 + 1))
                .unwrap_or(Duration::from_secs(60))
                .min(MAX_BUDGET_WAIT);
            return Err(FetchError::RateLimited { wait });
        }
        let next = link::find_next(
            resp.headers()
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let body = resp.bytes().await.map_err(|e| {
            FetchError::Transient(
                format!("reading Okta response failed: {}", without_url(&e)),
                Some(status),
            )
        })?;
        if status == 401 || status == 403 {
            return Err(FetchError::Auth(
                format!("Okta refused the token ({status}{})", okta_error(&body)),
                Some(status),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(FetchError::Transient(
                format!("Okta answered {status}{}", okta_error(&body)),
                Some(status),
            ));
        }
        let Some(next) = next else {
            return Err(FetchError::Transient(
                "malformed Okta response: no Link rel=\"next\" header (the cursor is kept and retried)".into(),
                Some(status),
            ));
        };
        let events = parse_page(&body).map_err(|e| {
            FetchError::Transient(format!("malformed Okta response: {e}"), Some(status))
        })?;
        Ok(Page { events, next })
    }
}

impl Source for OktaSource {
    fn identity(&self) -> &str {
        self.logs_url()
    }
    fn start_position(&self, since: DateTime<Utc>) -> String {
        self.initial_url(since)
    }
    async fn fetch(&self, position: &str) -> Result<Page, FetchError> {
        OktaSource::fetch(self, position).await
    }
    fn budget_wait(&self) -> Option<Duration> {
        OktaSource::budget_wait(self)
    }
    fn budget(&self) -> RateBudget {
        OktaSource::budget(self)
    }
    fn page_limit(&self) -> usize {
        OktaSource::page_limit(self)
    }
}

fn rate_headers(h: &HeaderMap) -> (Option<u32>, Option<u32>, Option<i64>) {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    (
        get("x-rate-limit-limit").and_then(|v| v.parse().ok()),
        get("x-rate-limit-remaining").and_then(|v| v.parse().ok()),
        get("x-rate-limit-reset").and_then(|v| v.parse().ok()),
    )
}

/// Okta's `errorCode: errorSummary`, if the body is an Okta error object.
fn okta_error(body: &Bytes) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OktaError {
        error_code: Option<String>,
        error_summary: Option<String>,
    }
    match serde_json::from_slice::<OktaError>(body) {
        Ok(e) => format!(
            ": {} {}",
            e.error_code.unwrap_or_default(),
            e.error_summary.unwrap_or_default()
        ),
        Err(_) => String::new(),
    }
}

/// reqwest errors without the URL (cursors are not secret, but keep messages short).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "truncated or unreadable body"
    } else {
        "request error"
    };
    let mut msg = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_keeps_to_its_share() {
        let mut b = RateBudget::new(0.5);
        assert_eq!(b.wait(1000.0), None, "no headers yet: go");
        for _ in 0..2 {
            b.record(Some(6), Some(5), Some(1060));
            assert_eq!(b.wait(1000.0), None);
        }
        // Three of six used: the share is exhausted until the reset.
        b.record(Some(6), Some(3), Some(1060));
        let w = b.wait(1000.0).unwrap();
        assert!(
            w >= Duration::from_secs(60) && w <= Duration::from_secs(61),
            "{w:?}"
        );
        assert_eq!(b.wait(1060.0), None, "a new window");
        b.record(Some(6), Some(5), Some(1120));
        assert_eq!(b.wait(1061.0), None);
    }

    #[test]
    fn since_is_clamped_to_the_retention() {
        let cfg: OktaSourceConfig = serde_json::from_value(serde_json::json!({
            "domain": "example.okta.com",
            "token": {"env": "T"},
            "since": "2020-01-01T00:00:00Z",
        }))
        .unwrap();
        let src = OktaSource::new(&cfg, Metrics::new()).unwrap();
        assert_eq!(src.logs_url(), "https://example.okta.com/api/v1/logs");
        let url = Url::parse(&src.initial_url(cfg.since)).unwrap();
        let since: DateTime<Utc> = url
            .query_pairs()
            .find(|(k, _)| k == "since")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert!(Utc::now() - since <= chrono::Duration::days(RETENTION_DAYS));
        assert!(
            url.query()
                .unwrap()
                .contains("sortOrder=ASCENDING&limit=1000")
        );
        let recent = Utc::now() - chrono::Duration::hours(1);
        let url = Url::parse(&src.initial_url(recent)).unwrap();
        let since: DateTime<Utc> = url
            .query_pairs()
            .find(|(k, _)| k == "since")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(since.timestamp_millis(), recent.timestamp_millis());
    }

    #[test]
    fn budget_stops_when_others_used_the_bucket() {
        let mut b = RateBudget::new(0.5);
        b.record(Some(120), Some(0), Some(2000));
        assert!(b.wait(1990.0).is_some());
        let mut b = RateBudget::new(1.0);
        b.record(Some(120), Some(0), Some(i64::MAX / 2));
        assert_eq!(b.wait(0.0), Some(MAX_BUDGET_WAIT), "capped");
    }
}
