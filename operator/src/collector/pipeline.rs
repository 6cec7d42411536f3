//! Fan-out from one Okta request stream to every product, losing nothing.
//!
//! # Design
//!
//! - **One read, shared.** The *head* reads the System Log in polling mode and appends events to
//!   one in-memory [`Stream`] (sequence numbers, plus a *mark* per page: the cursor the page was
//!   fetched from). Products *attached* to the head read from it by sequence number, so an
//!   event is held once however many products there are. A uuid index over what the head holds
//!   drops duplicates.
//! - **Positions are Okta cursors.** A product's position is `(cursor, handled)`: the cursor of
//!   the page holding its first unacknowledged event, and the uuids of that page it has already
//!   handled. Re-reading the cursor after a restart and skipping `handled` gives exactly the
//!   events it still needs; nothing is rebuilt by hand (Okta: never build cursors).
//! - **Bounded memory, no drop.** The head keeps events until every attached product has
//!   acknowledged them (plus one page, for re-joining), and reads at most a few pages ahead of
//!   the slowest *healthy* product (back-pressure). A failing product (retrying, or refused) does
//!   not hold the head back: its backlog grows to `maxBacklogEvents`, then it is *detached*; so is
//!   a working product that holds the head back longer than a grace period (slower than the
//!   source). A detached product's events are released and it becomes a *replay*: it reads the
//!   source from its own position, one page at a time and only once the previous page is
//!   delivered, so a down product costs no requests and no memory until it recovers.
//! - **Re-joining.** A replay re-attaches when a page it reads contains an event the head still
//!   holds (everything after that event in the head is what it needs next), or when both the head
//!   and then the replay saw an empty page (both are at "now"). Until then a caught-up replay only
//!   polls right after the head did, so a replay never doubles the steady-state request rate.
//! - **One request stream.** The head and all replays are served by one task, one request at a
//!   time, under one rate budget ([`super::source::RateBudget`]); replays are rare (restart
//!   across diverging pages, late-joining products, overflow) and alternate with the head.
//! - **Isolation.** Each product has its own delivery task; retries, back-off and a dead product
//!   never block the head or the others. A rejected record is bisected out, reported and skipped.
//! - **Restarts.** Positions (and the head's cursor: the oldest attached position) are persisted
//!   every `persistInterval` and on shutdown. After a restart a product whose cursor is the
//!   head's attaches at once; one further along waits for the head to reach its cursor, or replays
//!   if the head's pages no longer line up (partial pages fill up between runs). A graceful stop
//!   repeats nothing; a crash can repeat what was delivered after the last persisted position
//!   (at most one persist interval's worth): delivery is at-least-once across crashes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::event::Event;
use super::metrics::Metrics;
use super::product::{AnyProduct, ErrorKind, Product, SendError};
use super::source::okta::OktaSource;
use super::source::{FetchError, Page};
use super::state::{Position, Positions};
use crate::contract::{
    CollectorReport, DeliveryState, EventFilter, ProductHealth, ReportedError, SourceHealth,
};

/// How many pages the head reads ahead of the slowest healthy product.
const READ_AHEAD_PAGES: u64 = 4;

/// A page boundary: events from `first` on were read from `cursor`.
#[derive(Debug, Clone)]
struct Mark {
    first: u64,
    cursor: Arc<str>,
}

/// Events read from one chain of cursors, addressed by sequence number.
pub struct Stream {
    base: u64,
    events: VecDeque<Arc<Event>>,
    /// Ascending by `first`; the last mark is the *open* page (`first == end`): the next cursor.
    marks: VecDeque<Mark>,
}

impl Stream {
    fn new(cursor: &str) -> Stream {
        Stream {
            base: 0,
            events: VecDeque::new(),
            marks: VecDeque::from([Mark {
                first: 0,
                cursor: cursor.into(),
            }]),
        }
    }
    fn end(&self) -> u64 {
        self.base + self.events.len() as u64
    }
    fn cursor(&self) -> &Arc<str> {
        &self
            .marks
            .back()
            .expect("a stream always has an open mark")
            .cursor
    }
    fn get(&self, seq: u64) -> &Arc<Event> {
        &self.events[(seq - self.base) as usize]
    }
    fn mark_index(&self, seq: u64) -> usize {
        self.marks
            .partition_point(|m| m.first <= seq)
            .saturating_sub(1)
    }
    /// Appends a page's events read from the open cursor; `next` becomes the open cursor.
    fn push_page(&mut self, events: impl IntoIterator<Item = Arc<Event>>, next: &str) -> usize {
        let before = self.events.len();
        self.events.extend(events);
        let n = self.events.len() - before;
        if n > 0 {
            self.marks.push_back(Mark {
                first: self.end(),
                cursor: next.into(),
            });
        } else if &**self.cursor() != next {
            self.marks.back_mut().expect("open mark").cursor = next.into();
        }
        n
    }
    /// The position "everything before `seq` handled": its page's cursor and handled uuids.
    fn position(&self, seq: u64) -> (u64, Position) {
        let m = &self.marks[self.mark_index(seq)];
        let handled = (m.first.max(self.base)..seq)
            .map(|s| self.get(s).uuid.to_string())
            .collect();
        (
            m.first,
            Position {
                cursor: m.cursor.to_string(),
                handled,
            },
        )
    }
    /// Drops whole pages before the one holding `keep`; returns the dropped events.
    fn trim(&mut self, keep: u64) -> Vec<Arc<Event>> {
        let idx = self.mark_index(keep.min(self.end()));
        let page_start = self.marks[idx].first;
        self.marks.drain(..idx);
        let n = page_start.saturating_sub(self.base) as usize;
        self.base += n as u64;
        self.events.drain(..n).collect()
    }
}

