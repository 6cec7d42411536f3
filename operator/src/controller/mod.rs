//! The operator: reconcilers for connectors and bindings, source identity and grouping, the
//! desired collector objects, token checks, leader election and metrics.
//!
//! Layout: [`plan`] and [`render`] are pure (what should exist), [`sync`] applies it, [`health`]
//! and [`status`] turn the collector's report into status, [`connector`] and [`binding`] are the
//! two reconcilers, and [`run`] wires watches, caches and leader election together.

pub mod binding;
pub mod collector_pod;
pub mod connector;
pub mod context;
pub mod health;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod okta_check;
pub mod plan;
pub mod render;
pub mod secrets;
pub mod status;
pub mod sync;
#[cfg(test)]
mod tests;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use crate::api::conditions::Phase;
use crate::api::{ProductBinding, UnifiedConnector};
use context::{Bookkeeping, Context, Seen, Settings, Stores};
use identity::{SOURCE_LABEL, managed_selector};

/// `unified-connectors controller` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespace the operator runs in; collectors are created here.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "unified-connectors-system"
    )]
    pub namespace: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Image of the collector Deployments (the same binary as the operator).
    #[arg(long, env = "COLLECTOR_IMAGE", default_value = concat!("ghcr.io/unified-connectors/unified-connectors:", env!("CARGO_PKG_VERSION")))]
    pub collector_image: String,
    /// Run without a Lease (a single replica, or local development).
    #[arg(long)]
    pub no_leader_election: bool,
    #[arg(long, default_value = "unified-connectors-leader")]
    pub lease_name: String,
    /// A binding with nothing delivered this long after creation turns Error.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,
    /// Test only: where Okta lives instead of `https://{domain}`, e.g. `http://127.0.0.1:8081/orgs/{domain}`.
    #[arg(long)]
    pub okta_url_template: Option<String>,
    /// Test only: accept `http://` product URLs.
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// A source domain the token may be sent to although it is an IP address, a single label or
    /// cluster-internal (`*.svc`, `*.cluster.local`, `localhost`); `*.example` allows a whole
    /// suffix. Repeat the flag, or list them comma-separated. Metadata addresses stay refused.
    #[arg(long = "allow-source-domain", env = crate::guard::ALLOW_SOURCE_DOMAINS_ENV, value_delimiter = ',')]
    pub allow_source_domains: Vec<String>,
    /// YAML file of settings for every collector pod: imagePullSecrets, resources, nodeSelector,
    /// tolerations, affinity, priorityClassName, labels, annotations, env, volumes, volumeMounts,
    /// extraCaFile (see the README).
    #[arg(long, env = "COLLECTOR_POD_SETTINGS")]
    pub collector_pod_settings: Option<std::path::PathBuf>,
    /// A collector report older than this means the collector is not running: its bindings
    /// turn Warning at this deadline (tests shorten it).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub report_stale_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
    #[error("writing status: {0}")]
    Status(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Sync(_) => "sync",
            Error::Status(_) => "status",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// How soon to look again when no watch triggers a reconcile. Every change in Kubernetes (specs,
/// Secrets, the collector's report) arrives through watches; these requeues only catch what
/// changes with time alone: delivery deadlines, a collector that stops reporting, and a token
/// fixed on Okta's side (re-checked after its cached verdict expires).
pub fn requeue_for(phase: Phase) -> Action {
    Action::requeue(requeue_after(phase))
}

/// The delay of [`requeue_for`].
pub fn requeue_after(phase: Phase) -> Duration {
    match phase {
        Phase::Pending | Phase::Warning => Duration::from_secs(120),
        Phase::Error => Duration::from_secs(60),
        Phase::Ready => Duration::from_secs(300),
    }
}

/// Exponential backoff per object on errors, 5 s doubling to 5 min.
fn error_backoff(ctx: &Context, key: String) -> Action {
    let failures = ctx.failures(&key);
    let secs = (5u64 << failures.min(6)).min(300);
    Action::requeue(Duration::from_secs(secs))
}

/// The Secrets the operator caches: every type users keep credentials in (`Opaque`,
/// `kubernetes.io/basic-auth`, custom types, ...), but not the large kinds no connector names.
const SECRET_TYPES: &str = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token,type!=kubernetes.io/dockerconfigjson";

/// Which changes of an object a trigger passes on.
#[derive(Clone, Copy)]
enum Changes {
    /// Every update (status and data included).
    All,
    /// Only changes of the spec (generation), the finalizers or the deletion state: an object's
    /// own status writes would otherwise trigger a no-op reconcile each.
    Spec,
    /// [`Changes::Spec`], and a status that differs from what this process last wrote: someone
    /// else wrote it (a forged or stale status), so the owner rewrites it at once.
    SpecOrForeignStatus,
}

/// A stream of objects that should trigger reconciles.
type Trigger<K> = futures::stream::BoxStream<'static, Arc<K>>;

/// A watch whose cache and event stream are shared by several controllers, one trigger stream
/// per entry of `subscribers`.
///
/// Each trigger yields applied objects (filtered by [`Changes`]) *and every deleted one*: kube's
/// shared subscribers only carry applies, but a deleted binding or Secret must trigger the
/// reconcile that removes it from its collector.
fn shared<K>(
    api: Api<K>,
    wc: watcher::Config,
    subscribers: &[Changes],
    books: &Arc<Bookkeeping>,
) -> (
    Store<K>,
    Vec<Trigger<K>>,
    impl std::future::Future<Output = ()> + use<K>,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store_shared(4096);
    let mut triggers = Vec::new();
    let mut deletes = Vec::new();
    for changes in subscribers {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Arc<K>>();
        let applied = writer.subscribe().expect("a shared store has subscribers");
        let both = futures::stream::select(applied.map(|o| (o, false)), rx.map(|o| (o, true)));
        triggers.push(match changes {
            Changes::All => both.map(|(o, _)| o).boxed(),
            Changes::Spec => spec_changes(both, books.clone(), false),
            Changes::SpecOrForeignStatus => spec_changes(both, books.clone(), true),
        });
        deletes.push(tx);
    }
    let kind = K::kind(&()).to_string();
    let books = books.clone();
    let driver = watcher(api, wc)
        .default_backoff()
        .reflect_shared(writer)
        .for_each(move |r| {
            match r {
                Ok(watcher::Event::Delete(obj)) => {
                    books.forget(&object_key(&obj));
                    let obj = Arc::new(obj);
                    for tx in &deletes {
                        let _ = tx.unbounded_send(obj.clone());
                    }
                }
                Err(e) => warn!(kind = %kind, error = %e, "watch error; retrying"),
                Ok(_) => {}
            }
            futures::future::ready(())
        });
    (reader, triggers, driver)
}

/// Passes an object on only when its generation, finalizers or deletion state changed since
/// it last passed (first sight included) or, with `foreign_status`, when its status changed to
/// something this process did not write; deletions (`true`) always pass and are forgotten.
fn spec_changes<K>(
    objects: impl futures::Stream<Item = (Arc<K>, bool)> + Send + 'static,
    books: Arc<Bookkeeping>,
    foreign_status: bool,
) -> Trigger<K>
where
    K: Resource<DynamicType = ()> + serde::Serialize + Send + Sync + 'static,
{
    let seen = books.filter_map();
    objects
        .filter_map(move |(obj, deleted)| {
            let key = object_key(obj.as_ref());
            let pass = if deleted {
                seen.lock().expect("filter map").remove(&key);
                true
            } else {
                let now = sight(obj.as_ref(), foreign_status);
                let before = seen.lock().expect("filter map").insert(key.clone(), now);
                passes(before, now, books.written_status(&key))
            };
            futures::future::ready(pass.then_some(obj))
        })
        .boxed()
}

/// What a filter records of an object.
fn sight<K: Resource + serde::Serialize>(obj: &K, with_status: bool) -> Seen {
    let meta = obj.meta();
    Seen {
        spec: (
            meta.generation,
            meta.deletion_timestamp.is_some(),
            meta.finalizers.as_ref().map_or(0, Vec::len),
        ),
        status: with_status
            .then(|| serde_json::to_value(obj).ok())
            .flatten()
            .and_then(|v| v.get("status").map(context::status_hash)),
    }
}

/// Whether a filter passes an object seen as `now` (after `before`): first sight, a spec
/// change, or a status change that is not the echo of our own last write.
fn passes(before: Option<Seen>, now: Seen, ours: Option<u64>) -> bool {
    match before {
        None => true,
        Some(b) => b.spec != now.spec || (b.status != now.status && now.status != ours),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    crate::http::install_crypto_provider();
    crate::http::check_extra_ca()?;
    // Refuse a bad settings file before anything is reconciled with it.
    let pod_settings = match &args.collector_pod_settings {
        Some(path) => collector_pod::CollectorPodSettings::load(path)?,
        None => Default::default(),
    };
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("unified-connectors-{}", uuid::Uuid::new_v4()));
    // With an election, the controllers' writes pass only while this replica leads.
    let gate = if args.no_leader_election {
        leader::WriteGate::open()
    } else {
        leader::WriteGate::closed()
    };
    let (client, election_client) = leader::clients(&identity, gate.clone()).await?;
    let metrics = metrics::Metrics::new();
    let readiness = metrics::Readiness::default();
    // Tasks that must not stop report here; `run` returns their error (the process exits non-zero).
    let (fatal_tx, mut fatal) = tokio::sync::mpsc::channel::<anyhow::Error>(2);
    tokio::spawn({
        let (addr, m, r, fatal_tx) = (
            args.metrics_addr.clone(),
            metrics.clone(),
            readiness.clone(),
            fatal_tx.clone(),
        );
        async move {
            if let Err(e) = metrics::serve(&addr, m, r).await {
                let _ = fatal_tx
                    .send(anyhow::anyhow!("the metrics server on {addr} stopped: {e}"))
                    .await;
            }
        }
    });

    let election = (!args.no_leader_election).then(|| {
        Arc::new(leader::LeaderElection::new(
            election_client,
            &args.namespace,
            &args.lease_name,
            identity.clone(),
            gate,
        ))
    });
    if let Some(election) = &election {
        readiness.set(true); // a standby is healthy
        election.acquire().await;
        metrics.leader.set(1);
        let election = election.clone();
        let fatal_tx = fatal_tx.clone();
        tokio::spawn(async move {
            election.hold().await;
            error!("lost the leader Lease; exiting so that only one replica reconciles");
            let _ = fatal_tx
                .send(anyhow::anyhow!(
                    "lost the leader Lease: stopping so that only one replica reconciles"
                ))
                .await;
        });
    }

    let ns = args.namespace.clone();
    let books = Arc::new(Bookkeeping::default());
    let managed = watcher::Config::default().labels(&managed_selector());
    // Triggers are popped from the end: the last entry feeds the connector controller.
    // Bindings read their connector's status (its token verdict), so they see every change of
    // it; nothing else needs an object's own status updates.
    let (connectors, mut conn_subs, conn_driver) = shared(
        Api::<UnifiedConnector>::all(client.clone()),
        watcher::Config::default().any_semantic(),
        &[Changes::All, Changes::SpecOrForeignStatus],
        &books,
    );
    let (bindings, mut bind_subs, bind_driver) = shared(
        Api::<ProductBinding>::all(client.clone()),
        watcher::Config::default().any_semantic(),
        &[Changes::SpecOrForeignStatus, Changes::Spec],
        &books,
    );
    let (secrets, mut secret_subs, secret_driver) = shared(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default()
            .fields(SECRET_TYPES)
            .any_semantic(),
        &[Changes::All, Changes::All],
        &books,
    );
    let (deployments, mut deploy_subs, deploy_driver) = shared(
        Api::<Deployment>::namespaced(client.clone(), &ns),
        managed.clone().any_semantic(),
        &[Changes::Spec],
        &books,
    );
    let (config_maps, mut cm_subs, cm_driver) = shared(
        Api::<ConfigMap>::namespaced(client.clone(), &ns),
        // The collector's report is ConfigMap data, which has no generation: every change counts.
        managed.any_semantic(),
        &[Changes::All, Changes::All],
        &books,
    );
    tokio::spawn(conn_driver);
    tokio::spawn(bind_driver);
    tokio::spawn(secret_driver);
    tokio::spawn(deploy_driver);
    tokio::spawn(cm_driver);
    let stores = Stores {
        connectors,
        bindings,
        secrets,
        deployments,
        config_maps,
    };
    info!("waiting for caches to sync");
    for ready in [
        stores.connectors.wait_until_ready().await.is_ok(),
        stores.bindings.wait_until_ready().await.is_ok(),
        stores.secrets.wait_until_ready().await.is_ok(),
        stores.deployments.wait_until_ready().await.is_ok(),
        stores.config_maps.wait_until_ready().await.is_ok(),
    ] {
        anyhow::ensure!(ready, "a cache could not be filled");
    }
    readiness.set(true);
    info!(namespace = %ns, "caches synced; reconciling");

    let settings = Settings {
        render: render::RenderSettings {
            namespace: ns.clone(),
            image: args.collector_image.clone(),
            okta: okta_check::OktaEndpoint::new(args.okta_url_template.clone()),
            pod: pod_settings,
        },
        plan: plan::PlanSettings {
            allow_insecure_http: args.allow_insecure_http,
            allowed_source_domains: args.allow_source_domains.clone(),
        },
        deadlines: health::Deadlines {
            delivery_timeout: args.delivery_timeout,
            report_stale_after: args.report_stale_after,
        },
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "unified-connectors".into(),
            instance: Some(identity),
        },
    );
    let checker =
        okta_check::TokenChecker::new(settings.render.okta.clone(), Some(metrics.clone()));
    seed_verdicts(&checker, &stores);
    let ctx = Arc::new(Context::new(
        client.clone(),
        stores.clone(),
        settings,
        checker,
        metrics.clone(),
        recorder,
        books.clone(),
    ));

    tokio::spawn(housekeeping(ctx.clone()));

    let config = ControllerConfig::default()
        .debounce(Duration::from_millis(500))
        .concurrency(16);
    let s = stores.clone();
    let connector_controller = Controller::for_shared_stream(
        conn_subs.pop().expect("subscriber"),
        stores.connectors.clone(),
    )
    .with_config(config.clone())
    .watches_shared_stream(
        bind_subs.pop().expect("subscriber"),
        |b: Arc<ProductBinding>| {
            b.namespace().map(|ns| {
                ObjectRef::<UnifiedConnector>::new(&b.spec.connector_ref.name).within(&ns)
            })
        },
    )
    .watches_shared_stream(secret_subs.pop().expect("subscriber"), {
        let s = s.clone();
        move |secret: Arc<Secret>| connectors_using_secret(&s, &secret)
    })
    .watches_shared_stream(deploy_subs.pop().expect("subscriber"), {
        let s = s.clone();
        move |d: Arc<Deployment>| {
            by_source_label(d.labels(), |h| {
                sync::connectors_for_source_hash(&s.connectors, h)
            })
        }
    })
    .watches_shared_stream(cm_subs.pop().expect("subscriber"), {
        let s = s.clone();
        move |cm: Arc<ConfigMap>| {
            by_source_label(cm.labels(), |h| {
                sync::connectors_for_source_hash(&s.connectors, h)
            })
        }
    })
    .shutdown_on_signal()
    .run(
        connector::reconcile,
        error_policy::<UnifiedConnector>,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));

    let binding_controller = Controller::for_shared_stream(
        bind_subs.pop().expect("subscriber"),
        stores.bindings.clone(),
    )
    .with_config(config)
    .watches_shared_stream(conn_subs.pop().expect("subscriber"), {
        let s = s.clone();
        move |c: Arc<UnifiedConnector>| {
            s.bindings
                .state()
                .into_iter()
                .filter(|b| {
                    b.namespace() == c.namespace() && b.spec.connector_ref.name == c.name_any()
                })
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect::<Vec<_>>()
        }
    })
    .watches_shared_stream(secret_subs.pop().expect("subscriber"), {
        let s = s.clone();
        move |secret: Arc<Secret>| bindings_using_secret(&s, &secret)
    })
    .watches_shared_stream(cm_subs.pop().expect("subscriber"), {
        let s = s.clone();
        move |cm: Arc<ConfigMap>| {
            by_source_label(cm.labels(), |h| {
                sync::bindings_for_source_hash(&s.connectors, &s.bindings, h)
            })
        }
    })
    .shutdown_on_signal()
    .run(
        binding::reconcile,
        error_policy::<ProductBinding>,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));

    tokio::select! {
        _ = futures::future::join(connector_controller, binding_controller) => {}
        Some(e) = fatal.recv() => return Err(e),
    }
    info!("controllers stopped");
    if let Some(election) = election {
        election.release().await;
    }
    Ok(())
}

