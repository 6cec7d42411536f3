//! Who uses a collector, and what it must do: a pure function of the cached resources.
//!
//! A collector exists while at least one *active* connector (not suspended, not being deleted,
//! with a token Okta accepted) has at least one *usable* binding. That set is the collector's
//! reference count; when it reaches zero the collector's objects are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::health::Health;
use super::identity::SourceId;
use super::okta_check::Verdict;
use super::secrets::{SecretError, SecretValue, read_key};
use crate::api::binding::ProductKind;
use crate::api::conditions::{Phase, reason};
use crate::api::{ProductBinding, UnifiedConnector};
use crate::contract::{self, EventFilter, SecretSource, SinkConfig};

/// Where a connector stands with respect to joining its collector.
#[derive(Debug, Clone, PartialEq)]
pub enum Membership {
    /// `spec.suspend: true`.
    Suspended,
    /// Its source domain is one the token must never be sent to ([`crate::guard::source_domain`]).
    Refused(String),
    /// Being deleted: its finalizer runs once the collector no longer uses it.
    Deleting,
    /// Its credential Secret cannot be read.
    SecretProblem(SecretError),
    /// Okta rejected its token, or could not be asked yet.
    Token(Verdict),
    /// May join: Okta accepted this token.
    Active(SecretValue),
}

impl Membership {
    /// Why the connector is not collecting, as its health: Error when a person must fix
    /// something (Secret, token), Pending otherwise (suspended, Okta not asked yet). `None` while
    /// it is active or being deleted.
    pub fn problem(&self) -> Option<Health> {
        match self {
            Membership::Active(_) | Membership::Deleting => None,
            Membership::Suspended => Some(Health::new(
                Phase::Pending,
                "Suspended",
                "spec.suspend is true: collection is paused for this connector",
            )),
            Membership::SecretProblem(e) => {
                Some(Health::new(Phase::Error, e.reason(), e.to_string()))
            }
            Membership::Refused(why) => Some(Health::new(
                Phase::Error,
                reason::SOURCE_DOMAIN_REFUSED,
                why.clone(),
            )),
            Membership::Token(v @ (Verdict::Invalid(_) | Verdict::Forbidden(_))) => {
                Some(Health::new(Phase::Error, v.reason(), v.message()))
            }
            Membership::Token(v) => Some(Health::new(Phase::Pending, v.reason(), v.message())),
        }
    }

    pub fn token(&self) -> Option<&SecretValue> {
        match self {
            Membership::Active(t) => Some(t),
            _ => None,
        }
    }
}

/// Reads a connector's token and combines it with the token verdict, if one is known.
pub fn membership(
    connector: &UnifiedConnector,
    secrets: &Store<Secret>,
    settings: &PlanSettings,
    verdict: impl Fn(&SecretValue) -> Option<Verdict>,
) -> Membership {
    if connector.metadata.deletion_timestamp.is_some() {
        return Membership::Deleting;
    }
    if connector.spec.suspend {
        return Membership::Suspended;
    }
    if let Err(why) = crate::guard::source_domain(
        &connector.normalised_domain(),
        &settings.allowed_source_domains,
    ) {
        return Membership::Refused(why);
    }
    match connector_token(connector, secrets) {
        Err(e) => Membership::SecretProblem(e),
        Ok(token) => match verdict(&token) {
            Some(Verdict::Valid) => Membership::Active(token),
            Some(v) => Membership::Token(v),
            None => Membership::Token(Verdict::Unreachable(
                "the API token has not been validated against Okta yet".into(),
            )),
        },
    }
}

pub fn connector_token(
    connector: &UnifiedConnector,
    secrets: &Store<Secret>,
) -> Result<SecretValue, SecretError> {
    let r = &connector.spec.source.okta.credentials_secret_ref;
    read_key(
        secrets,
        &connector.namespace().unwrap_or_default(),
        &r.name,
        &r.key,
        "spec.source.okta.credentialsSecretRef",
    )
}

/// A binding the collector will deliver to.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedProduct {
    /// `<namespace>/<name>` of the binding: the product id in the collector's config and report.
    pub id: String,
    pub since: DateTime<Utc>,
    pub filter: EventFilter,
    pub sink: SinkConfig,
    /// Values for the collector Secret, under keys the sink's [`SecretSource::File`]s name.
    pub secrets: Vec<(String, SecretValue)>,
}

/// Why a binding cannot be delivered to; shown in its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingProblem {
    pub reason: &'static str,
    pub message: String,
}

