//! Unit tests across plan and render: grouping by source, reference counting, token choice,
//! secret rotation and the rendered objects. The real-server behaviour is in `tests/e2e`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use kube::runtime::reflector::Store;

use super::identity::SourceId;
use super::okta_check::{OktaEndpoint, Verdict};
use super::plan::{self, CollectorPlan, Membership, PlanSettings, PlannedProduct};
use super::render::{CONFIG_HASH_ANNOTATION, RenderSettings, SECRET_HASH_ANNOTATION, render};
use super::secrets::tests::{secret, store_of};
use crate::api::binding::{LocalObjectRef, Product, ProductBindingSpec, SplunkHec};
use crate::api::connector::{OktaSource, Source};
use crate::api::{ProductBinding, SecretKeyRef, UnifiedConnector, UnifiedConnectorSpec};

fn connector(ns: &str, name: &str, domain: &str, created: i64) -> Arc<UnifiedConnector> {
    let mut c = UnifiedConnector::new(
        name,
        UnifiedConnectorSpec {
            source: Source {
                okta: OktaSource {
                    domain: domain.into(),
                    credentials_secret_ref: SecretKeyRef {
                        name: format!("okta-{name}"),
                        key: "token".into(),
                    },
                },
            },
            lookback: "1h".into(),
            suspend: false,
            collector: None,
        },
    );
    c.metadata.namespace = Some(ns.into());
    c.metadata.creation_timestamp = Some(Time(
        jiff::Timestamp::from_second(1_800_000_000 + created).unwrap(),
    ));
    Arc::new(c)
}

fn binding(ns: &str, name: &str, connector: &str) -> ProductBinding {
    let mut b = ProductBinding::new(
        name,
        ProductBindingSpec {
            connector_ref: LocalObjectRef {
                name: connector.into(),
            },
            product: Product {
                sentinel: None,
                splunk_hec: Some(SplunkHec {
                    url: "https://splunk.example.com:8088".into(),
                    token_secret_ref: SecretKeyRef {
                        name: "hec".into(),
                        key: "token".into(),
                    },
                    index: Some("okta".into()),
                    sourcetype: "OktaIM2:log".into(),
                }),
                webhook: None,
            },
            filter: None,
        },
    );
    b.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    b
}

/// A world of connectors, each with one binding and a Secret holding `token-<name>`.
struct World {
    connectors: Vec<Arc<UnifiedConnector>>,
    secrets: Store<k8s_openapi::api::core::v1::Secret>,
}

impl World {
    fn new(connectors: Vec<Arc<UnifiedConnector>>) -> Self {
        let mut secrets = Vec::new();
        for c in &connectors {
            let ns = c.metadata.namespace.clone().unwrap();
            let name = c.metadata.name.clone().unwrap();
            secrets.push(secret(
                &ns,
                &format!("okta-{name}"),
                &[("token", &format!("token-{name}"))],
            ));
            secrets.push(secret(&ns, "hec", &[("token", "hec-secret")]));
        }
        World {
            connectors,
            secrets: store_of(secrets),
        }
    }

    /// The plan of a world with one source and every token valid.
    fn only_plan(&self) -> CollectorPlan {
        let plans = self.plan_all(&[], None);
        assert_eq!(plans.len(), 1, "one source expected");
        plans
            .into_values()
            .next()
            .unwrap()
            .expect("a collector is planned")
    }

