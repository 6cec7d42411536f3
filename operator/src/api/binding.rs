//! `ProductBinding`: binds a connector to one destination product, with its own settings and filter.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::StatusCommon;

/// Delivers everything a UnifiedConnector collects to one product.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "connectors.unified.dev",
    version = "v1alpha1",
    kind = "ProductBinding",
    doc = "Delivers what a UnifiedConnector collects to one product (Sentinel, Splunk HEC or a webhook)",
    plural = "productbindings",
    shortname = "pb",
    category = "connectors",
    namespaced,
    status = "ProductBindingStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Connector","type":"string","jsonPath":".spec.connectorRef.name"}"#,
    printcolumn = r#"{"name":"Product","type":"string","jsonPath":".status.product"}"#,
    printcolumn = r#"{"name":"Last delivery","type":"date","jsonPath":".status.lastDeliveryTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Delivered","type":"integer","jsonPath":".status.eventsDelivered","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProductBindingSpec {
    /// The UnifiedConnector (same namespace) whose events this product receives.
    pub connector_ref: LocalObjectRef,
    /// The destination. Exactly one product type.
    pub product: Product,
    /// Which events this product wants; all when absent. Events are collected once and filtered per product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<EventFilter>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One field per product type; exactly one is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.sentinel), has(self.splunkHec), has(self.webhook)].filter(x, x).size() == 1").message("spec.product must set exactly one of sentinel, splunkHec or webhook"))]
pub struct Product {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<Sentinel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splunk_hec: Option<SplunkHec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// The product a binding names, as a type with exactly one variant set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProductKind<'a> {
    Sentinel(&'a Sentinel),
    SplunkHec(&'a SplunkHec),
    Webhook(&'a Webhook),
}

impl ProductKind<'_> {
    /// The field name under `spec.product`, also shown in status and printer columns.
    pub fn name(&self) -> &'static str {
        match self {
            ProductKind::Sentinel(_) => "sentinel",
            ProductKind::SplunkHec(_) => "splunkHec",
            ProductKind::Webhook(_) => "webhook",
        }
    }

    /// Where this product's data lands, as a comparable key: two bindings of one source with the
    /// same key (and the same filter) deliver every event twice.
    pub fn destination(&self) -> String {
        let base = |u: &str| u.trim_end_matches('/').to_ascii_lowercase();
        match self {
            ProductKind::Sentinel(s) => format!(
                "sentinel {} {} {}",
                base(&s.endpoint),
                s.dcr_immutable_id.to_ascii_lowercase(),
                s.stream_name
            ),
            ProductKind::SplunkHec(h) => format!(
                "splunkHec {} index={} sourcetype={}",
                base(&h.url),
                h.index.as_deref().unwrap_or(""),
                h.sourcetype
            ),
            ProductKind::Webhook(w) => format!("webhook {} {:?}", base(&w.url), w.headers),
        }
    }
}

impl Product {
    /// The single product set. The CRD's CEL rule guarantees exactly one on the server; this
    /// re-checks for objects that bypassed it (an older CRD) with a message naming the field.
    pub fn kind(&self) -> Result<ProductKind<'_>, String> {
        match (&self.sentinel, &self.splunk_hec, &self.webhook) {
            (Some(s), None, None) => Ok(ProductKind::Sentinel(s)),
            (None, Some(s), None) => Ok(ProductKind::SplunkHec(s)),
            (None, None, Some(w)) => Ok(ProductKind::Webhook(w)),
            _ => Err("spec.product must set exactly one of sentinel, splunkHec or webhook".into()),
        }
    }
}

/// Microsoft Sentinel through the Azure Monitor Logs Ingestion API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sentinel {
    /// Logs ingestion endpoint of the DCR or DCE, such as `https://my-dce-abcd.eastus-1.ingest.monitor.azure.com`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+/?$')").message("spec.product.sentinel.endpoint must be a base URL such as https://my-dce.eastus-1.ingest.monitor.azure.com"))]
    #[schemars(length(max = 2048))]
    pub endpoint: String,
    /// Immutable id of the data collection rule, `dcr-` followed by 32 hex digits.
    #[x_kube(validation = Rule::new("self.matches('^dcr-[0-9a-fA-F]{32}$')").message("spec.product.sentinel.dcrImmutableId must look like dcr-0123456789abcdef0123456789abcdef (the DCR's immutableId)"))]
    #[schemars(length(max = 64))]
    pub dcr_immutable_id: String,
    /// Stream declared in the DCR, such as `Custom-OktaSystemLogs`.
    #[x_kube(validation = Rule::new("self.startsWith('Custom-')").message("spec.product.sentinel.streamName must be a custom stream, Custom-<name>, declared in the DCR (Microsoft- streams take no custom data)"))]
    #[schemars(length(min = 8, max = 256))]
    pub stream_name: String,
    /// Destination table the DCR routes the stream to.
    #[serde(default = "default_table")]
    #[schemars(length(min = 1, max = 256))]
    pub table: String,
    /// Entra ID authority host; change it only for sovereign clouds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+/?$')").message("spec.product.sentinel.authorityHost must be a base URL such as https://login.microsoftonline.us"))]
    #[schemars(length(max = 2048))]
    pub authority_host: Option<String>,
    /// Secret (same namespace) with keys `tenantId`, `clientId` and `clientSecret` of an Entra ID
    /// app that has the Monitoring Metrics Publisher role on the DCR.
    pub credentials_secret_ref: LocalObjectRef,
}

fn default_table() -> String {
    "OktaSystemLogs".into()
}

/// Splunk HTTP Event Collector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SplunkHec {
    /// HEC base URL, such as `https://splunk.example.com:8088`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+(/[^?#]*)?$')").message("spec.product.splunkHec.url must be a URL such as https://splunk.example.com:8088"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Secret (same namespace) and key holding the HEC token.
    pub token_secret_ref: super::SecretKeyRef,
    /// Index to write to; the token's default index when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Sourcetype; `OktaIM2:log` matches Splunk's Okta add-on.
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
}

fn default_sourcetype() -> String {
    "OktaIM2:log".into()
}

/// A generic endpoint receiving JSON batches signed per Standard Webhooks 1.0.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+(/[^#]*)?$')").message("spec.product.webhook.url must be a URL such as https://hooks.example.com/okta"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Secret (same namespace) and key holding the `whsec_...` signing secret.
    pub signing_secret_ref: SecretKeyRef,
    /// Extra headers sent with every request (not secret: use them for routing, not credentials).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A key of a Secret in the binding's namespace. The key has no default: name it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Which Okta event types a product wants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    /// Okta `eventType` values; an entry ending in `*` matches by prefix, such as `user.session.*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "event_types_schema")]
    #[x_kube(validation = Rule::new("self.all(t, t.matches('^[A-Za-z0-9_.]+\\\\*?$'))").message("spec.filter.eventTypes entries must be Okta event types such as user.session.start, optionally ending in * (user.session.*)"))]
    pub event_types: Vec<String>,
}

/// A bounded list of bounded strings, so the API server can afford the CEL rule on it.
fn event_types_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": { "type": "string", "minLength": 1, "maxLength": 256 }
    })
}

/// Observed state of a binding. Written only by the operator, through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProductBindingStatus {
    #[serde(flatten)]
    pub common: StatusCommon,
    /// Product type: sentinel, splunkHec or webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Name of the shared collector delivering to this product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,
    /// When the product last accepted a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_time: Option<String>,
    /// Events the product has accepted since the collector started tracking it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_delivered: Option<i64>,
    /// Events waiting for this product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i64>,
    /// The last delivery error (never a secret value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