fn by_source_label<K>(
    labels: &std::collections::BTreeMap<String, String>,
    f: impl Fn(&str) -> Vec<ObjectRef<K>>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    labels.get(SOURCE_LABEL).map(|h| f(h)).unwrap_or_default()
}

/// Connectors to reconcile when a Secret changes: those whose token it holds, those whose
/// bindings read it, and all users of a collector whose own Secret it is.
fn connectors_using_secret(stores: &Stores, secret: &Secret) -> Vec<ObjectRef<UnifiedConnector>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    let mut refs: Vec<ObjectRef<UnifiedConnector>> = stores
        .connectors
        .state()
        .iter()
        .filter(|c| c.namespace() == ns && c.spec.source.okta.credentials_secret_ref.name == name)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect();
    for b in bindings_referencing(stores, secret) {
        if let Some(ns) = b.namespace() {
            refs.push(ObjectRef::new(&b.spec.connector_ref.name).within(&ns));
        }
    }
    refs.extend(by_source_label(secret.labels(), |h| {
        sync::connectors_for_source_hash(&stores.connectors, h)
    }));
    refs
}

/// Bindings to reconcile when a Secret changes: those that read it, and those of connectors whose token it holds.
fn bindings_using_secret(stores: &Stores, secret: &Secret) -> Vec<ObjectRef<ProductBinding>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    let token_of: std::collections::HashSet<String> = stores
        .connectors
        .state()
        .iter()
        .filter(|c| c.namespace() == ns && c.spec.source.okta.credentials_secret_ref.name == name)
        .map(|c| c.name_any())
        .collect();
    let mut refs: Vec<ObjectRef<ProductBinding>> = bindings_referencing(stores, secret)
        .iter()
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect();
    refs.extend(
        stores
            .bindings
            .state()
            .iter()
            .filter(|b| b.namespace() == ns && token_of.contains(&b.spec.connector_ref.name))
            .map(|b| ObjectRef::from_obj(b.as_ref())),
    );
    refs
}

