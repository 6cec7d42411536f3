//! Building the status of both kinds, writing it only when it changed, and announcing transitions
//! as Events. One place decides a binding's health, used by both reconcilers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use super::context::{Context, MANAGER};
use super::health::{Deadlines, Health, product_health};
use super::plan::{BindingProblem, Membership, PlannedProduct};
use crate::api::ProductBinding;
use crate::api::conditions::{Phase, REASON_MAX, cut, reason};
use crate::contract::{CollectorReport, ProductHealth};

/// What the operator knows about a binding's connector and collector.
pub struct BindingFacts<'a> {
    pub connector_name: &'a str,
    pub membership: &'a Membership,
    pub planned: &'a Result<PlannedProduct, BindingProblem>,
    pub report: Option<&'a CollectorReport>,
    pub collector: &'a str,
    pub deadlines: Deadlines,
    /// Other bindings of the same source delivering to the same destination with the same filter.
    pub duplicates: &'a [String],
}

/// The health of one binding given everything known about it.
pub fn binding_health(
    now: DateTime<Utc>,
    binding: &ProductBinding,
    facts: BindingFacts<'_>,
) -> (Health, Option<ProductHealth>) {
    let BindingFacts {
        connector_name,
        membership,
        planned,
        report,
        collector,
        deadlines,
        duplicates,
    } = facts;
    if let Err(p) = planned {
        return (Health::new(Phase::Error, p.reason, p.message.clone()), None);
    }
    if let Some(problem) = membership.problem() {
        let message = problem.message;
        let health = match (problem.reason.as_str(), problem.phase) {
            ("Suspended", _) => Health::new(
                Phase::Pending,
                "ConnectorSuspended",
                format!("connector {connector_name} is suspended"),
            ),
            (_, Phase::Error) => Health::new(
                Phase::Error,
                "ConnectorNotReady",
                format!("connector {connector_name} cannot collect: {message}"),
            ),
            _ => Health::new(
                Phase::Pending,
                "ConnectorNotReady",
                format!("connector {connector_name}: {message}"),
            ),
        };
        return (health, None);
    }
    let since = binding
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0))
        .unwrap_or(now);
    let (health, delivery) = product_health(
        now,
        since,
        report,
        &super::plan::product_id(binding),
        collector,
        deadlines,
    );
    if health.phase == Phase::Ready && !duplicates.is_empty() {
        let health = Health::new(
            Phase::Warning,
            reason::DUPLICATE_DESTINATION,
            format!(
                "{} of the same source deliver to the same destination with the same filter, so it receives every event twice; delete all but one",
                duplicates.join(", ")
            ),
        );
        return (health, delivery);
    }
    (health, delivery)
}

/// The live bindings of one source by destination and filter, so that each binding can be told
/// which others deliver every event a second time. Built once per source, not per binding.
pub struct Destinations(BTreeMap<(String, Vec<String>), Vec<String>>);

impl Destinations {
    pub fn of_source(stores: &super::context::Stores, source: &super::identity::SourceId) -> Self {
        let mut by_key: BTreeMap<_, Vec<String>> = BTreeMap::new();
        for connector in stores.connectors_of(source) {
            for b in stores.bindings_of(&connector) {
                if let Some(key) = destination_key(&b) {
                    by_key
                        .entry(key)
                        .or_default()
                        .push(super::plan::product_id(&b));
                }
            }
        }
        Destinations(by_key)
    }

    /// The other bindings with this binding's destination and filter, as `<namespace>/<name>`.
    pub fn others(&self, binding: &ProductBinding) -> Vec<String> {
        let me = super::plan::product_id(binding);
        destination_key(binding)
            .and_then(|key| self.0.get(&key))
            .map(|ids| ids.iter().filter(|id| **id != me).cloned().collect())
            .unwrap_or_default()
    }
}

fn destination_key(b: &ProductBinding) -> Option<(String, Vec<String>)> {
    b.spec.product.kind().ok().map(|k| {
        let mut types = b
            .spec
            .filter
            .as_ref()
            .map(|f| f.event_types.clone())
            .unwrap_or_default();
        types.sort();
        (k.destination(), types)
    })
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes `status` through the status subresource with server-side apply when it differs from
/// what the object has. `volatile_only` marks a change limited to counters and times, which is
/// written at most once a minute per object. Returns whether it wrote.
pub async fn write_status<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    desired: &S,
    volatile_only: bool,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let key = super::object_key(obj);
    if volatile_only
        && ctx
            .since_status_write(&key)
            .is_some_and(|d| d < std::time::Duration::from_secs(60))
    {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch =
        json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": desired });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.status_written(&key, &patch["status"]);
    ctx.metrics
        .status_writes
        .with_label_values(&[&K::kind(&())])
        .inc();
    Ok(true)
}

/// Publishes an Event when the phase changes (never for a status that merely refreshed).
pub async fn announce<K>(ctx: &Context, obj: &K, old: Option<Phase>, health: &Health)
where
    K: Resource<DynamicType = ()>,
{
    // A new object starting Pending is no news (its status says so); at scale those Events
    // would double the operator's API writes. Every later change of phase is announced.
    if old == Some(health.phase) || (old.is_none() && health.phase == Phase::Pending) {
        return;
    }
    let type_ = match health.phase {
        Phase::Ready | Phase::Pending => EventType::Normal,
        Phase::Warning | Phase::Error => EventType::Warning,
    };
    // Events allow a 1 kB note and a 128-byte reason; both may carry user text.
    let event = Event {
        type_,
        reason: cut(&health.reason, REASON_MAX),
        note: Some(cut(&health.message, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, "could not publish an Event");
    }
}
