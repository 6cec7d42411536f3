//! `UnifiedConnector.spec.collector`: what one connector may change about its collector's pod.
//!
//! Operator-wide pod settings (pull secrets, scheduling, proxy, CA bundle) come from the operator's
//! `--collector-pod-settings` file; these are the two that differ per source: how big the collector
//! is, and which ServiceAccount it runs as (one annotated for a workload identity).

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Collector pod settings a connector asks for. Connectors naming the same source share one
/// collector: for each field, the oldest connector that sets it decides.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CollectorOverrides {
    /// Compute resources of the collector container, replacing the operator-wide ones for the
    /// keys given (for example `limits: {memory: 512Mi}` for a busy org).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<CollectorResources>,

    /// The ServiceAccount, in the operator's namespace, the collector runs as: for example one
    /// annotated `azure.workload.identity/client-id` so that no client secret lives in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("spec.collector.serviceAccountName must be a ServiceAccount name: lower-case letters, digits, '-' and '.'"))]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
}

impl CollectorOverrides {
    /// The settings of connectors sharing one collector, given oldest first: per field, the
    /// first connector that sets it.
    pub fn first_set<'a>(oldest_first: impl IntoIterator<Item = Option<&'a Self>>) -> Option<Self> {
        let mut out = CollectorOverrides::default();
        for o in oldest_first.into_iter().flatten() {
            if out.resources.is_none() {
                out.resources.clone_from(&o.resources);
            }
            if out.service_account_name.is_none() {
                out.service_account_name.clone_from(&o.service_account_name);
            }
        }
        (out != CollectorOverrides::default()).then_some(out)
    }
}

/// Requests and limits by resource name (`cpu`, `memory`, `ephemeral-storage`), as quantities
/// such as `100m` or `256Mi`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CollectorResources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])").message("spec.collector.resources.requests: only cpu, memory and ephemeral-storage can be set"))]
    #[x_kube(validation = Rule::new("self.all(k, isQuantity(self[k]))").message("spec.collector.resources.requests: each value must be a quantity such as 100m, 1 or 256Mi"))]
    #[schemars(extend("maxProperties" = 3))]
    pub requests: BTreeMap<String, QuantityString>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])").message("spec.collector.resources.limits: only cpu, memory and ephemeral-storage can be set"))]
    #[x_kube(validation = Rule::new("self.all(k, isQuantity(self[k]))").message("spec.collector.resources.limits: each value must be a quantity such as 100m, 1 or 256Mi"))]
    #[schemars(extend("maxProperties" = 3))]
    pub limits: BTreeMap<String, QuantityString>,
}

/// A resource quantity as written in a pod spec (`100m`, `1`, `256Mi`).
pub type QuantityString = String;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_connector_that_sets_a_field_decides_it() {
        let sa = |n: &str| CollectorOverrides {
            service_account_name: Some(n.into()),
            ..Default::default()
        };
        let big = CollectorOverrides {
            resources: Some(CollectorResources {
                limits: BTreeMap::from([("memory".into(), "1Gi".into())]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(CollectorOverrides::first_set([None, None]), None);
        let got =
            CollectorOverrides::first_set([None, Some(&sa("wi")), Some(&big), Some(&sa("late"))])
                .unwrap();
        assert_eq!(got.service_account_name.as_deref(), Some("wi"));
        assert_eq!(got.resources, big.resources);
    }
}
