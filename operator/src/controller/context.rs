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
    /// When each object's status was last written, to throttle counters-only updates.
    status_written: Mutex<HashMap<String, Instant>>,
    /// Consecutive reconcile failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        settings: Settings,
        checker: TokenChecker,
        metrics: Metrics,
        recorder: Recorder,
    ) -> Self {
        Context {
            client,
            stores,
            settings,
            checker,
            metrics,
            recorder,
            source_locks: Mutex::default(),
            status_written: Mutex::default(),
            failures: Mutex::default(),
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
        self.status_written
            .lock()
            .expect("status map")
            .get(key)
            .map(|t| t.elapsed())
    }

    pub fn status_written(&self, key: &str) {
        self.status_written
            .lock()
            .expect("status map")
            .insert(key.to_string(), Instant::now());
    }

    pub fn forget_status(&self, key: &str) {
        self.status_written.lock().expect("status map").remove(key);
    }

    /// Counts a failure and returns how many came before it.
    pub fn failures(&self, key: &str) -> u32 {
        let mut map = self.failures.lock().expect("failure map");
        let n = map.entry(key.to_string()).or_default();
        *n += 1;
        *n - 1
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failure map").remove(key);
    }
}
