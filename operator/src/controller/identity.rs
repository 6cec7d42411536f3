//! A source's identity and the deterministic names and labels of the collector that serves it.
//!
//! Identity = source type + normalised domain. Every connector with the same identity, in any
//! namespace, shares one collector; its objects' names are derived from the identity alone, so
//! any operator replica, before or after a restart, computes the same names.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::api::UnifiedConnector;

/// The kinds of sources the operator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Okta,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Okta => "okta",
        }
    }
}

/// What makes two connectors read the same data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub kind: SourceKind,
    /// Lower-case, no trailing dot.
    pub domain: String,
}

/// Label on every collector object: the identity's hash (label values cannot hold every domain).
pub const SOURCE_LABEL: &str = "connectors.unified.dev/source";
/// Annotation on collector objects: the readable identity.
pub const SOURCE_ANNOTATION: &str = "connectors.unified.dev/source";
/// Annotation holding the hash of an object's desired content; applying is skipped when it matches.
pub const HASH_ANNOTATION: &str = "connectors.unified.dev/desired-hash";
pub const MANAGED_BY: &str = "unified-connectors-operator";
pub const PART_OF: &str = "unified-connectors";

impl SourceId {
    pub fn of(connector: &UnifiedConnector) -> SourceId {
        SourceId {
            kind: SourceKind::Okta,
            domain: connector.normalised_domain(),
        }
    }

    /// 10 hex digits of SHA-256 over `kind/domain`: stable, short, collision-safe at any realistic scale.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(format!("{}/{}", self.kind.as_str(), self.domain));
        hex::encode(&digest[..5])
    }

    /// `uc-okta-<readable part of the domain>-<hash>`: a DNS-1123 label of at most 47 characters,
    /// readable in `kubectl get` and unique per identity thanks to the hash.
    pub fn collector_name(&self) -> String {
        let slug: String = self
            .domain
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(28)
            .collect::<String>()
            .trim_matches('-')
            .to_string();
        format!("uc-{}-{}-{}", self.kind.as_str(), slug, self.hash())
    }

    /// The state ConfigMap the collector writes its report and positions to.
    pub fn state_name(&self) -> String {
        format!("{}-state", self.collector_name())
    }

    /// The recommended `app.kubernetes.io/*` labels plus the identity label.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".into(),
                "unified-connectors-collector".into(),
            ),
            ("app.kubernetes.io/instance".into(), self.collector_name()),
            ("app.kubernetes.io/component".into(), "collector".into()),
            ("app.kubernetes.io/part-of".into(), PART_OF.into()),
            ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
            (SOURCE_LABEL.into(), self.hash()),
        ])
    }

    /// The label selector for the pods of this collector (a subset of [`labels`](Self::labels) that never changes).
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".into(),
                "unified-connectors-collector".into(),
            ),
            ("app.kubernetes.io/instance".into(), self.collector_name()),
        ])
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.domain)
    }
}

/// Selector for everything the operator manages in its namespace.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(domain: &str) -> SourceId {
        SourceId {
            kind: SourceKind::Okta,
            domain: crate::api::connector::normalise_domain(domain),
        }
    }

    #[test]
    fn same_org_spelled_differently_is_one_identity() {
        assert_eq!(id("Example.OKTA.com."), id("example.okta.com"));
        assert_eq!(
            id("Example.OKTA.com.").collector_name(),
            id("example.okta.com").collector_name()
        );
        assert_ne!(
            id("a.okta.com").collector_name(),
            id("b.okta.com").collector_name()
        );
    }

    #[test]
    fn names_are_dns_labels_even_for_long_domains() {
        let long = id(&format!("{}.okta.com", "x".repeat(200)));
        for name in [
            long.collector_name(),
            long.state_name(),
            id("dev-1.oktapreview.com").collector_name(),
        ] {
            assert!(name.len() <= 63, "{name} too long");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'));
        }
        assert_eq!(
            id("acme.okta.com").collector_name(),
            format!("uc-okta-acme-okta-com-{}", id("acme.okta.com").hash())
        );
    }

    #[test]
    fn selector_is_a_subset_of_labels() {
        let s = id("acme.okta.com");
        let labels = s.labels();
        for (k, v) in s.selector() {
            assert_eq!(labels.get(&k), Some(&v));
        }
        assert!(labels.values().all(|v| v.len() <= 63));
    }
}
