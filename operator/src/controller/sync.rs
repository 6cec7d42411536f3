//! Brings one source's collector to its desired state: validates every member's token (cached),
//! plans, then applies or deletes the collector objects. Idempotent; writes only what changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::context::{Context, MANAGER};
use super::health::source_auth_failed;
use super::identity::{HASH_ANNOTATION, SourceId};
use super::plan::{self, BindingProblem, CollectorPlan, Membership, PlannedProduct};
use super::render;
use super::secrets::SecretValue;
use crate::api::{ProductBinding, UnifiedConnector};
use crate::contract::{self, CollectorReport};

/// What a sync found, for the status of the connectors and bindings of this source.
pub struct SyncOutcome {
    pub source: SourceId,
    /// Keyed by `<namespace>/<name>` of each connector.
    pub memberships: BTreeMap<String, Membership>,
    /// Keyed by binding product id (`<namespace>/<name>`).
    pub products: BTreeMap<String, Result<PlannedProduct, BindingProblem>>,
    pub plan: Option<CollectorPlan>,
    pub report: Option<CollectorReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("writing {kind} {name}: {source}")]
    Write {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

fn key_of<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default()
    )
}

/// Syncs the collector of `source`.
pub async fn sync_source(ctx: &Context, source: &SourceId) -> Result<SyncOutcome, SyncError> {
    let lock = ctx.source_lock(source);
    let _guard = lock.lock().await;
    let stores = &ctx.stores;
    let ns = ctx.namespace().to_string();
    let members = stores.connectors_of(source);
    let report = stores.report(&ns, source);
    let current_token = collector_token(&stores.secrets, &ns, source);

    // The collector says Okta now refuses its token: forget the verdict so it is checked again,
    // and the plan moves to another connector's valid token.
    if let (Some(report), Some(token)) = (&report, &current_token)
        && source_auth_failed(report)
    {
        ctx.checker.invalidate(&source.domain, token);
    }

    // Validate each member's token (Okta is asked only for tokens without a fresh verdict).
    // The verdicts are kept by token, so an answer that is not cached (Okta unreachable) still
    // reaches the member's status with its own message.
    let mut verdicts = std::collections::HashMap::new();
    // A refused domain is never asked (membership says why, per connector).
    let domain_allowed =
        crate::guard::source_domain(&source.domain, &ctx.settings.plan.allowed_source_domains)
            .is_ok();
    for connector in &members {
        if domain_allowed
            && connector.metadata.deletion_timestamp.is_none()
            && !connector.spec.suspend
            && let Ok(token) = plan::connector_token(connector, &stores.secrets)
        {
            let verdict = ctx.checker.check(&source.domain, &token).await;
            verdicts.insert(token.fingerprint(), verdict);
        }
    }
    let mut memberships = BTreeMap::new();
    let mut member_list = Vec::new();
    let mut products: BTreeMap<String, Result<PlannedProduct, BindingProblem>> = BTreeMap::new();
    let mut usable: BTreeMap<String, Vec<PlannedProduct>> = BTreeMap::new();
    for connector in &members {
        let m = plan::membership(connector, &stores.secrets, &ctx.settings.plan, |t| {
            verdicts.get(&t.fingerprint()).cloned()
        });
        let key = key_of(connector.as_ref());
        for binding in stores.bindings_of(connector) {
            let planned =
                plan::plan_product(&binding, connector, &stores.secrets, &ctx.settings.plan);
            if let Ok(p) = &planned {
                usable.entry(key.clone()).or_default().push(p.clone());
            }
            products.insert(plan::product_id(&binding), planned);
        }
        memberships.insert(key, m.clone());
        member_list.push((connector.clone(), m));
    }
    let mut plan = plan::plan_collector(
        source,
        &member_list,
        &usable,
        current_token.as_ref().map(|t| t.fingerprint()),
    );
    let objects = plan.as_mut().map(|p| {
        let (objects, left_out) = render::fit(p, &ctx.settings.render);
        for id in left_out {
            warn!(binding = %id, collector = %source.collector_name(), "binding left out: the collector config would exceed 1 MiB");
            products.insert(id, Err(BindingProblem::too_large(&source.collector_name())));
        }
        objects
    });
    if plan.as_ref().is_some_and(|p| p.products.is_empty()) {
        plan = None;
    }
    match (&plan, objects) {
        (Some(plan), Some(objects)) => apply_collector(ctx, plan, objects).await?,
        _ => delete_collector(ctx, source).await?,
    }
    Ok(SyncOutcome {
        source: source.clone(),
        memberships,
        products,
        plan,
        report,
    })
}

/// The token the running collector uses, read from its Secret.
fn collector_token(
    secrets: &Store<Secret>,
    namespace: &str,
    source: &SourceId,
) -> Option<SecretValue> {
    let secret = secrets.get(&ObjectRef::new(&source.collector_name()).within(namespace))?;
    let bytes = secret.data.as_ref()?.get(contract::OKTA_TOKEN_KEY)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .map(SecretValue::new)
}

