//! Runs one stream of a `ConnectorDefinition` as a [`Source`]: builds each request from the
//! templates and the position, authenticates, keeps the rate budget from the headers the
//! definition names, extracts records (kept byte for byte) and computes the next position.
//!
//! Positions are JSON objects (see [`Position`]), persisted as they are by the pipeline. Which
//! fields are set depends on the pagination: the next URL (`linkHeader`), the body cursor, the
//! offset, or the last record id (`checkpoint`); `restartFromLastTime` adds the last event time
//! and the ids seen within `lateArrival` of it, so re-reading that overlap (for events the source
//! persisted late) delivers nothing twice. Every failure keeps the position: nothing is skipped.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue, LINK};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use url::Url;

use super::template::{self, segments};
use super::{Problem, lint, params};
use crate::api::definition::{
    ConnectorDefinitionSpec, CredentialKind, Method, MissingNext, Pagination, Stream, TimeFormat,
};
use crate::collector::config::read_secret;
use crate::collector::event::{Event, key_of};
use crate::collector::source::{FetchError, MAX_BUDGET_WAIT, Page, RateBudget, Source, link};
use crate::contract::SecretSource;

/// Pages of already-seen records followed at once before answering (restart overlaps).
const MAX_HOPS: usize = 16;
/// Ids a restart position remembers at most (bounds its size).
const MAX_SEEN: usize = 20_000;

/// How an engine is run (not part of the definition).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Which stream of the definition.
    pub stream: usize,
    /// Replaces the scheme, host and port (and prefixes the path) of the definition's URLs:
    /// test servers and proxies. `http://` is refused unless `allow_insecure_http`.
    pub base_url: Option<String>,
    pub allow_insecure_http: bool,
    /// Wait after a 429 that carries neither `Retry-After` nor a reset header.
    pub default_limited_wait: Duration,
    /// Bounds one request.
    pub timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            stream: 0,
            base_url: None,
            allow_insecure_http: false,
            default_limited_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(40),
        }
    }
}

/// The persisted position (short keys: it is written on every save).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Position {
    /// `linkHeader`: the next URL.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `checkpoint`: the id of the last record read.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Start time (epoch ms) of a request built from the templates (`{{start}}`).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// `restartFromLastTime`: newest event time read (epoch ms)...
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub last: Option<i64>,
    /// ...and the ids read within `lateArrival` of it, with their times.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<(String, i64)>,
}

impl Position {
    pub fn parse(s: &str) -> Result<Position, FetchError> {
        serde_json::from_str(s).map_err(|e| {
            FetchError::Transient(
                format!("position {s:?} was not written by this engine: {e}"),
                None,
            )
        })
    }
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a position serialises")
    }
}

/// One stream of a definition, ready to fetch.
pub struct Engine {
    http: reqwest::Client,
    name: String,
    stream: Stream,
    field: String,
    vars: BTreeMap<String, String>,
    credential: Option<(CredentialKind, SecretSource)>,
    base: Option<Url>,
    origin: url::Origin,
    identity: String,
    budget: Mutex<RateBudget>,
    retention: Duration,
    late_arrival: Duration,
    poll_interval: Duration,
    opts: EngineOptions,
    requests: AtomicU64,
    record_segs: Vec<String>,
    id_segs: Vec<String>,
    time_segs: Vec<String>,
    type_segs: Option<Vec<String>>,
}

/// Why an engine cannot be built: the definition or the parameters, each problem naming its field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<Problem>);

