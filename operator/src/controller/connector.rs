//! The UnifiedConnector reconciler: keeps its source's shared collector in sync (through
//! [`sync_source`]) and reports the connector's health.
//!
//! A finalizer holds a connector until its collector no longer uses it: collectors live in the
//! operator's namespace, where ownerReferences from other namespaces are not allowed.

use std::sync::Arc;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::health::{Health, report_deadline, rollup};
use super::identity::SourceId;
use super::plan::Membership;
use super::status::{BindingFacts, announce, binding_health, now_rfc3339, write_status};
use super::sync::{SyncOutcome, sync_source};
use super::{Error, requeue_after};
use crate::api::conditions::{
    CREDENTIALS_VALID, Desired, MESSAGE_MAX, StatusCommon, cut, set_conditions, summary_conditions,
};
use crate::api::connector::{BoundProduct, HealthMessage};
use crate::api::{UnifiedConnector, UnifiedConnectorStatus};

pub const FINALIZER: &str = "connectors.unified.dev/collector";
/// How many health messages the status keeps.
const HISTORY: usize = 5;

pub async fn reconcile(
    connector: Arc<UnifiedConnector>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    super::instrumented(
        connector.clone().as_ref(),
        &ctx,
        reconcile_inner(connector.clone(), &ctx),
    )
    .await
}

async fn reconcile_inner(
    connector: Arc<UnifiedConnector>,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    let api: Api<UnifiedConnector> = Api::namespaced(
        ctx.client.clone(),
        &connector.namespace().unwrap_or_default(),
    );
    finalizer(&api, FINALIZER, connector, |event| async {
        match event {
            Finalizer::Apply(c) => apply(&c, ctx).await,
            Finalizer::Cleanup(c) => {
                // The store shows this connector as deleting, so the sync leaves it out: the
                // collector drops its products, or is deleted if it was the last user.
                sync_source(ctx, &SourceId::of(&c)).await?;
                ctx.forget_status(&super::object_key(c.as_ref()));
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(connector: &UnifiedConnector, ctx: &Context) -> Result<Action, Error> {
    let outcome = sync_source(ctx, &SourceId::of(connector)).await?;
    let (status, health) = desired_status(connector, &outcome, ctx);
    let old = connector.status.as_ref();
    let volatile_only = old.is_some_and(|o| {
        o.common.conditions == status.common.conditions && o.products == status.products
    });
    write_status(ctx, connector, old, &status, volatile_only).await?;
    announce(ctx, connector, old.and_then(|s| s.common.phase), &health).await;
    // Look again when the collector's report turns stale: the connector's status lists its
    // bindings' phases, so its change triggers every binding of it (see the watches in `run`).
    let after = requeue_after(health.phase);
    Ok(Action::requeue(
        report_deadline(Utc::now(), outcome.report.as_ref(), ctx.settings.deadlines)
            .map_or(after, |d| d.min(after)),
    ))
}

/// The status a connector should have after a sync. Pure apart from the clock.
pub fn desired_status(
    connector: &UnifiedConnector,
    outcome: &SyncOutcome,
    ctx: &Context,
) -> (UnifiedConnectorStatus, Health) {
    let key = format!(
        "{}/{}",
        connector.namespace().unwrap_or_default(),
        connector.name_any()
    );
    let membership = outcome
        .memberships
        .get(&key)
        .cloned()
        .unwrap_or(Membership::Deleting);
    let collector = outcome.source.collector_name();
    let now = Utc::now();
    let mut products = Vec::new();
    let mut phases = Vec::new();
    let destinations = super::status::Destinations::of_source(&ctx.stores, &outcome.source);
    for binding in ctx.stores.bindings_of(connector) {
        let id = super::plan::product_id(&binding);
        let Some(planned) = outcome.products.get(&id) else {
            continue;
        };
        let duplicates = destinations.others(&binding);
        let (health, _) = binding_health(
            now,
            &binding,
            BindingFacts {
                connector_name: &connector.name_any(),
                membership: &membership,
                planned,
                report: outcome.report.as_ref(),
                collector: &collector,
                deadlines: ctx.settings.deadlines,
                duplicates: &duplicates,
            },
        );
        let product = binding
            .spec
            .product
            .kind()
            .map(|k| k.name())
            .unwrap_or("invalid");
        products.push(BoundProduct {
            binding: binding.name_any(),
            product: product.to_string(),
            phase: health.phase,
        });
        phases.push((binding.name_any(), health.phase));
    }
    let health = membership.problem().unwrap_or_else(|| rollup(&phases));
    let credentials = match &membership {
        Membership::Active(_) => Desired::new(
            CREDENTIALS_VALID,
            true,
            "TokenValid",
            "Okta accepted the API token and it may read the System Log",
        ),
        Membership::Suspended | Membership::Deleting => Desired::new(
            CREDENTIALS_VALID,
            false,
            "NotChecked",
            "the token is not checked while the connector is suspended",
        ),
        Membership::Refused(why) => Desired::new(
            CREDENTIALS_VALID,
            false,
            crate::api::conditions::reason::SOURCE_DOMAIN_REFUSED,
            why.clone(),
        ),
        Membership::SecretProblem(e) => {
            Desired::new(CREDENTIALS_VALID, false, e.reason(), e.to_string())
        }
        Membership::Token(v) => Desired::new(CREDENTIALS_VALID, false, v.reason(), v.message()),
    };
    let old = connector.status.clone().unwrap_or_default();
    let mut desired: Vec<Desired> =
        summary_conditions(health.phase, &health.reason, &health.message).into();
    desired.push(credentials);
    let now_text = now_rfc3339();
    let generation = connector.metadata.generation;
    let mut history = old.history.clone();
    if old.common.phase != Some(health.phase)
        || old.common.message.as_deref() != Some(health.message.as_str())
    {
        history.insert(
            0,
            HealthMessage {
                time: now_text.clone(),
                phase: health.phase,
                message: health.message.clone(),
            },
        );
        history.truncate(HISTORY);
    }
    let in_use = outcome
        .plan
        .as_ref()
        .is_some_and(|p| p.users.contains(&key));
    let status = UnifiedConnectorStatus {
        common: StatusCommon {
            observed_generation: generation,
            conditions: set_conditions(&old.common.conditions, &desired, generation, &now_text),
            phase: Some(health.phase),
            message: Some(cut(&health.message, MESSAGE_MAX)),
        },
        collector: in_use.then_some(collector),
        product_summary: product_summary(&products),
        products,
        history,
    };
    (status, health)
}

/// `sentinel,splunkHec,webhook`: each product type once, in a stable order.
fn product_summary(products: &[BoundProduct]) -> Option<String> {
    let kinds: std::collections::BTreeSet<&str> =
        products.iter().map(|p| p.product.as_str()).collect();
    (!kinds.is_empty()).then(|| kinds.into_iter().collect::<Vec<_>>().join(","))
}
