//! What every reconcile shares: the client, the caches, settings, the token checker, metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::health::Deadlines;
use super::identity::SourceId;
use super::metrics::Metrics;
use super::okta_check::TokenChecker;
use super::plan::PlanSettings;
use super::render::RenderSettings;
use crate::api::{ProductBinding, UnifiedConnector};
use crate::contract::{self, CollectorReport};

/// Read-only caches, kept current by shared watches.
#[derive(Clone)]
pub struct Stores {
    pub connectors: Store<UnifiedConnector>,
    pub bindings: Store<ProductBinding>,
    /// Opaque Secrets in every namespace (users' credentials and the collectors' own).
    pub secrets: Store<Secret>,
    /// Collector Deployments in the operator's namespace.
    pub deployments: Store<Deployment>,
    /// Collector and state ConfigMaps in the operator's namespace.
    pub config_maps: Store<ConfigMap>,
}

impl Stores {
    /// Every connector reading `source`, in any namespace.
    pub fn connectors_of(&self, source: &SourceId) -> Vec<Arc<UnifiedConnector>> {
        self.connectors
            .state()
            .into_iter()
            .filter(|c| &SourceId::of(c) == source)
            .collect()
    }

    /// Live (not being deleted) bindings naming this connector.
    pub fn bindings_of(&self, connector: &UnifiedConnector) -> Vec<Arc<ProductBinding>> {
        let ns = connector.namespace();
        let name = connector.name_any();
        let mut found: Vec<_> = self
            .bindings
            .state()
            .into_iter()
            .filter(|b| {
                b.namespace() == ns
                    && b.spec.connector_ref.name == name
                    && b.metadata.deletion_timestamp.is_none()
            })
            .collect();
        found.sort_by_key(|b| b.name_any());
        found
    }

    pub fn connector_of(&self, binding: &ProductBinding) -> Option<Arc<UnifiedConnector>> {
        let ns = binding.namespace()?;
        self.connectors
            .get(&ObjectRef::new(&binding.spec.connector_ref.name).within(&ns))
    }

    /// The bindings left out of a source's collector because its config would not fit
    /// (recorded on the collector ConfigMap by [`super::render::fit`]'s caller).
    pub fn left_out(&self, namespace: &str, source: &SourceId) -> Vec<String> {
        self.config_maps
            .get(&ObjectRef::new(&source.collector_name()).within(namespace))
            .and_then(|cm| {
                cm.annotations()
                    .get(super::render::LEFT_OUT_ANNOTATION)
                    .cloned()
            })
            .map(|ids| ids.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The collector's latest report, if it has written one.
    pub fn report(&self, namespace: &str, source: &SourceId) -> Option<CollectorReport> {
        let state = self
            .config_maps
            .get(&ObjectRef::new(&source.state_name()).within(namespace))?;
        let text = state.data.as_ref()?.get(contract::REPORT_KEY)?;
        serde_json::from_str(text).ok()
    }
}

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub render: RenderSettings,
    pub plan: PlanSettings,
    pub deadlines: Deadlines,
}

/// Field manager for everything the operator writes (server-side apply).
pub const MANAGER: &str = "unified-connectors";

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub settings: Settings,
    pub checker: TokenChecker,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// One lock per source, so two connectors of one source never apply its collector concurrently.
    source_locks: Mutex<HashMap<SourceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Per-object maps, evicted when their object is deleted.
    pub books: Arc<Bookkeeping>,
}

/// What the operator remembers per object (keyed by [`super::object_key`]): when it last wrote
/// its status and what it wrote, its consecutive failures, and the trigger filters' last sight.
/// Every entry is evicted when its object is deleted ([`Bookkeeping::forget`]) and pruned
/// against the caches by housekeeping ([`Bookkeeping::retain`]), so the maps stay as large as
/// the set of live objects, whatever the churn.
#[derive(Default)]
pub struct Bookkeeping {
    /// When each object's status was last written, to throttle counters-only updates.
    status_written: Mutex<HashMap<String, Instant>>,
    /// A hash of the status last written, so a trigger can tell our own writes from others'.
    written_status: Mutex<HashMap<String, u64>>,
    /// Consecutive reconcile failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The trigger filters' maps (one per filter), registered so they are evicted too.
    filters: Mutex<Vec<FilterMap>>,
}

/// One trigger filter's memory: the last fingerprint it let through, per object.
pub type FilterMap = Arc<Mutex<HashMap<String, Seen>>>;