impl Engine {
    /// Checks the definition (lint) and the parameters, then builds the engine of one stream.
    /// `credential` is the secret of the definition's first credential kind.
    pub fn new(
        name: &str,
        spec: &ConnectorDefinitionSpec,
        given: &BTreeMap<String, String>,
        credential: Option<SecretSource>,
        opts: EngineOptions,
    ) -> Result<Engine, Invalid> {
        let problems = lint::lint(spec);
        if !problems.is_empty() {
            return Err(Invalid(problems));
        }
        let vars = params::resolve(spec, given).map_err(Invalid)?;
        let Some(stream) = spec.streams.get(opts.stream).cloned() else {
            return Err(Invalid(vec![Problem::new(
                "spec.streams",
                format!("has no stream #{}", opts.stream),
            )]));
        };
        let field = format!("spec.streams[{}]", opts.stream);
        let one = |f: &str, m: String| Invalid(vec![Problem::new(f, m)]);
        let base = match &opts.base_url {
            None => None,
            Some(b) => {
                let u = Url::parse(b).map_err(|e| one("baseUrl", format!("{b:?}: {e}")))?;
                if u.scheme() != "https" && !opts.allow_insecure_http {
                    return Err(one(
                        "baseUrl",
                        "must be https:// (plain http only for test servers)".into(),
                    ));
                }
                Some(u)
            }
        };
        let dur = |f: &str, v: &str| {
            humantime::parse_duration(v).map_err(|e| one(&format!("{field}.{f}"), e.to_string()))
        };
        let retention = dur("retention", &stream.retention)?;
        let poll_interval = dur("pollInterval", &stream.poll_interval)?;
        let late_arrival = match &stream.late_arrival {
            Some(l) => dur("lateArrival", l)?,
            None => Duration::ZERO,
        };
        let share = stream.rate_limit.as_ref().map_or(1.0, |r| r.share);
        let mut engine = Engine {
            http: crate::http::client(opts.timeout),
            name: name.to_string(),
            identity: String::new(),
            field,
            vars,
            credential: spec.credentials.first().cloned().zip(credential),
            base,
            origin: url::Origin::new_opaque(),
            budget: Mutex::new(RateBudget::new(share)),
            retention,
            late_arrival,
            poll_interval,
            requests: AtomicU64::new(0),
            record_segs: segments(&stream.records.path),
            id_segs: segments(&stream.records.id),
            time_segs: segments(&stream.records.time),
            type_segs: stream.records.type_.as_deref().map(segments),
            stream,
            opts,
        };
        let first = engine
            .build(&Position {
                since: Some(Utc::now().timestamp_millis()),
                ..Position::default()
            })
            .map_err(|e| one(&format!("{}.request.url", engine.field), e.to_string()))?;
        engine.origin = first.0.origin();
        engine.identity = match &engine.opts.base_url {
            Some(b) => format!("{}@{b}", params::identity(name, spec, &engine.vars)),
            None => params::identity(name, spec, &engine.vars),
        };
        engine.identity = format!("{}/{}", engine.identity, engine.stream.name);
        Ok(engine)
    }

