//! What the GitHub, 1Password and Auth0 test servers share: an event log in persistence order
//! (each event with its own event time, which may be earlier than events already persisted:
//! late arrival, as every vendor warns), accepted tokens, one rate-limit window per server,
//! queued faults, a down switch, live generation, and the admin API the conformance kit reads
//! its ground truth from. Each server adds only its wire protocol (paths, paging, headers,
//! error bodies) in its own folder.
//!
//! Admin API, the same shapes as the Okta server's so one kit drives all four:
//! - `GET  /_admin/stats`      -> [`SaasStats`] (`requests.total`, `requests.by_status`, ...)
//! - `GET  /_admin/uuids`      -> ids in persistence order (the expected set)
//! - `POST /_admin/fault`      <- [`Fault`]
//! - `POST /_admin/down`       <- [`crate::admin::Down`]
//! - `POST /_admin/events`     <- [`crate::okta::AddEvents`] (`count` + `options`; `start` is
//!   the event time of the first one: put it in the past for late-persisted events)
//! - `POST /_admin/live`       <- [`crate::okta::Live`]
//! - `POST /_admin/rate_limit` <- [`crate::okta::RateLimits`] (`per_token` per window)
//! - `POST /_admin/clear`      request counters and faults (events stay)

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::admin::Down;
use crate::okta::rate::{Bucket, Take};
use crate::okta::{AddEvents, GenerateOptions, Live, RateLimits};

/// One stored event.
pub struct Stored {
    /// Persistence order, from 1.
    pub seq: u64,
    pub id: String,
    /// Event time (epoch ms); may be earlier than that of events persisted before it.
    pub time_ms: i64,
    /// Persistence time (epoch ms).
    pub persisted_ms: i64,
    pub raw: Bytes,
}

/// Builds one event of a source: `(id, json)` from a random source, the event time and the
/// persistence sequence and time.
pub type Generator = fn(&mut StdRng, i64, u64, i64) -> (String, Vec<u8>);

/// A misbehaviour; faults queue up and each applies to the next `count` authenticated requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer `status` with the source's error body.
    Status { status: u16, count: u32 },
    /// 200 with a body cut in the middle.
    Truncated { count: u32 },
    /// 200 with a JSON value of the wrong shape.
    NotAnArray { count: u32 },
    /// 429 (the source's body and headers), the window resetting in `reset_after_secs`.
    RateLimitStorm {
        count: u32,
        #[serde(default = "one")]
        reset_after_secs: u64,
    },
    /// GitHub's secondary rate limit: 403 with `retry-after` and its message.
    Secondary {
        count: u32,
        #[serde(default = "one")]
        retry_after_secs: u64,
    },
    /// Wait, then answer normally.
    Delay { delay_ms: u64, count: u32 },
}

fn one() -> u64 {
    1
}

impl Fault {
    fn count_mut(&mut self) -> &mut u32 {
        match self {
            Fault::Status { count, .. }
            | Fault::Truncated { count }
            | Fault::NotAnArray { count }
            | Fault::RateLimitStorm { count, .. }
            | Fault::Secondary { count, .. }
            | Fault::Delay { count, .. } => count,
        }
    }
}

/// Request counters (the same field names as the Okta server's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Requests {
    pub total: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Events returned in 200 answers.
    pub events_served: u64,
}

/// `GET /_admin/stats`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SaasStats {
    pub requests: Requests,
    pub events: usize,
    pub down: bool,
    pub pending_faults: usize,
}

/// Server options every SaaS server takes.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    pub tokens: Vec<String>,
    /// Requests per window (one bucket per server; tests use one token).
    pub rate_limit: u32,
    pub rate_window: Duration,
}

/// The shared state of one server.
pub struct Core {
    events: RwLock<Vec<Arc<Stored>>>,
    tokens: RwLock<HashSet<String>>,
    faults: Mutex<VecDeque<Fault>>,
    down: AtomicBool,
    stats: Mutex<Requests>,
    limit: Mutex<u32>,
    window: Duration,
    bucket: Mutex<Bucket>,
    live: Mutex<Option<JoinHandle<()>>>,
    generator: Generator,
}

