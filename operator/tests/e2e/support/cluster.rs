//! Connection to the test cluster, CRD installation and per-test namespaces.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

use super::{Operator, suffix, wait_for};

/// Field manager the suite applies with (so tests can tell its fields from the operator's).
pub const MANAGER: &str = "uc-e2e";

/// A client for the cluster in `KUBECONFIG`; fails loudly when the suite runs without one.
pub async fn client() -> Client {
    unified_connectors::http::install_crypto_provider();
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the e2e suite with `make e2e` (or see operator/tests/e2e/main.rs)"
    );
    Client::try_default()
        .await
        .expect("cannot build a client from KUBECONFIG")
}

/// `crds/` at the repository root.
pub fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

/// Every CRD document in `crds/*.yaml`, parsed, in file order.
pub fn crd_manifests() -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(crds_dir())
        .expect("crds/ must exist (make crds)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for v in serde_saphyr::from_multiple::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", f.display()))
        {
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    assert!(!docs.is_empty(), "crds/ holds no CRD");
    docs
}

/// Server-side applies every CRD from `crds/` and waits until each is Established, so the
/// kinds can be used right away. Idempotent: tests call it first thing.
pub async fn apply_crds(client: &Client) -> Vec<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for doc in crd_manifests() {
        let name = doc["metadata"]["name"]
            .as_str()
            .expect("CRD without a name")
            .to_string();
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&doc),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
        names.push(name);
    }
    let mut out = Vec::new();
    for name in names {
        let crd = wait_for(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established {
                    Ok(crd)
                } else {
                    Err(format!("conditions: {:?}", crd.status))
                }
            },
        )
        .await;
        out.push(crd);
    }
    out
}

/// One test's world: a client, the operator's own namespace (where collectors live) and any
/// user namespaces it creates. Names are unique per test run, so tests never see each other's
/// objects even on a shared cluster.
pub struct TestEnv {
    pub client: Client,
    /// The operator's namespace: collectors, their ConfigMaps and Secrets go here.
    pub op_ns: String,
    /// Unique suffix of this test (also used to make Okta domains unique).
    pub id: String,
    namespaces: Vec<String>,
}

impl TestEnv {
    /// Connects, installs the CRDs and creates the operator namespace `e2e-<name>-<id>`.
    pub async fn new(name: &str) -> TestEnv {
        let client = client().await;
        apply_crds(&client).await;
        let id = suffix();
        let mut env = TestEnv {
            client,
            op_ns: String::new(),
            id,
            namespaces: Vec::new(),
        };
        env.op_ns = env.namespace("op").await;
        let _ = name;
        env
    }

    /// Creates (and remembers for [`TestEnv::cleanup`]) the namespace `e2e-<id>-<name>`.
    pub async fn namespace(&mut self, name: &str) -> String {
        let ns = format!("e2e-{}-{name}", self.id);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {ns}: {e}"));
        self.namespaces.push(ns.clone());
        ns
    }

    /// A domain unique to this test, such as `acme-<id>.okta.com`.
    pub fn domain(&self, org: &str) -> String {
        format!("{org}-{}.okta.com", self.id)
    }

    /// Starts the operator watching all namespaces, with collectors in [`TestEnv::op_ns`].
    pub fn start_operator(&self, extra_args: &[&str]) -> Operator {
        Operator::start(&self.op_ns, extra_args)
    }