/// Uuids of a persisted position's page already handled: skipped when seen again in that page.
struct Skip {
    keys: HashSet<u128>,
    uuids: Vec<String>,
    /// `first` of the mark (page) the skip applies to, in the slot's current stream.
    mark_first: u64,
}

impl Skip {
    fn new(handled: &[String], mark_first: u64) -> Option<Skip> {
        (!handled.is_empty()).then(|| Skip {
            keys: handled.iter().map(|u| super::event::key_of(u)).collect(),
            uuids: handled.to_vec(),
            mark_first,
        })
    }
}

struct Replay {
    stream: Stream,
    /// The last page was empty or partial: poll again only after the head's next request.
    caught_up: bool,
    wait_head_fetch: u64,
    last_nonempty_fetch: u64,
    /// Re-attach to the head at this sequence once the replay stream is delivered.
    merge_at: Option<u64>,
    /// Continue from this position once the replay stream is delivered (a merge that expired).
    resume: Option<Position>,
    /// Backlog estimate: events behind at the start, head reads since, replay reads since.
    behind_at_start: u64,
    head_end_at_start: u64,
    read: u64,
}

impl Replay {
    fn new(cursor: &str, behind_at_start: u64, head_end: u64) -> Replay {
        Replay {
            stream: Stream::new(cursor),
            caught_up: false,
            wait_head_fetch: 0,
            last_nonempty_fetch: 0,
            merge_at: None,
            resume: None,
            behind_at_start,
            head_end_at_start: head_end,
            read: 0,
        }
    }
}

enum Mode {
    /// Reads the head stream.
    Attached,
    /// Waits for the head to reach `pos.cursor` (restart with a position ahead of the head's).
    Pending(Position),
    /// Reads the source from its own position.
    Replay(Box<Replay>),
}

/// Event-type filter: exact names, or prefixes ending in `*`. Empty: everything.
pub struct Filter {
    exact: HashSet<String>,
    prefixes: Vec<String>,
    all: bool,
}

impl Filter {
    pub fn new(f: &EventFilter) -> Filter {
        let mut exact = HashSet::new();
        let mut prefixes = Vec::new();
        for t in &f.event_types {
            match t.strip_suffix('*') {
                Some(p) => prefixes.push(p.to_string()),
                None => {
                    exact.insert(t.clone());
                }
            }
        }
        Filter {
            all: f.event_types.is_empty(),
            exact,
            prefixes,
        }
    }
    pub fn matches(&self, event_type: &str) -> bool {
        self.all
            || self.exact.contains(event_type)
            || self.prefixes.iter().any(|p| event_type.starts_with(p))
    }
}

struct Slot {
    id: String,
    filter: Filter,
    mode: Mode,
    /// Bumped whenever the slot changes stream; an acknowledgement for an older epoch only clears `floor`.
    epoch: u64,
    next: u64,
    acked: u64,
    skip: Option<Skip>,
    /// Persisted instead of the current position while a batch of an abandoned stream is in flight.
    floor: Option<Position>,
    inflight: bool,
    notify: Arc<Notify>,
    health: ProductHealth,
    /// Since when this product holds the head back at its backlog bound.
    bound_since: Option<Instant>,
    last_delivered_published: Option<DateTime<Utc>>,
}

/// What a product task gets from [`Hub::take`].
pub enum Take {
    Batch {
        events: Vec<Arc<Event>>,
        epoch: u64,
        end: u64,
    },
    /// Nothing ready: wait for a notification or this long (a partial batch ageing).
    Wait(Option<Duration>),
    /// Draining and nothing left: the task ends.
    Done,
}

/// A request the source task should make.
pub enum Request {
    Head(Arc<str>),
    Replay {
        slot: usize,
        epoch: u64,
        cursor: Arc<str>,
    },
}

/// Limits of one product's batches.
#[derive(Clone, Copy)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub overhead: usize,
    pub max_age: Duration,
}