impl Core {
    pub fn new(opts: &CoreOptions, generator: Generator) -> Arc<Core> {
        Arc::new(Core {
            events: RwLock::default(),
            tokens: RwLock::new(opts.tokens.iter().cloned().collect()),
            faults: Mutex::default(),
            down: AtomicBool::new(false),
            stats: Mutex::default(),
            limit: Mutex::new(opts.rate_limit),
            window: opts.rate_window,
            bucket: Mutex::new(Bucket::new(opts.rate_window)),
            live: Mutex::default(),
            generator,
        })
    }

    pub fn token_ok(&self, token: &str) -> bool {
        self.tokens.read().unwrap().contains(token)
    }

    pub fn add_token(&self, token: &str) {
        self.tokens.write().unwrap().insert(token.to_string());
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Takes one request from the window; `limit` is the current budget.
    pub(crate) fn take(&self) -> (u32, Take) {
        let limit = *self.limit.lock().unwrap();
        (limit, self.bucket.lock().unwrap().take(limit, self.window))
    }

    pub fn set_rate_limit(&self, per_window: u32) {
        *self.limit.lock().unwrap() = per_window;
    }

    /// The next queued fault, if any (its count taken).
    pub fn next_fault(&self) -> Option<Fault> {
        let mut q = self.faults.lock().unwrap();
        let f = q.front_mut()?;
        let c = f.count_mut();
        if *c == 0 {
            q.pop_front();
            return None;
        }
        *c -= 1;
        let out = f.clone();
        if *f.count_mut() == 0 {
            q.pop_front();
        }
        Some(out)
    }

    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push_back(fault);
    }

    pub fn record(&self, status: u16, events: usize) {
        let mut s = self.stats.lock().unwrap();
        s.total += 1;
        *s.by_status.entry(status).or_insert(0) += 1;
        if status == 200 {
            s.events_served += events as u64;
        }
    }

    pub fn stats(&self) -> SaasStats {
        SaasStats {
            requests: self.stats.lock().unwrap().clone(),
            events: self.events.read().unwrap().len(),
            down: self.is_down(),
            pending_faults: self.faults.lock().unwrap().len(),
        }
    }

    pub fn clear(&self) {
        *self.stats.lock().unwrap() = Requests::default();
        self.faults.lock().unwrap().clear();
    }

    /// Every event, in persistence order (cheap: shared pointers).
    pub fn snapshot(&self) -> Vec<Arc<Stored>> {
        self.events.read().unwrap().clone()
    }

    /// Ids in persistence order.
    pub fn ids(&self) -> Vec<String> {
        self.events
            .read()
            .unwrap()
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }

    /// Appends `n` generated events, persisted now; the event time of the i-th is
    /// `start + i * spacing` minus a random lag up to `max_published_lag_ms`.
    pub fn generate(&self, n: usize, opts: &GenerateOptions) -> Vec<String> {
        use rand::Rng;
        let mut rng = match opts.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        let now = Utc::now().timestamp_millis();
        let start = opts.start.map_or(now, |s| s.timestamp_millis());
        let mut built = Vec::with_capacity(n);
        let mut events = self.events.write().unwrap();
        let mut seq = events.len() as u64;
        let persisted = now.max(events.last().map_or(now, |e| e.persisted_ms));
        for i in 0..n {
            let lag = if opts.max_published_lag_ms > 0 {
                rng.random_range(0..=opts.max_published_lag_ms) as i64
            } else {
                0
            };
            let time_ms = start + i as i64 * opts.spacing_ms as i64 - lag;
            seq += 1;
            let (id, raw) = (self.generator)(&mut rng, time_ms, seq, persisted);
            built.push(id.clone());
            events.push(Arc::new(Stored {
                seq,
                id,
                time_ms,
                persisted_ms: persisted,
                raw: Bytes::from(raw),
            }));
        }
        built
    }