/// What a trigger filter saw of an object last time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Generation, being deleted, number of finalizers.
    pub spec: (Option<i64>, bool, usize),
    /// Hash of the object's status, when the filter watches it.
    pub status: Option<u64>,
}

impl Bookkeeping {
    /// A new filter map, evicted along with the others.
    pub fn filter_map(&self) -> FilterMap {
        let map = FilterMap::default();
        self.filters.lock().expect("filters").push(map.clone());
        map
    }

    /// Forgets everything about one object (it was deleted).
    pub fn forget(&self, key: &str) {
        self.status_written.lock().expect("status map").remove(key);
        self.written_status.lock().expect("status map").remove(key);
        self.failures.lock().expect("failure map").remove(key);
        for f in self.filters.lock().expect("filters").iter() {
            f.lock().expect("filter map").remove(key);
        }
    }

    /// Keeps only the entries of live objects (deletions missed across a watch restart).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.status_written
            .lock()
            .expect("status map")
            .retain(|k, _| live.contains(k));
        self.written_status
            .lock()
            .expect("status map")
            .retain(|k, _| live.contains(k));
        self.failures
            .lock()
            .expect("failure map")
            .retain(|k, _| live.contains(k));
        for f in self.filters.lock().expect("filters").iter() {
            f.lock()
                .expect("filter map")
                .retain(|k, _| live.contains(k));
        }
    }

    /// Entries held, over every map (for tests and the eviction check).
    pub fn len(&self) -> usize {
        self.status_written.lock().expect("status map").len()
            + self.written_status.lock().expect("status map").len()
            + self.failures.lock().expect("failure map").len()
            + self
                .filters
                .lock()
                .expect("filters")
                .iter()
                .map(|f| f.lock().expect("filter map").len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn since_status_write(&self, key: &str) -> Option<std::time::Duration> {
        self.status_written
            .lock()
            .expect("status map")
            .get(key)
            .map(|t| t.elapsed())
    }

    pub fn status_written(&self, key: &str, status: &serde_json::Value) {
        self.status_written
            .lock()
            .expect("status map")
            .insert(key.to_string(), Instant::now());
        self.written_status
            .lock()
            .expect("status map")
            .insert(key.to_string(), status_hash(status));
    }

    /// Counts a failure and returns how many came before it.
    pub fn failed(&self, key: &str) -> u32 {
        let mut map = self.failures.lock().expect("failure map");
        let n = map.entry(key.to_string()).or_default();
        *n += 1;
        *n - 1
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failure map").remove(key);
    }

    /// The hash of the status this process last wrote for `key`.
    pub fn written_status(&self, key: &str) -> Option<u64> {
        self.written_status
            .lock()
            .expect("status map")
            .get(key)
            .copied()
    }
}

/// A stable hash of a status document (its JSON), to compare statuses without keeping them.
pub fn status_hash(status: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    status.to_string().hash(&mut h);
    h.finish()
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        settings: Settings,
        checker: TokenChecker,
        metrics: Metrics,
        recorder: Recorder,
        books: Arc<Bookkeeping>,
    ) -> Self {
        Context {
            client,
            stores,
            settings,
            checker,
            metrics,
            recorder,
            source_locks: Mutex::default(),
            books,
        }
    }

    pub fn source_lock(&self, source: &SourceId) -> Arc<tokio::sync::Mutex<()>> {
        self.source_locks
            .lock()
            .expect("source lock map")
            .entry(source.clone())
            .or_default()
            .clone()
    }

    pub fn namespace(&self) -> &str {
        &self.settings.render.namespace
    }

    /// Seconds since this object's status was last written by this process, if ever.
    pub fn since_status_write(&self, key: &str) -> Option<std::time::Duration> {
        self.books.since_status_write(key)
    }

    /// Records a status write: when, and what (so the trigger ignores its echo).
    pub fn status_written(&self, key: &str, status: &serde_json::Value) {
        self.books.status_written(key, status);
    }

    pub fn forget_status(&self, key: &str) {
        self.books.forget(key);
    }

    /// Counts a failure and returns how many came before it.
    pub fn failures(&self, key: &str) -> u32 {
        self.books.failed(key)
    }

    pub fn succeeded(&self, key: &str) {
        self.books.succeeded(key);
    }

    /// Drops the per-source locks of sources no connector reads any more.
    pub fn retain_sources(&self, live: &std::collections::HashSet<SourceId>) {
        self.source_locks
            .lock()
            .expect("source lock map")
            .retain(|s, _| live.contains(s));
    }
}
