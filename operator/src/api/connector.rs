//! `UnifiedConnector`: one source (today the Okta System Log) and the Secret holding its credential.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::{Phase, StatusCommon};

/// A source of audit logs to collect once and share with every bound product.
///
/// All connectors naming the same source (type + normalised domain), in any namespace, share one
/// collector in the operator's namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "connectors.unified.dev",
    version = "v1alpha1",
    kind = "UnifiedConnector",
    doc = "A source of audit logs (today the Okta System Log of one org) to collect once for every bound product",
    plural = "unifiedconnectors",
    shortname = "uc",
    category = "connectors",
    namespaced,
    status = "UnifiedConnectorStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Domain","type":"string","jsonPath":".spec.source.okta.domain"}"#,
    printcolumn = r#"{"name":"Products","type":"string","jsonPath":".status.productSummary"}"#,
    printcolumn = r#"{"name":"Collector","type":"string","jsonPath":".status.collector"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UnifiedConnectorSpec {
    /// Where the audit logs come from. Exactly one source type.
    pub source: Source,

    /// How far before the connector's creation the first read starts, as a duration such as
    /// `1h` or `30m` (at most `2160h`: Okta keeps 90 days).
    #[serde(default = "default_lookback")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) <= duration('2160h')").message("spec.lookback must be a duration such as 1h or 90m, at most 2160h (Okta keeps 90 days of System Log)"))]
    #[schemars(length(max = 32))]
    pub lookback: String,

    /// Stop collecting for this connector without deleting anything.
    #[serde(default)]
    pub suspend: bool,

    /// Collector pod settings for this connector's source (resources, ServiceAccount), over the
    /// operator-wide ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<super::collector_pod::CollectorOverrides>,
}

fn default_lookback() -> String {
    "1h".into()
}

/// The source of a connector. One field per source type; exactly one is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The Okta System Log of one Okta org.
    pub okta: OktaSource,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OktaSource {
    /// Host name of the Okta org, such as `yourcompany.okta.com`: no scheme, path or port.
    #[x_kube(validation = Rule::new("!self.contains('://')").message("spec.source.okta.domain must be a host name such as yourcompany.okta.com, without a scheme: remove 'https://'"))]
    #[x_kube(validation = Rule::new("self.contains('://') || !self.contains('/')").message("spec.source.okta.domain must be a host name such as yourcompany.okta.com, without a path"))]
    #[x_kube(validation = Rule::new("self.contains('://') || self.contains('/') || !self.contains(':')").message("spec.source.okta.domain must be a host name such as yourcompany.okta.com, without a port"))]
    #[x_kube(validation = Rule::new("self.contains('://') || self.contains('/') || self.contains(':') || self.matches('^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)+\\\\.?$')").message("spec.source.okta.domain must be a DNS host name such as yourcompany.okta.com"))]
    #[schemars(length(min = 3, max = 253))]
    pub domain: String,

    /// The Secret (same namespace) and key holding the Okta API token (`SSWS` token).
    pub credentials_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the object's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".into()
}

/// Observed state of a connector. Written only by the operator, through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UnifiedConnectorStatus {
    #[serde(flatten)]
    pub common: StatusCommon,

    /// Name of the shared collector (in the operator's namespace) serving this connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,

    /// The bound product types, comma-separated, for `kubectl get` (printer columns show only
    /// the first match of a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_summary: Option<String>,

    /// The products bound to this connector and the state of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["binding"]))]
    pub products: Vec<BoundProduct>,

    /// The last few health messages, newest first (never secret values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HealthMessage>,
}

/// One product bound to a connector, as the connector's status shows it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BoundProduct {
    /// Name of the ProductBinding.
    pub binding: String,
    /// Product type: sentinel, splunkHec or webhook.
    pub product: String,
    pub phase: Phase,
}

/// A timestamped health message kept in status for people reading `kubectl describe`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthMessage {
    pub time: String,
    pub phase: Phase,
    pub message: String,
}

impl UnifiedConnector {
    /// The Okta domain, normalised (lower case, no trailing dot): the source's identity.
    pub fn normalised_domain(&self) -> String {
        normalise_domain(&self.spec.source.okta.domain)
    }
}

/// Lower-cases a DNS name and strips a trailing dot, so `Example.Okta.com.` and `example.okta.com`
/// name the same org.
pub fn normalise_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}