async fn apply_collector(
    ctx: &Context,
    plan: &CollectorPlan,
    objects: render::CollectorObjects,
) -> Result<(), SyncError> {
    let ns = ctx.namespace();
    let stores = &ctx.stores;
    // Order matters: config and credentials exist before the Deployment that mounts them.
    apply_if_changed(
        ctx,
        &objects.secret,
        stores.secrets.get(&ObjectRef::from_obj(&objects.secret)),
        "Secret",
    )
    .await?;
    apply_if_changed(
        ctx,
        &objects.config,
        stores
            .config_maps
            .get(&ObjectRef::from_obj(&objects.config)),
        "ConfigMap",
    )
    .await?;
    // The state ConfigMap: only its metadata is ours, its data belongs to the collector.
    apply_if_changed(
        ctx,
        &objects.state,
        stores.config_maps.get(&ObjectRef::from_obj(&objects.state)),
        "ConfigMap",
    )
    .await?;
    let existing = stores
        .deployments
        .get(&ObjectRef::new(&plan.source.collector_name()).within(ns));
    if existing
        .as_ref()
        .is_none_or(|d| hash_of(d.as_ref()) != hash_of(&objects.deployment))
    {
        info!(collector = %plan.source.collector_name(), source = %plan.source, users = plan.users.len(), products = plan.products.len(), "applying collector");
    }
    apply_if_changed(ctx, &objects.deployment, existing, "Deployment").await?;
    Ok(())
}

/// The collector objects: namespaced, typed, serialisable.
trait CollectorObject:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> CollectorObject for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

fn hash_of<K: Resource>(o: &K) -> Option<&str> {
    o.meta()
        .annotations
        .as_ref()?
        .get(HASH_ANNOTATION)
        .map(String::as_str)
}

/// Event reason when a collector object changed by someone else is put back.
pub const DRIFT_REPAIRED: &str = "DriftRepaired";

/// Applies `desired` unless the live object already holds every field we set. Comparing the
/// fields themselves, not only the hash annotation, undoes tampering (an admin scaling the
/// collector or changing its image, a config pointed elsewhere); a repair is announced with an
/// Event on the object naming the paths (never values: one of them is a Secret).
async fn apply_if_changed<K: CollectorObject>(
    ctx: &Context,
    desired: &K,
    current: Option<Arc<K>>,
    kind: &'static str,
) -> Result<(), SyncError> {
    let Some(live) = current else {
        return apply(ctx, desired, kind).await;
    };
    let drifted = owned_drift(desired, live.as_ref());
    if drifted.is_empty() {
        return Ok(());
    }
    apply(ctx, desired, kind).await?;
    if hash_of(live.as_ref()) == hash_of(desired) {
        // Our desired state did not change: someone else changed the object.
        let name = desired.meta().name.clone().unwrap_or_default();
        warn!(kind, name = %name, fields = %drifted.join(", "), "collector object changed outside the operator; restored");
        let note = crate::api::conditions::cut(
            &format!(
                "{kind} {name} was changed outside the operator and restored: {}",
                drifted.join(", ")
            ),
            1000,
        );
        let event = Event {
            type_: EventType::Warning,
            reason: DRIFT_REPAIRED.into(),
            note: Some(note),
            action: "Repair".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &live.object_ref(&())).await {
            warn!(error = %e, "could not publish an Event");
        }
    }
    Ok(())
}

/// The paths where `live` does not hold what `desired` sets: labels, annotations, `spec`,
/// `data`. Fields only `live` has (server defaults, status, the collector's own state keys)
/// are not ours and are left alone.
pub fn owned_drift<K: Serialize>(desired: &K, live: &K) -> Vec<String> {
    let (Ok(d), Ok(l)) = (serde_json::to_value(desired), serde_json::to_value(live)) else {
        return vec!["(unserialisable)".into()];
    };
    let mut out = Vec::new();
    for field in ["labels", "annotations"] {
        subset(
            &d["metadata"][field],
            &l["metadata"][field],
            &format!("metadata.{field}"),
            &mut out,
        );
    }
    for field in ["spec", "data"] {
        subset(&d[field], &l[field], field, &mut out);
    }
    out
}

