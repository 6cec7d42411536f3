//! One team's object never harms another (issue 9, findings 1, 2, 3 and 8) on the real control
//! plane: a binding the collector would refuse is left out and named while another team's data
//! keeps flowing; a config over 1 MiB names the bindings left out; multi-byte text in any field
//! never crashes the operator; two bindings to one destination are told about each other.

use std::time::Duration;

use serde_json::json;

use crate::support::cluster::condition;
use crate::support::world::{GOOD_TOKEN, binding, connector, setup};
use crate::support::{CONVERGE, LocalCollector, wait_for};

const FLOW: Duration = crate::step6_dataflow::FLOW;

/// Waits until binding `ns/name` has condition Ready with `reason`, and returns its message.
async fn wait_reason(env: &crate::support::TestEnv, ns: &str, name: &str, reason: &str) -> String {
    wait_for(
        &format!("ProductBinding {ns}/{name} to have reason {reason}"),
        CONVERGE,
        || async {
            let obj = env
                .get(ns, "ProductBinding", name)
                .await
                .ok_or("not found".to_string())?;
            match condition(&obj, "Ready") {
                Some((_, r, m)) if r == reason => Ok(m),
                _ => Err(format!("status: {}", obj["status"])),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn a_bad_binding_of_one_team_never_interrupts_another() {
    let (mut env, world, op, team_a) = setup("isolation").await;
    let team_b = env.namespace("team-b").await;
    world.secrets(&env, &team_b, GOOD_TOKEN).await;
    let domain = env.domain("shared");
    let org = uc_testkit::okta::normalize_org(&domain);
    let uuids = crate::step6_dataflow::generate(&world, &org, 200);

    env.apply(&team_a, &connector("okta", &domain, "okta-token"))
        .await
        .unwrap();
    env.apply(&team_a, &world.webhook("to-hook", "okta"))
        .await
        .unwrap();
    // Team B names the same source and a Splunk HEC with an empty sourcetype: the API server
    // accepts it, the collector would refuse it.
    env.apply(&team_b, &connector("okta", &domain, "okta-token"))
        .await
        .unwrap();
    let mut bad = world.splunk("bad-hec", "okta");
    bad["spec"]["product"]["splunkHec"]["sourcetype"] = json!("");
    env.apply(&team_b, &bad)
        .await
        .expect("the API server accepts it");

    let message = wait_reason(&env, &team_b, "bad-hec", "InvalidProductSettings").await;
    assert!(
        message.contains("spec.product.splunkHec.sourcetype"),
        "the message names the field: {message}"
    );
    let obj = env.get(&team_b, "ProductBinding", "bad-hec").await.unwrap();
    assert_eq!(obj["status"]["phase"], "Error");
    assert_eq!(condition(&obj, "Stalled").unwrap().0, "True");

    // The collector runs from the Deployment as rendered with team B's binding present.
    let collector = env.first_collector().await;
    let mut local = LocalCollector::start(&env.client, &env.op_ns, &collector)
        .await
        .expect("start the collector");
    assert!(
        world
            .webhook
            .received()
            .wait_for_unique(uuids.len(), FLOW)
            .await,
        "team A received {} of {} events; collector log:\n{}",
        world.webhook.received().unique(),
        uuids.len(),
        local.log()
    );
    env.wait_phase(&team_a, "ProductBinding", "to-hook", "Ready", FLOW)
        .await;
    assert!(world.webhook.received().missing(&uuids).is_empty());

    // Team A stays Ready while team B's binding stays broken, and new events keep arriving.
    let more = crate::step6_dataflow::generate(&world, &org, 50);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end {
        let obj = env.get(&team_a, "ProductBinding", "to-hook").await.unwrap();
        assert_eq!(obj["status"]["phase"], "Ready", "team A: {}", obj["status"]);
        assert!(local.is_running(), "the collector exited:\n{}", local.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        world.webhook.received().missing(&more).is_empty(),
        "events generated later did not reach team A"
    );
    assert_eq!(
        world.hec.received().unique(),
        0,
        "team B's binding is left out"
    );

    // A second binding of team A to the same destination: both are told, naming each other.
    env.apply(&team_a, &world.webhook("to-hook-again", "okta"))
        .await
        .unwrap();
    let first = wait_reason(&env, &team_a, "to-hook", "DuplicateDestination").await;
    assert!(
        first.contains(&format!("{team_a}/to-hook-again")),
        "{first}"
    );
    // Roll the collector onto the config that holds the new binding, as a kubelet would.
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(env.client.clone(), &env.op_ns);
    wait_for("the config to hold the new binding", CONVERGE, || async {
        let cm = cms.get(&collector).await.map_err(|e| e.to_string())?;
        let text: String = cm.data.unwrap_or_default().into_values().collect();
        if text.contains("to-hook-again") {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    local.kill();
    let mut local = LocalCollector::start(&env.client, &env.op_ns, &collector)
        .await
        .expect("restart the collector");
    // New events after the restart, so both bindings deliver again.
    let after = crate::step6_dataflow::generate(&world, &org, 20);
    let second = wait_reason(&env, &team_a, "to-hook-again", "DuplicateDestination").await;
    assert!(second.contains(&format!("{team_a}/to-hook")), "{second}");
    assert!(
        world.webhook.received().missing(&after).is_empty(),
        "events after the restart did not arrive"
    );
    env.delete(&team_a, "ProductBinding", "to-hook-again").await;
    env.wait_phase(&team_a, "ProductBinding", "to-hook", "Ready", CONVERGE)
        .await;

    local.kill();
    drop(op);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn a_config_over_one_mebibyte_names_the_bindings_left_out() {
    let (env, world, _op, ns) = setup("oversize").await;
    let domain = env.domain("big");
    env.apply(&ns, &connector("okta", &domain, "okta-token"))
        .await
        .unwrap();
    // Ten webhooks with 30 headers of 4,000 bytes each: about 1.2 MB of config in all.
    const N: usize = 10;
    for i in 0..N {
        let headers: serde_json::Map<String, serde_json::Value> = (0..30)
            .map(|h| (format!("X-Route-{h}"), json!(format!("{i}").repeat(4000))))
            .collect();
        let b = binding(
            &format!("hook-{i}"),
            "okta",
            json!({"webhook": {
                "url": format!("{}/hook/{i}", world.webhook.url()),
                "signingSecretRef": {"name": "webhook-secret", "key": "secret"},
                "headers": headers,
            }}),
        );
        env.apply(&ns, &b).await.unwrap();
    }
    let too_large = wait_for("every binding reconciled", CONVERGE, || async {
        let mut too_large = Vec::new();
        for i in 0..N {
            let name = format!("hook-{i}");
            let obj = env.get(&ns, "ProductBinding", &name).await.unwrap();
            match condition(&obj, "Ready") {
                None => return Err(format!("{name} has no status yet")),
                Some((_, r, m)) if r == "CollectorConfigTooLarge" => {
                    assert!(m.contains("1 MiB"), "{m}");
                    too_large.push(name)
                }
                Some(_) => {}
            }
        }
        if too_large.is_empty() {
            Err("no binding reports CollectorConfigTooLarge".to_string())
        } else {
            Ok(too_large)
        }
    })
    .await;
    assert!(
        (1..N).contains(&too_large.len()),
        "only the bindings that push it over are left out: {too_large:?}"
    );
    let collector = env.first_collector().await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(env.client.clone(), &env.op_ns);
    let cm = cms.get(&collector).await.unwrap();
    let left_out = &cm.metadata.annotations.unwrap()["connectors.unified.dev/left-out"];
    for name in &too_large {
        assert!(left_out.contains(&format!("{ns}/{name}")), "{left_out}");
    }
    let size: usize = cm.data.unwrap().values().map(String::len).sum();
    assert!(size < 1024 * 1024, "{size} bytes");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn multi_byte_names_never_crash_the_operator() {
    let (env, _world, mut op, ns) = setup("multibyte").await;
    let domain = env.domain("emoji");
    // 249 four-byte characters: 996 bytes of name, so every message naming it passes 1,000 bytes.
    let name = "😀".repeat(249);
    env.apply(&ns, &connector("okta", &domain, &name))
        .await
        .expect("the API server accepts any 253 characters");
    let obj = env
        .wait_phase(&ns, "UnifiedConnector", "okta", "Error", CONVERGE)
        .await;
    let (_, reason, message) = condition(&obj, "Ready").unwrap();
    assert!(reason.starts_with("Secret"), "{reason}: {message}");
    // Its Event went out too (cut on a character boundary); the operator is still up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(op.is_running(), "the operator crashed:\n{}", op.log());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn dangerous_targets_are_refused_and_no_token_goes_there() {
    let (env, world, _op, ns) = setup("targets").await;
    for (name, domain, text) in [
        (
            "internal",
            "kubernetes.default.svc",
            "--allow-source-domain",
        ),
        ("metadata", "169.254.169.254", "never sent there"),
    ] {
        env.apply(&ns, &connector(name, domain, "okta-token"))
            .await
            .expect("the schema accepts the name; the operator refuses it");
        let obj = env
            .wait_phase(&ns, "UnifiedConnector", name, "Error", CONVERGE)
            .await;
        let (_, reason, message) = condition(&obj, "Ready").unwrap();
        assert_eq!(reason, "SourceDomainRefused", "{message}");
        assert!(message.contains(text), "{message}");
    }
    let asked: Vec<String> = world.okta.requests().into_iter().map(|r| r.org).collect();
    assert!(
        !asked
            .iter()
            .any(|o| o.contains("kubernetes") || o.contains("169.254")),
        "the operator sent a token check to a refused domain: {asked:?}"
    );

    let domain = env.domain("targets");
    env.apply(&ns, &connector("okta", &domain, "okta-token"))
        .await
        .unwrap();
    let webhook = |name: &str, url: &str, headers: serde_json::Value| {
        binding(
            name,
            "okta",
            json!({"webhook": {
                "url": url,
                "signingSecretRef": {"name": "webhook-secret", "key": "secret"},
                "headers": headers,
            }}),
        )
    };
    for (name, b, field) in [
        (
            "metadata-hook",
            webhook("metadata-hook", "http://169.254.169.254/latest", json!({})),
            "metadata",
        ),
        (
            "password-hook",
            webhook(
                "password-hook",
                &format!(
                    "http://user:pw@{}",
                    world.webhook.url().trim_start_matches("http://")
                ),
                json!({}),
            ),
            "password",
        ),
        (
            "auth-header",
            webhook(
                "auth-header",
                &world.webhook.url(),
                json!({"Authorization": "Bearer x"}),
            ),
            "Authorization",
        ),
        (
            "signature-header",
            webhook(
                "signature-header",
                &world.webhook.url(),
                json!({"webhook-signature": "v1,x"}),
            ),
            "webhook-signature",
        ),
    ] {
        env.apply(&ns, &b).await.unwrap();
        let message = wait_reason(&env, &ns, name, "InvalidProductSettings").await;
        assert!(message.contains(field), "{name}: {message}");
        assert!(
            !message.contains("Bearer x") && !message.contains(":pw@"),
            "{message}"
        );
    }
    // None of them reached a collector: with no usable binding there is none.
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(env.client.clone(), &env.op_ns);
    for d in env.collectors().await {
        let cm = cms.get(&d.metadata.name.unwrap()).await.unwrap();
        let text: String = cm.data.unwrap_or_default().into_values().collect();
        for bad in ["169.254", "Bearer", "user:pw", "webhook-signature"] {
            assert!(!text.contains(bad), "{bad} reached the collector config");
        }
    }
    env.cleanup().await;
}
