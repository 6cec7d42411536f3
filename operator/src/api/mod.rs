//! The custom resources (group `connectors.unified.dev`, version `v1alpha1`) and their schema rules.

pub mod binding;
pub mod collector_pod;
pub mod conditions;
pub mod connector;
pub mod crd;
pub mod definition;

pub use binding::{ProductBinding, ProductBindingSpec, ProductBindingStatus};
pub use connector::{SecretKeyRef, UnifiedConnector, UnifiedConnectorSpec, UnifiedConnectorStatus};
pub use definition::{ConnectorDefinition, ConnectorDefinitionSpec, ConnectorDefinitionStatus};

/// API group of both kinds.
pub const GROUP: &str = "connectors.unified.dev";
