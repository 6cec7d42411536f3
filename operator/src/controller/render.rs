//! The collector's Kubernetes objects as pure functions of its [`CollectorPlan`]: a ConfigMap
//! (its config), a Secret (its credentials), a state ConfigMap (where it reports) and a Deployment.
//!
//! The pod template carries hashes of the config and the Secret, so any change to bindings or a
//! rotated credential rolls the collector. The Deployment uses `Recreate`: two collectors of one
//! source must never read at the same time.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};

use super::identity::{HASH_ANNOTATION, SOURCE_ANNOTATION};
use super::okta_check::OktaEndpoint;
use super::plan::CollectorPlan;
use crate::contract::{
    self, CollectorConfig, OktaSourceConfig, ProductConfig, SecretSource, SourceConfig, StateConfig,
};

/// Pod template annotations that roll the collector when its inputs change.
pub const CONFIG_HASH_ANNOTATION: &str = "connectors.unified.dev/config-hash";
pub const SECRET_HASH_ANNOTATION: &str = "connectors.unified.dev/secret-hash";
/// Annotation on the collector objects: how many connectors use it (the reference count).
pub const USERS_ANNOTATION: &str = "connectors.unified.dev/users";
/// Annotation on the collector ConfigMap: the bindings left out because the config would not
/// fit, comma-separated, so every binding's own reconcile can say so.
pub const LEFT_OUT_ANNOTATION: &str = "connectors.unified.dev/left-out";
pub const COLLECTOR_SERVICE_ACCOUNT: &str = "unified-connectors-collector";
pub const METRICS_PORT: i32 = 9090;
/// Where the image (see the Dockerfile) installs the one binary.
pub const COLLECTOR_BINARY: &str = "/usr/local/bin/unified-connectors";

/// Operator-wide settings that shape every collector.
#[derive(Debug, Clone)]
pub struct RenderSettings {
    pub namespace: String,
    pub image: String,
    pub okta: OktaEndpoint,
    /// Operator-wide collector pod settings (`--collector-pod-settings`).
    pub pod: super::collector_pod::CollectorPodSettings,
}

/// The four objects of one collector.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorObjects {
    pub config: ConfigMap,
    pub secret: Secret,
    pub state: ConfigMap,
    pub deployment: Deployment,
}

fn meta(
    plan: &CollectorPlan,
    name: String,
    settings: &RenderSettings,
    hash: Option<&str>,
) -> ObjectMeta {
    let mut annotations = BTreeMap::from([
        (SOURCE_ANNOTATION.to_string(), plan.source.to_string()),
        (USERS_ANNOTATION.to_string(), plan.users.len().to_string()),
    ]);
    if let Some(h) = hash {
        annotations.insert(HASH_ANNOTATION.into(), h.into());
    }
    ObjectMeta {
        name: Some(name),
        namespace: Some(settings.namespace.clone()),
        labels: Some(plan.source.labels()),
        annotations: Some(annotations),
        ..Default::default()
    }
}

fn sha(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}

/// The collector's config document (no secret values in it: only file paths).
pub fn collector_config(plan: &CollectorPlan, settings: &RenderSettings) -> CollectorConfig {
    let since = plan
        .products
        .iter()
        .map(|p| p.since)
        .min()
        .unwrap_or_else(chrono::Utc::now);
    CollectorConfig {
        version: contract::CONTRACT_VERSION,
        source: SourceConfig::Okta(OktaSourceConfig {
            domain: plan.source.domain.clone(),
            base_url: settings
                .okta
                .is_overridden()
                .then(|| settings.okta.base_url(&plan.source.domain)),
            allow_insecure_http: settings.okta.is_insecure(),
            token: SecretSource::File(
                std::path::Path::new(contract::SECRETS_DIR).join(contract::OKTA_TOKEN_KEY),
            ),
            since,
            poll_interval: std::time::Duration::from_secs(15),
            rate_limit_share: 0.5,
            page_limit: 1000,
        }),
        products: plan
            .products
            .iter()
            .map(|p| ProductConfig {
                id: p.id.clone(),
                since: p.since,
                filter: p.filter.clone(),
                sink: p.sink.clone(),
            })
            .collect(),
        state: StateConfig::ConfigMap {
            namespace: settings.namespace.clone(),
            name: plan.source.state_name(),
        },
        tuning: Default::default(),
        listen: format!("0.0.0.0:{METRICS_PORT}"),
    }
}

/// The most a collector's ConfigMap or Secret may hold. The API server refuses objects over
/// 1 MiB (3 MiB for the whole request, but etcd's default limit is 1.5 MiB); 24 KiB of that is
/// kept for metadata and base64 overhead is counted below.
pub const OBJECT_LIMIT: usize = 1024 * 1024 - 24 * 1024;

/// Sizes of the two objects that grow with the bindings, as the API server counts them (Secret
/// values are base64 in JSON).
fn object_sizes(objects: &CollectorObjects) -> (usize, usize) {
    let config = objects
        .config
        .data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let secret = objects
        .secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.0.len().div_ceil(3) * 4)
        .sum();
    (config, secret)
}