    /// Plans every source, treating tokens listed in `bad` as rejected by Okta.
    fn plan_all(
        &self,
        bad: &[&str],
        current: Option<&str>,
    ) -> BTreeMap<SourceId, Option<CollectorPlan>> {
        let mut groups: BTreeMap<SourceId, Vec<Arc<UnifiedConnector>>> = BTreeMap::new();
        for c in &self.connectors {
            groups.entry(SourceId::of(c)).or_default().push(c.clone());
        }
        groups
            .into_iter()
            .map(|(source, members)| {
                let mut list = Vec::new();
                let mut products: BTreeMap<String, Vec<PlannedProduct>> = BTreeMap::new();
                for c in members {
                    let m = plan::membership(&c, &self.secrets, &PlanSettings::default(), |t| {
                        Some(if bad.contains(&t.expose()) {
                            Verdict::Invalid("401".into())
                        } else {
                            Verdict::Valid
                        })
                    });
                    let ns = c.metadata.namespace.clone().unwrap();
                    let name = c.metadata.name.clone().unwrap();
                    let b = binding(&ns, &format!("{name}-hec"), &name);
                    let p = plan::plan_product(&b, &c, &self.secrets, &PlanSettings::default())
                        .expect("binding plans");
                    products.entry(format!("{ns}/{name}")).or_default().push(p);
                    list.push((c, m));
                }
                let current = current.map(|t| super::secrets::SecretValue::new(t).fingerprint());
                let plan = plan::plan_collector(&source, &list, &products, current);
                (source, plan)
            })
            .collect()
    }
}

fn settings() -> RenderSettings {
    RenderSettings {
        namespace: "uc-system".into(),
        image: "img:1".into(),
        okta: OktaEndpoint::new(None),
        pod: Default::default(),
    }
}

#[test]
fn three_connectors_in_two_namespaces_share_one_collector_and_another_domain_gets_its_own() {
    let world = World::new(vec![
        connector("team-a", "a1", "acme.okta.com", 0),
        connector("team-b", "b1", "ACME.okta.com.", 1),
        connector("team-b", "b2", "acme.okta.com", 2),
        connector("team-a", "a2", "other.okta.com", 3),
    ]);
    let plans = world.plan_all(&[], None);
    let collectors: Vec<String> = plans
        .values()
        .flatten()
        .map(|p| p.source.collector_name())
        .collect();
    assert_eq!(
        collectors.len(),
        2,
        "exactly two collectors: {collectors:?}"
    );
    assert_ne!(collectors[0], collectors[1]);
    let acme = plans
        .values()
        .flatten()
        .find(|p| p.source.domain == "acme.okta.com")
        .unwrap();
    assert_eq!(acme.users, vec!["team-a/a1", "team-b/b1", "team-b/b2"]);
    let ids: Vec<&str> = acme.products.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["team-a/a1-hec", "team-b/b1-hec", "team-b/b2-hec"]);
    assert_eq!(
        acme.token.expose(),
        "token-a1",
        "the oldest connector's token"
    );
}

#[test]
fn the_collector_goes_only_with_its_last_user() {
    let mut connectors = vec![
        connector("team-a", "a1", "acme.okta.com", 0),
        connector("team-b", "b1", "acme.okta.com", 1),
        connector("team-b", "b2", "acme.okta.com", 2),
    ];
    for remaining in (0..connectors.len()).rev() {
        // Mark one more connector as being deleted (its finalizer is still on it).
        let mut c = (*connectors[remaining]).clone();
        c.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        connectors[remaining] = Arc::new(c);
        let plan = World::new(connectors.clone())
            .plan_all(&[], None)
            .into_values()
            .next()
            .unwrap();
        match remaining {
            0 => assert!(
                plan.is_none(),
                "no user left: the collector must be deleted"
            ),
            n => assert_eq!(plan.expect("users remain").users.len(), n),
        }
    }
}

#[test]
fn suspended_or_unbound_connectors_do_not_keep_a_collector() {
    let mut c = (*connector("team-a", "a1", "acme.okta.com", 0)).clone();
    c.spec.suspend = true;
    let world = World::new(vec![Arc::new(c)]);
    assert!(
        world
            .plan_all(&[], None)
            .into_values()
            .next()
            .unwrap()
            .is_none()
    );
    let m = plan::membership(
        &world.connectors[0],
        &world.secrets,
        &PlanSettings::default(),
        |_| Some(Verdict::Valid),
    );
    assert_eq!(m, Membership::Suspended);
    assert_eq!(
        m.problem().unwrap().phase,
        crate::api::conditions::Phase::Pending,
        "suspended is not an error"
    );
    let rejected = Membership::Token(Verdict::Forbidden("403".into()));
    assert_eq!(
        rejected.problem().unwrap().phase,
        crate::api::conditions::Phase::Error
    );
    assert_eq!(rejected.problem().unwrap().reason, "TokenLacksPermission");
    let unasked = Membership::Token(Verdict::Unreachable("later".into()));
    assert_eq!(
        unasked.problem().unwrap().phase,
        crate::api::conditions::Phase::Pending
    );
    let source = SourceId::of(&world.connectors[0]);
    let unsuspended = connector("team-a", "a1", "acme.okta.com", 0);
    let members = vec![(
        unsuspended,
        Membership::Active(super::secrets::SecretValue::new("t")),
    )];
    assert!(
        plan::plan_collector(&source, &members, &BTreeMap::new(), None).is_none(),
        "no binding, no collector"
    );
}