    /// Requests sent so far (benchmarks, the conformance report).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The definition's wait between polls once caught up.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn var(&self, pos: &Position, name: &str) -> Option<String> {
        match name {
            "start" => {
                let ms = pos.since.unwrap_or_else(|| Utc::now().timestamp_millis());
                Some(format_time(ms, self.stream.start_format))
            }
            "pageSize" => Some(self.stream.page_size.to_string()),
            "cursor" => pos.cursor.clone(),
            _ => self.vars.get(name).cloned(),
        }
    }

    /// The URL and body of the request at `pos`.
    fn build(&self, pos: &Position) -> Result<(Url, Option<String>), FetchError> {
        let bad = |m: String| FetchError::Transient(m, None);
        let vars = |n: &str| self.var(pos, n);
        let expand = |f: &str, tpl: &str, json: bool| {
            template::expand(tpl, json, &vars).map_err(|name| {
                bad(format!(
                    "{}.{f}: {{{{{name}}}}} is not a parameter or built-in",
                    self.field
                ))
            })
        };
        let req = &self.stream.request;
        if let Some(u) = &pos.url {
            let url = Url::parse(u).map_err(|e| bad(format!("next link {u:?}: {e}")))?;
            if url.origin() != self.origin {
                return Err(bad(format!(
                    "refusing to follow a next link to another origin: {}",
                    url.origin().ascii_serialization()
                )));
            }
            let body = match &req.body {
                Some(b) if req.method == Method::Post => Some(expand("request.body", b, true)?),
                _ => None,
            };
            return Ok((url, body));
        }
        let raw = expand("request.url", &req.url, false)?;
        let mut url = Url::parse(&raw)
            .map_err(|e| bad(format!("{}.request.url: {raw:?}: {e}", self.field)))?;
        if let Some(base) = &self.base {
            let mut b = base.clone();
            b.set_path(&format!(
                "{}{}",
                base.path().trim_end_matches('/'),
                url.path()
            ));
            b.set_query(url.query());
            url = b;
        }
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &req.query {
                q.append_pair(k, &expand(&format!("request.query.{k}"), v, false)?);
            }
            match &self.stream.pagination {
                Pagination::Offset { param } => {
                    q.append_pair(param, &pos.offset.unwrap_or(0).to_string());
                }
                Pagination::Checkpoint { param, seed } => {
                    if let Some(c) = &pos.checkpoint {
                        q.append_pair(param, c);
                    } else if let Some(s) = seed {
                        q.append_pair(param, &expand("pagination.checkpoint.seed", s, false)?);
                    }
                }
                Pagination::BodyCursor {
                    cursor_param: Some(p),
                    ..
                } => {
                    if let Some(c) = &pos.cursor {
                        q.append_pair(p, c);
                    }
                }
                _ => {}
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let body = match (&self.stream.pagination, &pos.cursor) {
            (
                Pagination::BodyCursor {
                    next_body: Some(b), ..
                },
                Some(_),
            ) => Some(expand("pagination.bodyCursor.nextBody", b, true)?),
            _ => match &req.body {
                Some(b) => Some(expand("request.body", b, true)?),
                None => None,
            },
        };
        Ok((url, body))
    }

    async fn send(&self, url: Url, body: Option<String>) -> Result<reqwest::Response, FetchError> {
        let req = &self.stream.request;
        let mut rb = match req.method {
            Method::Get => self.http.get(url),
            Method::Post => self.http.post(url),
        };
        for (k, v) in &req.headers {
            let v = template::expand(v, false, &|n| self.vars.get(n).cloned()).map_err(|n| {
                FetchError::Transient(
                    format!(
                        "{}.request.headers.{k}: {{{{{n}}}}} is not a parameter",
                        self.field
                    ),
                    None,
                )
            })?;
            rb = rb.header(k.as_str(), v);
        }
        if let Some(b) = body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        if let Some((kind, secret)) = &self.credential {
            let s = read_secret(secret).await.map_err(|e| {
                FetchError::Auth(format!("{} credential unavailable: {e:#}", self.name), None)
            })?;
            let (name, value) = match kind {
                CredentialKind::HeaderApiKey { header, prefix } => {
                    let sep = if prefix.is_empty() || prefix.ends_with(' ') {
                        ""
                    } else {
                        " "
                    };
                    (header.clone(), format!("{prefix}{sep}{s}"))
                }
                CredentialKind::Bearer {} => (AUTHORIZATION.to_string(), format!("Bearer {s}")),
                CredentialKind::Basic {} => (
                    AUTHORIZATION.to_string(),
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
                    ),
                ),
                CredentialKind::Oauth2ClientCredentials { .. } => {
                    return Err(FetchError::Auth(
                        "OAuth 2.0 client credentials are not supported by the engine yet".into(),
                        None,
                    ));
                }
            };
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| FetchError::Auth(format!("credential header {name:?}: {e}"), None))?;
            let mut value = HeaderValue::try_from(value).map_err(|_| {
                FetchError::Auth("the credential is not a valid header value".into(), None)
            })?;
            value.set_sensitive(true);
            rb = rb.header(name, value);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        rb.send().await.map_err(|e| {
            FetchError::Transient(
                format!("{} request failed: {}", self.name, describe(&e)),
                None,
            )
        })
    }

    /// Fetches the page at `position` (following at most [`MAX_HOPS`] pages that held only
    /// records already delivered).
    pub async fn fetch_page(&self, position: &str) -> Result<Page, FetchError> {
        let mut pos = Position::parse(position)?;
        for _ in 0..MAX_HOPS {
            let (events, next, hop) = self.fetch_once(&pos).await?;
            if events.is_empty() && hop {
                pos = next;
                continue;
            }
            return Ok(Page {
                events,
                next: next.encode(),
            });
        }
        Ok(Page {
            events: Vec::new(),
            next: pos.encode(),
        })
    }

    /// One request: its events, the next position, and whether that next position should be
    /// fetched at once (the page held only records already delivered).
    async fn fetch_once(&self, pos: &Position) -> Result<(Vec<Event>, Position, bool), FetchError> {
        let (url, body) = self.build(pos)?;
        let resp = self.send(url, body).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        let mut remaining = None;
        let mut reset = None;
        if let Some(rl) = &self.stream.rate_limit {
            let limit = header(&rl.limit_header).and_then(|v| v.parse().ok());
            remaining = header(&rl.remaining_header).and_then(|v| v.parse::<u32>().ok());
            reset = header(&rl.reset_header).and_then(|v| v.parse::<i64>().ok());
            self.budget.lock().unwrap().record(limit, remaining, reset);
        }
        let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
        let body = resp.bytes().await.map_err(|e| {
            FetchError::Transient(
                format!(
                    "reading the {} response failed: {}",
                    self.name,
                    describe(&e)
                ),
                Some(status),
            )
        })?;
        let limited = status == 429
            || self.stream.rate_limit.as_ref().is_some_and(|rl| {
                rl.also_statuses.contains(&status)
                    && (remaining == Some(0)
                        || retry_after.is_some()
                        || rl.body_marker.as_ref().is_some_and(|m| {
                            String::from_utf8_lossy(&body)
                                .to_ascii_lowercase()
                                .contains(&m.to_ascii_lowercase())
                        }))
            });
        if limited {
            let now = Utc::now().timestamp();
            let wait = retry_after
                .map(Duration::from_secs)
                .or_else(|| {
                    reset
                        .filter(|r| *r > now)
                        .map(|r| Duration::from_secs((r - now) as u64 + 1))
                })
                .unwrap_or(self.opts.default_limited_wait)
                .min(MAX_BUDGET_WAIT);
            return Err(FetchError::RateLimited { wait });
        }
        if status == 401 || status == 403 {
            return Err(FetchError::Auth(
                format!(
                    "{} refused the credential ({status}{})",
                    self.name,
                    snippet(&body)
                ),
                Some(status),
            ));
        }
        if !(200..300).contains(&status) {
            let retried = if self.stream.retried_statuses.contains(&status) {
                ""
            } else {
                " (not among retriedStatuses: check the definition and the parameters)"
            };
            return Err(FetchError::Transient(
                format!("{} answered {status}{}{retried}", self.name, snippet(&body)),
                Some(status),
            ));
        }
        let next_link =
            link::find_next(headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()));
        self.page(pos, &body, next_link)
            .map_err(|m| FetchError::Transient(m, Some(status)))
    }

    /// The pure part of a fetch: records and next position from a 200 answer.
    pub fn page(
        &self,
        pos: &Position,
        body: &Bytes,
        next_link: Option<String>,
    ) -> Result<(Vec<Event>, Position, bool), String> {
        let f = &self.field;
        let root: &RawValue = serde_json::from_slice(body)
            .map_err(|e| format!("malformed response (not JSON: {e}); the position is kept"))?;
        let records = template::get(root, &self.record_segs).ok_or_else(|| {
            let keys = template::keys(root);
            let found = if keys.is_empty() {
                "the body is not an object: `$` names the whole body".to_string()
            } else {
                format!("its keys: {}", keys.join(", "))
            };
            format!(
                "{f}.records.path: {:?} is not in the response ({found})",
                self.stream.records.path
            )
        })?;
        let items: Vec<&RawValue> = serde_json::from_str(records.get()).map_err(|_| {
            format!(
                "{f}.records.path: {:?} is not an array in the response",
                self.stream.records.path
            )
        })?;
        let base = body.as_ptr() as usize;
        let now = Instant::now();
        let restart = matches!(
            self.stream.pagination,
            Pagination::LinkHeader {
                on_missing_next: MissingNext::RestartFromLastTime
            }
        );
        let seen: HashSet<&str> = pos.seen.iter().map(|(id, _)| id.as_str()).collect();
        let mut events = Vec::with_capacity(items.len());
        let mut read: Vec<(String, i64)> = Vec::new();
        let (mut with_id, mut with_time) = (0, 0);
        let mut last_id = None;
        for item in &items {
            let text = item.get();
            let start = text.as_ptr() as usize - base;
            let raw = body.slice(start..start + text.len());
            let id = template::get(item, &self.id_segs).and_then(template::scalar);
            let time = template::get(item, &self.time_segs)
                .and_then(|t| parse_time(t, self.stream.records.time_format));
            let event_type = self
                .type_segs
                .as_ref()
                .and_then(|s| template::get(item, s))
                .and_then(template::scalar)
                .unwrap_or_default();
            with_id += usize::from(id.is_some());
            with_time += usize::from(time.is_some());
            last_id = id.clone().or(last_id);
            let (uuid, key) = match id {
                Some(id) => {
                    let key = key_of(&id);
                    (id, key)
                }
                None => {
                    let d = Sha256::digest(&raw);
                    let key = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
                    (format!("sha256:{}", hex::encode(&d[..16])), key)
                }
            };
            if restart {
                if seen.contains(uuid.as_str()) {
                    continue;
                }
                read.push((uuid.clone(), time.map_or(0, |t| t.timestamp_millis())));
            }
            events.push(Event {
                key,
                uuid: uuid.into_boxed_str(),
                published: time,
                event_type: event_type.into_boxed_str(),
                raw,
                read_at: now,
            });
        }
        if !items.is_empty() && with_id == 0 {
            return Err(format!(
                "{f}.records.id: {:?} is in none of the {} records",
                self.stream.records.id,
                items.len()
            ));
        }
        if !items.is_empty() && with_time == 0 {
            return Err(format!(
                "{f}.records.time: {:?} ({:?}) is in none of the {} records",
                self.stream.records.time,
                self.stream.records.time_format,
                items.len()
            ));
        }
        let mut next = pos.clone();
        let mut hop = false;
        match &self.stream.pagination {
            Pagination::LinkHeader { on_missing_next } => match (next_link, on_missing_next) {
                (Some(l), _) => {
                    hop = !items.is_empty() && Some(&l) != pos.url.as_ref();
                    next.url = Some(l);
                }
                (None, MissingNext::Error) => {
                    return Err(format!(
                        "malformed response: no Link rel=\"next\" ({f}.pagination.linkHeader.onMissingNext is error); the position is kept"
                    ));
                }
                (None, MissingNext::PollSame) => {}
                (None, MissingNext::RestartFromLastTime) => {
                    next.url = None;
                }
            },
            Pagination::BodyCursor {
                cursor_path,
                has_more_path,
                ..
            } => {
                let c = template::get(root, &segments(cursor_path))
                    .and_then(template::scalar)
                    .ok_or_else(|| {
                        format!(
                            "{f}.pagination.bodyCursor.cursorPath: {cursor_path:?} is not a string in the response (its keys: {})",
                            template::keys(root).join(", ")
                        )
                    })?;
                if let Some(h) = has_more_path {
                    let v = template::get(root, &segments(h)).map(|v| v.get().trim());
                    if !matches!(v, Some("true") | Some("false")) {
                        return Err(format!(
                            "{f}.pagination.bodyCursor.hasMorePath: {h:?} is not a boolean in the response"
                        ));
                    }
                }
                next.cursor = Some(c);
            }
            Pagination::Offset { .. } => {
                next.offset = Some(pos.offset.unwrap_or(0) + items.len() as u64);
            }
            Pagination::Checkpoint { .. } => {
                if let Some(id) = last_id {
                    next.checkpoint = Some(id);
                }
            }
        }
        if restart {
            let newest = read.iter().map(|(_, t)| *t).max();
            let last = pos.last.max(newest);
            next.last = last;
            let mut all = pos.seen.clone();
            all.extend(read);
            if let Some(last) = last {
                let keep_from = last - self.late_arrival.as_millis() as i64;
                all.retain(|(_, t)| *t >= keep_from);
                if all.len() > MAX_SEEN {
                    all.drain(..all.len() - MAX_SEEN);
                }
                if next.url.is_none() {
                    next.since = Some(keep_from.max(pos.since.unwrap_or(i64::MIN)));
                }
            }
            next.seen = all;
            hop = hop || (events.is_empty() && !items.is_empty() && next.url.is_some());
        }
        Ok((events, next, hop))
    }
}

