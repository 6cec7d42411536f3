//! The chart in production: `helm upgrade` from the previous chart upgrades the CRDs (they are
//! templates now, not crds/) without losing an object, and the `collector.pod` values reach
//! the collector Deployments the operator renders, with a connector's `spec.collector` on top.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::Value;

use crate::install::{
    ChartOperator, apply_server_side, docs, find, helm, kubeconfig_for, kubectl, kustomize, repo,
    run, try_run,
};
use crate::support::cluster::crds_dir;
use crate::support::{CONVERGE, TestEnv, wait_for};

/// The last commit whose chart installs the CRDs from `crds/` (chart 0.1.0): what users upgrade from.
const PREVIOUS_CHART_REV: &str = "5764c81074deb3095d04939bb6ec14c224bb830a";
const UC_CRD: &str = "unifiedconnectors.connectors.unified.dev";

/// After a test's `helm uninstall`: the kept CRDs still carry the release's labels and
/// annotations, owned by Helm's field manager. Replacing them with `crds/` leaves them as a
/// cluster without the chart holds them, so a later `kubectl apply -k config/default` owns its labels.
pub(crate) fn release_kept_crds() {
    let mut files: Vec<_> = std::fs::read_dir(crds_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        kubectl(&["replace", "-f", f.to_str().unwrap()], None);
    }
}

fn live_crd() -> Value {
    serde_json::from_str(&kubectl(&["get", "crd", UC_CRD, "-o", "json"], None)).unwrap()
}

fn has_collector_field(crd: &Value) -> bool {
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        .get("collector")
        .is_some()
}

#[tokio::test]
#[ignore = "needs a control plane: make e2e"]
async fn helm_upgrade_from_the_previous_chart_upgrades_the_crds_and_loses_nothing() {
    let mut env = TestEnv::new("upgrade").await;
    let op_ns = env.op_ns.clone();
    let dir = std::env::temp_dir().join(format!("uc-e2e-upgrade-{}", env.id));
    std::fs::create_dir_all(&dir).unwrap();

    // The previous chart, as git holds it.
    let archive = dir.join("chart.tar");
    run(
        Path::new("git"),
        &[
            "-C",
            repo().to_str().unwrap(),
            "archive",
            "-o",
            archive.to_str().unwrap(),
            PREVIOUS_CHART_REV,
            "charts/unified-connectors",
        ],
        None,
    );
    run(
        Path::new("tar"),
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
        ],
        None,
    );
    let old_chart = dir.join("charts/unified-connectors");
    // The cluster as the previous chart left it: its CRDs (without spec.collector), unowned by Helm.
    let old_crds = old_chart.join("crds");
    for f in ["unifiedconnectors.yaml", "productbindings.yaml"] {
        kubectl(&["replace", "-f", old_crds.join(f).to_str().unwrap()], None);
    }
    assert!(
        !has_collector_field(&live_crd()),
        "the previous CRD must not know spec.collector"
    );

    let release = format!("uc-{}", env.id);
    run(
        &helm(),
        &[
            "install",
            &release,
            old_chart.to_str().unwrap(),
            "--namespace",
            &op_ns,
        ],
        None,
    );
    // Objects created under the previous chart.
    let user_ns = env.namespace("upgrade-user").await;
    let samples = kustomize("config/samples");
    apply_server_side(&samples, Some(&user_ns));
    let uid_of = |kind: &str, name: &str| -> String {
        kubectl(
            &[
                "get",
                kind,
                name,
                "-n",
                &user_ns,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
    };
    let before: Vec<(String, String, String)> = [
        ("unifiedconnector", "okta-prod"),
        ("productbinding", "okta-to-sentinel"),
        ("productbinding", "okta-to-splunk"),
        ("productbinding", "okta-to-webhook"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string(), uid_of(k, n)))
    .collect();

    // The upgrade. The CRDs exist but belong to no release (crds/ is not tracked): Helm adopts
    // them with --take-ownership, as the README's upgrade note says.
    let chart = repo().join("charts/unified-connectors");
    run(
        &helm(),
        &[
            "upgrade",
            &release,
            chart.to_str().unwrap(),
            "--namespace",
            &op_ns,
            "--take-ownership",
        ],
        None,
    );
    let crd = live_crd();
    assert!(
        has_collector_field(&crd),
        "helm upgrade did not upgrade the CRD: no spec.collector in the live schema"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "the upgraded CRD is not kept on uninstall"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["meta.helm.sh/release-name"],
        release.as_str()
    );
    // Nothing lost: the same objects (same uids) are there.
    for (kind, name, uid) in &before {
        assert_eq!(
            &uid_of(kind, name),
            uid,
            "{kind}/{name} was lost or recreated"
        );
    }
    // The new field works: it is accepted, stored and validated.
    kubectl(
        &[
            "patch",
            "unifiedconnector",
            "okta-prod",
            "-n",
            &user_ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"collector":{"serviceAccountName":"okta-wi","resources":{"limits":{"memory":"512Mi"}}}}}"#,
        ],
        None,
    );
    let sa = kubectl(
        &[
            "get",
            "unifiedconnector",
            "okta-prod",
            "-n",
            &user_ns,
            "-o",
            "jsonpath={.spec.collector.serviceAccountName}",
        ],
        None,
    );
    assert_eq!(sa, "okta-wi", "spec.collector was pruned: the CRD is stale");
    let refused = try_run(
        Path::new("kubectl"),
        &[
            "patch",
            "unifiedconnector",
            "okta-prod",
            "-n",
            &user_ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"collector":{"resources":{"limits":{"gpu":"1"}}}}}"#,
        ],
        None,
    )
    .expect_err("an unsupported resource name must be refused");
    assert!(
        refused.contains("only cpu, memory and ephemeral-storage"),
        "{refused}"
    );

    // Uninstall keeps the CRDs (resource-policy keep), and so the users' objects.
    run(&helm(), &["uninstall", &release, "-n", &op_ns], None);
    kubectl(&["get", "crd", UC_CRD], None);
    assert_eq!(uid_of("unifiedconnector", "okta-prod"), before[0].2);
    release_kept_crds();

    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs a control plane: make e2e"]