#[test]
fn a_rejected_token_never_joins_and_the_collector_switches_to_another_valid_token() {
    let world = World::new(vec![
        connector("team-a", "a1", "acme.okta.com", 0),
        connector("team-b", "b1", "acme.okta.com", 1),
    ]);
    // a1's token stopped working: b1's token takes over and a1's products are not fed.
    let plan = world
        .plan_all(&["token-a1"], Some("token-a1"))
        .into_values()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(plan.token.expose(), "token-b1");
    assert_eq!(plan.token_owner, "team-b/b1");
    assert_eq!(plan.users, vec!["team-b/b1"]);
    assert!(
        plan.products.iter().all(|p| p.id.starts_with("team-b/")),
        "a connector whose token fails never receives shared data"
    );
    // While the current token stays valid it is kept, even if an older connector exists.
    let plan = world
        .plan_all(&[], Some("token-b1"))
        .into_values()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(plan.token.expose(), "token-b1");
    // All tokens bad: no collector.
    assert!(
        world
            .plan_all(&["token-a1", "token-b1"], None)
            .into_values()
            .next()
            .unwrap()
            .is_none()
    );
}

#[test]
fn rotating_a_secret_rolls_the_collector_and_binding_changes_roll_its_config() {
    let world = World::new(vec![connector("team-a", "a1", "acme.okta.com", 0)]);
    let plan = world.only_plan();
    let before = render(&plan, &settings());
    let annotations = |o: &super::render::CollectorObjects| {
        o.deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap()
    };
    let mut rotated = plan.clone();
    rotated.token = super::secrets::SecretValue::new("token-rotated");
    let after = render(&rotated, &settings());
    assert_ne!(
        annotations(&before)[SECRET_HASH_ANNOTATION],
        annotations(&after)[SECRET_HASH_ANNOTATION]
    );
    assert_eq!(
        annotations(&before)[CONFIG_HASH_ANNOTATION],
        annotations(&after)[CONFIG_HASH_ANNOTATION]
    );
    let mut rebound = plan.clone();
    rebound.products[0].filter.event_types = vec!["user.session.*".into()];
    let after = render(&rebound, &settings());
    assert_ne!(
        annotations(&before)[CONFIG_HASH_ANNOTATION],
        annotations(&after)[CONFIG_HASH_ANNOTATION]
    );
    assert_eq!(
        render(&plan, &settings()),
        before,
        "rendering is deterministic"
    );
}

#[test]
fn rendered_objects_are_labelled_bounded_and_keep_secrets_out_of_the_config() {
    let world = World::new(vec![connector("team-a", "a1", "acme.okta.com", 0)]);
    let plan = world.only_plan();
    let objects = render(&plan, &settings());
    let name = plan.source.collector_name();
    for meta in [
        &objects.config.metadata,
        &objects.secret.metadata,
        &objects.deployment.metadata,
        &objects.state.metadata,
    ] {
        assert_eq!(meta.namespace.as_deref(), Some("uc-system"));
        let labels = meta.labels.as_ref().unwrap();
        for key in ["name", "instance", "component", "part-of", "managed-by"] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{key}")),
                "missing app.kubernetes.io/{key}"
            );
        }
    }
    assert_eq!(
        objects.state.metadata.name.as_deref(),
        Some(format!("{name}-state").as_str())
    );
    assert!(
        objects.state.data.is_none(),
        "the state ConfigMap's data belongs to the collector"
    );
    let config = &objects.config.data.as_ref().unwrap()[crate::contract::CONFIG_KEY];
    assert!(
        !config.contains("token-a1") && !config.contains("hec-secret"),
        "secret values must not be in the ConfigMap"
    );
    let parsed: crate::contract::CollectorConfig =
        serde_saphyr::from_str(config).expect("the collector can read its config");
    assert_eq!(parsed.products.len(), 1);
    let secret_values: Vec<String> = objects
        .secret
        .data
        .as_ref()
        .unwrap()
        .values()
        .map(|v| String::from_utf8(v.0.clone()).unwrap())
        .collect();
    assert!(
        secret_values.contains(&"token-a1".to_string())
            && secret_values.contains(&"hec-secret".to_string())
    );
    let spec = objects.deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate"),
        "two readers of one source must never overlap"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let resources = container.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    assert_eq!(
        container
            .security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("unified-connectors-collector")
    );
    let selector = spec.selector.match_labels.as_ref().unwrap();
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert!(
        selector
            .iter()
            .all(|(k, v)| template_labels.get(k) == Some(v))
    );
}

