//! Conditions and phases shared by both kinds, following the Kubernetes API conventions and the
//! rules kstatus (Flux) and Argo CD read: `Ready` always present, `Reconciling` / `Stalled`
//! abnormal-true, `observedGeneration` at top level and per condition.

use std::fmt;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Condition types.
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const CREDENTIALS_VALID: &str = "CredentialsValid";
pub const DELIVERING: &str = "Delivering";

/// Condition reasons a user acts on, named once here (the rest are per-module).
pub mod reason {
    /// A binding's product settings fail the collector's checks; it is left out of the collector.
    pub const INVALID_PRODUCT_SETTINGS: &str = "InvalidProductSettings";
    /// The collector config would exceed a ConfigMap's 1 MiB; the bindings pushing it over are
    /// left out and named.
    pub const COLLECTOR_CONFIG_TOO_LARGE: &str = "CollectorConfigTooLarge";
    /// The source domain is an address or name the API token must never be sent to.
    pub const SOURCE_DOMAIN_REFUSED: &str = "SourceDomainRefused";
    /// Another binding of the same source delivers to the same destination.
    pub const DUPLICATE_DESTINATION: &str = "DuplicateDestination";
}

/// The summary shown in `kubectl get`. Derived from the conditions, never stored on its own.
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
)]
pub enum Phase {
    /// Accepted, but no data has reached the product yet.
    #[default]
    Pending,
    /// Data reaches the product.
    Ready,
    /// Data reached the product before, but delivery is degraded (retrying, lagging).
    Warning,
    /// Needs a person: bad credential, rejected by the product, bad reference, or nothing delivered in time.
    Error,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Ready => "Ready",
            Phase::Warning => "Warning",
            Phase::Error => "Error",
        }
    }
    pub const ALL: [Phase; 4] = [Phase::Pending, Phase::Ready, Phase::Warning, Phase::Error];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `metav1.Condition`, declared here so its schema carries the list-map markers server-side
/// apply needs and its timestamp is a plain RFC 3339 string.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
    /// CamelCase reason, machine readable.
    pub reason: String,
    /// Human readable, actionable; never a secret value.
    #[serde(default)]
    pub message: String,
}

/// Status fields every kind has.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatusCommon {
    /// The `metadata.generation` this status describes; -1 until the first reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The most important current message (the Ready condition's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A condition as a reconciler wants it; [`set_conditions`] adds the timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Builds the new condition list from the desired ones, keeping `lastTransitionTime` of any
/// condition whose status did not change (so an unchanged status serialises identically and
/// writing it is a no-op: no status ping-pong).
pub fn set_conditions(
    old: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let last_transition_time = old
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.to_string());
            Condition {
                type_: d.type_.to_string(),
                status,
                observed_generation: generation,
                last_transition_time,
                reason: cut(&d.reason, REASON_MAX),
                message: cut(&d.message, MESSAGE_MAX),
            }
        })
        .collect()
}

/// The longest prefix of `text` within `max` bytes that ends on a character boundary, with an
/// ellipsis when anything was cut. `String::truncate` panics inside a multi-byte character, and
/// every message here can carry user text (object names accept 253 characters of any script).
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MORE: &str = "…";
    let mut end = max.saturating_sub(MORE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &text[..end])
}

/// Longest condition message written (metav1.Condition allows 32,768 bytes; a status is read by
/// people, so far less is useful and keeps every status write small).
pub const MESSAGE_MAX: usize = 4096;
/// Longest condition reason (metav1.Condition allows 1,024; Events allow 128).
pub const REASON_MAX: usize = 128;

/// Returns the condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The kstatus-facing trio every status carries, derived from one phase and message:
/// `Ready` (True only when data flows), `Reconciling` (True while pending or the spec is not yet
/// acted on), `Stalled` (True on errors a person must fix).
pub fn summary_conditions(phase: Phase, reason: &str, message: &str) -> [Desired; 3] {
    let ready_reason = if phase == Phase::Ready {
        "DataFlowing"
    } else {
        reason
    };
    [
        Desired::new(
            READY,
            matches!(phase, Phase::Ready | Phase::Warning),
            ready_reason,
            message,
        ),
        Desired::new(
            RECONCILING,
            phase == Phase::Pending,
            if phase == Phase::Pending {
                reason
            } else {
                "Reconciled"
            },
            if phase == Phase::Pending { message } else { "" },
        ),
        Desired::new(
            STALLED,
            phase == Phase::Error,
            if phase == Phase::Error {
                reason
            } else {
                "NotStalled"
            },
            if phase == Phase::Error { message } else { "" },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let first = set_conditions(
            &[],
            &[Desired::new(READY, false, "Pending", "waiting")],
            Some(1),
            "t1",
        );
        let second = set_conditions(
            &first,
            &[Desired::new(READY, false, "Pending", "waiting")],
            Some(1),
            "t2",
        );
        assert_eq!(
            first, second,
            "same desired state must serialise identically"
        );
        let third = set_conditions(
            &second,
            &[Desired::new(READY, true, "DataFlowing", "ok")],
            Some(1),
            "t3",
        );
        assert_eq!(third[0].last_transition_time, "t3");
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn cut_never_splits_a_character() {
        let emoji = "😀".repeat(300); // 4 bytes each
        for max in 0..40 {
            let c = cut(&emoji, max);
            assert!(c.len() <= max.max("…".len()), "{max}: {} bytes", c.len());
        }
        let c = cut(&emoji, 1000);
        assert!(c.len() <= 1000 && c.ends_with('…'));
        assert_eq!(cut("short", 1000), "short");
        let mixed = format!("a{}", "é".repeat(600));
        for max in 0..mixed.len() + 2 {
            let c = cut(&mixed, max);
            assert!(c.len() <= max.max(3), "{max}");
        }
    }

    #[test]
    fn conditions_are_cut_on_character_boundaries() {
        let long = "名".repeat(5000);
        let c = set_conditions(
            &[],
            &[Desired::new(READY, false, long.clone(), long)],
            None,
            "t",
        );
        assert!(c[0].message.len() <= MESSAGE_MAX && c[0].reason.len() <= REASON_MAX);
    }

    #[test]
    fn summary_follows_kstatus_rules() {
        let pending = summary_conditions(Phase::Pending, "WaitingForData", "waiting");
        assert!(!pending[0].status && pending[1].status && !pending[2].status);
        let ready = summary_conditions(Phase::Ready, "x", "ok");
        assert!(ready[0].status && !ready[1].status && !ready[2].status);
        assert_eq!(ready[0].reason, "DataFlowing");
        let warning = summary_conditions(Phase::Warning, "Retrying", "503");
        assert!(
            warning[0].status && !warning[2].status,
            "degraded but flowing stays Ready"
        );
        let error = summary_conditions(Phase::Error, "InvalidToken", "401");
        assert!(!error[0].status && !error[1].status && error[2].status);
    }
}