impl Source for Engine {
    fn identity(&self) -> &str {
        &self.identity
    }
    fn start_position(&self, since: DateTime<Utc>) -> String {
        let oldest = Utc::now()
            - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::days(90))
            + chrono::Duration::minutes(1);
        Position {
            since: Some(since.max(oldest).timestamp_millis()),
            ..Position::default()
        }
        .encode()
    }
    async fn fetch(&self, position: &str) -> Result<Page, FetchError> {
        self.fetch_page(position).await
    }
    fn budget_wait(&self) -> Option<Duration> {
        let now = Utc::now().timestamp_millis() as f64 / 1000.0;
        self.budget.lock().unwrap().wait(now)
    }
    fn budget(&self) -> RateBudget {
        self.budget.lock().unwrap().clone()
    }
    fn page_limit(&self) -> usize {
        self.stream.page_size as usize
    }
}

/// Writes a time as a template value.
pub fn format_time(ms: i64, f: TimeFormat) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    match f {
        TimeFormat::Rfc3339 => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        TimeFormat::Rfc3339Seconds => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        TimeFormat::EpochSeconds => (ms / 1000).to_string(),
        TimeFormat::EpochMillis => ms.to_string(),
        TimeFormat::Digits => t.format("%Y%m%d%H%M%S").to_string(),
    }
}