/// The shared state of one collector: the head stream, every product's mode and position.
pub struct Hub {
    head: Stream,
    index: HashMap<u128, u64>,
    retain: u64,
    max_backlog: u64,
    poll_interval: Duration,
    slow_grace: Duration,
    caught_up: bool,
    next_poll: Instant,
    fetch_no: u64,
    head_last_fetch: u64,
    head_last_empty: bool,
    last_was_head: bool,
    rr: usize,
    newest_published: Option<DateTime<Utc>>,
    draining: bool,
    slots: Vec<Slot>,
    source_health: SourceHealth,
    config_hash: String,
    source_id: String,
    /// Products the config named but whose settings were refused, reported as such.
    refused: BTreeMap<String, ProductHealth>,
    metrics: Arc<Metrics>,
}

/// How a product starts, decided from the persisted positions.
pub struct ProductSpec {
    pub id: String,
    pub filter: EventFilter,
    pub since: DateTime<Utc>,
}

pub struct HubConfig {
    pub poll_interval: Duration,
    /// How long a product may hold the head back at its backlog bound before it is detached.
    pub slow_grace: Duration,
    pub page_limit: usize,
    pub max_backlog: usize,
    pub source_since: DateTime<Utc>,
    pub config_hash: String,
    /// Identifies the source the positions belong to (its logs URL).
    pub source_id: String,
}

impl Hub {
    pub fn new(
        cfg: HubConfig,
        products: &[ProductSpec],
        saved: Option<Positions>,
        initial_url: impl Fn(DateTime<Utc>) -> String,
        metrics: Arc<Metrics>,
    ) -> Hub {
        let saved = saved.filter(|p| {
            let same = p.source == cfg.source_id;
            if !same {
                warn!(saved = %p.source, "persisted positions belong to another source; starting afresh");
            }
            same
        });
        let fresh = saved.as_ref().and_then(|p| p.head.as_ref()).is_none();
        let head_cursor = saved
            .as_ref()
            .and_then(|p| p.head.clone())
            .unwrap_or_else(|| initial_url(cfg.source_since));
        let watermark = saved.as_ref().and_then(|p| p.head_published);
        let slots = products
            .iter()
            .map(|p| {
                let pos = saved.as_ref().and_then(|s| s.products.get(&p.id));
                let (mode, skip) = match pos {
                    Some(pos) if pos.cursor == head_cursor => (Mode::Attached, Skip::new(&pos.handled, 0)),
                    Some(pos) => (Mode::Pending(pos.clone()), None),
                    None => {
                        let earlier = if fresh {
                            p.since < cfg.source_since
                        } else {
                            watermark.is_some_and(|w| p.since < w)
                        };
                        if earlier {
                            info!(product = %p.id, since = %p.since, "product starts before the head: catching up from its own since");
                            (Mode::Replay(Box::new(Replay::new(&initial_url(p.since), 0, 0))), None)
                        } else {
                            (Mode::Attached, None)
                        }
                    }
                };
                Slot {
                    id: p.id.clone(),
                    filter: Filter::new(&p.filter),
                    mode,
                    epoch: 0,
                    next: 0,
                    acked: 0,
                    skip,
                    floor: None,
                    inflight: false,
                    notify: Arc::new(Notify::new()),
                    health: ProductHealth::default(),
                    bound_since: None,
                    last_delivered_published: None,
                }
            })
            .collect();
        Hub {
            head: Stream::new(&head_cursor),
            index: HashMap::new(),
            retain: cfg.page_limit as u64,
            max_backlog: cfg.max_backlog as u64,
            poll_interval: cfg.poll_interval,
            slow_grace: cfg.slow_grace,
            caught_up: false,
            next_poll: Instant::now(),
            fetch_no: 0,
            head_last_fetch: 0,
            head_last_empty: false,
            last_was_head: false,
            rr: 0,
            newest_published: watermark,
            draining: false,
            slots,
            source_health: SourceHealth::default(),
            config_hash: cfg.config_hash,
            source_id: cfg.source_id,
            refused: BTreeMap::new(),
            metrics,
        }
    }

    /// Reports these products (id → why their settings were refused) as rejected: they are not
    /// run, and the report says so under their own id, so their owner sees which field to fix.
    pub fn refuse(&mut self, refused: &BTreeMap<String, String>, now: DateTime<Utc>) {
        self.refused = refused
            .iter()
            .map(|(id, why)| {
                let health = ProductHealth {
                    state: DeliveryState::Rejected,
                    last_error: Some(ReportedError {
                        at: now,
                        message: format!("settings refused by the collector: {why}"),
                        status: None,
                    }),
                    ..ProductHealth::default()
                };
                (id.clone(), health)
            })
            .collect();
    }

