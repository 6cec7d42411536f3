//! The install paths users take, against the real control plane: the Helm chart (rendered by the
//! helm binary built from its Go module, applied with `kubectl apply --server-side`), the kustomize
//! layout (`kubectl apply -k config/default`) and the samples. Each path must be accepted by the API
//! server, converge on a second apply (no drift a GitOps tool would flag), and grant exactly the
//! RBAC the operator and collectors need. The chart's operator is then run the way its Deployment
//! says (command, args, env; as its own ServiceAccount, so the RBAC is what is tested) and must
//! reconcile the samples.
//!
//! Needs `kubectl` on PATH and helm in `$UC_CONTROL_PLANE_BIN` (both set up by `make e2e`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::support::{CONVERGE, TestEnv, operator, wait_for};

/// The Okta token written in config/samples/secrets.yaml; the test Okta server accepts it.
const SAMPLE_TOKEN: &str = "00REPLACE_WITH_OKTA_API_TOKEN";
/// The domain of config/samples/connector.yaml.
const SAMPLE_DOMAIN: &str = "yourcompany.okta.com";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        return PathBuf::from(h);
    }
    let bin = std::env::var_os("UC_CONTROL_PLANE_BIN").expect(
        "UC_CONTROL_PLANE_BIN is not set: run the e2e suite with `make e2e` (it provides helm)",
    );
    PathBuf::from(bin).join("helm")
}

/// Runs a command, feeding `stdin`; returns stdout, panics with stderr when it fails.
pub(crate) fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = try_run(program, args, stdin);
    match out {
        Ok(s) => s,
        Err(e) => panic!("{} {} failed: {e}", program.display(), args.join(" ")),
    }
}

pub(crate) fn try_run(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub(crate) fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    run(Path::new("kubectl"), args, stdin)
}

/// The API server's version, such as `v1.34.4` (what `helm template --kube-version` should target).
fn server_version() -> String {
    let v: Value = serde_json::from_str(&kubectl(&["version", "-o", "json"], None)).unwrap();
    v["serverVersion"]["gitVersion"]
        .as_str()
        .expect("no serverVersion")
        .to_string()
}

/// `helm template` of the chart as release `release` in `namespace`, CRDs included.
fn helm_template(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = repo().join("charts/unified-connectors");
    let version = server_version();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--kube-version",
        &version,
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    run(&helm(), &args, None)
}

pub(crate) fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn find<'a>(docs: &'a [Value], kind: &str, name_suffix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(name_suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} named *{name_suffix} in the rendered manifests"))
}

/// `kind/namespace/name -> live object` for every object in the manifests, without `status`
/// (controllers own it) and `metadata.resourceVersion`: the API server rewrites a custom resource once after its creation
/// to persist the CRD's status default (`observedGeneration: -1`) with no visible change, so
/// "nothing changed" is judged on content and `metadata.generation`, as GitOps tools judge drift.
fn snapshot(manifests: &str, namespace: Option<&str>) -> BTreeMap<String, Value> {
    let mut args = vec!["get", "-f", "-", "-o", "json"];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    let list: Value = serde_json::from_str(&kubectl(&args, Some(manifests))).unwrap();
    let items = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![list.clone()]);
    items
        .into_iter()
        .map(|mut o| {
            let m = &o["metadata"];
            let key = format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap()
            );
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            o.as_object_mut().unwrap().remove("status");
            (key, o)
        })
        .collect()
}

