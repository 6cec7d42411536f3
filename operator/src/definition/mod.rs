//! Declarative connectors: a `ConnectorDefinition` (`crate::api::definition`) run by one
//! generic engine instead of code.
//!
//! - [`template`]: `{{name}}` templates and dotted JSON paths read without copying.
//! - [`params`]: a connector's parameters checked against the definition's schema subset, and
//!   the source identity they make up.
//! - [`lint`]: offline validation, each problem naming its field.
//! - [`engine`]: one stream as a [`crate::collector::source::Source`].
//! - [`conformance`]: the kit every definition passes against a test server.

pub mod conformance;
pub mod engine;
pub mod lint;
pub mod params;
pub mod template;

use std::fmt;
use std::path::Path;

use anyhow::Context;

use crate::api::definition::ConnectorDefinition;

/// One problem of a definition or of a connector's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The field, as a path: `spec.streams[0].records.path`.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Reads a definition from a YAML (or JSON) file.
pub fn load(path: &Path) -> anyhow::Result<ConnectorDefinition> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a ConnectorDefinition", path.display()))
}

/// Parses a definition document.
pub fn parse(text: &str) -> anyhow::Result<ConnectorDefinition> {
    // Through a JSON value: enums are single-key maps (`- bearer: {}`), as in Kubernetes
    // documents, and read exactly as the API server's JSON reads them.
    let value: serde_json::Value = serde_saphyr::from_str(text)?;
    Ok(serde_json::from_value(value)?)
}

/// The built-in definitions, compiled in (the YAML files under `definitions/`).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "okta-system-log.yaml",
        include_str!("../../../definitions/okta-system-log.yaml"),
    ),
    (
        "github-enterprise-audit-log.yaml",
        include_str!("../../../definitions/github-enterprise-audit-log.yaml"),
    ),
    (
        "onepassword-events.yaml",
        include_str!("../../../definitions/onepassword-events.yaml"),
    ),
    (
        "auth0-logs.yaml",
        include_str!("../../../definitions/auth0-logs.yaml"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_definition_parses_and_lints_clean() {
        for (file, text) in BUILT_IN {
            let def = parse(text).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            let problems = lint::lint(&def.spec);
            assert!(problems.is_empty(), "{file}: {problems:?}");
        }
    }
}