fn bindings_referencing(stores: &Stores, secret: &Secret) -> Vec<Arc<ProductBinding>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    stores
        .bindings
        .state()
        .into_iter()
        .filter(|b| {
            let p = &b.spec.product;
            b.namespace() == ns
                && [
                    p.sentinel.as_ref().map(|s| &s.credentials_secret_ref.name),
                    p.splunk_hec.as_ref().map(|s| &s.token_secret_ref.name),
                    p.webhook.as_ref().map(|w| &w.signing_secret_ref.name),
                ]
                .into_iter()
                .flatten()
                .any(|n| *n == name)
        })
        .collect()
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&()).to_string();
    warn!(kind = %kind, name = %obj.meta().name.as_deref().unwrap_or_default(), namespace = %obj.meta().namespace.as_deref().unwrap_or_default(), error = %error, "reconcile failed; backing off");
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[&kind, error.metric_label()])
        .inc();
    error_backoff(
        &ctx,
        format!(
            "{kind}/{}/{}",
            obj.meta().namespace.as_deref().unwrap_or_default(),
            obj.meta().name.as_deref().unwrap_or_default()
        ),
    )
}

/// Periodic work outside reconciles: phase gauges and removing orphaned collectors.
async fn housekeeping(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        update_gauges(&ctx);
        // Every 5 minutes (and shortly after start), delete collectors no connector names and
        // drop bookkeeping of objects whose deletion a watch restart hid.
        if rounds % 30 == 1 {
            prune(&ctx);
            match sync::collect_orphans(&ctx).await {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "removed orphaned collectors"),
                Err(e) => warn!(error = %e, "could not remove orphaned collectors"),
            }
        }
        rounds += 1;
    }
}