async fn collector_pod_values_reach_the_collectors_the_operator_renders() {
    use uc_testkit::okta::{OktaServer, Options, Permission};

    let mut env = TestEnv::new("collector-pod").await;
    let okta = OktaServer::start(Options {
        tokens: vec![(
            "00REPLACE_WITH_OKTA_API_TOKEN".into(),
            Permission::ReadOnlyAdmin,
        )],
        ..Options::default()
    })
    .await;
    let op_ns = env.op_ns.clone();
    let dir = std::env::temp_dir().join(format!("uc-e2e-collector-pod-{}", env.id));
    std::fs::create_dir_all(&dir).unwrap();
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            r#"
extraArgs: ["--okta-url-template={}"]
imagePullSecrets: [{{name: regcred}}]
collector:
  pod:
    resources: {{requests: {{cpu: 20m, memory: 32Mi}}, limits: {{cpu: "2", memory: 300Mi}}}}
    nodeSelector: {{pool: security}}
    tolerations: [{{key: dedicated, operator: Equal, value: security, effect: NoSchedule}}]
    affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{{matchExpressions: [{{key: zone, operator: In, values: [a]}}]}}]}}}}}}
    priorityClassName: system-cluster-critical
    labels: {{team: secops}}
    annotations: {{example.com/owner: secops}}
    env: [{{name: HTTPS_PROXY, value: "http://proxy.corp:3128"}}]
    volumes: [{{name: corp-ca, configMap: {{name: corp-ca}}}}]
    volumeMounts: [{{name: corp-ca, mountPath: /etc/uc-ca, readOnly: true}}]
    extraCaFile: /etc/uc-ca/ca.crt
