//! `ConnectorDefinition`: one catalog entry, and everything the generic engine
//! (`crate::definition`) needs to collect it: parameters, credential kinds, streams.
//!
//! Cluster-scoped, so one definition serves connectors in every namespace. `kubectl get
//! connectordefinitions` is the catalog. The format is validated offline by
//! `unified-connectors definition lint FILE` (`crate::definition::lint`), with messages naming
//! the field (`spec.streams[0].records.path`).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::Condition;

/// A connector type: catalog facts plus how to collect it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "connectors.unified.dev",
    version = "v1alpha1",
    kind = "ConnectorDefinition",
    doc = "A connector type of the catalog: who provides it, its parameters and credentials, and how its streams are collected",
    plural = "connectordefinitions",
    shortname = "cdef",
    category = "connectors",
    status = "ConnectorDefinitionStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Support","type":"string","jsonPath":".spec.support.level"}"#,
    printcolumn = r#"{"name":"Category","type":"string","jsonPath":".spec.category"}"#,
    printcolumn = r#"{"name":"Streams","type":"string","jsonPath":".spec.streams[*].name"}"#,
    printcolumn = r#"{"name":"Connectors","type":"integer","jsonPath":".status.connectors"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorDefinitionSpec {
    /// Name shown in the catalog, such as `GitHub Enterprise audit log`.
    #[schemars(length(min = 1, max = 100))]
    pub display_name: String,
    /// Who runs the source, such as `GitHub`.
    #[schemars(length(min = 1, max = 100))]
    pub provider: String,
    pub support: Support,
    #[serde(default)]
    pub description: String,
    /// Version of this definition (semver), bumped on every change.
    #[schemars(length(min = 1, max = 32))]
    pub version: String,
    pub category: Category,
    /// Products this source is known to feed (for example `sentinel`, `splunkHec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    /// The parameters a connector gives (`{{name}}` in templates), by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    /// Parameters whose values (trimmed, lower-cased, without a trailing dot) make up the source
    /// instance's identity: connectors with the same identity share one collector.
    #[serde(default)]
    pub identity: Vec<String>,
    /// Credential kinds the source accepts; a connector uses the first one unless it names one.
    pub credentials: Vec<CredentialKind>,
    /// What is collected: one request stream each.
    pub streams: Vec<Stream>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Support {
    pub level: SupportLevel,
    /// Where to ask for help (an issue tracker, a support page).
    pub url: String,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SupportLevel {
    Community,
    Partner,
    Vendor,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Category {
    DataAcquisition,
    ExposureManagement,
    Response,
}

/// A parameter: a small JSON-schema subset.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    #[serde(rename = "type", default)]
    pub type_: ParamType,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    /// Used when the connector does not give the parameter (as a string, whatever the type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// A regular expression the whole value must match (strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enum_: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "camelCase")]
pub enum ParamType {
    #[default]
    String,
    Integer,
    Boolean,
}

/// How a connector's Secret authenticates requests.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum CredentialKind {
    /// The secret in a header, after a prefix: Okta's `Authorization: SSWS <token>`.
    HeaderApiKey {
        header: String,
        #[serde(default)]
        prefix: String,
    },
    /// `Authorization: Bearer <secret>`.
    Bearer {},
    /// `Authorization: Basic base64(<secret>)`, the secret being `user:password`.
    Basic {},
    /// OAuth 2.0 client credentials (declared; the engine does not run it yet, lint refuses it).
    Oauth2ClientCredentials {
        token_url: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        private_key_jwt: bool,
    },
}

/// One request stream.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stream {
    /// Names the stream in positions and reports (`auditevents`).
    pub name: String,
    pub request: RequestTemplate,
    /// How `{{start}}` (the start time of a first read) is written into templates.
    #[serde(default)]
    pub start_format: TimeFormat,
    /// Records one page may hold (`{{pageSize}}` in templates).
    pub page_size: u32,
    pub pagination: Pagination,
    pub records: Records,
    /// What is persisted between runs; must match the pagination (lint checks).
    pub position: PositionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Statuses retried on the same position (others are reported as errors and retried slowly).
    #[serde(default = "default_retried")]
    pub retried_statuses: Vec<u16>,
    /// Wait between polls once caught up (`15s`).
    pub poll_interval: String,
    /// How far back a first read starts by default (`1h`).
    pub lookback: String,
    /// How long the source keeps events (`90d`); older start times are clamped to it.
    pub retention: String,
    /// Restarting from the last event time re-reads this far back, so events the source
    /// persists late (with an earlier time) are not skipped; ids seen are not delivered twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_arrival: Option<String>,
}

