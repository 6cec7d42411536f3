//! The conformance kit: runs one stream of a definition against a test server and checks what
//! every connector must do, with the server's own admin API (`/_admin/uuids`, `/_admin/stats`,
//! `/_admin/events`, `/_admin/fault`, `/_admin/rate_limit`, the same on every testkit server)
//! as the ground truth. The kit drives the engine as the collector does: it honours the rate
//! budget, retries failures on the same position, waits a poll interval when caught up, and
//! persists the position with the events of each page.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::engine::{Engine, EngineOptions};
use crate::api::definition::{ConnectorDefinition, Pagination};
use crate::collector::source::{FetchError, Source};
use crate::contract::SecretSource;

/// How the kit runs.
#[derive(Clone, Debug)]
pub struct KitOptions {
    /// Base URL of the test server (its API and `/_admin/`).
    pub server: String,
    pub params: BTreeMap<String, String>,
    pub credential: Option<SecretSource>,
    pub stream: usize,
    /// Overrides the definition's poll interval (tests: short).
    pub poll_interval: Option<Duration>,
    /// Events seeded for the completeness check (default: five pages).
    pub events: Option<usize>,
    /// Longest a check may run.
    pub timeout: Duration,
}

impl KitOptions {
    pub fn new(server: impl Into<String>) -> KitOptions {
        KitOptions {
            server: server.into(),
            params: BTreeMap::new(),
            credential: None,
            stream: 0,
            poll_interval: None,
            events: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// What the kit found.
#[derive(Clone, Debug)]
pub struct Report {
    pub definition: String,
    pub stream: String,
    pub server: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance of {} (stream {}) against {}",
            self.definition, self.stream, self.server
        )?;
        for c in &self.checks {
            let mark = if c.passed { "PASS" } else { "FAIL" };
            writeln!(f, "  {mark}  {:<34} {}", c.name, c.detail)?;
        }
        let n = self.checks.iter().filter(|c| c.passed).count();
        write!(f, "  {n}/{} checks passed", self.checks.len())
    }
}

/// The test server's admin API.
struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    async fn ids(&self) -> anyhow::Result<Vec<String>> {
        let r = self
            .http
            .get(format!("{}/_admin/uuids", self.base))
            .send()
            .await?;
        r.error_for_status_ref()?;
        Ok(r.json().await?)
    }
    /// Total requests and requests by status.
    async fn stats(&self) -> anyhow::Result<(u64, BTreeMap<u16, u64>)> {
        let v: Value = self
            .http
            .get(format!("{}/_admin/stats", self.base))
            .send()
            .await?
            .json()
            .await?;
        let total = v["requests"]["total"].as_u64().unwrap_or(0);
        let by_status = v["requests"]["by_status"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok((total, by_status))
    }
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/_admin/{path}", self.base))
            .json(&body)
            .send()
            .await?;
        r.error_for_status()
            .with_context(|| format!("POST /_admin/{path}"))?;
        Ok(())
    }
    /// Adds `n` events with event times from `start`, `spacing_ms` apart; returns their ids.
    async fn add(
        &self,
        n: usize,
        start: DateTime<Utc>,
        spacing_ms: u64,
        lag_ms: u64,
    ) -> anyhow::Result<Vec<String>> {
        let before = self.ids().await?.len();
        self.post(
            "events",
            json!({"count": n, "options": {"start": start, "spacing_ms": spacing_ms, "max_published_lag_ms": lag_ms}}),
        )
        .await?;
        Ok(self.ids().await?.split_off(before))
    }
}

/// What a run collected; the position is saved with the events of each page, as the collector does.
#[derive(Default)]
struct Run {
    position: String,
    collected: HashMap<String, u32>,
    pages: u64,
    caught_up: bool,
    limited: u64,
    errors: Vec<String>,
}

impl Run {
    fn missing(&self, expected: &[String]) -> usize {
        expected
            .iter()
            .filter(|id| !self.collected.contains_key(*id))
            .count()
    }
    fn duplicates(&self) -> usize {
        self.collected.values().filter(|n| **n > 1).count()
    }
}

struct Kit {
    opts: KitOptions,
    admin: Admin,
    poll: Duration,
}

impl Kit {
    fn engine(&self, def: &ConnectorDefinition) -> Result<Engine, super::engine::Invalid> {
        Engine::new(
            def.metadata.name.as_deref().unwrap_or("definition"),
            &def.spec,
            &self.opts.params,
            self.opts.credential.clone(),
            EngineOptions {
                stream: self.opts.stream,
                base_url: Some(self.opts.server.clone()),
                allow_insecure_http: true,
                default_limited_wait: Duration::from_secs(1),
                ..EngineOptions::default()
            },
        )
    }