fn subset(d: &serde_json::Value, l: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (d, l) {
        (Value::Null, _) => {}
        (Value::Object(d), Value::Object(_) | Value::Null) => {
            for (k, dv) in d {
                subset(
                    dv,
                    l.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                subset(dv, lv, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        _ => out.push(path.to_string()),
    }
}

async fn apply<K: CollectorObject>(
    ctx: &Context,
    desired: &K,
    kind: &'static str,
) -> Result<(), SyncError> {
    let name = desired.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ctx.namespace());
    let mut body = serde_json::to_value(desired).expect("objects serialise");
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|source| SyncError::Write {
        kind,
        name: name.clone(),
        source,
    })?;
    ctx.metrics
        .collector_applies
        .with_label_values(&[kind, "apply"])
        .inc();
    Ok(())
}

/// Deletes the collector of a source that has no user left (its reference count reached zero).
pub async fn delete_collector(ctx: &Context, source: &SourceId) -> Result<(), SyncError> {
    let ns = ctx.namespace();
    let name = source.collector_name();
    let stores = &ctx.stores;
    let dp = DeleteParams::foreground();
    if stores
        .deployments
        .get(&ObjectRef::new(&name).within(ns))
        .is_some()
    {
        info!(collector = %name, source = %source, "deleting collector: no connector uses it any more");
        delete::<Deployment>(ctx, &name, &dp, "Deployment").await?;
    }
    if stores
        .secrets
        .get(&ObjectRef::new(&name).within(ns))
        .is_some()
    {
        delete::<Secret>(ctx, &name, &dp, "Secret").await?;
    }
    for cm in [name.clone(), source.state_name()] {
        if stores
            .config_maps
            .get(&ObjectRef::new(&cm).within(ns))
            .is_some()
        {
            delete::<ConfigMap>(ctx, &cm, &dp, "ConfigMap").await?;
        }
    }
    Ok(())
}

async fn delete<K: CollectorObject>(
    ctx: &Context,
    name: &str,
    dp: &DeleteParams,
    kind: &'static str,
) -> Result<(), SyncError> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ctx.namespace());
    match api.delete(name, dp).await {
        Ok(_) => {
            ctx.metrics
                .collector_applies
                .with_label_values(&[kind, "delete"])
                .inc();
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(SyncError::Write {
            kind,
            name: name.to_string(),
            source,
        }),
    }
}

/// Deletes collectors whose source no connector names any more (e.g. a finalizer removed by hand
/// while the operator was down), so nothing is left behind.
pub async fn collect_orphans(ctx: &Context) -> Result<usize, SyncError> {
    let mut live: std::collections::HashSet<String> = std::collections::HashSet::new();
    for c in ctx.stores.connectors.state() {
        live.insert(SourceId::of(&c).collector_name());
    }
    let mut removed = 0;
    for d in ctx.stores.deployments.state() {
        let name = d.name_any();
        let source = d
            .annotations()
            .get(super::identity::SOURCE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        if !live.contains(&name)
            && let Some(domain) = source.strip_prefix("okta:")
        {
            delete_collector(
                ctx,
                &SourceId {
                    kind: super::identity::SourceKind::Okta,
                    domain: domain.to_string(),
                },
            )
            .await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// All connectors' keys of a source, for mapping collector-object events back to connectors.
pub fn connectors_for_source_hash(
    connectors: &Store<UnifiedConnector>,
    hash: &str,
) -> Vec<ObjectRef<UnifiedConnector>> {
    connectors
        .state()
        .iter()
        .filter(|c| SourceId::of(c).hash() == hash)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// All bindings whose connector reads the source with this hash.
pub fn bindings_for_source_hash(
    connectors: &Store<UnifiedConnector>,
    bindings: &Store<ProductBinding>,
    hash: &str,
) -> Vec<ObjectRef<ProductBinding>> {
    let names: std::collections::HashSet<(String, String)> = connectors
        .state()
        .iter()
        .filter(|c| SourceId::of(c).hash() == hash)
        .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    bindings
        .state()
        .iter()
        .filter(|b| {
            names.contains(&(
                b.namespace().unwrap_or_default(),
                b.spec.connector_ref.name.clone(),
            ))
        })
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, image: &str, extra_label: bool) -> Deployment {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "labels": {"a": "1"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"a": "1"}},
                "template": {"spec": {"containers": [{"name": "collector", "image": image}]}},
            },
        }))
        .unwrap();
        if extra_label {
            d.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert("x".into(), "y".into());
        }
        d
    }

    #[test]
    fn drift_names_our_fields_someone_changed_and_ignores_theirs() {
        let desired = deployment(1, "uc:1", false);
        let mut live = deployment(1, "uc:1", true); // an extra label: not ours
        live.spec.as_mut().unwrap().progress_deadline_seconds = Some(600); // a server default
        assert!(owned_drift(&desired, &live).is_empty());
        let tampered = deployment(0, "evil:1", false);
        assert_eq!(
            owned_drift(&desired, &tampered),
            vec![
                "spec.replicas".to_string(),
                "spec.template.spec.containers[0].image".to_string()
            ]
        );
    }

    #[test]
    fn the_collectors_own_state_keys_are_not_drift() {
        let desired = ConfigMap {
            metadata: kube::api::ObjectMeta {
                labels: Some([("a".to_string(), "1".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut live = desired.clone();
        live.data = Some([("report.json".to_string(), "{}".to_string())].into());
        assert!(owned_drift(&desired, &live).is_empty());
        live.metadata.labels = None;
        assert_eq!(owned_drift(&desired, &live), vec!["metadata.labels.a"]);
    }
}