#[test]
fn binding_problems_name_the_field() {
    let world = World::new(vec![connector("team-a", "a1", "acme.okta.com", 0)]);
    let c = &world.connectors[0];
    let mut b = binding("team-a", "x", "a1");
    b.spec.product.splunk_hec.as_mut().unwrap().url = "http://splunk:8088".into();
    let err = plan::plan_product(&b, c, &world.secrets, &PlanSettings::default()).unwrap_err();
    assert_eq!(err.reason, "InsecureURL");
    assert!(err.message.contains("spec.product.splunkHec.url"));
    assert!(
        plan::plan_product(
            &b,
            c,
            &world.secrets,
            &PlanSettings {
                allow_insecure_http: true,
                ..Default::default()
            }
        )
        .is_ok()
    );
    let mut b = binding("team-a", "x", "a1");
    b.spec
        .product
        .splunk_hec
        .as_mut()
        .unwrap()
        .token_secret_ref
        .name = "nope".into();
    let err = plan::plan_product(&b, c, &world.secrets, &PlanSettings::default()).unwrap_err();
    assert_eq!(err.reason, "SecretNotFound");
    assert!(
        err.message
            .contains("spec.product.splunkHec.tokenSecretRef")
            && err.message.contains("team-a/nope")
    );
    let mut b = binding("team-a", "x", "a1");
    b.spec.product.webhook = Some(crate::api::binding::Webhook {
        url: "https://h".into(),
        signing_secret_ref: crate::api::binding::SecretKeyRef {
            name: "hec".into(),
            key: "token".into(),
        },
        headers: Default::default(),
    });
    let err = plan::plan_product(&b, c, &world.secrets, &PlanSettings::default()).unwrap_err();
    assert!(err.message.contains("exactly one"), "{}", err.message);
}

#[test]
fn products_start_at_connector_creation_minus_lookback() {
    let mut c = (*connector("team-a", "a1", "acme.okta.com", 0)).clone();
    c.spec.lookback = "90m".into();
    let since = plan::connector_since(&c).unwrap();
    assert_eq!(since.timestamp(), 1_800_000_000 - 90 * 60);
    c.spec.lookback = "soon".into();
    assert!(
        plan::connector_since(&c)
            .unwrap_err()
            .contains("spec.lookback")
    );
}

