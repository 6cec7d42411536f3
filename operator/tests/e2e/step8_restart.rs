//! Step 8: killing the operator mid-way (SIGKILL, no clean shutdown) and starting it again
//! converges to the same state as an uninterrupted run: one collector per source listing every
//! product, no duplicate objects, statuses observed at the current generation, and once
//! converged nothing keeps changing.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use unified_connectors::contract::{CONFIG_KEY, CollectorConfig};

use crate::support::world::{connector, setup};
use crate::support::{CONVERGE, TestEnv, stays, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn killing_the_operator_midway_converges_to_the_same_state() {
    let (env, world, mut op, ns) = setup("restart").await;

    // First half while the operator runs...
    let domains: Vec<String> = (0..3).map(|i| env.domain(&format!("r{i}"))).collect();
    for (i, d) in domains.iter().enumerate() {
        env.apply(&ns, &connector(&format!("c{i}"), d, "okta-token"))
            .await
            .unwrap();
        env.apply(
            &ns,
            &world.splunk(&format!("c{i}-splunk"), &format!("c{i}")),
        )
        .await
        .unwrap();
    }
    wait_for("a first collector", CONVERGE, || async {
        if env.collectors().await.is_empty() {
            Err("none yet")
        } else {
            Ok(())
        }
    })
    .await;
    // ...killed mid-way, while more changes arrive...
    op.kill();
    for i in 0..3 {
        env.apply(&ns, &world.webhook(&format!("c{i}-hook"), &format!("c{i}")))
            .await
            .unwrap();
    }
    env.delete(&ns, "ProductBinding", "c2-splunk").await;
    // ...and started again.
    op.restart();

    // Same state as an uninterrupted run.
    let want: BTreeMap<String, Vec<String>> = BTreeMap::from([
        (
            format!("okta:{}", domains[0]),
            vec![format!("{ns}/c0-hook"), format!("{ns}/c0-splunk")],
        ),
        (
            format!("okta:{}", domains[1]),
            vec![format!("{ns}/c1-hook"), format!("{ns}/c1-splunk")],
        ),
        (
            format!("okta:{}", domains[2]),
            vec![format!("{ns}/c2-hook")],
        ),
    ]);
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.op_ns);
    wait_for("collectors to list exactly the live bindings", CONVERGE, || async {
        let mut got = BTreeMap::new();
        for d in env.collectors().await {
            let src = d.metadata.annotations.clone().unwrap_or_default()["connectors.unified.dev/source"].clone();
            let name = d.metadata.name.clone().unwrap();
            let Some(cm) = cms.get_opt(&name).await.map_err(|e| e.to_string())? else {
                return Err(format!("{name} has no ConfigMap yet"));
            };
            let text = cm.data.unwrap_or_default().remove(CONFIG_KEY).unwrap_or_default();
            let cfg: CollectorConfig = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
            let mut ids: Vec<String> = cfg.products.into_iter().map(|p| p.id).collect();
            ids.sort();
            if got.insert(src.clone(), ids).is_some() {
                return Err(format!("two Deployments for {src}"));
            }
        }
        if got == want { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
    // Exactly one Deployment, config ConfigMap and Secret per source (the state ConfigMap is
    // the collector's own and appears only once a collector runs).
    let objects = env.managed_objects().await;
    let deployments = objects
        .iter()
        .filter(|o| o.starts_with("Deployment/"))
        .count();
    let secrets = objects.iter().filter(|o| o.starts_with("Secret/")).count();
    assert_eq!((deployments, secrets), (3, 3), "{objects:?}");
    for i in 0..3 {
        env.wait_phase(
            &ns,
            "UnifiedConnector",
            &format!("c{i}"),
            "Pending",
            CONVERGE,
        )
        .await;
    }

    // Every binding names the collector serving it, as in an uninterrupted run.
    for b in ["c0-hook", "c0-splunk", "c1-hook", "c1-splunk", "c2-hook"] {
        wait_for(&format!("{b} to name its collector"), CONVERGE, || async {
            let obj = env.get(&ns, "ProductBinding", b).await.unwrap();
            if obj["status"]["collector"].is_string() {
                Ok(())
            } else {
                Err(obj["status"].to_string())
            }
        })
        .await;
    }

    // Converged means quiet: once nothing has changed for 3 s, nothing changes for 10 s more
    // (a reconcile loop would keep bumping resourceVersions).
    let last = std::sync::Mutex::new(versions(&env, &ns).await);
    wait_for("the objects to settle", CONVERGE, || async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = versions(&env, &ns).await;
        let before = std::mem::replace(&mut *last.lock().unwrap(), now.clone());
        if now == before {
            Ok(())
        } else {
            Err(format!("changed: {:?}", diff(&before, &now)))
        }
    })
    .await;
    let snapshot = versions(&env, &ns).await;
    stays(
        "no further writes after convergence",
        Duration::from_secs(10),
        || async {
            let now = versions(&env, &ns).await;
            if now == snapshot {
                Ok(())
            } else {
                Err(format!("changed: {:?}", diff(&snapshot, &now)))
            }
        },
    )
    .await;
    assert!(op.is_running(), "the restarted operator exited");
    env.cleanup().await;
}

/// resourceVersion of every connector, binding and managed object of the test.
async fn versions(env: &TestEnv, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for kind in ["UnifiedConnector", "ProductBinding"] {
        let api = crate::support::cluster::dynamic_api(
            &env.client,
            ns,
            &serde_json::json!({"apiVersion": crate::support::world::API_VERSION, "kind": kind}),
        );
        for o in api.list(&Default::default()).await.unwrap() {
            // The status too: a diff then shows what keeps changing.
            let status = o
                .data
                .get("status")
                .map(|s| s.to_string())
                .unwrap_or_default();
            out.insert(
                format!("{kind}/{}", o.metadata.name.unwrap()),
                format!("{} {status}", o.metadata.resource_version.unwrap()),
            );
        }
    }
    for d in env.collectors().await {
        out.insert(
            format!("Deployment/{}", d.metadata.name.unwrap()),
            d.metadata.resource_version.unwrap(),
        );
    }
    out
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: {} -> {v}",
                a.get(k).map(String::as_str).unwrap_or("(none)")
            )
        })
        .collect()
}