"#,
            okta.url_template()
        ),
    )
    .unwrap();
    let release = format!("uc-{}", env.id);
    let chart = repo().join("charts/unified-connectors");
    run(
        &helm(),
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "--namespace",
            &op_ns,
            "-f",
            values.to_str().unwrap(),
            // The harness installed the CRDs before the chart: the chart adopts them.
            "--take-ownership",
        ],
        None,
    );
    let rendered = docs(&run(
        &helm(),
        &["get", "manifest", &release, "-n", &op_ns],
        None,
    ));
    let mut deploy = find(&rendered, "Deployment", "unified-connectors").clone();
    // No kubelet here: the operator runs as a local process, so the ConfigMap volume the chart
    // mounts is written to a file by hand, from the live ConfigMap, and the flag pointed at it.
    let settings = kubectl(
        &[
            "get",
            "configmap",
            &format!("{release}-unified-connectors-collector-pod"),
            "-n",
            &op_ns,
            "-o",
            "jsonpath={.data.settings\\.yaml}",
        ],
        None,
    );
    let settings_file = dir.join("settings.yaml");
    std::fs::write(&settings_file, settings).unwrap();
    let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array_mut()
        .unwrap();
    let flag = args
        .iter_mut()
        .find(|a| {
            a.as_str()
                .is_some_and(|a| a.starts_with("--collector-pod-settings="))
        })
        .expect("the chart passes --collector-pod-settings");
    *flag = Value::from(format!(
        "--collector-pod-settings={}",
        settings_file.display()
    ));
    let sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_string();
    let kubeconfig = kubeconfig_for(&sa, &op_ns, &dir);
    let _op = ChartOperator::start(&deploy, &op_ns, &kubeconfig, &format!("{release}-local-0"));

    let user_ns = env.namespace("collector-pod-user").await;
    apply_server_side(&kustomize("config/samples"), Some(&user_ns));
    let collector = wait_for("the collector to be named", CONVERGE, || async {
        let name = kubectl(
            &[
                "get",
                "unifiedconnector",
                "okta-prod",
                "-n",
                &user_ns,
                "-o",
                "jsonpath={.status.collector}",
            ],
            None,
        );
        if name.is_empty() {
            Err("no status.collector yet".to_string())
        } else {
            Ok(name)
        }
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &op_ns);
    let pod_spec = |d: &Deployment| d.spec.clone().unwrap().template;
    let d = wait_for("the collector Deployment", CONVERGE, || async {
        deployments.get(&collector).await.map_err(|e| e.to_string())
    })
    .await;
    let t = pod_spec(&d);
    let meta = t.metadata.unwrap();
    assert_eq!(meta.labels.unwrap()["team"], "secops");
    assert_eq!(meta.annotations.unwrap()["example.com/owner"], "secops");
    let pod = t.spec.unwrap();
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
    assert_eq!(pod.node_selector.unwrap()["pool"], "security");
    assert_eq!(
        pod.tolerations.unwrap()[0].value.as_deref(),
        Some("security")
    );
    assert!(pod.affinity.unwrap().node_affinity.is_some());
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert!(pod.volumes.unwrap().iter().any(|v| v.name == "corp-ca"));
    let c = &pod.containers[0];
    let env_of = |name: &str| {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        env_of("HTTPS_PROXY").as_deref(),
        Some("http://proxy.corp:3128")
    );
    assert_eq!(
        env_of("UC_EXTRA_CA_FILE").as_deref(),
        Some("/etc/uc-ca/ca.crt")
    );
    assert!(
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/etc/uc-ca")
    );
    let limits = c.resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["memory"].0, "300Mi");

    // The connector's own settings win for its collector: resources by key, the ServiceAccount.
    kubectl(
        &[
            "patch",
            "unifiedconnector",
            "okta-prod",
            "-n",
            &user_ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"collector":{"serviceAccountName":"okta-wi","resources":{"limits":{"memory":"1Gi"}}}}}"#,
        ],
        None,
    );
    wait_for("the connector's collector settings", CONVERGE, || async {
        let d = deployments
            .get(&collector)
            .await
            .map_err(|e| e.to_string())?;
        let pod = pod_spec(&d).spec.unwrap();
        let limits = pod.containers[0].resources.clone().unwrap().limits.unwrap();
        if pod.service_account_name.as_deref() == Some("okta-wi")
            && limits["memory"].0 == "1Gi"
            && limits["cpu"].0 == "2"
        {
            Ok(())
        } else {
            Err(format!(
                "serviceAccountName {:?}, limits {limits:?}",
                pod.service_account_name
            ))
        }
    })
    .await;

    run(&helm(), &["uninstall", &release, "-n", &op_ns], None);
    release_kept_crds();
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}