    /// Creates or replaces an Opaque Secret with string data.
    pub async fn put_secret(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "type": "Opaque",
            "stringData": data.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
        });
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot apply Secret {ns}/{name}: {e}"));
    }

    /// Server-side applies any namespaced object given as JSON (apiVersion/kind/metadata.name set).
    pub async fn apply(
        &self,
        ns: &str,
        obj: &serde_json::Value,
    ) -> Result<serde_json::Value, kube::Error> {
        let api = dynamic_api(&self.client, ns, obj);
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("object without metadata.name");
        let out = api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?;
        Ok(serde_json::to_value(out).unwrap())
    }

    /// Creates a namespaced object given as JSON (POST, so validation errors are the create path's).
    pub async fn create(
        &self,
        ns: &str,
        obj: &serde_json::Value,
    ) -> Result<serde_json::Value, kube::Error> {
        let api = dynamic_api(&self.client, ns, obj);
        let dynobj: kube::api::DynamicObject = serde_json::from_value(obj.clone()).unwrap();
        let out = api.create(&PostParams::default(), &dynobj).await?;
        Ok(serde_json::to_value(out).unwrap())
    }

    /// Reads one of our custom resources (`kind` = UnifiedConnector or ProductBinding) as JSON.
    pub async fn get(&self, ns: &str, kind: &str, name: &str) -> Option<serde_json::Value> {
        let api = dynamic_api(
            &self.client,
            ns,
            &serde_json::json!({"apiVersion": super::world::API_VERSION, "kind": kind}),
        );
        api.get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("reading {kind} {ns}/{name}: {e}"))
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// Deletes one of our custom resources (foreground is not needed: finalizers do the work).
    pub async fn delete(&self, ns: &str, kind: &str, name: &str) {
        let api = dynamic_api(
            &self.client,
            ns,
            &serde_json::json!({"apiVersion": super::world::API_VERSION, "kind": kind}),
        );
        api.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {kind} {ns}/{name}: {e}"));
    }

    /// Waits until `kind ns/name` has been reconciled at its current generation and its
    /// `status.phase` is `phase`; returns the object.
    pub async fn wait_phase(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        wait_for(
            &format!("{kind} {ns}/{name} to be {phase}"),
            timeout,
            || async {
                let obj = self
                    .get(ns, kind, name)
                    .await
                    .ok_or("not found".to_string())?;
                let observed = obj["status"]["observedGeneration"] == obj["metadata"]["generation"];
                if observed && obj["status"]["phase"] == phase {
                    Ok(obj)
                } else {
                    Err(format!("status: {}", obj["status"]))
                }
            },
        )
        .await
    }

    /// The operator-managed Deployments in the operator namespace that serve this test's
    /// domains (the source annotation names the domain, which embeds [`TestEnv::id`]).
    pub async fn collectors(&self) -> Vec<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.op_ns);
        let lp = ListParams::default()
            .labels("app.kubernetes.io/managed-by=unified-connectors-operator");
        api.list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|d| {
                d.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("connectors.unified.dev/source"))
                    .is_some_and(|s| s.contains(&self.id))
            })
            .collect()
    }

    /// Waits for this test's (first) collector Deployment and returns its name.
    pub async fn first_collector(&self) -> String {
        wait_for("the collector Deployment", super::CONVERGE, || async {
            self.collectors()
                .await
                .into_iter()
                .next()
                .and_then(|d| d.metadata.name)
                .ok_or("none yet")
        })
        .await
    }

    /// Names of the operator-managed objects (Deployments, ConfigMaps, Secrets) of this test's
    /// sources (their names embed the domain, hence [`TestEnv::id`]), as `Kind/name`.
    pub async fn managed_objects(&self) -> Vec<String> {
        let lp = ListParams::default()
            .labels("app.kubernetes.io/managed-by=unified-connectors-operator");
        let mut out = Vec::new();
        for d in Api::<Deployment>::namespaced(self.client.clone(), &self.op_ns)
            .list(&lp)
            .await
            .unwrap()
        {
            out.push(format!(
                "Deployment/{}",
                d.metadata.name.unwrap_or_default()
            ));
        }
        for c in Api::<ConfigMap>::namespaced(self.client.clone(), &self.op_ns)
            .list(&lp)
            .await
            .unwrap()
        {
            out.push(format!("ConfigMap/{}", c.metadata.name.unwrap_or_default()));
        }
        for s in Api::<Secret>::namespaced(self.client.clone(), &self.op_ns)
            .list(&lp)
            .await
            .unwrap()
        {
            out.push(format!("Secret/{}", s.metadata.name.unwrap_or_default()));
        }
        out.retain(|o| o.contains(&self.id));
        out.sort();
        out
    }

    /// Deletes the test's namespaces (best effort; the cluster is thrown away after the run).
    ///
    /// Connectors and bindings go first, while the test's operator still runs to release their
    /// finalizers; otherwise the next test's operator (which watches every namespace) would
    /// inherit them from the terminating namespaces.
    pub async fn cleanup(self) {
        for ns in &self.namespaces {
            for kind in ["ProductBinding", "UnifiedConnector"] {
                let obj =
                    serde_json::json!({"apiVersion": super::world::API_VERSION, "kind": kind});
                let api = dynamic_api(&self.client, ns, &obj);
                let _ = api
                    .delete_collection(&DeleteParams::default(), &ListParams::default())
                    .await;
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let mut left = 0;
            for ns in &self.namespaces {
                let obj = serde_json::json!({"apiVersion": super::world::API_VERSION, "kind": "UnifiedConnector"});
                left += dynamic_api(&self.client, ns, &obj)
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items.len())
                    .unwrap_or(0);
            }
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        for ns in &self.namespaces {
            let _ = api.delete(ns, &DeleteParams::background()).await;
        }
    }
}

/// A dynamic API for the kind of `obj` (plural = lower-case kind + "s", true for every kind
/// the suite creates this way: our CRDs, Secrets, ConfigMaps).
pub fn dynamic_api(
    client: &Client,
    ns: &str,
    obj: &serde_json::Value,
) -> Api<kube::api::DynamicObject> {
    let api_version = obj["apiVersion"]
        .as_str()
        .expect("object without apiVersion");
    let kind = obj["kind"].as_str().expect("object without kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &gvk,
        &format!("{}s", kind.to_ascii_lowercase()),
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// The API server's refusal as (HTTP code, reason, message, field paths of the causes).
pub fn refusal(err: &kube::Error) -> Option<(u16, String, String, Vec<String>)> {
    match err {
        kube::Error::Api(status) => {
            let fields = status
                .details
                .as_ref()
                .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
                .unwrap_or_default();
            Some((
                status.code,
                status.reason.clone(),
                status.message.clone(),
                fields,
            ))
        }
        _ => None,
    }
}

/// `(status, reason, message)` of condition `type_` in an object's status.
pub fn condition(obj: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}