/// A new process knows no token verdict yet. Each connector whose status says its token was
/// valid keeps that as its last known verdict until the first sync re-checks it, so an operator
/// restart or a change of leader causes no transition ("not validated yet") and no Event.
fn seed_verdicts(checker: &okta_check::TokenChecker, stores: &Stores) {
    for c in stores.connectors.state() {
        let valid = c.status.as_ref().is_some_and(|s| {
            s.common
                .conditions
                .iter()
                .any(|k| k.type_ == crate::api::conditions::CREDENTIALS_VALID && k.status == "True")
        });
        if valid && let Ok(token) = plan::connector_token(&c, &stores.secrets) {
            checker.seed(
                &identity::SourceId::of(&c).domain,
                &token,
                okta_check::Verdict::Valid,
            );
        }
    }
}

/// Keeps per-object and per-source maps to the live objects in the caches.
fn prune(ctx: &Context) {
    let mut live: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut sources = std::collections::HashSet::new();
    for c in ctx.stores.connectors.state() {
        live.insert(object_key(c.as_ref()));
        sources.insert(identity::SourceId::of(&c));
    }
    for b in ctx.stores.bindings.state() {
        live.insert(object_key(b.as_ref()));
    }
    for d in ctx.stores.deployments.state() {
        live.insert(object_key(d.as_ref()));
    }
    ctx.books.retain(&live);
    ctx.retain_sources(&sources);
}