    /// Drives `engine` from `run.position` until `done` (checked after each page) or the timeout.
    async fn drive(&self, engine: &Engine, run: &Mutex<Run>, done: &(dyn Fn(&Run) -> bool + Sync)) {
        let deadline = Instant::now() + self.opts.timeout;
        let mut backoff = Duration::from_millis(50);
        while Instant::now() < deadline {
            if done(&run.lock().unwrap()) {
                return;
            }
            if let Some(w) = engine.budget_wait() {
                tokio::time::sleep(w).await;
            }
            let pos = run.lock().unwrap().position.clone();
            match engine.fetch(&pos).await {
                Ok(page) => {
                    backoff = Duration::from_millis(50);
                    let empty = page.events.is_empty();
                    {
                        let mut r = run.lock().unwrap();
                        for e in page.events {
                            *r.collected.entry(e.uuid.to_string()).or_insert(0) += 1;
                        }
                        r.position = page.next;
                        r.pages += 1;
                        r.caught_up = empty;
                        if empty && done(&r) {
                            return;
                        }
                    }
                    if empty {
                        tokio::time::sleep(self.poll).await;
                    }
                }
                Err(FetchError::RateLimited { wait }) => {
                    run.lock().unwrap().limited += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    run.lock().unwrap().errors.push(e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Collects from `position` until every `expected` id is in and the source is caught up.
    async fn collect(
        &self,
        engine: &Engine,
        position: String,
        expected: &[String],
    ) -> (Run, Duration) {
        let run = Mutex::new(Run {
            position,
            ..Run::default()
        });
        let t = Instant::now();
        self.drive(engine, &run, &|r| r.caught_up && r.missing(expected) == 0)
            .await;
        (run.into_inner().unwrap(), t.elapsed())
    }
}

fn summary(r: &Run, expected: &[String], requests: u64, took: Duration) -> String {
    format!(
        "{} expected, {} collected, {} missing, {} duplicates; {requests} requests, {:.1} s",
        expected.len(),
        r.collected.len(),
        r.missing(expected),
        r.duplicates(),
        took.as_secs_f64()
    )
}

/// Runs every check against the server and returns the report (an error only when the kit
/// itself cannot run: the server's admin API unreachable, an invalid definition is a failed check).
pub async fn run(def: &ConnectorDefinition, opts: &KitOptions) -> anyhow::Result<Report> {
    crate::http::install_crypto_provider();
    let admin = Admin {
        http: crate::http::client(Duration::from_secs(30)),
        base: opts.server.trim_end_matches('/').to_string(),
    };
    let stream = def
        .spec
        .streams
        .get(opts.stream)
        .context("no such stream")?
        .clone();
    let mut report = Report {
        definition: def.metadata.name.clone().unwrap_or_default(),
        stream: stream.name.clone(),
        server: opts.server.clone(),
        checks: Vec::new(),
    };
    let probe = match Engine::new(
        "probe",
        &def.spec,
        &opts.params,
        None,
        EngineOptions {
            base_url: Some(opts.server.clone()),
            allow_insecure_http: true,
            stream: opts.stream,
            ..EngineOptions::default()
        },
    ) {
        Ok(e) => e,
        Err(e) => {
            report.checks.push(Check {
                name: "definition and parameters valid",
                passed: false,
                detail: e.to_string(),
            });
            return Ok(report);
        }
    };
    let poll = opts.poll_interval.unwrap_or(probe.poll_interval());
    drop(probe);
    let kit = Kit {
        opts: opts.clone(),
        admin,
        poll,
    };
    kit.admin
        .post(
            "rate_limit",
            json!({"per_token": 1_000_000, "per_org": 1_000_000}),
        )
        .await
        .context("the test server's admin API (POST /_admin/rate_limit)")?;
    let page = stream.page_size as usize;
    let n = opts.events.unwrap_or(page * 5);
    let t0 = Utc::now() - chrono::Duration::hours(7);
    // Each phase's events come after the previous phase's (in event time), spread over six hours
    // before now: a source re-reading an overlap before its newest event (`lateArrival`) finds
    // few events in it. Only the late-persisted check goes back in time.
    let total = n + page * 18 + 10;
    let spacing_ms = (6 * 3_600_000 / total).max(1) as u64;
    let mut clock = Utc::now() - chrono::Duration::hours(6) - chrono::Duration::minutes(10);
    let mut next_start = |k: usize| {
        let s = clock;
        clock += chrono::Duration::milliseconds((k as u64 * spacing_ms) as i64 + 5_000);
        s
    };

    // 1. Everything from a start time.
    let start_1 = next_start(n);
    let expected = kit.admin.add(n, start_1, spacing_ms, 3000).await?;
    let engine = kit.engine(def).map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = engine.start_position(t0);
    let (r, took) = kit.collect(&engine, start.clone(), &expected).await;
    let ok = r.missing(&expected) == 0 && r.duplicates() == 0;
    report.checks.push(Check {
        name: "complete from a start time",
        passed: ok,
        detail: format!(
            "{}; {:.0} events/s",
            summary(&r, &expected, engine.requests(), took),
            r.collected.len() as f64 / took.as_secs_f64().max(1e-3)
        ),
    });
    let mut position = r.position.clone();

    // 2. A caught-up source costs at most one request per poll interval.
    let polls = 4u32;
    let (before, _) = kit.admin.stats().await?;
    let run = Mutex::new(Run {
        position: position.clone(),
        ..Run::default()
    });
    let until = Instant::now() + poll * polls;
    kit.drive(&engine, &run, &|_| Instant::now() >= until).await;
    let (after, _) = kit.admin.stats().await?;
    let used = after - before;
    let r = run.into_inner().unwrap();
    report.checks.push(Check {
        name: "caught up: <= 1 request per poll",
        passed: used <= u64::from(polls) + 1 && r.collected.is_empty(),
        detail: format!(
            "{used} requests in {polls} poll intervals of {:?}; {} events",
            poll,
            r.collected.len()
        ),
    });
    position = r.position;

    // 3. Late-persisted events (earlier times than events already read) are not skipped.
    let late = kit
        .admin
        .add(
            5,
            start_1 + chrono::Duration::milliseconds((n as u64 * spacing_ms) as i64 - 60_000),
            1,
            0,
        )
        .await?;
    let (r, took) = kit.collect(&engine, position.clone(), &late).await;
    report.checks.push(Check {
        name: "late-persisted events collected",
        passed: r.missing(&late) == 0 && r.duplicates() == 0,
        detail: summary(&r, &late, r.pages, took),
    });
    position = r.position;

    // 4. A hard kill mid-run, then a new engine from the last persisted position.
    let more = kit
        .admin
        .add(page * 4, next_start(page * 4), spacing_ms, 3000)
        .await?;
    let run = Arc::new(Mutex::new(Run {
        position: position.clone(),
        ..Run::default()
    }));
    let killed = Arc::new(kit.engine(def).map_err(|e| anyhow::anyhow!("{e}"))?);
    let task = {
        let (run, engine) = (run.clone(), killed.clone());
        let kit = Kit {
            opts: opts.clone(),
            admin: Admin {
                http: kit.admin.http.clone(),
                base: kit.admin.base.clone(),
            },
            poll,
        };
        tokio::spawn(async move { kit.drive(&engine, &run, &|_| false).await })
    };
    let kill_deadline = Instant::now() + opts.timeout;
    while run.lock().unwrap().pages < 2 && Instant::now() < kill_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.abort();
    let _ = task.await;
    drop(killed);
    let (pages_before_kill, from) = {
        let r = run.lock().unwrap();
        (r.pages, r.position.clone())
    };
    let restarted = kit.engine(def).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The new engine continues the killed run: its persisted position and what it delivered.
    let resumed = Mutex::new(std::mem::take(&mut *run.lock().unwrap()));
    resumed.lock().unwrap().caught_up = false;
    debug_assert_eq!(resumed.lock().unwrap().position, from);
    let t = Instant::now();
    kit.drive(&restarted, &resumed, &|r| {
        r.caught_up && r.missing(&more) == 0
    })
    .await;
    let took = t.elapsed();
    let merged = resumed.into_inner().unwrap();
    report.checks.push(Check {
        name: "hard kill: resumes, nothing lost",
        passed: merged.missing(&more) == 0 && merged.duplicates() == 0,
        detail: format!(
            "killed after {pages_before_kill} pages; {}",
            summary(&merged, &more, restarted.requests(), took)
        ),
    });
    position = merged.position.clone();

    // 5. 429, 5xx, malformed and truncated answers are retried on the same position.
    let mut faults = vec![
        json!({"kind": "status", "status": 500, "count": 2}),
        json!({"kind": "status", "status": 503, "count": 1}),
        json!({"kind": "rate_limit_storm", "count": 2, "reset_after_secs": 1}),
        json!({"kind": "truncated", "count": 1}),
        json!({"kind": "not_an_array", "count": 1}),
    ];
    if stream
        .rate_limit
        .as_ref()
        .is_some_and(|r| !r.also_statuses.is_empty())
    {
        faults.push(json!({"kind": "secondary", "count": 1, "retry_after_secs": 1}));
    }
    let more = kit
        .admin
        .add(page * 2, next_start(page * 2), spacing_ms, 3000)
        .await?;
    for f in &faults {
        kit.admin.post("fault", f.clone()).await?;
    }
    let injected: u64 = faults
        .iter()
        .map(|f| f["count"].as_u64().unwrap_or(0))
        .sum();
    let (before, by_before) = kit.admin.stats().await?;
    let (r, took) = kit.collect(&restarted, position.clone(), &more).await;
    let (after, by_after) = kit.admin.stats().await?;
    let seen_errors = r.limited + r.errors.len() as u64;
    let bad: u64 = by_after
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(s, n)| n - by_before.get(s).copied().unwrap_or(0))
        .sum();
    report.checks.push(Check {
        name: "429/5xx/malformed/truncated retried",
        passed: r.missing(&more) == 0 && r.duplicates() == 0 && seen_errors >= injected,
        detail: format!(
            "{injected} faults injected, {seen_errors} retried ({} rate-limited, {} errors; {bad} non-200 answers of {}); {}",
            r.limited,
            r.errors.len(),
            after - before,
            summary(&r, &more, after - before, took)
        ),
    });
    position = r.position;

    // 6. Rate-limit headers obeyed within the share: no 429 in steady state.
    match &stream.rate_limit {
        None => report.checks.push(Check {
            name: "rate limit obeyed within the share",
            passed: true,
            detail:
                "n/a: the source sends no rate-limit headers (429s are waited out, checked above)"
                    .into(),
        }),
        Some(rl) => {
            let limit = 10u32;
            kit.admin
                .post(
                    "rate_limit",
                    json!({"per_token": limit, "per_org": limit * 2}),
                )
                .await?;
            let more = kit
                .admin
                .add(page * 12, next_start(page * 12), spacing_ms, 3000)
                .await?;
            let (before, by_before) = kit.admin.stats().await?;
            let (r, took) = kit.collect(&restarted, position.clone(), &more).await;
            let (after, by_after) = kit.admin.stats().await?;
            kit.admin
                .post(
                    "rate_limit",
                    json!({"per_token": 1_000_000, "per_org": 1_000_000}),
                )
                .await?;
            let limited: u64 = [429u16, 403]
                .iter()
                .map(|s| {
                    by_after.get(s).copied().unwrap_or(0) - by_before.get(s).copied().unwrap_or(0)
                })
                .sum();
            report.checks.push(Check {
                name: "rate limit obeyed within the share",
                passed: r.missing(&more) == 0 && r.duplicates() == 0 && limited == 0,
                detail: format!(
                    "limit {limit} per window, share {}: {limited} refused (429/403); {}",
                    rl.share,
                    summary(&r, &more, after - before, took)
                ),
            });
            position = r.position;
        }
    }
    let _ = position;

    // 7. Broken definitions fail with a message naming the field.
    let field = format!("spec.streams[{}]", opts.stream);
    let mut broken = Vec::new();
    let mut d = def.clone();
    d.spec.streams[opts.stream].records.path = "nonexistent.records".into();
    broken.push(("wrong record path", d, format!("{field}.records.path")));
    let mut d = def.clone();
    let want = match &mut d.spec.streams[opts.stream].pagination {
        Pagination::BodyCursor { cursor_path, .. } => {
            *cursor_path = "nonexistent_cursor".into();
            format!("{field}.pagination.bodyCursor.cursorPath")
        }
        _ => {
            d.spec.streams[opts.stream].records.id = "nonexistent_id".into();
            format!("{field}.records.id")
        }
    };
    broken.push(("wrong cursor/id path", d, want));
    let mut d = def.clone();
    d.spec.streams[opts.stream]
        .request
        .url
        .push_str("/{{nonexistent}}");
    broken.push(("nonexistent parameter", d, format!("{field}.request.url")));
    for (what, d, want) in broken {
        let message = match kit.engine(&d) {
            Err(e) => e.to_string(),
            Ok(e) => {
                let mut last = String::from("no error: the broken definition was accepted");
                for _ in 0..3 {
                    match e.fetch(&start).await {
                        Ok(p) if p.events.is_empty() => {}
                        Ok(_) => {}
                        Err(err) => {
                            last = err.to_string();
                            break;
                        }
                    }
                }
                last
            }
        };
        report.checks.push(Check {
            name: match what {
                "wrong record path" => "broken: wrong record path",
                "wrong cursor/id path" => "broken: wrong cursor/id path",
                _ => "broken: nonexistent parameter",
            },
            passed: message.contains(&want),
            detail: message,
        });
    }
    Ok(report)
}