    /// Appends `events_per_sec` events per second until replaced, stopped (`<= 0`) or dropped.
    pub fn start_live(self: &Arc<Self>, events_per_sec: f64) {
        if let Some(t) = self.live.lock().unwrap().take() {
            t.abort();
        }
        if events_per_sec <= 0.0 {
            return;
        }
        let weak: Weak<Core> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut due = 0.0f64;
            loop {
                tick.tick().await;
                let Some(core) = weak.upgrade() else { return };
                due += events_per_sec / 10.0;
                let n = due.floor() as usize;
                due -= n as f64;
                if n > 0 {
                    core.generate(n, &GenerateOptions::default());
                }
            }
        });
        *self.live.lock().unwrap() = Some(task);
    }

    pub fn stop_live(&self) {
        if let Some(t) = self.live.lock().unwrap().take() {
            t.abort();
        }
    }
}

/// The admin routes, merged into each server's router.
pub fn admin_router(core: Arc<Core>) -> Router {
    Router::new()
        .route(
            "/_admin/stats",
            get(|State(c): State<Arc<Core>>| async move { Json(c.stats()) }),
        )
        .route(
            "/_admin/uuids",
            get(|State(c): State<Arc<Core>>| async move { Json(c.ids()) }),
        )
        .route(
            "/_admin/fault",
            post(
                |State(c): State<Arc<Core>>, Json(f): Json<Fault>| async move {
                    c.inject(f);
                    Json(c.stats())
                },
            ),
        )
        .route(
            "/_admin/down",
            post(
                |State(c): State<Arc<Core>>, Json(d): Json<Down>| async move {
                    c.set_down(d.down);
                    Json(c.stats())
                },
            ),
        )
        .route(
            "/_admin/events",
            post(
                |State(c): State<Arc<Core>>, Json(a): Json<AddEvents>| async move {
                    let added = c.generate(a.count, &a.options).len();
                    Json(serde_json::json!({"added": added, "total": c.stats().events}))
                },
            ),
        )
        .route(
            "/_admin/live",
            post(
                |State(c): State<Arc<Core>>, Json(l): Json<Live>| async move {
                    c.start_live(l.events_per_sec);
                    Json(c.stats())
                },
            ),
        )
        .route(
            "/_admin/rate_limit",
            post(
                |State(c): State<Arc<Core>>, Json(r): Json<RateLimits>| async move {
                    c.set_rate_limit(r.per_token);
                    Json(c.stats())
                },
            ),
        )
        .route(
            "/_admin/clear",
            post(|State(c): State<Arc<Core>>| async move {
                c.clear();
                Json(c.stats())
            }),
        )
        .with_state(core)
}

/// The bearer token of a request (`Authorization: Bearer <t>`; GitHub also takes `token <t>`).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Half of a serialised body: what a connection cut mid-answer leaves.
pub fn truncate(body: Vec<u8>) -> Vec<u8> {
    let mut b = body;
    b.truncate(b.len() / 2);
    b
}

/// Joins records into a JSON array.
pub fn json_array<'a>(raws: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.push(b'[');
    for (i, r) in raws.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.push(b']');
    out
}

/// A random hexadecimal string of `n` digits.
pub fn hex_id(rng: &mut StdRng, n: usize) -> String {
    use rand::Rng;
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap())
        .collect()
}

/// A random UUID (v4 layout) from `rng`, so seeded runs are reproducible.
pub fn uuid(rng: &mut StdRng) -> String {
    use rand::Rng;
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

/// `Retry-After`-less epoch-seconds reset of a window ending `secs` from now.
pub fn reset_in(secs: u64) -> u64 {
    crate::okta::rate::epoch_secs() + secs
}

/// `Stored` events after `seq`, in persistence order.
pub fn after_seq(events: &[Arc<Stored>], seq: u64) -> &[Arc<Stored>] {
    let i = events.partition_point(|e| e.seq <= seq);
    &events[i..]
}

/// `k=v&...`, percent-encoding all but RFC 3986 unreserved characters.
pub fn url_query(pairs: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `http://<Host>` of a request, or the configured public URL.
pub fn base_url(public: &Option<String>, headers: &axum::http::HeaderMap) -> String {
    public.clone().unwrap_or_else(|| {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    })
}
