//! Step 6: data flows end to end. The operator renders a collector; the collector runs as a
//! local process from that very Deployment (command, args, env, mounted ConfigMap and Secret);
//! a connector with three bindings (Sentinel, Splunk HEC, webhook) goes Pending -> Ready, each
//! product receives every event exactly once, and the Okta test server sees one stream of
//! requests, not three.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use uc_testkit::okta::GenerateOptions;

use crate::support::world::{connector, setup};
use crate::support::{CONVERGE, LocalCollector, World, kstatus, wait_for};

/// Reports are persisted every few seconds and rolled up by the operator: allow for both.
pub const FLOW: Duration = Duration::from_secs(120);

/// Events served to `org` by `/api/v1/logs` requests other than the operator's `limit=1` token
/// checks, and the number of such checks.
pub fn served_to_collector(world: &World, org: &str) -> (usize, usize) {
    let mut served = 0;
    let mut checks = 0;
    for r in world
        .okta
        .requests()
        .into_iter()
        .filter(|r| r.org == org && r.status == 200)
    {
        let limit = url::form_urlencoded::parse(r.query.trim_start_matches('?').as_bytes())
            .find(|(k, _)| k == "limit")
            .map(|(_, v)| v.into_owned());
        if limit.as_deref() == Some("1") {
            checks += 1;
        } else {
            served += r.events;
        }
    }
    (served, checks)
}

pub fn generate(world: &World, org: &str, n: usize) -> Vec<String> {
    let opts = GenerateOptions {
        start: Some(chrono::Utc::now() - chrono::Duration::minutes(10)),
        spacing_ms: 100,
        ..GenerateOptions::default()
    };
    world.okta.generate_events(org, n, &opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn events_flow_exactly_once_to_three_products_from_one_okta_stream() {
    let (env, world, _op, ns) = setup("flow").await;

    let domain = env.domain("flow");
    let org = uc_testkit::okta::normalize_org(&domain);
    const N: usize = 300;
    let uuids = generate(&world, &org, N);
    assert_eq!(uuids.len(), N);

    env.apply(&ns, &connector("okta", &domain, "okta-token"))
        .await
        .unwrap();
    for b in [
        world.sentinel("to-sentinel", "okta"),
        world.splunk("to-splunk", "okta"),
        world.webhook("to-webhook", "okta"),
    ] {
        env.apply(&ns, &b).await.unwrap();
    }

    // Without a running collector the connector is accepted but Pending.
    let collector = env.first_collector().await;
    let pending = env
        .wait_phase(&ns, "UnifiedConnector", "okta", "Pending", CONVERGE)
        .await;
    assert_eq!(
        kstatus::compute(&pending).status,
        "InProgress",
        "Flux must wait while Pending"
    );

    let mut local = LocalCollector::start(&env.client, &env.op_ns, &collector)
        .await
        .expect("start the collector from its Deployment");
    for (name, server) in [
        ("sentinel", world.azure.received()),
        ("splunk", world.hec.received()),
        ("webhook", world.webhook.received()),
    ] {
        assert!(
            server.wait_for_unique(N, FLOW).await,
            "{name} received {} of {N} events; collector log:\n{}",
            server.unique(),
            local.log()
        );
    }
    let ready = env
        .wait_phase(&ns, "UnifiedConnector", "okta", "Ready", FLOW)
        .await;
    assert_eq!(
        kstatus::compute(&ready).status,
        "Current",
        "Flux must see a Ready connector as Current"
    );
    for b in ["to-sentinel", "to-splunk", "to-webhook"] {
        let obj = env
            .wait_phase(&ns, "ProductBinding", b, "Ready", FLOW)
            .await;
        assert_eq!(kstatus::compute(&obj).status, "Current", "{b}");
    }

    // Let a few more polls happen, then check exactly-once and the single stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        local.is_running(),
        "the collector exited; log:\n{}",
        local.log()
    );
    for (name, received) in [
        ("sentinel", world.azure.received()),
        ("splunk", world.hec.received()),
        ("webhook", world.webhook.received()),
    ] {
        assert_eq!(
            received.duplicates(),
            0,
            "{name} got duplicates: {:?}",
            received.duplicated()
        );
        assert!(received.missing(&uuids).is_empty(), "{name} misses events");
        assert_eq!(
            received.unique(),
            N,
            "{name} got events that Okta never served"
        );
    }
    let (served, checks) = served_to_collector(&world, &org);
    assert!(
        (N..2 * N).contains(&served),
        "Okta served {served} events for {N}: more than one stream"
    );
    assert!(
        checks <= 3,
        "{checks} token checks: the operator polls Okta"
    );

    // The collector wrote its state ConfigMap; removing the connector removes it too, with
    // the Deployment, its ConfigMap and Secret: no orphan once data has flowed.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.op_ns);
    let state = format!("{collector}-state");
    assert!(
        cms.get_opt(&state).await.unwrap().is_some(),
        "the collector did not write {state}"
    );
    local.kill();
    env.delete(&ns, "UnifiedConnector", "okta").await;
    wait_for("no object of the collector left", CONVERGE, || async {
        let mut left: Vec<String> = env
            .managed_objects()
            .await
            .into_iter()
            .filter(|o| o.contains(&collector))
            .collect();
        if cms.get_opt(&state).await.unwrap().is_some() {
            left.push(format!("ConfigMap/{state}"));
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    env.cleanup().await;
}