/// The keys whose objects differ between two snapshots, with both versions.
fn changes(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> String {
    let mut out = String::new();
    for (k, a) in after {
        if before.get(k) != Some(a) {
            out.push_str(&format!(
                "{k}:\n  before: {}\n  after:  {a}\n",
                before.get(k).unwrap_or(&Value::Null)
            ));
        }
    }
    out
}

/// `kubectl apply --server-side` of `manifests` (into `namespace` when given); returns its output.
pub(crate) fn apply_server_side(manifests: &str, namespace: Option<&str>) -> String {
    let mut args = vec![
        "apply",
        "--server-side",
        "--field-manager",
        "uc-e2e-install",
        "-f",
        "-",
    ];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    kubectl(&args, Some(manifests))
}

/// Server-side applies `manifests` twice and asserts the second apply changed nothing.
fn apply_twice_without_drift(
    what: &str,
    manifests: &str,
    namespace: Option<&str>,
) -> BTreeMap<String, Value> {
    apply_server_side(manifests, namespace);
    let first = snapshot(manifests, namespace);
    assert!(!first.is_empty(), "{what}: nothing applied");
    let out = apply_server_side(manifests, namespace);
    let second = snapshot(manifests, namespace);
    assert!(
        first == second,
        "{what}: applying the same manifests again changed objects:\n{}",
        changes(&first, &second)
    );
    for line in out.lines() {
        assert!(
            line.ends_with("serverside-applied") || line.trim().is_empty(),
            "{what}: unexpected apply output: {line}"
        );
    }
    first
}

/// `kubectl auth can-i` for a ServiceAccount (answers "yes" with exit 0, "no" with exit 1).
fn can_i(sa: &str, namespace: &str, verb: &str, resource: &str, in_ns: Option<&str>) -> bool {
    let who = format!("system:serviceaccount:{namespace}:{sa}");
    let mut args = vec!["auth", "can-i", verb, resource, "--as", &who];
    match in_ns {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = Command::new("kubectl")
        .args(&args)
        .output()
        .expect("run kubectl auth can-i");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl {}: {other} {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The operator may do what it needs and nothing more; collectors may only touch ConfigMaps in
/// the operator namespace.
fn assert_least_privilege(op_sa: &str, op_ns: &str, user_ns: &str) {
    let allowed: &[(&str, &str, Option<&str>)] = &[
        ("watch", "unifiedconnectors.connectors.unified.dev", None),
        (
            "patch",
            "unifiedconnectors.connectors.unified.dev/status",
            None,
        ),
        (
            "update",
            "productbindings.connectors.unified.dev/finalizers",
            None,
        ),
        ("watch", "secrets", None),
        ("create", "events.events.k8s.io", Some(user_ns)),
        ("create", "deployments.apps", Some(op_ns)),
        ("delete", "secrets", Some(op_ns)),
        ("update", "leases.coordination.k8s.io", Some(op_ns)),
    ];
    for (verb, res, ns) in allowed {
        assert!(
            can_i(op_sa, op_ns, verb, res, *ns),
            "the operator cannot {verb} {res} in {ns:?}"
        );
    }
    let denied: &[(&str, &str, Option<&str>)] = &[
        ("create", "deployments.apps", Some(user_ns)),
        ("delete", "secrets", Some(user_ns)),
        ("create", "secrets", Some(user_ns)),
        ("patch", "secrets", Some(user_ns)),
        (
            "create",
            "unifiedconnectors.connectors.unified.dev",
            Some(user_ns),
        ),
        (
            "delete",
            "unifiedconnectors.connectors.unified.dev",
            Some(user_ns),
        ),
        ("create", "pods", Some(op_ns)),
        ("create", "clusterroles.rbac.authorization.k8s.io", None),
    ];
    for (verb, res, ns) in denied {
        assert!(
            !can_i(op_sa, op_ns, verb, res, *ns),
            "the operator may {verb} {res} in {ns:?}: more than it needs"
        );
    }
    let collector = "unified-connectors-collector";
    assert!(
        can_i(collector, op_ns, "patch", "configmaps", Some(op_ns)),
        "collectors cannot write their state ConfigMap"
    );
    for (verb, res, ns) in [
        ("get", "secrets", Some(op_ns)),
        ("get", "configmaps", Some(user_ns)),
        ("delete", "configmaps", Some(op_ns)),
        ("list", "unifiedconnectors.connectors.unified.dev", None),
    ] {
        assert!(
            !can_i(collector, op_ns, verb, res, ns),
            "collectors may {verb} {res} in {ns:?}: more than they need"
        );
    }
}

/// Waits until `n` pods matching `selector` exist in `ns`: the ReplicaSet controller created them and
/// admission (Pod Security `restricted` where the namespace enforces it) let them in.
async fn wait_for_pods(client: &kube::Client, ns: &str, selector: &str, n: usize) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{n} pod(s) {selector} in {ns}"),
        CONVERGE,
        || async {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| e.to_string())?;
            if list.items.len() >= n {
                Ok(())
            } else {
                let events = kubectl(
                    &[
                        "get",
                        "events",
                        "-n",
                        ns,
                        "--field-selector",
                        "type=Warning",
                        "-o",
                        "name",
                    ],
                    None,
                );
                Err(format!("{} pod(s); warnings: {events}", list.items.len()))
            }
        },
    )
    .await;
}

/// `kubectl kustomize DIR`.
pub(crate) fn kustomize(dir: &str) -> String {
    kubectl(&["kustomize", repo().join(dir).to_str().unwrap()], None)
}

#[tokio::test]
#[ignore = "needs a control plane: make e2e"]
async fn helm_chart_applies_server_side_and_converges() {
    let mut env = TestEnv::new("helm").await;
    let ns = env.namespace("helm").await;
    let release = format!("uc-{}", env.id);
    // Every optional template that needs no third-party CRD.
    let manifests = helm_template(
        &release,
        &ns,
        &[
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
        ],
    );
    let rendered = docs(&manifests);
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Service",
        "NetworkPolicy",
        "ConfigMap",
    ] {
        assert!(
            rendered.iter().any(|d| d["kind"] == kind),
            "the chart renders no {kind}"
        );
    }

    // The server validates every object (schemas, RBAC escalation rules) without storing anything.
    kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager",
            "uc-e2e-install",
            "-f",
            "-",
        ],
        Some(&manifests),
    );
    apply_twice_without_drift("helm template", &manifests, None);

    let deploy = find(&rendered, "Deployment", "unified-connectors");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(deploy["spec"]["replicas"], 2);

    let sa = pod["serviceAccountName"].as_str().unwrap();
    let user_ns = env.namespace("helm-user").await;
    assert_least_privilege(sa, &ns, &user_ns);
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a control plane: make e2e"]
async fn kustomize_default_and_samples_apply_and_converge() {
    let mut env = TestEnv::new("kustomize").await;
    let manifests = kustomize("config/default");
    apply_twice_without_drift("kubectl apply -k config/default", &manifests, None);
    let rendered = docs(&manifests);
    let deploy = find(&rendered, "Deployment", "unified-connectors");
    assert_eq!(deploy["metadata"]["namespace"], "unified-connectors-system");
    let sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_string();
    // config/manager labels the namespace `enforce: restricted`; the operator pods must still be admitted.
    let ns_labels = kubectl(
        &[
            "get",
            "namespace",
            "unified-connectors-system",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
        None,
    );
    assert!(
        ns_labels.contains(r#""pod-security.kubernetes.io/enforce":"restricted""#),
        "{ns_labels}"
    );
    wait_for_pods(
        &env.client,
        "unified-connectors-system",
        "app.kubernetes.io/name=unified-connectors,app.kubernetes.io/component=controller",
        2,
    )
    .await;
    let user_ns = env.namespace("samples").await;
    assert_least_privilege(&sa, "unified-connectors-system", &user_ns);

    // The samples (Secrets, connector, three bindings) pass the CRDs' validation and converge.
    let samples = kustomize("config/samples");
    let applied =
        apply_twice_without_drift("kubectl apply -k config/samples", &samples, Some(&user_ns));
    assert_eq!(
        applied
            .keys()
            .filter(|k| k.starts_with("ProductBinding/"))
            .count(),
        3,
        "{applied:?}"
    );
    assert_eq!(
        applied
            .keys()
            .filter(|k| k.starts_with("UnifiedConnector/"))
            .count(),
        1,
        "{applied:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a control plane: make e2e"]
async fn chart_and_kustomize_grant_the_same_rbac() {
    // No cluster needed, but helm is (it comes with the control plane build).
    let chart = docs(&helm_template(
        "unified-connectors",
        "unified-connectors-system",
        &[],
    ));
    let kust = docs(&kustomize("config/default"));
    for (kind, suffix) in [
        ("ClusterRole", "-manager"),
        ("Role", "-manager"),
        ("Role", "-collector"),
    ] {
        assert_eq!(
            find(&chart, kind, suffix)["rules"],
            find(&kust, kind, suffix)["rules"],
            "{kind} *{suffix}: the chart and config/rbac differ"
        );
    }
    // Same operator settings in both install paths.
    let container = |d: &[Value]| {
        find(d, "Deployment", "unified-connectors")["spec"]["template"]["spec"]["containers"][0]
            .clone()
    };
    let (a, b) = (container(&chart), container(&kust));
    for field in [
        "command",
        "args",
        "ports",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
    ] {
        assert_eq!(
            a[field], b[field],
            "operator container {field}: the chart and config/manager differ"
        );
    }
}

/// A kubeconfig for the current cluster that authenticates as ServiceAccount `sa` (TokenRequest).
pub(crate) fn kubeconfig_for(sa: &str, namespace: &str, dir: &Path) -> PathBuf {
    let token = kubectl(
        &["create", "token", sa, "-n", namespace, "--duration", "1h"],
        None,
    );
    let current: Value = serde_json::from_str(&kubectl(
        &["config", "view", "--minify", "--raw", "-o", "json"],
        None,
    ))
    .unwrap();
    let cluster = current["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": namespace}}],
        "current-context": "c",
    });
    let path = dir.join(format!("kubeconfig-{sa}"));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

