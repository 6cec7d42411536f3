//! Operator-wide settings of every collector pod (`--collector-pod-settings FILE`), and the one
//! function that merges them, and a connector's `spec.collector`, into a rendered Deployment.
//!
//! A private registry, a node pool, an HTTPS proxy or a TLS-inspecting CA are facts of the
//! cluster, not of a connector: they are set once, for all collectors, by whoever installs the
//! operator (the chart's `collector.pod` values or a kustomize overlay write the file). The
//! operator's own labels, annotations, env, volumes and security context always win: settings
//! can add to a collector pod, never loosen or break it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

use crate::api::collector_pod::CollectorOverrides;
use crate::contract;
use crate::http::EXTRA_CA_ENV;

/// What the settings file may hold; field names are the pod spec's, unknown fields are refused.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectorPodSettings {
    /// Extra pod labels (e.g. `azure.workload.identity/use: "true"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// Replaces the operator's default requests and limits (a connector may override keys).
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub affinity: Option<Affinity>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// Extra environment of the collector container, e.g. `HTTPS_PROXY`, `NO_PROXY`.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Extra pod volumes, e.g. a ConfigMap holding a CA bundle.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Where the collector container mounts them.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// A PEM bundle inside the container (mounted through `volumes`/`volumeMounts`) the collector
    /// trusts, besides the system CAs, for the source and the products.
    #[serde(default)]
    pub extra_ca_file: Option<String>,
}

/// Names the operator sets itself; settings may not redefine them.
const RESERVED_ENV: [&str; 3] = ["POD_NAMESPACE", "POD_NAME", EXTRA_CA_ENV];
const RESERVED_VOLUMES: [&str; 2] = ["config", "secrets"];

impl CollectorPodSettings {
    /// Reads and validates the file; errors name the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read collector pod settings {}", path.display()))?;
        Self::parse(&text)
            .with_context(|| format!("invalid collector pod settings {}", path.display()))
    }

    /// Parses YAML (or JSON); an empty document means no settings.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let s: Self = serde_saphyr::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (i, e) in self.env.iter().enumerate() {
            if RESERVED_ENV.contains(&e.name.as_str()) {
                bail!(
                    "env[{i}].name: {} is set by the operator{}",
                    e.name,
                    if e.name == EXTRA_CA_ENV {
                        " (use extraCaFile)"
                    } else {
                        ""
                    }
                );
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, v) in self.volumes.iter().enumerate() {
            if RESERVED_VOLUMES.contains(&v.name.as_str()) || names.contains(&v.name.as_str()) {
                bail!(
                    "volumes[{i}].name: {} is taken (the operator uses config and secrets); choose another name",
                    v.name
                );
            }
            names.push(&v.name);
        }
        for (i, m) in self.volume_mounts.iter().enumerate() {
            if !names.contains(&m.name.as_str()) {
                bail!(
                    "volumeMounts[{i}].name: no volume named {} in volumes",
                    m.name
                );
            }
            let p = m.mount_path.trim_end_matches('/');
            if [contract::CONFIG_DIR, contract::SECRETS_DIR].contains(&p) {
                bail!(
                    "volumeMounts[{i}].mountPath: {} is where the operator mounts the collector's config or secrets",
                    m.mount_path
                );
            }
        }
        if let Some(f) = &self.extra_ca_file
            && !f.starts_with('/')
        {
            bail!("extraCaFile: {f} must be an absolute path inside the collector container");
        }
        Ok(())
    }
}