impl BindingProblem {
    /// This binding would push its collector's config or Secret over a Kubernetes object's size.
    pub fn too_large(collector: &str) -> Self {
        BindingProblem {
            reason: reason::COLLECTOR_CONFIG_TOO_LARGE,
            message: format!(
                "left out of collector {collector}: with this binding its config or Secret would exceed 1 MiB, the most a Kubernetes object holds; shorten this binding's settings (index, headers, filter) or bind fewer products to this source"
            ),
        }
    }
}

impl From<SecretError> for BindingProblem {
    fn from(e: SecretError) -> Self {
        BindingProblem {
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

/// The product id of a binding.
pub fn product_id(binding: &ProductBinding) -> String {
    format!(
        "{}/{}",
        binding.namespace().unwrap_or_default(),
        binding.name_any()
    )
}

/// Settings the plan needs from the operator's configuration.
#[derive(Debug, Clone, Default)]
pub struct PlanSettings {
    /// Accept `http://` product URLs (test servers only).
    pub allow_insecure_http: bool,
    /// Source domains allowed although they look cluster-internal (`--allow-source-domain`).
    pub allowed_source_domains: Vec<String>,
}

/// Turns a binding into what the collector needs, reading its Secret. `connector` is the
/// connector it names (same namespace).
pub fn plan_product(
    binding: &ProductBinding,
    connector: &UnifiedConnector,
    secrets: &Store<Secret>,
    settings: &PlanSettings,
) -> Result<PlannedProduct, BindingProblem> {
    let ns = binding.namespace().unwrap_or_default();
    let id = product_id(binding);
    let key_prefix = format!(
        "p-{}",
        &hex::encode(sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&id)
        ))[..10]
    );
    let mut values = Vec::new();
    let mut secret = |field_path: &str,
                      name: &str,
                      key: &str,
                      file_key: &str|
     -> Result<SecretSource, BindingProblem> {
        let value = read_key(secrets, &ns, name, key, field_path)?;
        let full_key = format!("{key_prefix}.{file_key}");
        values.push((full_key.clone(), value));
        Ok(SecretSource::File(
            std::path::Path::new(contract::SECRETS_DIR).join(full_key),
        ))
    };
    let kind = binding.spec.product.kind().map_err(|m| BindingProblem {
        reason: "InvalidProduct",
        message: m,
    })?;
    let check_url = |field: &str, url: &str| -> Result<bool, BindingProblem> {
        if url.starts_with("https://") {
            Ok(false)
        } else if url.starts_with("http://") && settings.allow_insecure_http {
            Ok(true)
        } else {
            Err(BindingProblem {
                reason: "InsecureURL",
                message: format!(
                    "{field} must use https:// (got {url}); plain http is refused because events and credentials would travel unencrypted"
                ),
            })
        }
    };
    let sink = match kind {
        ProductKind::Sentinel(s) => {
            let insecure = check_url("spec.product.sentinel.endpoint", &s.endpoint)?
                | s.authority_host
                    .as_deref()
                    .map(|a| check_url("spec.product.sentinel.authorityHost", a))
                    .transpose()?
                    .unwrap_or(false);
            let field = "spec.product.sentinel.credentialsSecretRef";
            let name = &s.credentials_secret_ref.name;
            SinkConfig::Sentinel(contract::SentinelSink {
                endpoint: s.endpoint.clone(),
                dcr_immutable_id: s.dcr_immutable_id.clone(),
                stream_name: s.stream_name.clone(),
                table: Some(s.table.clone()),
                authority_host: s.authority_host.clone(),
                tenant_id: secret(field, name, "tenantId", "tenantId")?,
                client_id: secret(field, name, "clientId", "clientId")?,
                client_secret: secret(field, name, "clientSecret", "clientSecret")?,
                allow_insecure_http: insecure,
            })
        }
        ProductKind::SplunkHec(h) => {
            let insecure = check_url("spec.product.splunkHec.url", &h.url)?;
            let r = &h.token_secret_ref;
            SinkConfig::SplunkHec(contract::SplunkHecSink {
                url: h.url.clone(),
                token: secret(
                    "spec.product.splunkHec.tokenSecretRef",
                    &r.name,
                    &r.key,
                    "token",
                )?,
                index: h.index.clone(),
                sourcetype: h.sourcetype.clone(),
                allow_insecure_http: insecure,
            })
        }
        ProductKind::Webhook(w) => {
            let insecure = check_url("spec.product.webhook.url", &w.url)?;
            let r = &w.signing_secret_ref;
            SinkConfig::Webhook(contract::WebhookSink {
                url: w.url.clone(),
                signing_secret: secret(
                    "spec.product.webhook.signingSecretRef",
                    &r.name,
                    &r.key,
                    "signingSecret",
                )?,
                headers: w.headers.clone(),
                allow_insecure_http: insecure,
            })
        }
    };
    let since = connector_since(connector).map_err(|m| BindingProblem {
        reason: "InvalidConnector",
        message: m,
    })?;
    let filter = EventFilter {
        event_types: binding
            .spec
            .filter
            .as_ref()
            .map(|f| f.event_types.clone())
            .unwrap_or_default(),
    };
    // The collector's own checks, run here on this binding alone: a binding it would refuse is
    // left out of the shared config and told why, so it never stops another team's delivery.
    let product = contract::ProductConfig {
        id,
        since,
        filter,
        sink,
    };
    crate::collector::config::validate_product(&product, "spec.product", "spec.filter").map_err(
        |e| BindingProblem {
            reason: reason::INVALID_PRODUCT_SETTINGS,
            message: format!("{e:#}; this binding is left out of the collector until it is fixed"),
        },
    )?;
    Ok(PlannedProduct {
        id: product.id,
        since: product.since,
        filter: product.filter,
        sink: product.sink,
        secrets: values,
    })
}

/// The connector's creation time minus its look-back: where its products start reading.
pub fn connector_since(connector: &UnifiedConnector) -> Result<DateTime<Utc>, String> {
    let lookback: kube::core::Duration = connector.spec.lookback.parse().map_err(|e| {
        format!(
            "spec.lookback '{}' is not a duration such as 1h: {e}",
            connector.spec.lookback
        )
    })?;
    let lookback = std::time::Duration::from(lookback);
    let created = connector
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0))
        .unwrap_or_else(Utc::now);
    Ok(created - chrono::Duration::from_std(lookback).unwrap_or_default())
}

