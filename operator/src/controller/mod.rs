//! The operator: reconcilers for connectors and bindings, source identity and grouping, the desired collector objects.