fn default_retried() -> Vec<u16> {
    vec![429, 500, 502, 503, 504]
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestTemplate {
    #[serde(default)]
    pub method: Method,
    /// `https://{{domain}}/api/v1/logs`: `{{parameter}}`, `{{start}}`, `{{pageSize}}`.
    pub url: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body of the first request (JSON text, templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Method {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "camelCase")]
pub enum TimeFormat {
    /// `2026-01-01T00:00:00.000Z`.
    #[default]
    Rfc3339,
    /// `2026-01-01T00:00:00Z` (whole seconds).
    Rfc3339Seconds,
    EpochSeconds,
    EpochMillis,
    /// `20260101000000` (`yyyymmddHHMMSS`, UTC; Auth0 log ids begin with it).
    Digits,
}

/// How pages follow each other.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Pagination {
    /// RFC 8288 `Link: <url>; rel="next"`, followed for ever (Okta polling, Auth0, GitHub).
    LinkHeader {
        /// What a page without a next link means.
        #[serde(default)]
        on_missing_next: MissingNext,
    },
    /// A cursor in the response body; `hasMorePath` false = caught up (poll the cursor again).
    BodyCursor {
        cursor_path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        has_more_path: Option<String>,
        /// Body of the next requests (`{"cursor":"{{cursor}}"}`), or...
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_body: Option<String>,
        /// ...the query parameter carrying the cursor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor_param: Option<String>,
    },
    /// `param` = number of records read so far.
    Offset { param: String },
    /// `param` = the id of the last record read (Auth0 `from=<log_id>`); the first request
    /// sends `seed` (templated over `{{start}}`) if given.
    Checkpoint {
        param: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<String>,
    },
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "camelCase")]
pub enum MissingNext {
    /// A malformed answer (Okta always sends one): retried.
    #[default]
    Error,
    /// Caught up: poll the same URL again.
    PollSame,
    /// The walk is over: start again from the last event time (minus `lateArrival`).
    RestartFromLastTime,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PositionKind {
    NextUrl,
    Cursor,
    Offset,
    LastRecordId,
}

/// Where the records are and what the pipeline reads of each.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Records {
    /// Dotted path of the array of records in the body (`items`, `response.authlogs`); `$` =
    /// the body is the array.
    pub path: String,
    /// Path of the record's unique id (dedupe), such as `uuid`.
    pub id: String,
    /// Path of the event time.
    pub time: String,
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Path of the event type (routing filters), if the source has one.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// How the source reports its rate limit, and the share of it the collector may use.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub limit_header: String,
    pub remaining_header: String,
    pub reset_header: String,
    /// Share of the limit this collector may use, in (0, 1].
    pub share: f64,
    /// Statuses besides 429 that mean "rate limited" when `remaining` is 0, a `Retry-After`
    /// is present, or the body contains `bodyMarker` (GitHub's 403 secondary limit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_statuses: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_marker: Option<String>,
}

/// What the operator reports about a definition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorDefinitionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (a definition that fails lint, the message naming the field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// UnifiedConnectors using this definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectors: Option<u32>,
}

/// Condition reasons of a definition.
pub const REASON_VALID: &str = "Valid";
pub const REASON_INVALID: &str = "InvalidDefinition";
