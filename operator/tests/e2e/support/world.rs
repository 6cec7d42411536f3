//! The outside world of a data-flow test: the project's Okta test server and one server per
//! product (Splunk HEC, Sentinel = Entra ID + Logs Ingestion, Standard Webhooks), all in this
//! process on loopback ports, plus builders for the resources that point at them.

use serde_json::{Value, json};
use uc_testkit::azure::{self, AzureServer};
use uc_testkit::hec::{self, HecServer};
use uc_testkit::okta::{self, OktaServer, Permission};
use uc_testkit::webhook::{self, WebhookServer};

use super::{Operator, TestEnv};

pub const API_VERSION: &str = "connectors.unified.dev/v1alpha1";
/// The Okta token every test org accepts (a read-only admin's).
pub const GOOD_TOKEN: &str = "00good-okta-token-for-e2e";
/// A token that exists but whose user has no admin role (403 on /logs).
pub const NO_ROLE_TOKEN: &str = "00no-admin-role-token-e2e";

pub struct World {
    pub okta: OktaServer,
    pub hec: HecServer,
    pub webhook: WebhookServer,
    pub azure: AzureServer,
}

impl World {
    pub async fn start() -> World {
        let okta = OktaServer::start(okta::Options {
            tokens: vec![
                (GOOD_TOKEN.into(), Permission::ReadOnlyAdmin),
                (NO_ROLE_TOKEN.into(), Permission::NoAdminRole),
            ],
            ..okta::Options::default()
        })
        .await;
        World {
            okta,
            hec: HecServer::start(hec::Options::default()).await,
            webhook: WebhookServer::start(webhook::Options::default()).await,
            azure: AzureServer::start(azure::Options::default()).await,
        }
    }

    /// Flags the operator needs to use these servers (test-only flags).
    pub fn operator_args(&self) -> Vec<String> {
        vec![
            "--okta-url-template".into(),
            self.okta.url_template(),
            "--allow-insecure-http".into(),
        ]
    }

    /// Creates, in `ns`, the Okta token Secret `okta-token` (key `token`) and the three
    /// product Secrets the bindings below reference.
    pub async fn secrets(&self, env: &TestEnv, ns: &str, okta_token: &str) {
        env.put_secret(ns, "okta-token", &[("token", okta_token)])
            .await;
        env.put_secret(
            ns,
            "splunk-token",
            &[("token", hec::Options::DEFAULT_TOKEN)],
        )
        .await;
        env.put_secret(ns, "webhook-secret", &[("secret", self.webhook.secret())])
            .await;
        let o = azure::Options::default();
        env.put_secret(
            ns,
            "sentinel-credentials",
            &[
                ("tenantId", &o.tenant_id),
                ("clientId", &o.client_id),
                ("clientSecret", &o.client_secret),
            ],
        )
        .await;
    }

    pub fn splunk(&self, name: &str, connector: &str) -> Value {
        binding(
            name,
            connector,
            json!({"splunkHec": {
                "url": self.hec.url(),
                "tokenSecretRef": {"name": "splunk-token", "key": "token"},
            }}),
        )
    }

    pub fn webhook(&self, name: &str, connector: &str) -> Value {
        binding(
            name,
            connector,
            json!({"webhook": {
                "url": format!("{}/hook", self.webhook.url()),
                "signingSecretRef": {"name": "webhook-secret", "key": "secret"},
            }}),
        )
    }

    pub fn sentinel(&self, name: &str, connector: &str) -> Value {
        let o = azure::Options::default();
        binding(
            name,
            connector,
            json!({"sentinel": {
                "endpoint": self.azure.url(),
                "authorityHost": self.azure.url(),
                "dcrImmutableId": o.dcr_immutable_id,
                "streamName": o.stream_name,
                "table": "OktaSystemLogs_CL",
                "credentialsSecretRef": {"name": "sentinel-credentials"},
            }}),
        )
    }
}

/// A connector for `domain` reading the token in Secret `secret` (key `token`).
pub fn connector(name: &str, domain: &str, secret: &str) -> Value {
    json!({
        "apiVersion": API_VERSION, "kind": "UnifiedConnector",
        "metadata": {"name": name},
        "spec": {
            "source": {"okta": {"domain": domain, "credentialsSecretRef": {"name": secret, "key": "token"}}},
            "lookback": "1h",
        },
    })
}

pub fn binding(name: &str, connector: &str, product: Value) -> Value {
    json!({
        "apiVersion": API_VERSION, "kind": "ProductBinding",
        "metadata": {"name": name},
        "spec": {"connectorRef": {"name": connector}, "product": product},
    })
}

/// The usual start of a data test: a [`TestEnv`], the [`World`] servers, the operator pointed
/// at them, and one user namespace `sec` holding the Okta token Secret (`okta-token`, with
/// [`GOOD_TOKEN`]) and the product Secrets.
pub async fn setup(name: &str) -> (TestEnv, World, Operator, String) {
    let mut env = TestEnv::new(name).await;
    let world = World::start().await;
    let args = world.operator_args();
    let op = env.start_operator(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ns = env.namespace("sec").await;
    world.secrets(&env, &ns, GOOD_TOKEN).await;
    (env, world, op, ns)
}
