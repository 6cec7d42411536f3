//! The ProductBinding reconciler: validates the binding and reports its product's health.
//!
//! It never writes collector objects: a binding change triggers its connector's reconcile (see
//! the watches in [`super::run`]), which syncs the shared collector.

use std::sync::Arc;

use chrono::Utc;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::context::Context;
use super::health::Health;
use super::identity::SourceId;
use super::plan::{self, Membership};
use super::status::{BindingFacts, announce, binding_health, now_rfc3339, write_status};
use super::{Error, requeue_for};
use crate::api::conditions::{
    DELIVERING, Desired, MESSAGE_MAX, Phase, StatusCommon, cut, set_conditions, summary_conditions,
};
use crate::api::{ProductBinding, ProductBindingStatus};
use crate::contract::{DeliveryState, ProductHealth};

pub async fn reconcile(binding: Arc<ProductBinding>, ctx: Arc<Context>) -> Result<Action, Error> {
    super::instrumented(
        binding.clone().as_ref(),
        &ctx,
        reconcile_inner(binding.clone(), &ctx),
    )
    .await
}

async fn reconcile_inner(binding: Arc<ProductBinding>, ctx: &Context) -> Result<Action, Error> {
    if binding.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if connector_not_reconciled_yet(&binding, ctx) {
        // Its token is not checked yet, so any status now would be a guess to overwrite in a
        // moment; the connector's first status write triggers this binding again. Until then
        // the CRD's default `observedGeneration: -1` already reads as in progress.
        return Ok(Action::requeue(std::time::Duration::from_secs(30)));
    }
    let (status, health) = desired_status(&binding, ctx);
    let old = binding.status.as_ref();
    let volatile_only = old.is_some_and(|o| {
        o.common.conditions == status.common.conditions && o.last_error == status.last_error
    });
    write_status(ctx, binding.as_ref(), old, &status, volatile_only).await?;
    announce(
        ctx,
        binding.as_ref(),
        old.and_then(|s| s.common.phase),
        &health,
    )
    .await;
    Ok(requeue_for(health.phase))
}

fn connector_not_reconciled_yet(binding: &ProductBinding, ctx: &Context) -> bool {
    ctx.stores.connector_of(binding).is_some_and(|c| {
        c.metadata.deletion_timestamp.is_none()
            && c.status
                .as_ref()
                .and_then(|s| s.common.observed_generation)
                .unwrap_or(-1)
                < 0
    })
}

pub fn desired_status(binding: &ProductBinding, ctx: &Context) -> (ProductBindingStatus, Health) {
    let stores = &ctx.stores;
    let ns = binding.namespace().unwrap_or_default();
    let product = binding
        .spec
        .product
        .kind()
        .ok()
        .map(|k| k.name().to_string());
    let mut collector = None;
    let (health, delivery) = match stores.connector_of(binding) {
        None => (
            Health::new(
                Phase::Error,
                "ConnectorNotFound",
                format!(
                    "spec.connectorRef.name: UnifiedConnector {ns}/{} not found: create it or correct the name",
                    binding.spec.connector_ref.name
                ),
            ),
            None,
        ),
        Some(connector) => {
            let source = SourceId::of(&connector);
            let membership =
                plan::membership(&connector, &stores.secrets, &ctx.settings.plan, |t| {
                    ctx.checker.cached(&source.domain, t)
                });
            let planned =
                plan::plan_product(binding, &connector, &stores.secrets, &ctx.settings.plan)
                    .and_then(|p| {
                        if stores.left_out(ctx.namespace(), &source).contains(&p.id) {
                            Err(plan::BindingProblem::too_large(&source.collector_name()))
                        } else {
                            Ok(p)
                        }
                    });
            let report = stores.report(ctx.namespace(), &source);
            let duplicates =
                super::status::Destinations::of_source(stores, &source).others(binding);
            if matches!(membership, Membership::Active(_)) && planned.is_ok() {
                collector = Some(source.collector_name());
            }
            binding_health(
                Utc::now(),
                binding,
                BindingFacts {
                    connector_name: &connector.name_any(),
                    membership: &membership,
                    planned: &planned,
                    report: report.as_ref(),
                    collector: &source.collector_name(),
                    deadlines: ctx.settings.deadlines,
                    duplicates: &duplicates,
                },
            )
        }
    };
    let old = binding.status.clone().unwrap_or_default();
    let delivery = delivery.unwrap_or_default();
    let delivering = delivering_condition(&delivery, health.phase);
    let mut desired: Vec<Desired> =
        summary_conditions(health.phase, &health.reason, &health.message).into();
    desired.push(delivering);
    let generation = binding.metadata.generation;
    let status = ProductBindingStatus {
        common: StatusCommon {
            observed_generation: generation,
            conditions: set_conditions(
                &old.common.conditions,
                &desired,
                generation,
                &now_rfc3339(),
            ),
            phase: Some(health.phase),
            message: Some(cut(&health.message, MESSAGE_MAX)),
        },
        product,
        collector,
        last_delivery_time: delivery
            .last_successful_delivery
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        events_delivered: (delivery.events_delivered > 0)
            .then_some(delivery.events_delivered as i64),
        backlog: delivery
            .last_successful_delivery
            .map(|_| delivery.backlog as i64),
        last_error: delivery.last_error.as_ref().map(|e| e.message.clone()),
    };
    (status, health)
}

/// `Delivering`: True while the collector's latest attempts to this product succeed.
fn delivering_condition(p: &ProductHealth, phase: Phase) -> Desired {
    match (p.state, phase) {
        (DeliveryState::Delivering, _) => Desired::new(
            DELIVERING,
            true,
            "Delivering",
            "the last delivery succeeded",
        ),
        (DeliveryState::Retrying, _) => Desired::new(
            DELIVERING,
            false,
            "Retrying",
            "the last delivery failed and is being retried",
        ),
        (DeliveryState::Rejected, _) => Desired::new(
            DELIVERING,
            false,
            "Rejected",
            "the product rejected the last delivery",
        ),
        (DeliveryState::Pending, Phase::Error) => Desired::new(
            DELIVERING,
            false,
            "NotDelivering",
            "nothing is delivered until the error is fixed",
        ),
        (DeliveryState::Pending, _) => {
            Desired::new(DELIVERING, false, "NotStarted", "no delivery attempted yet")
        }
    }
}