/// The operator started as the chart's Deployment describes it: its command (the image's binary is
/// this build), args and env, with `--metrics-addr` moved to a free loopback port.
pub(crate) struct ChartOperator {
    child: Child,
    pub(crate) log: PathBuf,
}

impl ChartOperator {
    pub(crate) fn start(
        deploy: &Value,
        namespace: &str,
        kubeconfig: &Path,
        pod_name: &str,
    ) -> ChartOperator {
        let c = &deploy["spec"]["template"]["spec"]["containers"][0];
        let command: Vec<String> = serde_json::from_value(c["command"].clone()).unwrap();
        assert!(
            command[0].ends_with("/unified-connectors"),
            "the container runs {command:?}, not the binary"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = serde_json::from_value::<Vec<String>>(c["args"].clone())
            .unwrap()
            .into_iter()
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    format!("--metrics-addr=127.0.0.1:{port}")
                } else {
                    a
                }
            })
            .collect();
        let mut cmd = Command::new(operator::BIN);
        cmd.args(command[1..].iter().chain(args.iter()));
        for e in c["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.name") => pod_name.to_string(),
                Some(other) => panic!("env {name}: fieldRef {other} unsupported"),
                None => e["value"].as_str().unwrap_or_default().to_string(),
            };
            cmd.env(name, value);
        }
        let log = std::env::temp_dir().join(format!("uc-e2e-chart-operator-{namespace}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the operator");
        ChartOperator { child, log }
    }
}