    pub fn notifier(&self, slot: usize) -> Arc<Notify> {
        self.slots[slot].notify.clone()
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Stop handing out partial batches' waits: flush everything now, then end.
    pub fn drain(&mut self) {
        self.draining = true;
        for s in &self.slots {
            s.notify.notify_one();
        }
    }

    // ----- source side -------------------------------------------------------------------------

    fn replay_ready(&self, i: usize) -> bool {
        let s = &self.slots[i];
        match &s.mode {
            Mode::Replay(r) => {
                !s.inflight
                    && r.merge_at.is_none()
                    && r.resume.is_none()
                    && s.acked == r.stream.end()
                    && (!r.caught_up || self.head_last_fetch > r.wait_head_fetch)
            }
            _ => false,
        }
    }

    /// The next request to make, or how long until one is due (`None`: until notified).
    pub fn next_request(&mut self, now: Instant) -> Result<Request, Option<Instant>> {
        let head_wants = !self.caught_up || now >= self.next_poll;
        let head_due = head_wants && self.head_may_read(now);
        let n = self.slots.len();
        let replay = (0..n)
            .map(|k| (self.rr + k) % n.max(1))
            .find(|&i| n > 0 && self.replay_ready(i));
        let pick_head = head_due && (!self.last_was_head || replay.is_none());
        if pick_head {
            self.last_was_head = true;
            return Ok(Request::Head(self.head.cursor().clone()));
        }
        if let Some(i) = replay {
            self.last_was_head = false;
            self.rr = i + 1;
            let s = &self.slots[i];
            let Mode::Replay(r) = &s.mode else {
                unreachable!()
            };
            return Ok(Request::Replay {
                slot: i,
                epoch: s.epoch,
                cursor: r.stream.cursor().clone(),
            });
        }
        if head_wants {
            // Held back by a product at its bound: look again soon (grace period).
            return Err(Some(now + Duration::from_millis(250)));
        }
        Err(Some(self.next_poll))
    }

    /// Accounts a page read for `req`.
    pub fn on_page(&mut self, req: &Request, page: Page) {
        self.fetch_no += 1;
        let fetch_no = self.fetch_no;
        let now = Utc::now();
        self.source_health.last_successful_poll = Some(now);
        self.source_health.last_error = None;
        for e in &page.events {
            if let Some(p) = e.published
                && self.newest_published.is_none_or(|n| p > n)
            {
                self.newest_published = Some(p);
            }
        }
        match req {
            Request::Head(_) => self.on_head_page(page, fetch_no),
            Request::Replay { slot, epoch, .. } => {
                self.on_replay_page(*slot, *epoch, page, fetch_no)
            }
        }
    }

    fn on_head_page(&mut self, page: Page, fetch_no: u64) {
        let empty = page.events.is_empty();
        let mut fresh = Vec::with_capacity(page.events.len());
        let mut seq = self.head.end();
        for e in page.events {
            if self.index.contains_key(&e.key) {
                continue;
            }
            self.index.insert(e.key, seq);
            seq += 1;
            fresh.push(Arc::new(e));
        }
        let appended = self.head.push_page(fresh, &page.next);
        self.metrics.events_read.inc_by(appended as u64);
        self.source_health.events_read += appended as u64;
        self.head_last_fetch = fetch_no;
        self.head_last_empty = empty;
        self.caught_up = empty;
        if empty {
            self.next_poll = Instant::now() + self.poll_interval;
        }
        let end = self.head.end();
        let cursor = self.head.cursor().clone();
        for s in &mut self.slots {
            match &s.mode {
                Mode::Pending(pos) if *pos.cursor == *cursor => {
                    info!(product = %s.id, "head reached the product's persisted cursor: attached");
                    s.skip = Skip::new(&pos.handled, end);
                    s.mode = Mode::Attached;
                    s.next = end;
                    s.acked = end;
                    s.epoch += 1;
                }
                Mode::Pending(pos) if empty => {
                    info!(product = %s.id, "head caught up without meeting the product's cursor: replaying from it");
                    s.skip = Skip::new(&pos.handled, 0);
                    s.mode = Mode::Replay(Box::new(Replay::new(&pos.cursor, 0, end)));
                    s.next = 0;
                    s.acked = 0;
                    s.epoch += 1;
                }
                _ => {}
            }
        }
        self.check_backlogs();
        self.trim_head();
        if appended > 0 {
            for s in &self.slots {
                if matches!(s.mode, Mode::Attached) {
                    s.notify.notify_one();
                }
            }
        }
    }

    fn on_replay_page(&mut self, i: usize, epoch: u64, page: Page, fetch_no: u64) {
        let head_end = self.head.end();
        let (head_last_empty, head_last_fetch) = (self.head_last_empty, self.head_last_fetch);
        let s = &mut self.slots[i];
        if s.epoch != epoch {
            return;
        }
        let Mode::Replay(r) = &mut s.mode else { return };
        let overlap = page
            .events
            .iter()
            .position(|e| self.index.contains_key(&e.key));
        let n_events = page.events.len();
        let take = overlap.unwrap_or(n_events);
        let mut events = page.events;
        let overlap_key = overlap.map(|k| events[k].key);
        events.truncate(take);
        let appended = r
            .stream
            .push_page(events.into_iter().map(Arc::new), &page.next);
        r.read += appended as u64;
        if let Some(key) = overlap_key {
            let at = self.index[&key];
            info!(product = %s.id, "replay met the head: re-attaching");
            r.merge_at = Some(at);
        } else if n_events == 0 {
            if head_last_empty && r.last_nonempty_fetch < head_last_fetch {
                info!(product = %s.id, "replay and head both caught up: re-attaching");
                r.merge_at = Some(head_end);
            } else {
                r.caught_up = true;
                r.wait_head_fetch = head_last_fetch;
            }
        } else {
            r.caught_up = false;
            r.last_nonempty_fetch = fetch_no;
        }
        self.maybe_merge(i);
        self.slots[i].notify.notify_one();
    }

    /// Releases an attached product's backlog: it will re-read the source from its position.
    fn detach(&mut self, i: usize, why: &str) {
        let end = self.head.end();
        let s = &self.slots[i];
        let at_next = self.with_skip(i, s.next, self.head.position(s.next));
        let at_acked = self.with_skip(i, s.acked, self.head.position(s.acked));
        let s = &mut self.slots[i];
        warn!(product = %s.id, backlog = end - s.acked, reason = why, "releasing the product's backlog from memory: it re-reads the source from its own position when it can take more");
        if s.inflight {
            s.floor = Some(at_acked);
        }
        s.skip = Skip::new(&at_next.handled, 0);
        s.mode = Mode::Replay(Box::new(Replay::new(&at_next.cursor, end - s.next, end)));
        s.next = 0;
        s.acked = 0;
        s.epoch += 1;
        s.bound_since = None;
    }

    /// Enforces the backlog bound; expires merges that waited too long.
    fn check_backlogs(&mut self) {
        let end = self.head.end();
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            match &s.mode {
                Mode::Attached if end - s.acked > self.max_backlog => {
                    self.detach(i, "backlog bound")
                }
                Mode::Replay(r) if r.merge_at.is_some_and(|m| end - m > self.max_backlog) => {
                    let (_, pos) = self.head.position(r.merge_at.expect("checked"));
                    let Mode::Replay(r) = &mut self.slots[i].mode else {
                        unreachable!()
                    };
                    r.merge_at = None;
                    r.resume = Some(pos);
                }
                _ => {}
            }
        }
    }

