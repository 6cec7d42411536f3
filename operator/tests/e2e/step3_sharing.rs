//! Step 3: one collector per source. Three connectors in two namespaces for one Okta org
//! (spelled differently) and one for another org make exactly two collector Deployments, each
//! with its ConfigMap and Secret; deleting connectors and bindings one by one removes a
//! collector only with its last user, and nothing is left behind.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use unified_connectors::contract::{CONFIG_KEY, CollectorConfig};

use crate::support::world::{GOOD_TOKEN, connector};
use crate::support::{CONVERGE, TestEnv, World, stays, wait_for};

/// The products listed in the collector's rendered config.
async fn products_of(env: &TestEnv, collector: &str) -> Vec<String> {
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), &env.op_ns)
        .get(collector)
        .await
        .unwrap();
    let text = cm
        .data
        .unwrap_or_default()
        .remove(CONFIG_KEY)
        .expect("collector ConfigMap without collector.yaml");
    let cfg: CollectorConfig =
        serde_saphyr::from_str(&text).expect("collector.yaml does not parse as the contract");
    let mut ids: Vec<String> = cfg.products.into_iter().map(|p| p.id).collect();
    ids.sort();
    ids
}

/// Waits until the test's collectors are exactly `expected` (names of the Deployments'
/// source annotations contain the domain), and returns their names keyed by domain.
async fn wait_collectors(env: &TestEnv, expected: &[&str]) -> Vec<(String, String)> {
    let mut expected: Vec<String> = expected.iter().map(|d| format!("okta:{d}")).collect();
    expected.sort();
    wait_for(
        &format!("collectors for {expected:?}"),
        CONVERGE,
        || async {
            let mut found: Vec<(String, String)> = env
                .collectors()
                .await
                .into_iter()
                .filter(|d| d.metadata.deletion_timestamp.is_none())
                .map(|d| {
                    let src =
                        d.metadata.annotations.unwrap_or_default()["connectors.unified.dev/source"]
                            .clone();
                    (src, d.metadata.name.unwrap())
                })
                .collect();
            found.sort();
            let sources: Vec<String> = found.iter().map(|(s, _)| s.clone()).collect();
            if sources == expected {
                Ok(found)
            } else {
                Err(format!("{sources:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn one_collector_per_source_and_removed_with_its_last_user() {
    let mut env = TestEnv::new("sharing").await;
    let world = World::start().await;
    let args = world.operator_args();
    let _op = env.start_operator(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let a = env.namespace("team-a").await;
    let b = env.namespace("team-b").await;
    world.secrets(&env, &a, GOOD_TOKEN).await;
    world.secrets(&env, &b, GOOD_TOKEN).await;

    let acme = env.domain("acme");
    let other = env.domain("other");
    // Same org three times: plain, upper case with a trailing dot (normalised to the same
    // identity), and from another namespace.
    env.apply(&a, &connector("c1", &acme, "okta-token"))
        .await
        .unwrap();
    env.apply(
        &a,
        &connector("c2", &format!("{}.", acme.to_uppercase()), "okta-token"),
    )
    .await
    .unwrap();
    env.apply(&b, &connector("c3", &acme, "okta-token"))
        .await
        .unwrap();
    env.apply(&b, &connector("c4", &other, "okta-token"))
        .await
        .unwrap();
    env.apply(&a, &world.splunk("b1", "c1")).await.unwrap();
    env.apply(&a, &world.webhook("b2", "c2")).await.unwrap();
    env.apply(&b, &world.sentinel("b3", "c3")).await.unwrap();
    env.apply(&b, &world.webhook("b4", "c4")).await.unwrap();

    let collectors = wait_collectors(&env, &[&acme, &other]).await;
    let acme_collector = collectors
        .iter()
        .find(|(s, _)| s.ends_with(&acme))
        .unwrap()
        .1
        .clone();
    let other_collector = collectors
        .iter()
        .find(|(s, _)| s.ends_with(&other))
        .unwrap()
        .1
        .clone();

    // Each collector has its ConfigMap and Secret, mounted by its Deployment.
    for name in [&acme_collector, &other_collector] {
        let d = Api::<Deployment>::namespaced(env.client.clone(), &env.op_ns)
            .get(name)
            .await
            .unwrap();
        let vols = d
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .volumes
            .unwrap_or_default();
        let cm = vols
            .iter()
            .find_map(|v| v.config_map.as_ref().map(|c| c.name.clone()))
            .expect("no ConfigMap volume");
        let secret = vols
            .iter()
            .find_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()))
            .expect("no Secret volume");
        Api::<ConfigMap>::namespaced(env.client.clone(), &env.op_ns)
            .get(&cm)
            .await
            .unwrap();
        Api::<Secret>::namespaced(env.client.clone(), &env.op_ns)
            .get(&secret)
            .await
            .unwrap();
    }
    // The shared collector feeds all three bindings of its org; the other feeds one.
    let want = vec![format!("{a}/b1"), format!("{a}/b2"), format!("{b}/b3")];
    wait_for(
        "the shared collector to list the three products",
        CONVERGE,
        || async {
            let got = products_of(&env, &acme_collector).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        products_of(&env, &other_collector).await,
        vec![format!("{b}/b4")]
    );
    // Every connector names its collector in status.
    for (ns, c, collector) in [
        (&a, "c1", &acme_collector),
        (&a, "c2", &acme_collector),
        (&b, "c3", &acme_collector),
        (&b, "c4", &other_collector),
    ] {
        wait_for(&format!("{c} to name its collector"), CONVERGE, || async {
            let obj = env.get(ns, "UnifiedConnector", c).await.unwrap();
            if obj["status"]["collector"] == collector.as_str() {
                Ok(())
            } else {
                Err(obj["status"].to_string())
            }
        })
        .await;
    }

    // Remove users of the shared org one by one: the collector stays until the last one goes.
    let still_two = || async {
        let n = env.collectors().await.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} collectors"))
        }
    };
    env.delete(&a, "ProductBinding", "b1").await;
    env.delete(&a, "UnifiedConnector", "c1").await;
    wait_for("c1 to be gone", CONVERGE, || async {
        if env.get(&a, "UnifiedConnector", "c1").await.is_none() {
            Ok(())
        } else {
            Err("still there")
        }
    })
    .await;
    stays(
        "two collectors after removing c1",
        Duration::from_secs(3),
        still_two,
    )
    .await;

    env.delete(&a, "UnifiedConnector", "c2").await; // its binding b2 now dangles
    wait_for("c2 to be gone", CONVERGE, || async {
        if env.get(&a, "UnifiedConnector", "c2").await.is_none() {
            Ok(())
        } else {
            Err("still there")
        }
    })
    .await;
    stays(
        "two collectors after removing c2",
        Duration::from_secs(3),
        still_two,
    )
    .await;
    wait_for("the shared collector to keep only b3", CONVERGE, || async {
        let got = products_of(&env, &acme_collector).await;
        if got == vec![format!("{b}/b3")] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;

    env.delete(&b, "UnifiedConnector", "c3").await;
    wait_collectors(&env, &[&other]).await;
    // Its ConfigMap, Secret and state ConfigMap went with it.
    wait_for(
        "no object of the shared collector left",
        CONVERGE,
        || async {
            let left: Vec<String> = env
                .managed_objects()
                .await
                .into_iter()
                .filter(|o| o.contains(&acme_collector))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;

    env.delete(&b, "ProductBinding", "b4").await;
    env.delete(&b, "UnifiedConnector", "c4").await;
    wait_collectors(&env, &[]).await;
    wait_for("no orphan in the operator namespace", CONVERGE, || async {
        let left = env.managed_objects().await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    for (ns, c) in [(&b, "c3"), (&b, "c4")] {
        wait_for(&format!("{c} to be gone"), CONVERGE, || async {
            if env.get(ns, "UnifiedConnector", c).await.is_none() {
                Ok(())
            } else {
                Err("still there (finalizer?)")
            }
        })
        .await;
    }
    env.cleanup().await;
}