/// Everything one collector must do.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorPlan {
    pub source: SourceId,
    /// The one token the collector uses (a valid one; the current one while it stays valid).
    pub token: SecretValue,
    /// `<namespace>/<name>` of the connector whose token is used.
    pub token_owner: String,
    pub products: Vec<PlannedProduct>,
    /// `<namespace>/<name>` of every active connector with products: the reference count.
    pub users: Vec<String>,
    /// Pod settings the connectors ask for (`spec.collector`), oldest connector first per field.
    pub collector: Option<crate::api::collector_pod::CollectorOverrides>,
    /// Bindings left out because the config would not fit ([`super::render::fit`]).
    pub left_out: Vec<String>,
}

/// Decides the collector for one source from its connectors' memberships and their bindings'
/// plans. `None` means no user is left: the collector must not exist.
///
/// `current_token` is the fingerprint of the token the collector runs with now: it is kept while
/// its connector stays active, so a new connector joining does not restart the collector.
pub fn plan_collector(
    source: &SourceId,
    members: &[(Arc<UnifiedConnector>, Membership)],
    products: &BTreeMap<String, Vec<PlannedProduct>>,
    current_token: Option<[u8; 32]>,
) -> Option<CollectorPlan> {
    let mut active: Vec<(&Arc<UnifiedConnector>, &SecretValue, String)> = members
        .iter()
        .filter_map(|(c, m)| {
            m.token().map(|t| {
                (
                    c,
                    t,
                    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
                )
            })
        })
        .filter(|(_, _, key)| products.get(key).is_some_and(|p| !p.is_empty()))
        .collect();
    if active.is_empty() {
        return None;
    }
    // Oldest connector first: a deterministic choice every replica agrees on.
    active.sort_by(|a, b| {
        (a.0.metadata.creation_timestamp.as_ref().map(|t| t.0), &a.2)
            .cmp(&(b.0.metadata.creation_timestamp.as_ref().map(|t| t.0), &b.2))
    });
    let (_, token, owner) = active
        .iter()
        .find(|(_, t, _)| Some(t.fingerprint()) == current_token)
        .unwrap_or(&active[0]);
    let mut all_products: Vec<PlannedProduct> = active
        .iter()
        .flat_map(|(_, _, key)| products[key].iter().cloned())
        .collect();
    all_products.sort_by(|a, b| a.id.cmp(&b.id));
    Some(CollectorPlan {
        source: source.clone(),
        token: (*token).clone(),
        token_owner: owner.clone(),
        products: all_products,
        users: active.iter().map(|(_, _, k)| k.clone()).collect(),
        collector: crate::api::collector_pod::CollectorOverrides::first_set(
            active.iter().map(|(c, _, _)| c.spec.collector.as_ref()),
        ),
        left_out: Vec::new(),
    })
}