    /// Back-pressure: the head reads ahead of a healthy attached product by at most a few pages
    /// (memory stays small when everyone keeps up). A product that holds the head back longer
    /// than the grace period is slower than the source and is detached; a failing product does
    /// not hold the head back at all, its backlog grows up to `maxBacklogEvents` and is then
    /// released (re-read later from its position).
    fn head_may_read(&mut self, now: Instant) -> bool {
        let end = self.head.end();
        let page = self.retain;
        let healthy_limit = self
            .max_backlog
            .min(READ_AHEAD_PAGES * page)
            .saturating_sub(page)
            .max(1);
        let failing_limit = self.max_backlog.saturating_sub(page).max(1);
        let mut blocked = false;
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if !matches!(s.mode, Mode::Attached) {
                s.bound_since = None;
                continue;
            }
            let backlog = end - s.acked;
            let failing = matches!(
                s.health.state,
                DeliveryState::Retrying | DeliveryState::Rejected
            );
            if failing {
                s.bound_since = None;
                if backlog >= failing_limit {
                    self.detach(i, "product failing and its backlog is at the bound");
                }
                continue;
            }
            if backlog < healthy_limit {
                s.bound_since = None;
                continue;
            }
            let since = *s.bound_since.get_or_insert(now);
            if now.duration_since(since) >= self.slow_grace {
                self.detach(i, "product slower than the source");
            } else {
                blocked = true;
            }
        }
        if !blocked {
            self.trim_head();
        }
        !blocked
    }

    /// Adds the slot's skipped uuids to a position computed in the head stream, if same page.
    fn with_skip(&self, i: usize, _seq: u64, (mark_first, mut pos): (u64, Position)) -> Position {
        if let Some(skip) = &self.slots[i].skip
            && skip.mark_first == mark_first
        {
            let mut all = skip.uuids.clone();
            all.extend(
                pos.handled
                    .into_iter()
                    .filter(|u| !skip.keys.contains(&super::event::key_of(u))),
            );
            pos.handled = all;
        }
        pos
    }

    fn head_floor(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|s| match &s.mode {
                Mode::Attached => Some(s.acked),
                Mode::Replay(r) => r.merge_at,
                Mode::Pending(_) => None,
            })
            .min()
    }

    fn trim_head(&mut self) {
        let end = self.head.end();
        let keep = self
            .head_floor()
            .unwrap_or(end)
            .min(end.saturating_sub(self.retain));
        for e in self.head.trim(keep) {
            self.index.remove(&e.key);
        }
    }

    /// Switches a fully delivered replay to the head (or to its resume position).
    fn maybe_merge(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let Mode::Replay(r) = &mut s.mode else { return };
        if s.inflight || s.acked != r.stream.end() {
            return;
        }
        if let Some(at) = r.merge_at {
            s.mode = Mode::Attached;
            s.next = at;
            s.acked = at;
            s.skip = None;
            s.epoch += 1;
            s.notify.notify_one();
        } else if let Some(pos) = r.resume.take() {
            r.stream = Stream::new(&pos.cursor);
            r.caught_up = false;
            s.skip = Skip::new(&pos.handled, 0);
            s.next = 0;
            s.acked = 0;
            s.epoch += 1;
        }
    }

    pub fn source_error(&mut self, e: &FetchError) {
        self.source_health.last_error = Some(ReportedError {
            at: Utc::now(),
            message: e.to_string(),
            status: e.status(),
        });
    }

    pub fn set_rate(&mut self, remaining: Option<u32>, limit: Option<u32>) {
        self.source_health.rate_limit_remaining = remaining;
        self.source_health.rate_limit_limit = limit;
    }

    // ----- product side ------------------------------------------------------------------------

    /// The next batch for product `i`, or how long to wait.
    pub fn take(&mut self, i: usize, lim: BatchLimits) -> Take {
        self.maybe_merge(i);
        let draining = self.draining;
        let s = &mut self.slots[i];
        debug_assert!(!s.inflight, "one batch at a time per product");
        let stream = match &s.mode {
            Mode::Attached => &self.head,
            Mode::Replay(r) => &r.stream,
            Mode::Pending(_) => {
                return if draining {
                    Take::Done
                } else {
                    Take::Wait(None)
                };
            }
        };
        let end = stream.end();
        let mut seq = s.next;
        let mut events = Vec::new();
        let mut bytes = 2;
        while seq < end && events.len() < lim.max_events {
            let e = stream.get(seq);
            if s.skip.as_ref().is_some_and(|k| k.keys.contains(&e.key))
                || !s.filter.matches(&e.event_type)
            {
                seq += 1;
                continue;
            }
            let size = e.raw.len() + lim.overhead;
            if !events.is_empty() && bytes + size > lim.max_bytes {
                break;
            }
            bytes += size;
            events.push(e.clone());
            seq += 1;
        }
        if events.is_empty() {
            if seq > s.next {
                // Everything scanned was filtered out or skipped: handled.
                s.next = seq;
                s.acked = seq;
                if matches!(s.mode, Mode::Attached) {
                    self.trim_head();
                } else {
                    self.maybe_merge(i);
                }
            }
            return if draining {
                Take::Done
            } else {
                Take::Wait(None)
            };
        }
        let full = seq < end || events.len() >= lim.max_events;
        // A replay reads its next page only once this one is delivered: nothing more is coming.
        let replaying = matches!(s.mode, Mode::Replay(_));
        let age = events[0].read_at.elapsed();
        if full || draining || replaying || age >= lim.max_age {
            s.next = seq;
            s.inflight = true;
            return Take::Batch {
                events,
                epoch: s.epoch,
                end: seq,
            };
        }
        Take::Wait(Some(lim.max_age - age))
    }

    /// Records the outcome of a batch handed out by [`Hub::take`].
    pub fn ack(
        &mut self,
        i: usize,
        epoch: u64,
        end: u64,
        delivered: u64,
        rejected: u64,
        last: Option<DateTime<Utc>>,
    ) {
        let s = &mut self.slots[i];
        s.inflight = false;
        if s.epoch == epoch {
            s.acked = end;
            s.next = end;
        } else {
            s.floor = None;
        }
        s.health.events_delivered += delivered;
        s.health.events_rejected += rejected;
        if delivered > 0 {
            s.health.last_successful_delivery = Some(Utc::now());
            if rejected == 0 {
                s.health.state = DeliveryState::Delivering;
                s.health.last_error = None;
            }
        }
        if last.is_some() {
            s.last_delivered_published = last;
        }
        let attached = matches!(s.mode, Mode::Attached);
        if let Mode::Replay(r) = &mut s.mode {
            let acked = s.acked;
            r.stream.trim(acked);
        }
        if attached {
            self.trim_head();
        }
        self.maybe_merge(i);
    }

    /// Records a failed attempt (the batch is still being retried, or part of it was rejected).
    pub fn product_error(&mut self, i: usize, err: &SendError) {
        let s = &mut self.slots[i];
        s.health.state = match err.kind {
            ErrorKind::Retryable { .. } => DeliveryState::Retrying,
            ErrorKind::Rejected | ErrorKind::Fatal => DeliveryState::Rejected,
        };
        s.health.last_error = Some(ReportedError {
            at: Utc::now(),
            message: err.message.clone(),
            status: err.status,
        });
    }

    fn backlog(&self, i: usize) -> u64 {
        let s = &self.slots[i];
        match &s.mode {
            Mode::Attached => self.head.end() - s.acked,
            Mode::Pending(_) => 0,
            Mode::Replay(r) => {
                let pending = r.stream.end() - s.acked;
                let behind = (r.behind_at_start + (self.head.end() - r.head_end_at_start))
                    .saturating_sub(r.read);
                pending + behind
            }
        }
    }

    // ----- persistence and reporting -----------------------------------------------------------

    /// What to persist: the head's cursor and each product's position (only acknowledged work).
    pub fn positions(&self) -> Positions {
        let head_seq = self.head_floor().unwrap_or(self.head.end());
        let head = self.head.position(head_seq).1.cursor;
        let products = (0..self.slots.len())
            .map(|i| {
                let s = &self.slots[i];
                let pos = if let Some(f) = &s.floor {
                    f.clone()
                } else {
                    match &s.mode {
                        Mode::Attached => self.with_skip(i, s.acked, self.head.position(s.acked)),
                        Mode::Pending(p) => p.clone(),
                        Mode::Replay(r) => self.with_skip(i, s.acked, r.stream.position(s.acked)),
                    }
                };
                (s.id.clone(), pos)
            })
            .collect();
        Positions {
            version: 1,
            source: self.source_id.clone(),
            head: Some(head),
            head_published: self.newest_published,
            products,
        }
    }

    /// The report for the operator, and the gauges that mirror it.
    pub fn report(&self) -> CollectorReport {
        let now = Utc::now();
        let lag = |t: Option<DateTime<Utc>>| {
            t.map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0))
        };
        let mut source = self.source_health.clone();
        source.lag_seconds = lag(self.newest_published);
        if let Some(l) = source.lag_seconds {
            self.metrics.source_lag.set(l);
        }
        let mut products: BTreeMap<String, ProductHealth> = (0..self.slots.len())
            .map(|i| {
                let s = &self.slots[i];
                let mut h = s.health.clone();
                h.backlog = self.backlog(i);
                h.lag_seconds = if h.backlog == 0 {
                    lag(self.newest_published).or(lag(s.last_delivered_published))
                } else {
                    lag(s.last_delivered_published)
                };
                self.metrics
                    .backlog
                    .with_label_values(&[&s.id])
                    .set(h.backlog as i64);
                if let Some(l) = h.lag_seconds {
                    self.metrics.lag.with_label_values(&[&s.id]).set(l);
                }
                (s.id.clone(), h)
            })
            .collect();
        products.extend(self.refused.clone());
        CollectorReport {
            version: crate::contract::CONTRACT_VERSION,
            updated_at: Some(now),
            config_hash: self.config_hash.clone(),
            source,
            products,
        }
    }
}