/// Reads a record's time.
pub fn parse_time(raw: &RawValue, f: TimeFormat) -> Option<DateTime<Utc>> {
    let s = template::scalar(raw)?;
    match f {
        TimeFormat::Rfc3339 | TimeFormat::Rfc3339Seconds => DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        TimeFormat::EpochSeconds => {
            let secs: f64 = s.parse().ok()?;
            DateTime::from_timestamp_millis((secs * 1000.0) as i64)
        }
        TimeFormat::EpochMillis => DateTime::from_timestamp_millis(s.parse::<f64>().ok()? as i64),
        TimeFormat::Digits => chrono::NaiveDateTime::parse_from_str(&s, "%Y%m%d%H%M%S")
            .ok()
            .map(|d| d.and_utc()),
    }
}

/// The start of an error body, for messages (never a secret: it is the server's answer).
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", s.trim())
    }
}

/// reqwest errors without the URL.
fn describe(e: &reqwest::Error) -> String {
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
    use crate::definition::{BUILT_IN, parse};
    use proptest::prelude::*;

    fn engine(file: &str, params: &[(&str, &str)], edit: impl FnOnce(&mut Stream)) -> Engine {
        let text = BUILT_IN.iter().find(|(f, _)| *f == file).unwrap().1;
        let mut def = parse(text).unwrap();
        edit(&mut def.spec.streams[0]);
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Engine::new("t", &def.spec, &params, None, EngineOptions::default()).unwrap()
    }

    fn okta() -> Engine {
        engine(
            "okta-system-log.yaml",
            &[("domain", "acme.okta.com")],
            |_| {},
        )
    }

    fn github() -> Engine {
        engine(
            "github-enterprise-audit-log.yaml",
            &[("enterprise", "acme")],
            |_| {},
        )
    }

    fn gh_page(events: &[(&str, i64)]) -> Bytes {
        let v: Vec<serde_json::Value> = events
            .iter()
            .map(|(id, t)| serde_json::json!({"_document_id": id, "@timestamp": t, "action": "repo.create"}))
            .collect();
        Bytes::from(serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn first_request_is_built_from_the_templates() {
        let e = okta();
        let (url, body) = e
            .build(&Position {
                since: Some(1_767_225_600_000),
                ..Position::default()
            })
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://acme.okta.com/api/v1/logs?limit=1000&since=2026-01-01T00%3A00%3A00.000Z&sortOrder=ASCENDING"
        );
        assert!(body.is_none());
        assert_eq!(e.identity(), "t:acme.okta.com/logs");
        let start: Position =
            serde_json::from_str(&e.start_position(Utc::now() - chrono::Duration::days(365)))
                .unwrap();
        assert!(
            start.since.unwrap() >= (Utc::now() - chrono::Duration::days(90)).timestamp_millis()
        );
    }

    #[test]
    fn link_paging_follows_next_and_refuses_a_page_without_one() {
        let e = okta();
        let body = Bytes::from_static(
            br#"[{"uuid":"a","published":"2026-01-01T00:00:00Z","eventType":"x","n":{"deep":1}}]"#,
        );
        let (ev, next, _) = e
            .page(
                &Position::default(),
                &body,
                Some("https://acme.okta.com/api/v1/logs?after=1".into()),
            )
            .unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(
            &ev[0].raw[..],
            &body[1..body.len() - 1],
            "raw bytes untouched"
        );
        assert_eq!(&*ev[0].event_type, "x");
        assert_eq!(
            next.url.as_deref(),
            Some("https://acme.okta.com/api/v1/logs?after=1")
        );
        let err = e.page(&Position::default(), &body, None).unwrap_err();
        assert!(err.contains("onMissingNext"), "{err}");
        // A next link to another origin is refused (the credential would leak).
        let other = Position {
            url: Some("https://evil.example/api/v1/logs".into()),
            ..Position::default()
        };
        assert!(e.build(&other).is_err());
    }

    #[test]
    fn wrong_paths_are_named_in_the_error() {
        let e = engine("okta-system-log.yaml", &[("domain", "a.okta.com")], |s| {
            s.records.id = "nope".into()
        });
        let body = Bytes::from_static(br#"[{"uuid":"a","published":"2026-01-01T00:00:00Z"}]"#);
        let err = e
            .page(
                &Position::default(),
                &body,
                Some("https://a.okta.com/x".into()),
            )
            .unwrap_err();
        assert!(err.contains("spec.streams[0].records.id"), "{err}");
        let e = engine(
            "onepassword-events.yaml",
            &[("account", "acme.1password.com")],
            |s| s.records.path = "itemz".into(),
        );
        let body = Bytes::from_static(br#"{"cursor":"c","has_more":false,"items":[]}"#);
        let err = e.page(&Position::default(), &body, None).unwrap_err();
        assert!(
            err.contains("spec.streams[0].records.path") && err.contains("items"),
            "{err}"
        );
    }

    #[test]
    fn body_cursor_and_checkpoint_positions() {
        let e = engine(
            "onepassword-events.yaml",
            &[("account", "acme.1password.com")],
            |_| {},
        );
        let body = Bytes::from_static(br#"{"cursor":"c2","has_more":true,"items":[{"uuid":"u1","timestamp":"2026-01-01T00:00:00Z","action":"join"}]}"#);
        let (ev, next, _) = e.page(&Position::default(), &body, None).unwrap();
        assert_eq!((ev.len(), next.cursor.as_deref()), (1, Some("c2")));
        let (_, req) = e.build(&next).unwrap();
        assert_eq!(req.as_deref(), Some(r#"{"cursor": "c2"}"#));
        let e = engine(
            "auth0-logs.yaml",
            &[("domain", "acme.us.auth0.com")],
            |_| {},
        );
        let first = e
            .build(&Position {
                since: Some(1_767_225_600_000),
                ..Position::default()
            })
            .unwrap()
            .0;
        assert!(
            first.as_str().ends_with(
                "take=100&from=90020260101000000000000000000000000000000000000000000000"
            ),
            "{first}"
        );
        let body = Bytes::from_static(br#"[{"log_id":"9001","date":"2026-01-01T00:00:00.000Z"},{"log_id":"9002","date":"2025-12-31T00:00:00.000Z"}]"#);
        let (ev, next, _) = e.page(&Position::default(), &body, None).unwrap();
        assert_eq!((ev.len(), next.checkpoint.as_deref()), (2, Some("9002")));
        let (_, same, _) = e.page(&next, &Bytes::from_static(b"[]"), None).unwrap();
        assert_eq!(
            same.checkpoint.as_deref(),
            Some("9002"),
            "an empty page keeps the checkpoint"
        );
    }

    #[test]
    fn restart_from_last_time_skips_what_was_delivered() {
        let e = github();
        let p0 = Position {
            since: Some(0),
            ..Position::default()
        };
        let (ev, p1, _) = e
            .page(&p0, &gh_page(&[("a", 1_000_000), ("b", 1_000_500)]), None)
            .unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(p1.url, None, "the last page: restart from the templates");
        assert_eq!(p1.since, Some(1_000_500 - 300_000), "minus lateArrival");
        // The restart returns the overlap again, plus a late event and a new one.
        let (ev, p2, _) = e
            .page(
                &p1,
                &gh_page(&[
                    ("a", 1_000_000),
                    ("late", 900_000),
                    ("b", 1_000_500),
                    ("c", 1_001_000),
                ]),
                None,
            )
            .unwrap();
        let ids: Vec<&str> = ev.iter().map(|e| &*e.uuid).collect();
        assert_eq!(ids, vec!["late", "c"]);
        assert_eq!(p2.last, Some(1_001_000));
        // A page of only seen records with a next link is followed at once.
        let (ev, _, hop) = e
            .page(
                &p2,
                &gh_page(&[("c", 1_001_000)]),
                Some("https://api.github.com/x?after=1".into()),
            )
            .unwrap();
        assert!(ev.is_empty() && hop);
    }

    proptest! {
        /// Whatever the page boundaries and overlaps of restarts, every id is delivered exactly once
        /// as long as re-reads stay within lateArrival of the newest event.
        #[test]
        fn restarts_deliver_every_id_once(
            times in proptest::collection::vec(0i64..200_000, 1..200),
            cuts in proptest::collection::vec(1usize..30, 1..20),
            overlap in 0i64..300_000,
        ) {
            let e = github();
            let events: Vec<(String, i64)> = times.iter().enumerate().map(|(i, t)| (format!("id{i}"), 1_000_000 + t)).collect();
            let mut sorted = events.clone();
            sorted.sort_by_key(|(_, t)| *t);
            let mut pos = Position { since: Some(0), ..Position::default() };
            let mut delivered: Vec<String> = Vec::new();
            let mut i = 0;
            let mut c = cuts.iter().cycle();
            while i < sorted.len() {
                let end = (i + c.next().unwrap()).min(sorted.len());
                // Each page re-reads up to `overlap` ms before its first new event (a restart).
                let from_t = sorted[i].1 - overlap;
                let page: Vec<(&str, i64)> = sorted[..end].iter().filter(|(_, t)| *t >= from_t).map(|(id, t)| (id.as_str(), *t)).collect();
                let (ev, next, _) = e.page(&pos, &gh_page(&page), None).unwrap();
                delivered.extend(ev.iter().map(|e| e.uuid.to_string()));
                pos = next;
                i = end;
            }
            let mut want: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
            want.sort();
            delivered.sort();
            prop_assert_eq!(delivered, want);
        }
    }
}
