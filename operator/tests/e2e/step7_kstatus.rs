//! Step 7: Flux's view. sigs.k8s.io/cli-utils kstatus (what Flux's health checks and
//! `flux ... --wait` use) judges our resources: `Failed` when stalled (a credential a person
//! must fix), `InProgress` while reconciling (no data yet), `Current` once data flows.

use crate::step6_dataflow::{FLOW, generate};
use crate::support::world::{GOOD_TOKEN, connector, setup};
use crate::support::{CONVERGE, LocalCollector, kstatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn kstatus_sees_failed_then_in_progress_then_current() {
    let (env, world, _op, ns) = setup("kstatus").await;
    let domain = env.domain("ks");
    generate(&world, &uc_testkit::okta::normalize_org(&domain), 20);

    // Stalled: the Secret does not exist.
    env.apply(&ns, &connector("okta", &domain, "later"))
        .await
        .unwrap();
    env.apply(&ns, &world.splunk("to-splunk", "okta"))
        .await
        .unwrap();
    let failed = env
        .wait_phase(&ns, "UnifiedConnector", "okta", "Error", CONVERGE)
        .await;
    let v = kstatus::compute(&failed);
    assert_eq!(v.status, "Failed", "{v:?}");
    assert!(
        v.message.contains("later"),
        "kstatus should relay the actionable message: {v:?}"
    );

    // Reconciling: fixed, but no data has flowed yet (the collector is not running).
    env.put_secret(&ns, "later", &[("token", GOOD_TOKEN)]).await;
    let pending = env
        .wait_phase(&ns, "UnifiedConnector", "okta", "Pending", CONVERGE)
        .await;
    assert_eq!(kstatus::compute(&pending).status, "InProgress");
    let binding = env.get(&ns, "ProductBinding", "to-splunk").await.unwrap();
    assert_eq!(
        kstatus::compute(&binding).status,
        "InProgress",
        "{}",
        binding["status"]
    );

    // Current: data reaches the product.
    let collector = env.first_collector().await;
    let local = LocalCollector::start(&env.client, &env.op_ns, &collector)
        .await
        .unwrap();
    let received = world.hec.received();
    assert!(
        received.wait_for_unique(20, FLOW).await,
        "Splunk received {} of 20 events; Okta saw {:?}; collector log:\n{}",
        received.unique(),
        world.okta.requests(),
        local.log()
    );
    let ready = env
        .wait_phase(&ns, "UnifiedConnector", "okta", "Ready", FLOW)
        .await;
    assert_eq!(kstatus::compute(&ready).status, "Current");
    let binding = env
        .wait_phase(&ns, "ProductBinding", "to-splunk", "Ready", FLOW)
        .await;
    assert_eq!(kstatus::compute(&binding).status, "Current");
    env.cleanup().await;
}
