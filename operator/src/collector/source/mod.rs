//! Sources the collector reads, behind one small interface: a start position for a start time,
//! and one page fetched from a position (its events and the next position). Positions are opaque
//! strings to the pipeline (Okta: the `rel="next"` URL), persisted as they are; which position
//! to fetch next, and for whom, is the pipeline's business. Adding a source = one module here
//! implementing [`Source`], plus its config variant.

pub mod link;
pub mod okta;

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::event::Event;

/// What every source implements. One value serves the head and every replay of a collector,
/// one request at a time, under one [`RateBudget`].
pub trait Source: Send + Sync {
    /// Names the source instance persisted positions belong to (Okta: its logs URL); positions
    /// saved for another identity are ignored.
    fn identity(&self) -> &str;
    /// The first position of a read starting at `since` (clamped to the source's retention).
    fn start_position(&self, since: DateTime<Utc>) -> String;
    /// Fetches the page at `position`: its events, oldest first, and the position after it. An
    /// empty page means caught up: its `next` is polled again after the poll interval.
    fn fetch(&self, position: &str) -> impl Future<Output = Result<Page, FetchError>> + Send;
    /// How long the rate budget says to wait before the next request (`None`: now).
    fn budget_wait(&self) -> Option<Duration>;
    /// The budget as last seen, for the report.
    fn budget(&self) -> RateBudget;
    /// Most events one page holds (sizes the read-ahead).
    fn page_limit(&self) -> usize;
}

/// One page of a source.
pub struct Page {
    pub events: Vec<Event>,
    /// Where to read next (always present, even on an empty page).
    pub next: String,
}

/// A failed fetch. Every kind is retried on the same position (nothing is skipped); they differ
/// in how long to wait and how they are reported.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 429: wait until the window resets.
    #[error("rate limit exceeded (429); waiting {wait:?} for the window to reset")]
    RateLimited { wait: Duration },
    /// 401/403 or an unreadable credential: retried slowly, the Secret may be rotated meanwhile.
    #[error("{0}")]
    Auth(String, Option<u16>),
    /// 5xx, network errors, time-outs, malformed bodies: back off with jitter.
    #[error("{0}")]
    Transient(String, Option<u16>),
}

impl FetchError {
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::RateLimited { .. } => Some(429),
            FetchError::Auth(_, s) | FetchError::Transient(_, s) => *s,
        }
    }
}

/// Keeps this collector within its share of the token's rate limit, from the `X-Rate-Limit-*`
/// headers of the previous responses. Windows are the server's (`X-Rate-Limit-Reset`), not
/// wall-clock minutes.
#[derive(Debug, Clone)]
pub struct RateBudget {
    share: f64,
    limit: Option<u32>,
    remaining: Option<u32>,
    reset: Option<i64>,
    /// Requests this collector made in the window ending at `reset`.
    used: u32,
}

/// Longest wait the budget imposes, whatever a (possibly skewed) reset header says.
pub const MAX_BUDGET_WAIT: Duration = Duration::from_secs(120);

impl RateBudget {
    pub fn new(share: f64) -> Self {
        RateBudget {
            share,
            limit: None,
            remaining: None,
            reset: None,
            used: 0,
        }
    }

    /// Requests allowed per window: the configured share of the limit, at least one.
    pub fn allowed(&self) -> Option<u32> {
        self.limit
            .map(|l| ((l as f64 * self.share).floor() as u32).max(1))
    }

    /// How long to wait before the next request may go out (`None`: now). `now` is epoch seconds.
    pub fn wait(&self, now: f64) -> Option<Duration> {
        let reset = self.reset? as f64;
        if now >= reset {
            return None;
        }
        let exhausted = self.remaining == Some(0) || self.allowed().is_some_and(|a| self.used >= a);
        exhausted.then(|| Duration::from_secs_f64(reset - now + 0.5).min(MAX_BUDGET_WAIT))
    }

    /// Accounts one response's headers (a missing header leaves the previous value).
    pub fn record(&mut self, limit: Option<u32>, remaining: Option<u32>, reset: Option<i64>) {
        if reset.is_some() && reset != self.reset {
            self.used = 0;
            self.reset = reset;
        }
        self.used += 1;
        if limit.is_some() {
            self.limit = limit;
        }
        if remaining.is_some() {
            self.remaining = remaining;
        }
    }

    pub fn remaining(&self) -> Option<u32> {
        self.remaining
    }
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }
}
