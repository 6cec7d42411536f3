//! What a product server has accepted, viewed the way completeness tests need it: how many
//! records, how many distinct event `uuid`s, how many arrived more than once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;

/// Records accepted by one product server (cheap to clone; clones share state).
///
/// Only records of requests answered with success are counted. Each record's event `uuid` is
/// extracted (where depends on the product: top-level `uuid` for Azure and webhooks, `event.uuid`
/// for HEC envelopes) so tests can assert that every event arrived exactly once.
#[derive(Clone)]
pub struct Received {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    changed: Notify,
    keep_records: bool,
}

#[derive(Default)]
struct State {
    records: Vec<Value>,
    per_uuid: HashMap<String, u32>,
    total: u64,
    duplicates: u64,
    without_uuid: u64,
    batches: u64,
}

/// Counters of a [`Received`], as served by `GET /_admin/stats`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Default, serde::Deserialize)]
pub struct ReceivedStats {
    /// Records accepted, duplicates included.
    pub total: u64,
    /// Distinct event uuids.
    pub unique: u64,
    /// Records whose uuid had already been received (`total - unique - without_uuid`).
    pub duplicates: u64,
    /// Records in which no uuid was found.
    pub without_uuid: u64,
    /// Accepted requests (batches).
    pub batches: u64,
}

/// One accepted record: its uuid if found, and the record itself when records are kept.
pub(crate) struct Item {
    pub uuid: Option<String>,
    pub record: Option<Value>,
}

impl Received {
    /// `keep_records = false` keeps only counters and uuids (benchmarks: no per-record JSON tree).
    pub fn new(keep_records: bool) -> Received {
        Received {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                keep_records,
            }),
        }
    }

    /// Whether whole records are stored (else [`Received::records`] is empty).
    pub fn keeps_records(&self) -> bool {
        self.inner.keep_records
    }

    pub(crate) fn accept(&self, items: Vec<Item>) {
        {
            let mut s = self.inner.state.lock().unwrap();
            s.batches += 1;
            for item in items {
                s.total += 1;
                match item.uuid {
                    Some(uuid) => {
                        let n = s.per_uuid.entry(uuid).or_insert(0);
                        *n += 1;
                        if *n > 1 {
                            s.duplicates += 1;
                        }
                    }
                    None => s.without_uuid += 1,
                }
                if self.inner.keep_records
                    && let Some(r) = item.record
                {
                    s.records.push(r);
                }
            }
        }
        self.inner.changed.notify_waiters();
    }

    /// Records accepted, duplicates included.
    pub fn total(&self) -> u64 {
        self.inner.state.lock().unwrap().total
    }

    /// Distinct uuids accepted.
    pub fn unique(&self) -> usize {
        self.inner.state.lock().unwrap().per_uuid.len()
    }

    /// Records that repeated an already accepted uuid.
    pub fn duplicates(&self) -> u64 {
        self.inner.state.lock().unwrap().duplicates
    }

    /// How many times `uuid` was accepted.
    pub fn count(&self, uuid: &str) -> u32 {
        self.inner
            .state
            .lock()
            .unwrap()
            .per_uuid
            .get(uuid)
            .copied()
            .unwrap_or(0)
    }

    /// Uuids accepted more than once, with their counts.
    pub fn duplicated(&self) -> Vec<(String, u32)> {
        let s = self.inner.state.lock().unwrap();
        s.per_uuid
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(u, n)| (u.clone(), *n))
            .collect()
    }

    /// All distinct uuids accepted.
    pub fn uuids(&self) -> HashSet<String> {
        self.inner
            .state
            .lock()
            .unwrap()
            .per_uuid
            .keys()
            .cloned()
            .collect()
    }

    /// The `expected` uuids that were never accepted (in the order given).
    pub fn missing<I, S>(&self, expected: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let s = self.inner.state.lock().unwrap();
        expected
            .into_iter()
            .filter(|u| !s.per_uuid.contains_key(u.as_ref()))
            .map(|u| u.as_ref().to_string())
            .collect()
    }

    /// Accepted records in arrival order (empty unless records are kept).
    pub fn records(&self) -> Vec<Value> {
        self.inner.state.lock().unwrap().records.clone()
    }

    pub fn stats(&self) -> ReceivedStats {
        let s = self.inner.state.lock().unwrap();
        ReceivedStats {
            total: s.total,
            unique: s.per_uuid.len() as u64,
            duplicates: s.duplicates,
            without_uuid: s.without_uuid,
            batches: s.batches,
        }
    }

    /// Forgets everything accepted so far.
    pub fn clear(&self) {
        *self.inner.state.lock().unwrap() = State::default();
        self.inner.changed.notify_waiters();
    }

    /// Waits until at least `n` distinct uuids were accepted; `false` on timeout.
    pub async fn wait_for_unique(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.per_uuid.len() >= n).await
    }

    /// Waits until at least `n` records (duplicates included) were accepted; `false` on timeout.
    pub async fn wait_for_total(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.total >= n).await
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.inner.state.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(&self.inner.state.lock().unwrap());
            }
        }
    }
}

impl Default for Received {
    fn default() -> Self {
        Received::new(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(uuid: Option<&str>) -> Item {
        Item {
            uuid: uuid.map(str::to_string),
            record: Some(json!({ "uuid": uuid })),
        }
    }

    #[test]
    fn counts_duplicates_missing_and_records() {
        let r = Received::new(true);
        r.accept(vec![item(Some("a")), item(Some("b")), item(None)]);
        r.accept(vec![item(Some("a"))]);
        let s = r.stats();
        assert_eq!(
            s,
            ReceivedStats {
                total: 4,
                unique: 2,
                duplicates: 1,
                without_uuid: 1,
                batches: 2
            }
        );
        assert_eq!(r.count("a"), 2);
        assert_eq!(r.duplicated(), vec![("a".to_string(), 2)]);
        assert_eq!(r.missing(["a", "c", "b", "d"]), ["c", "d"]);
        assert_eq!(r.records().len(), 4);
        r.clear();
        assert_eq!(r.stats(), ReceivedStats::default());
        let counters = Received::new(false);
        counters.accept(vec![item(Some("a"))]);
        assert!(counters.records().is_empty());
        assert_eq!(counters.unique(), 1);
    }

    #[tokio::test]
    async fn waits_until_enough_arrived_or_times_out() {
        let r = Received::new(false);
        assert!(!r.wait_for_unique(1, Duration::from_millis(50)).await);
        let r2 = r.clone();
        tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                r2.accept(vec![item(Some(&i.to_string()))]);
            }
        });
        assert!(r.wait_for_unique(3, Duration::from_secs(2)).await);
        assert!(r.wait_for_total(3, Duration::from_millis(1)).await);
    }
}