impl ChartOperator {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- chart operator log ({}) -----", self.log.display());
            for l in log
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("{l}");
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs a control plane: make e2e"]
async fn helm_installed_operator_reconciles_the_samples() {
    use uc_testkit::okta::{OktaServer, Options, Permission};

    let mut env = TestEnv::new("helm-run").await;
    let okta = OktaServer::start(Options {
        tokens: vec![(SAMPLE_TOKEN.into(), Permission::ReadOnlyAdmin)],
        ..Options::default()
    })
    .await;
    let op_ns = env.op_ns.clone();
    // Collectors must satisfy the restricted Pod Security Standard, as config/manager enforces it.
    kubectl(
        &[
            "label",
            "namespace",
            &op_ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    let release = format!("uc-{}", env.id);
    let template_arg = format!("extraArgs[0]=--okta-url-template={}", okta.url_template());
    // A real `helm install` (release record, schema check, the CRDs from its templates).
    let chart = repo().join("charts/unified-connectors");
    let chart = chart.to_str().unwrap();
    let helm_args = |verb: &str| -> Vec<String> {
        [
            verb,
            &release,
            chart,
            "--namespace",
            &op_ns,
            "--set-string",
            &template_arg,
            // The harness installed the CRDs before the chart: the chart adopts them.
            "--take-ownership",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = helm_args("install");
    run(
        &helm(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    let manifests = run(&helm(), &["get", "manifest", &release, "-n", &op_ns], None);
    // Upgrading to the same chart and values touches nothing (Helm's three-way merge finds no change).
    let installed = snapshot(&manifests, None);
    let args = helm_args("upgrade");
    run(
        &helm(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    let upgraded = snapshot(&manifests, None);
    assert!(
        installed == upgraded,
        "helm upgrade with the same values changed objects:\n{}",
        changes(&installed, &upgraded)
    );
    let rendered = docs(&manifests);
    let deploy = find(&rendered, "Deployment", "unified-connectors");
    let release_deploy = deploy["metadata"]["name"].as_str().unwrap().to_string();
    let sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();

    // Run as the chart's ServiceAccount: a missing permission fails this test.
    let dir = std::env::temp_dir().join(format!("uc-e2e-install-{}", env.id));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kubeconfig_for(sa, &op_ns, &dir);
    let pod_name = format!("{release}-local-0");
    let mut op = ChartOperator::start(deploy, &op_ns, &kubeconfig, &pod_name);

    let user_ns = env.namespace("security").await;
    let samples = kustomize("config/samples");
    apply_server_side(&samples, Some(&user_ns));

    // The connector and every binding are reconciled (observedGeneration caught up) and wait for data.
    let get = |kind: &str, name: &str| -> Result<Value, String> {
        let out = try_run(
            Path::new("kubectl"),
            &["get", kind, name, "-n", &user_ns, "-o", "json"],
            None,
        )?;
        serde_json::from_str(&out).map_err(|e| e.to_string())
    };
    let reconciled = |o: &Value| -> Result<(), String> {
        let st = &o["status"];
        if st["observedGeneration"] == o["metadata"]["generation"] && st["phase"] == "Pending" {
            Ok(())
        } else {
            Err(format!("{}: status {}", o["metadata"]["name"], st))
        }
    };
    let uc = wait_for(
        "the sample connector to be reconciled",
        CONVERGE,
        || async {
            let uc = get("unifiedconnector", "okta-prod")?;
            reconciled(&uc)?;
            uc["status"]["collector"]
                .as_str()
                .map(|_| uc.clone())
                .ok_or_else(|| "no status.collector yet".to_string())
        },
    )
    .await;
    for pb in ["okta-to-sentinel", "okta-to-splunk", "okta-to-webhook"] {
        wait_for(
            &format!("binding {pb} to be reconciled"),
            CONVERGE,
            || async { reconciled(&get("productbinding", pb)?) },
        )
        .await;
    }

    // One collector, in the release namespace, running as the collector ServiceAccount.
    let collector = uc["status"]["collector"].as_str().unwrap().to_string();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &op_ns);
    let cd = deployments
        .get(&collector)
        .await
        .expect("the collector Deployment exists");
    let spec = cd.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("unified-connectors-collector")
    );
    wait_for_pods(
        &env.client,
        &op_ns,
        &format!("app.kubernetes.io/instance={collector}"),
        1,
    )
    .await;
    let cfg = kubectl(
        &[
            "get",
            "configmap",
            &collector,
            "-n",
            &op_ns,
            "-o",
            "jsonpath={.data.collector\\.yaml}",
        ],
        None,
    );
    assert!(
        cfg.contains(&okta.org_url(SAMPLE_DOMAIN)) || cfg.contains(SAMPLE_DOMAIN),
        "collector.yaml: {cfg}"
    );
    assert!(
        !cfg.contains(SAMPLE_TOKEN),
        "the collector config must reference the token, not hold it"
    );

    // Leader election through the Lease, held by this process.
    let lease = Api::<Lease>::namespaced(env.client.clone(), &op_ns)
        .get("unified-connectors-leader")
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(pod_name.as_str())
    );

    // No drift: with the operator stopped, re-applying what the user applied changes nothing —
    // the operator wrote only status and its finalizer, never the user's fields.
    op.stop();
    let before = snapshot(&samples, Some(&user_ns));
    let out = apply_server_side(&samples, Some(&user_ns));
    let after = snapshot(&samples, Some(&user_ns));
    assert!(
        before == after,
        "re-applying the samples changed them ({out}):\n{}",
        changes(&before, &after)
    );
    // Field ownership: only the user's apply owns spec; the operator's managers own status and
    // the finalizer, so a GitOps tool never sees the operator fight over a field.
    for kind in ["unifiedconnectors", "productbindings"] {
        let list: Value = serde_json::from_str(&kubectl(
            &[
                "get",
                kind,
                "-n",
                &user_ns,
                "-o",
                "json",
                "--show-managed-fields",
            ],
            None,
        ))
        .unwrap();
        for item in list["items"].as_array().unwrap() {
            for mf in item["metadata"]["managedFields"].as_array().unwrap() {
                if mf["manager"] != "uc-e2e-install" {
                    assert!(
                        mf["fieldsV1"].get("f:spec").is_none(),
                        "{kind}/{}: manager {} owns spec fields: {}",
                        item["metadata"]["name"],
                        mf["manager"],
                        mf["fieldsV1"]
                    );
                }
            }
        }
    }
    let log = std::fs::read_to_string(&op.log).unwrap_or_default();
    assert!(
        !log.contains("forbidden"),
        "the operator hit an RBAC denial:\n{log}"
    );

    // `helm uninstall` removes the operator and its RBAC but keeps the CRDs (and so the users' objects).
    run(&helm(), &["uninstall", &release, "-n", &op_ns], None);
    let gone = try_run(
        Path::new("kubectl"),
        &["get", "deployment", &release_deploy, "-n", &op_ns],
        None,
    );
    assert!(
        gone.is_err(),
        "the operator Deployment survived helm uninstall"
    );
    kubectl(
        &["get", "crd", "unifiedconnectors.connectors.unified.dev"],
        None,
    );
    crate::chart_upgrade::release_kept_crds();
    // The ServiceAccount kubeconfig holds a token: do not leave it behind.
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

/// Metric names (`unified_connectors_*`, `uc_collector_*`) referenced in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    for ch in expr.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            current.push(ch);
        } else {
            if current.starts_with("unified_connectors_") || current.starts_with("uc_collector_") {
                names.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    names
}

/// Every alert and dashboard query parses as PromQL and names only metrics the code registers, so
/// a renamed metric cannot silently turn an alert off. Runs in `make unit` (no cluster needed).
#[test]
fn alerts_and_dashboard_queries_parse_and_use_real_metrics() {
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("config/prometheus/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/unified-connectors/files/dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            exprs.push((
                format!("alert {}", rule["alert"].as_str().unwrap()),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            // Grafana's interval variables become a duration; the label-value variables sit
            // inside regex matchers and parse as they are.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m");
            exprs.push((format!("panel {}", panel["title"]), expr));
        }
    }
    assert!(exprs.len() >= 15, "too few queries found: {}", exprs.len());

    let operator_metrics =
        std::fs::read_to_string(repo().join("operator/src/controller/metrics.rs")).unwrap();
    let collector_metrics =
        std::fs::read_to_string(repo().join("operator/src/collector/metrics.rs")).unwrap();
    for (what, expr) in &exprs {
        if let Err(e) = promql_parser::parser::parse(expr) {
            panic!("{what}: not valid PromQL ({e}):\n{expr}");
        }
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what} uses none of our metrics: {expr}");
        for name in names {
            let registered = match name.strip_prefix("unified_connectors_") {
                Some(short) => operator_metrics.contains(&format!("\"{short}\"")),
                None => collector_metrics.contains(&format!("\"{name}\"")),
            };
            assert!(
                registered,
                "{what} uses {name}, which the code does not register:\n{expr}"
            );
        }
    }
}

/// The image every install path runs is the one the Dockerfile builds, at this crate's version:
/// Chart.yaml's appVersion, the chart's and config/manager's image and command, the operator's
/// default collector image. A version bump that misses one of them fails here (`make unit`).
#[test]
fn install_paths_reference_the_image_the_dockerfile_builds() {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("ghcr.io/unified-connectors/unified-connectors:{version}");

    let chart: Value =
        serde_saphyr::from_str(&read("charts/unified-connectors/Chart.yaml")).unwrap();
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion");
    let values: Value =
        serde_saphyr::from_str(&read("charts/unified-connectors/values.yaml")).unwrap();
    assert_eq!(
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().unwrap(),
            version
        ),
        image
    );

    let manager = docs(&read("config/manager/manager.yaml"));
    let container = &find(&manager, "Deployment", "unified-connectors")["spec"]["template"]["spec"]
        ["containers"][0];
    assert_eq!(container["image"], image.as_str(), "config/manager image");
    let collector_env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "COLLECTOR_IMAGE")
        .expect("COLLECTOR_IMAGE in config/manager");
    assert_eq!(collector_env["value"], image.as_str());
    let kustomization = read("config/manager/kustomization.yaml");
    assert!(
        kustomization.contains(&format!("newTag: {version}")),
        "config/manager/kustomization.yaml newTag"
    );

    // The binary's path in the image is the command both Deployments run.
    let command = container["command"][0].as_str().unwrap();
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!(
            "COPY --from=build /out/unified-connectors {command}"
        )),
        "the Dockerfile does not install the binary at {command}"
    );
    // Its OCI version label defaults to the same version.
    assert!(
        dockerfile.contains(&format!("ARG VERSION={version}\n")),
        "the Dockerfile's ARG VERSION (org.opencontainers.image.version) is not {version}"
    );
    assert!(
        read("charts/unified-connectors/templates/deployment.yaml")
            .contains(&format!("command: [\"{command}\"]")),
        "the chart runs another command than {command}"
    );
    // The operator's own default for collector Deployments is the same image.
    let args = read("operator/src/controller/mod.rs");
    assert!(
        args.contains("\"ghcr.io/unified-connectors/unified-connectors:\""),
        "operator default collector image"
    );
}