/// Back-off with equal jitter: `base * 2^n` capped, each wait drawn in [half, full]. (Full jitter
/// would draw in [0, full]; keeping half the wait stops a fleet of collectors retrying at once.)
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let half = exp / 2;
        half + Duration::from_secs_f64(fastrand::f64() * half.as_secs_f64())
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn equal_jitter_stays_between_half_and_the_full_wait() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        };
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_millis(400) && *d <= Duration::from_millis(800))
        );
        // Jittered, not constant: 200 draws are not all the same.
        assert!(draws.iter().any(|d| *d != draws[0]));
        assert!(b.delay(30) <= Duration::from_secs(10));
    }
}

/// Timings of retries; shortened by tests.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub source_backoff: Backoff,
    pub source_auth_backoff: Backoff,
    pub product_backoff: Backoff,
    pub product_fatal_backoff: Backoff,
    /// How long a slow (but working) product may hold the head back before it is detached.
    pub slow_product_grace: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            source_backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(60),
            },
            source_auth_backoff: Backoff {
                base: Duration::from_secs(5),
                max: Duration::from_secs(120),
            },
            product_backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(60),
            },
            product_fatal_backoff: Backoff {
                base: Duration::from_secs(5),
                max: Duration::from_secs(300),
            },
            slow_product_grace: Duration::from_secs(30),
        }
    }
}