/// Renders the collector, leaving products out of `plan`, the largest first, until its config
/// and Secret fit in a Kubernetes object; returns the objects and the ids left out. Those
/// bindings are told why; the rest of the source keeps delivering (without this, the write fails
/// and no status says anything). A plan that fits is rendered once, as [`render`] would.
pub fn fit(plan: &mut CollectorPlan, settings: &RenderSettings) -> (CollectorObjects, Vec<String>) {
    let mut left_out = Vec::new();
    loop {
        let objects = render(plan, settings);
        let (config, secret) = object_sizes(&objects);
        if (config <= OBJECT_LIMIT && secret <= OBJECT_LIMIT) || plan.products.is_empty() {
            return (objects, left_out);
        }
        let size = |p: &super::plan::PlannedProduct| {
            if config > OBJECT_LIMIT {
                serde_saphyr::to_string(&p.sink)
                    .map(|s| s.len())
                    .unwrap_or(0)
                    + p.filter.event_types.iter().map(String::len).sum::<usize>()
            } else {
                p.secrets.iter().map(|(_, v)| v.expose().len()).sum()
            }
        };
        // The largest; on ties the last by id, so the choice is the same on every replica.
        let (at, _) = plan
            .products
            .iter()
            .enumerate()
            .max_by_key(|(_, p)| (size(p), p.id.clone()))
            .expect("not empty");
        let id = plan.products.remove(at).id;
        plan.left_out.push(id.clone());
        left_out.push(id);
    }
}

pub fn render(plan: &CollectorPlan, settings: &RenderSettings) -> CollectorObjects {
    let name = plan.source.collector_name();
    let config_yaml = serde_saphyr::to_string(&collector_config(plan, settings))
        .expect("the collector config always serialises");
    let config_hash = sha(&config_yaml);

    let mut secret_data: BTreeMap<String, ByteString> = BTreeMap::from([(
        contract::OKTA_TOKEN_KEY.to_string(),
        ByteString(plan.token.expose().as_bytes().to_vec()),
    )]);
    for product in &plan.products {
        for (key, value) in &product.secrets {
            secret_data.insert(key.clone(), ByteString(value.expose().as_bytes().to_vec()));
        }
    }
    let mut hasher = Sha256::new();
    for (k, v) in &secret_data {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(&v.0);
        hasher.update([0]);
    }
    let secret_hash = hex::encode(hasher.finalize())[..16].to_string();

    let mut config_meta = meta(plan, name.clone(), settings, Some(&config_hash));
    if !plan.left_out.is_empty() {
        config_meta
            .annotations
            .get_or_insert_default()
            .insert(LEFT_OUT_ANNOTATION.into(), plan.left_out.join(","));
    }
    let config = ConfigMap {
        metadata: config_meta,
        data: Some(BTreeMap::from([(
            contract::CONFIG_KEY.to_string(),
            config_yaml,
        )])),
        ..Default::default()
    };
    let secret = Secret {
        metadata: meta(plan, name.clone(), settings, Some(&secret_hash)),
        type_: Some("Opaque".into()),
        data: Some(secret_data),
        ..Default::default()
    };
    // The state ConfigMap is created empty; its data belongs to the collector (another field manager).
    let state = ConfigMap {
        metadata: meta(plan, plan.source.state_name(), settings, None),
        ..Default::default()
    };
    let mut deployment = deployment(plan, settings, &name, &config_hash, &secret_hash);
    super::collector_pod::apply(&mut deployment, &settings.pod, plan.collector.as_ref());
    let deployment_hash =
        sha(serde_json::to_vec(&deployment.spec).expect("a Deployment spec always serialises"));
    let deployment = Deployment {
        metadata: meta(plan, name.clone(), settings, Some(&deployment_hash)),
        ..deployment
    };
    CollectorObjects {
        config,
        secret,
        state,
        deployment,
    }
}

fn deployment(
    plan: &CollectorPlan,
    settings: &RenderSettings,
    name: &str,
    config_hash: &str,
    secret_hash: &str,
) -> Deployment {
    let env_from_field = |var: &str, path: &str| EnvVar {
        name: var.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let quantity = |s: &str| Quantity(s.into());
    let container = Container {
        name: "collector".into(),
        image: Some(settings.image.clone()),
        command: Some(vec![COLLECTOR_BINARY.into()]),
        args: Some(vec![
            "collector".into(),
            "--config".into(),
            format!("{}/{}", contract::CONFIG_DIR, contract::CONFIG_KEY),
            "--log-format".into(),
            "json".into(),
        ]),
        env: Some(vec![
            env_from_field("POD_NAMESPACE", "metadata.namespace"),
            env_from_field("POD_NAME", "metadata.name"),
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some("info".into()),
                ..Default::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", 20)),
        readiness_probe: Some(probe("/readyz", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity("50m")),
                ("memory".into(), quantity("64Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), quantity("1")),
                ("memory".into(), quantity("256Mi")),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: contract::CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "secrets".into(),
                mount_path: contract::SECRETS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let mut template_labels = plan.source.labels();
    template_labels.extend(plan.source.selector());
    Deployment {
        metadata: ObjectMeta::default(),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(plan.source.selector()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([
                        (CONFIG_HASH_ANNOTATION.into(), config_hash.into()),
                        (SECRET_HASH_ANNOTATION.into(), secret_hash.into()),
                        ("prometheus.io/scrape".into(), "true".into()),
                        ("prometheus.io/port".into(), METRICS_PORT.to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(COLLECTOR_SERVICE_ACCOUNT.into()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: name.into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "secrets".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(name.into()),
                                default_mode: Some(0o400),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