fn update_gauges(ctx: &Context) {
    let m = &ctx.metrics;
    for phase in Phase::ALL {
        let n = ctx
            .stores
            .connectors
            .state()
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.common.phase)
                    .unwrap_or_default()
                    == phase
            })
            .count();
        m.connectors
            .with_label_values(&[phase.as_str()])
            .set(n as i64);
        for product in ["sentinel", "splunkHec", "webhook"] {
            let n = ctx
                .stores
                .bindings
                .state()
                .iter()
                .filter(|b| {
                    b.status
                        .as_ref()
                        .and_then(|s| s.common.phase)
                        .unwrap_or_default()
                        == phase
                })
                .filter(|b| b.spec.product.kind().map(|k| k.name()) == Ok(product))
                .count();
            m.bindings
                .with_label_values(&[phase.as_str(), product])
                .set(n as i64);
        }
    }
    m.collectors
        .set(ctx.stores.deployments.state().len() as i64);
}

/// `Kind/namespace/name`: the key for per-object bookkeeping (backoff, status throttling).
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Runs one reconcile: counts and times it, and resets the object's error backoff on success.
pub async fn instrumented<K: Resource<DynamicType = ()>>(
    obj: &K,
    ctx: &Context,
    reconcile: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let kind = K::kind(&());
    let result = reconcile.await;
    ctx.metrics
        .reconciliations
        .with_label_values(&[&kind])
        .inc();
    ctx.metrics
        .reconcile_duration
        .with_label_values(&[&kind])
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&object_key(obj));
    }
    result
}
