//! The custom resources (group `connectors.unified.dev`, version `v1alpha1`) and their schema rules.