/// The one task that talks to Okta: head and replays, one request at a time, within the budget.
pub async fn source_task(
    hub: Arc<Mutex<Hub>>,
    source: Arc<OktaSource>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    timings: Timings,
) {
    let mut attempt = 0u32;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let next = hub.lock().unwrap().next_request(Instant::now());
        let req = match next {
            Ok(r) => r,
            Err(until) => {
                let sleep = until.map(tokio::time::Instant::from_std);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = async { match sleep { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
                }
                continue;
            }
        };
        if let Some(w) = source.budget_wait() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(w) => {}
            }
        }
        let cursor = match &req {
            Request::Head(c) | Request::Replay { cursor: c, .. } => c.clone(),
        };
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            r = source.fetch(&cursor) => r,
        };
        let budget = source.budget();
        match res {
            Ok(page) => {
                attempt = 0;
                let mut h = hub.lock().unwrap();
                h.set_rate(budget.remaining(), budget.limit());
                h.on_page(&req, page);
            }
            Err(e) => {
                let wait = match &e {
                    FetchError::RateLimited { wait } => *wait,
                    FetchError::Auth(..) => timings.source_auth_backoff.delay(attempt),
                    FetchError::Transient(..) => timings.source_backoff.delay(attempt),
                };
                attempt = attempt.saturating_add(1);
                warn!(error = %e, retry_in = ?wait, "Okta read failed; retrying the same cursor");
                {
                    let mut h = hub.lock().unwrap();
                    h.set_rate(budget.remaining(), budget.limit());
                    h.source_error(&e);
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// One product's delivery loop and what it needs.
pub struct ProductTask {
    pub hub: Arc<Mutex<Hub>>,
    pub slot: usize,
    pub id: String,
    pub product: Arc<AnyProduct>,
    pub lim: BatchLimits,
    /// Woken after each batch: a replay may read its next page.
    pub source_wake: Arc<Notify>,
    pub hard_stop: CancellationToken,
    pub timings: Timings,
    pub metrics: Arc<Metrics>,
}

impl ProductTask {
    /// Delivers the product's events, batch after batch, until drained or stopped.
    pub async fn run(self) {
        let notify = self.hub.lock().unwrap().notifier(self.slot);
        loop {
            let take = self.hub.lock().unwrap().take(self.slot, self.lim);
            match take {
                Take::Done => return,
                Take::Wait(d) => {
                    self.source_wake.notify_one();
                    tokio::select! {
                        _ = self.hard_stop.cancelled() => return,
                        _ = notify.notified() => {}
                        _ = async { match d { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
                    }
                }
                Take::Batch { events, epoch, end } => {
                    let outcome = tokio::select! {
                        _ = self.hard_stop.cancelled() => return,
                        o = deliver(&self.hub, self.slot, &self.id, &self.product, &events, self.timings, &self.metrics) => o,
                    };
                    let last = events.iter().rev().find_map(|e| e.published);
                    self.hub
                        .lock()
                        .unwrap()
                        .ack(self.slot, epoch, end, outcome.0, outcome.1, last);
                    self.source_wake.notify_one();
                }
            }
        }
    }
}

/// Sends `events` until every one is delivered or rejected (bisecting rejected batches down to
/// the bad records). Returns (delivered, rejected). Retryable and fatal failures are retried with
/// back-off for as long as it takes: the position never moves past an undelivered event.
async fn deliver(
    hub: &Mutex<Hub>,
    slot: usize,
    id: &str,
    product: &AnyProduct,
    events: &[Arc<Event>],
    timings: Timings,
    metrics: &Metrics,
) -> (u64, u64) {
    let (mut delivered, mut rejected) = (0u64, 0u64);
    let mut work: Vec<&[Arc<Event>]> = vec![events];
    let mut attempt = 0u32;
    while let Some(part) = work.pop() {
        let started = Instant::now();
        let res = product.send(part).await;
        metrics
            .delivery_seconds
            .with_label_values(&[id])
            .observe(started.elapsed().as_secs_f64());
        let code = match &res {
            Ok(()) => "2xx".to_string(),
            Err(e) => e.status.map_or("0".to_string(), |s| s.to_string()),
        };
        metrics
            .product_requests
            .with_label_values(&[id, &code])
            .inc();
        match res {
            Ok(()) => {
                attempt = 0;
                delivered += part.len() as u64;
                metrics
                    .delivered
                    .with_label_values(&[id])
                    .inc_by(part.len() as u64);
                metrics
                    .batch_size
                    .with_label_values(&[id])
                    .observe(part.len() as f64);
            }
            Err(e) if e.kind == ErrorKind::Rejected && part.len() > 1 => {
                let (a, b) = part.split_at(part.len() / 2);
                work.push(b);
                work.push(a);
            }
            Err(e) if e.kind == ErrorKind::Rejected => {
                rejected += 1;
                metrics.failed.with_label_values(&[id]).inc();
                warn!(product = id, uuid = %part[0].uuid, error = %e.message, "record rejected by the product; reported and skipped");
                let mut e = e.clone();
                e.message = format!("event {} rejected: {}", part[0].uuid, e.message);
                hub.lock().unwrap().product_error(slot, &e);
            }
            Err(e) => {
                let wait = match e.kind {
                    ErrorKind::Retryable {
                        retry_after: Some(ra),
                    } => ra,
                    ErrorKind::Retryable { retry_after: None } => {
                        timings.product_backoff.delay(attempt)
                    }
                    _ => timings.product_fatal_backoff.delay(attempt),
                };
                attempt = attempt.saturating_add(1);
                warn!(product = id, error = %e.message, retry_in = ?wait, "delivery failed; will retry");
                hub.lock().unwrap().product_error(slot, &e);
                tokio::time::sleep(wait).await;
                work.push(part);
            }
        }
    }
    (delivered, rejected)
}