#[tokio::test]
async fn only_spec_finalizer_and_deletion_changes_trigger() {
    use futures::StreamExt;
    let base = connector("team-a", "a1", "acme.okta.com", 0);
    let with = |f: &dyn Fn(&mut UnifiedConnector)| {
        let mut c = (*base).clone();
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(1);
        f(&mut c);
        Arc::new(c)
    };
    let first = with(&|_| {});
    let status_only = with(&|c| c.status = Some(Default::default()));
    let finalized = with(&|c| c.metadata.finalizers = Some(vec!["x".into()]));
    let respecced = with(&|c| {
        c.metadata.finalizers = Some(vec!["x".into()]);
        c.metadata.generation = Some(2);
    });
    let events = vec![
        (first.clone(), false),
        (status_only, false),
        (finalized.clone(), false),
        (finalized.clone(), false),
        (respecced.clone(), false),
        (respecced.clone(), true),
        (first.clone(), false),
    ];
    let books = Arc::new(super::context::Bookkeeping::default());
    let passed: Vec<_> = super::spec_changes(futures::stream::iter(events.clone()), books, false)
        .collect()
        .await;
    let generations: Vec<_> = passed
        .iter()
        .map(|c| (c.metadata.generation, c.metadata.finalizers.is_some()))
        .collect();
    assert_eq!(
        generations,
        vec![
            (Some(1), false),
            (Some(1), true),
            (Some(2), true),
            (Some(2), true),
            (Some(1), false)
        ],
        "status-only and repeated updates are dropped; a deletion passes and is forgotten"
    );
    // The owner's own trigger also passes a status it did not write (here: the first status).
    let books = Arc::new(super::context::Bookkeeping::default());
    let owner: Vec<_> = super::spec_changes(futures::stream::iter(events), books.clone(), true)
        .collect()
        .await;
    assert_eq!(owner.len(), 6, "the status-only update passes too");
    assert_eq!(books.len(), 1, "only the re-created object's sight is kept");
}

mod bookkeeping {
    use std::collections::HashSet;

    use super::super::context::{Bookkeeping, Seen, status_hash};
    use super::super::passes;

    fn seen(generation: i64, status: Option<u64>) -> Seen {
        Seen {
            spec: (Some(generation), false, 1),
            status,
        }
    }

    /// The maps a Context keeps per object: what `forget` (on a deletion) and `retain` (after a
    /// watch restart hid deletions) must empty.
    #[test]
    fn per_object_maps_are_evicted_when_their_object_goes() {
        let books = Bookkeeping::default();
        let filter = books.filter_map();
        let keys = ["UnifiedConnector/a/x", "ProductBinding/a/y"];
        for key in keys {
            // What the reconcilers record per object: a status write, a failure, a sight.
            books.status_written(key, &serde_json::json!({"phase": "Ready"}));
            assert_eq!(books.failed(key), 0);
            filter
                .lock()
                .unwrap()
                .insert(key.to_string(), seen(1, None));
        }
        assert_eq!(
            books.len(),
            8,
            "status time, status hash, failure, sight for two"
        );
        books.forget(keys[0]);
        assert_eq!(books.len(), 4, "a deleted object leaves nothing behind");
        assert!(books.since_status_write(keys[0]).is_none());
        assert!(books.written_status(keys[1]).is_some());
        books.retain(&HashSet::from([keys[1].to_string()]));
        assert_eq!(books.len(), 4, "live objects are kept");
        books.retain(&HashSet::new());
        assert!(books.is_empty(), "a deletion missed by the watch is pruned");
    }

    #[test]
    fn a_status_that_is_not_ours_triggers_and_our_echo_does_not() {
        let ours = status_hash(&serde_json::json!({"phase": "Ready"}));
        let forged = status_hash(&serde_json::json!({"phase": "Error"}));
        assert!(passes(None, seen(1, Some(ours)), None), "first sight");
        assert!(
            !passes(Some(seen(1, None)), seen(1, Some(ours)), Some(ours)),
            "the echo of our own write"
        );
        assert!(
            passes(Some(seen(1, Some(ours))), seen(1, Some(forged)), Some(ours)),
            "someone else rewrote the status"
        );
        assert!(
            !passes(Some(seen(1, Some(ours))), seen(1, Some(ours)), Some(ours)),
            "nothing changed"
        );
        assert!(
            passes(Some(seen(1, Some(ours))), seen(2, Some(ours)), Some(ours)),
            "a spec change"
        );
        // A filter that ignores status (status: None on both sides) passes only spec changes.
        assert!(!passes(Some(seen(1, None)), seen(1, None), Some(ours)));
    }
}