/// Merges the operator-wide settings and a connector's overrides into a rendered collector
/// Deployment. Pure; the operator's own entries win over same-named extras.
pub fn apply(
    deployment: &mut Deployment,
    settings: &CollectorPodSettings,
    overrides: Option<&CollectorOverrides>,
) {
    let Some(template) = deployment.spec.as_mut().map(|s| &mut s.template) else {
        return;
    };
    let meta = template.metadata.get_or_insert_with(Default::default);
    for (map, extra) in [
        (&mut meta.labels, &settings.labels),
        (&mut meta.annotations, &settings.annotations),
    ] {
        if extra.is_empty() {
            continue;
        }
        let map = map.get_or_insert_with(Default::default);
        for (k, v) in extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let Some(pod) = template.spec.as_mut() else {
        return;
    };
    if !settings.image_pull_secrets.is_empty() {
        pod.image_pull_secrets = Some(settings.image_pull_secrets.clone());
    }
    if !settings.node_selector.is_empty() {
        pod.node_selector = Some(settings.node_selector.clone());
    }
    if !settings.tolerations.is_empty() {
        pod.tolerations = Some(settings.tolerations.clone());
    }
    if settings.affinity.is_some() {
        pod.affinity.clone_from(&settings.affinity);
    }
    if settings.priority_class_name.is_some() {
        pod.priority_class_name
            .clone_from(&settings.priority_class_name);
    }
    if let Some(sa) = overrides.and_then(|o| o.service_account_name.as_ref()) {
        pod.service_account_name = Some(sa.clone());
    }
    if !settings.volumes.is_empty() {
        pod.volumes
            .get_or_insert_with(Vec::new)
            .extend(settings.volumes.iter().cloned());
    }
    let Some(container) = pod.containers.first_mut() else {
        return;
    };
    if settings.image_pull_policy.is_some() {
        container
            .image_pull_policy
            .clone_from(&settings.image_pull_policy);
    }
    if !settings.env.is_empty() || settings.extra_ca_file.is_some() {
        merge_env(container.env.get_or_insert_with(Vec::new), settings);
    }
    if !settings.volume_mounts.is_empty() {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .extend(settings.volume_mounts.iter().cloned());
    }
    if let Some(r) = &settings.resources {
        container.resources = Some(r.clone());
    }
    if let Some(r) = overrides.and_then(|o| o.resources.as_ref()) {
        let res = container.resources.get_or_insert_with(Default::default);
        for (target, given) in [
            (&mut res.requests, &r.requests),
            (&mut res.limits, &r.limits),
        ] {
            if given.is_empty() {
                continue;
            }
            let target = target.get_or_insert_with(BTreeMap::new);
            for (k, v) in given {
                target.insert(k.clone(), Quantity(v.clone()));
            }
        }
    }
}

/// Extra env replaces same-named entries (RUST_LOG may be changed; the reserved names were
/// refused on load), then the CA bundle's variable.
fn merge_env(env: &mut Vec<EnvVar>, settings: &CollectorPodSettings) {
    for extra in &settings.env {
        match env.iter_mut().find(|e| e.name == extra.name) {
            Some(e) => *e = extra.clone(),
            None => env.push(extra.clone()),
        }
    }
    if let Some(file) = &settings.extra_ca_file {
        env.push(EnvVar {
            name: EXTRA_CA_ENV.into(),
            value: Some(file.clone()),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_fields_and_reserved_names_naming_the_field() {
        let err = format!(
            "{:#}",
            CollectorPodSettings::parse("nodeSelektor: {a: b}").unwrap_err()
        );
        assert!(err.contains("nodeSelektor"), "{err}");
        let err = format!(
            "{:#}",
            CollectorPodSettings::parse("env: [{name: POD_NAME, value: x}]").unwrap_err()
        );
        assert!(
            err.contains("env[0].name") && err.contains("POD_NAME"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            CollectorPodSettings::parse("volumes: [{name: config, emptyDir: {}}]").unwrap_err()
        );
        assert!(err.contains("volumes[0].name"), "{err}");
        let err = format!(
            "{:#}",
            CollectorPodSettings::parse("volumeMounts: [{name: ca, mountPath: /etc/ca}]")
                .unwrap_err()
        );
        assert!(
            err.contains("volumeMounts[0].name") && err.contains("ca"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            CollectorPodSettings::parse("extraCaFile: ca.pem").unwrap_err()
        );
        assert!(err.contains("extraCaFile"), "{err}");
        let err = format!(
            "{:#}",
            CollectorPodSettings::parse("tolerations: {key: x}").unwrap_err()
        );
        assert!(err.contains("tolerations"), "{err}");
        assert_eq!(
            CollectorPodSettings::parse("\n").unwrap(),
            CollectorPodSettings::default()
        );
    }
}

#[cfg(test)]
mod merge_tests {
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use kube::api::ObjectMeta;

    use super::*;
    use crate::api::collector_pod::CollectorResources;

    fn rendered() -> Deployment {
        let env = |n: &str, v: &str| EnvVar {
            name: n.into(),
            value: Some(v.into()),
            ..Default::default()
        };
        Deployment {
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "uc".into())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some("unified-connectors-collector".into()),
                        containers: vec![Container {
                            name: "collector".into(),
                            env: Some(vec![env("POD_NAME", "p"), env("RUST_LOG", "info")]),
                            resources: Some(ResourceRequirements {
                                limits: Some(BTreeMap::from([
                                    ("cpu".into(), Quantity("1".into())),
                                    ("memory".into(), Quantity("256Mi".into())),
                                ])),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const SETTINGS: &str = r#"
labels: {team: security, app: not-this}
annotations: {example.com/owner: secops}
imagePullSecrets: [{name: regcred}]
nodeSelector: {pool: system}
tolerations: [{key: dedicated, operator: Equal, value: security, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
priorityClassName: high
env: [{name: HTTPS_PROXY, value: "http://proxy:3128"}, {name: RUST_LOG, value: debug}]
volumes: [{name: ca, configMap: {name: corp-ca}}]
volumeMounts: [{name: ca, mountPath: /etc/uc-ca, readOnly: true}]
extraCaFile: /etc/uc-ca/ca.crt
"#;

    #[test]
    fn every_setting_reaches_the_pod_and_the_operator_entries_win() {
        let settings = CollectorPodSettings::parse(SETTINGS).unwrap();
        let mut d = rendered();
        apply(&mut d, &settings, None);
        let t = d.spec.unwrap().template;
        let labels = t.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels["team"], "security");
        assert_eq!(labels["app"], "uc", "the operator's selector label is kept");
        assert_eq!(
            t.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["example.com/owner"],
            "secops"
        );
        let pod = t.spec.unwrap();
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(pod.node_selector.unwrap()["pool"], "system");
        assert_eq!(
            pod.tolerations.unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert!(pod.affinity.unwrap().node_affinity.is_some());
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert_eq!(pod.volumes.unwrap()[0].name, "ca");
        let c = &pod.containers[0];
        let env: BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(env["POD_NAME"], "p");
        assert_eq!(env["RUST_LOG"], "debug");
        assert_eq!(env["HTTPS_PROXY"], "http://proxy:3128");
        assert_eq!(env[EXTRA_CA_ENV], "/etc/uc-ca/ca.crt");
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/etc/uc-ca"
        );
        // No resources in the settings: the operator's defaults stay.
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"],
            Quantity("256Mi".into())
        );
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("unified-connectors-collector")
        );
    }

    #[test]
    fn a_connector_overrides_resources_by_key_and_the_service_account() {
        let settings = CollectorPodSettings::parse(
            "resources: {requests: {cpu: 100m}, limits: {cpu: '2', memory: 512Mi}}",
        )
        .unwrap();
        let overrides = CollectorOverrides {
            resources: Some(CollectorResources {
                limits: BTreeMap::from([("memory".into(), "1Gi".into())]),
                ..Default::default()
            }),
            service_account_name: Some("okta-wi".into()),
        };
        let mut d = rendered();
        apply(&mut d, &settings, Some(&overrides));
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("okta-wi"));
        let r = pod.containers[0].resources.clone().unwrap();
        let limits = r.limits.unwrap();
        assert_eq!(limits["memory"], Quantity("1Gi".into()));
        assert_eq!(limits["cpu"], Quantity("2".into()));
        assert_eq!(r.requests.unwrap()["cpu"], Quantity("100m".into()));
    }

    #[test]
    fn no_settings_change_nothing() {
        let mut d = rendered();
        apply(&mut d, &CollectorPodSettings::default(), None);
        assert_eq!(d, rendered());
    }
}
