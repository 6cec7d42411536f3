//! Step 5: rotating a connector's Secret rolls its collector: the collector's own Secret gets
//! the new token, the Deployment's pod template changes (a new ReplicaSet, made by the real
//! kube-controller-manager), and nothing else about the collector changes.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use uc_testkit::okta::Permission;
use unified_connectors::contract::OKTA_TOKEN_KEY;

use crate::support::world::{GOOD_TOKEN, connector, setup};
use crate::support::{CONVERGE, wait_for};

const ROTATED: &str = "00rotated-okta-token-e2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn rotating_the_secret_rolls_the_collector() {
    let (env, world, _op, ns) = setup("rotate").await;
    world.okta.add_token(ROTATED, Permission::ReadOnlyAdmin);
    env.apply(&ns, &connector("okta", &env.domain("rot"), "okta-token"))
        .await
        .unwrap();
    env.apply(&ns, &world.splunk("to-splunk", "okta"))
        .await
        .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.op_ns);
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    let name = env.first_collector().await;
    let token_in = |s: Secret| -> String {
        String::from_utf8(
            s.data
                .unwrap_or_default()
                .get(OKTA_TOKEN_KEY)
                .map(|b| b.0.clone())
                .unwrap_or_default(),
        )
        .unwrap()
    };
    assert_eq!(token_in(secrets.get(&name).await.unwrap()), GOOD_TOKEN);
    let before = deployments.get(&name).await.unwrap();
    let template_before = before.spec.as_ref().unwrap().template.clone();
    let rs_selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={name}"));
    let replicasets: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.op_ns);
    wait_for("the first ReplicaSet", CONVERGE, || async {
        let n = replicasets.list(&rs_selector).await.unwrap().items.len();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} ReplicaSets"))
        }
    })
    .await;

    // Rotate.
    env.put_secret(&ns, "okta-token", &[("token", ROTATED)])
        .await;
    wait_for(
        "the collector Secret to hold the new token",
        CONVERGE,
        || async {
            let t = token_in(secrets.get(&name).await.unwrap());
            if t == ROTATED {
                Ok(())
            } else {
                Err("old token".to_string())
            }
        },
    )
    .await;
    let after = wait_for("the pod template to change", CONVERGE, || async {
        let d = deployments.get(&name).await.unwrap();
        if d.spec.as_ref().unwrap().template != template_before {
            Ok(d)
        } else {
            Err("same template")
        }
    })
    .await;
    // Only the template's annotations changed (the rollout trigger), not the pod itself.
    let (mut t0, mut t1) = (
        template_before.clone(),
        after.spec.as_ref().unwrap().template.clone(),
    );
    let a0 = t0
        .metadata
        .as_mut()
        .and_then(|m| m.annotations.take())
        .unwrap_or_default();
    let a1 = t1
        .metadata
        .as_mut()
        .and_then(|m| m.annotations.take())
        .unwrap_or_default();
    assert_ne!(a0, a1, "the template changed outside its annotations");
    assert_eq!(t0, t1, "rotation changed more than the rollout annotation");
    wait_for("a second ReplicaSet (the roll)", CONVERGE, || async {
        let n = replicasets.list(&rs_selector).await.unwrap().items.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} ReplicaSets"))
        }
    })
    .await;
    // The token value never shows in the Deployment.
    assert!(!serde_json::to_string(&after).unwrap().contains(ROTATED));
    env.cleanup().await;
}