#[test]
fn a_config_over_one_mebibyte_leaves_out_the_bindings_that_push_it_over() {
    let world = World::new(vec![
        connector("team-a", "a1", "acme.okta.com", 0),
        connector("team-b", "b1", "acme.okta.com", 1),
        connector("team-c", "c1", "acme.okta.com", 2),
    ]);
    let mut plan = world.only_plan();
    let (fitting, none) = super::render::fit(&mut plan.clone(), &settings());
    assert!(none.is_empty());
    assert_eq!(
        fitting,
        render(&plan, &settings()),
        "a plan that fits renders as usual"
    );
    // Three 400 kB indexes: any two fit, the third does not.
    for (p, fill) in plan.products.iter_mut().zip(['x', 'y', 'z']) {
        let crate::contract::SinkConfig::SplunkHec(h) = &mut p.sink else {
            unreachable!()
        };
        h.index = Some(fill.to_string().repeat(400_000));
    }
    plan.products[1].filter.event_types = vec!["user.session.start".into()];
    let (objects, left_out) = super::render::fit(&mut plan, &settings());
    assert_eq!(left_out, vec!["team-b/b1-hec"], "the largest one goes");
    assert_eq!(objects, render(&plan, &settings()));
    let size = objects.config.data.as_ref().unwrap()[crate::contract::CONFIG_KEY].len();
    assert!(size <= super::render::OBJECT_LIMIT, "{size}");
    assert_eq!(plan.products.len(), 2);
}

#[test]
fn a_binding_the_collector_would_refuse_is_refused_at_plan_time_naming_its_field() {
    let world = World::new(vec![connector("team-a", "a1", "acme.okta.com", 0)]);
    let c = &world.connectors[0];
    let plan_with = |edit: &dyn Fn(&mut SplunkHec)| {
        let mut b = binding("team-a", "x", "a1");
        edit(b.spec.product.splunk_hec.as_mut().unwrap());
        plan::plan_product(&b, c, &world.secrets, &PlanSettings::default())
    };
    type Edit<'a> = &'a dyn Fn(&mut SplunkHec);
    let cases: [(Edit, &str, &str); 4] = [
        (
            &|h| h.sourcetype = String::new(),
            "InvalidProductSettings",
            "spec.product.splunkHec.sourcetype",
        ),
        (
            &|h| h.url = "https://spl unk.example.com".into(),
            "InvalidProductSettings",
            "spec.product.splunkHec.url",
        ),
        (
            &|h| h.url = "https://admin:hunter2@splunk.example.com".into(),
            "InvalidProductSettings",
            "user name or password",
        ),
        (
            &|h| h.url = "https://169.254.169.254/services".into(),
            "InvalidProductSettings",
            "metadata",
        ),
    ];
    for (edit, reason, text) in cases {
        let err = plan_with(edit).unwrap_err();
        assert_eq!(err.reason, reason, "{}", err.message);
        assert!(err.message.contains(text), "{text}: {}", err.message);
        assert!(
            !err.message.contains("hunter2"),
            "a password leaked: {}",
            err.message
        );
    }
    assert!(plan_with(&|_| {}).is_ok());
}

#[test]
fn a_cluster_internal_source_domain_is_refused_before_any_token_is_sent() {
    for domain in ["kubernetes.default.svc", "169.254.169.254", "10.0.0.7"] {
        let world = World::new(vec![connector("team-a", "a1", domain, 0)]);
        let asked = std::cell::Cell::new(false);
        let m = plan::membership(
            &world.connectors[0],
            &world.secrets,
            &PlanSettings::default(),
            |_| {
                asked.set(true);
                Some(Verdict::Valid)
            },
        );
        let Membership::Refused(why) = &m else {
            panic!("{domain}: {m:?}")
        };
        assert!(why.contains("spec.source.okta.domain"), "{why}");
        assert!(!asked.get(), "{domain}: the token verdict was consulted");
        assert_eq!(m.problem().unwrap().reason, "SourceDomainRefused");
    }
    let world = World::new(vec![connector("team-a", "a1", "okta.fake.svc", 0)]);
    let allow = PlanSettings {
        allowed_source_domains: vec!["*.svc".into()],
        ..Default::default()
    };
    let m = plan::membership(&world.connectors[0], &world.secrets, &allow, |_| {
        Some(Verdict::Valid)
    });
    assert!(matches!(m, Membership::Active(_)), "{m:?}");
}
