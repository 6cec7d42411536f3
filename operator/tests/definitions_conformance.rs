//! Every built-in definition passes the conformance kit against its contract-faithful test
//! server (`operator/testkit`). Each report is printed (run with `--nocapture` to see it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use uc_testkit::{auth0, github, okta, onepassword};
use unified_connectors::contract::SecretSource;
use unified_connectors::definition::conformance::{self, KitOptions};
use unified_connectors::definition::{BUILT_IN, parse};

const TOKEN: &str = "conformance-token";

fn definition(file: &str) -> unified_connectors::api::ConnectorDefinition {
    let text = BUILT_IN
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no built-in {file}"));
    parse(text).unwrap()
}

/// The token in a file of its own (the engine reads credentials as the collector does).
fn token_file(name: &str) -> SecretSource {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "uc-conformance-{name}-{}.token",
        std::process::id()
    ));
    std::fs::write(&path, TOKEN).unwrap();
    SecretSource::File(path)
}

async fn check(file: &str, server: String, params: &[(&str, &str)]) {
    let def = definition(file);
    let mut opts = KitOptions::new(server);
    opts.params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    opts.credential = Some(token_file(file));
    opts.poll_interval = Some(Duration::from_millis(500));
    opts.timeout = Duration::from_secs(60);
    let report = conformance::run(&def, &opts).await.unwrap();
    println!("{report}");
    if let Some(SecretSource::File(p)) = &opts.credential {
        let _ = std::fs::remove_file(p);
    }
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_system_log_definition_passes_the_kit() {
    let s = okta::OktaServer::start(okta::Options {
        tokens: vec![(TOKEN.into(), okta::Permission::ReadOnlyAdmin)],
        rate_window: Duration::from_secs(1),
        ..okta::Options::default()
    })
    .await;
    check(
        "okta-system-log.yaml",
        s.url(),
        &[("domain", okta::DEFAULT_ORG)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_enterprise_audit_log_definition_passes_the_kit() {
    let s = github::GithubServer::start(github::Options {
        tokens: vec![TOKEN.into()],
        rate_window: Duration::from_secs(1),
        ..github::Options::default()
    })
    .await;
    check(
        "github-enterprise-audit-log.yaml",
        s.url(),
        &[("enterprise", github::DEFAULT_ENTERPRISE)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onepassword_events_definition_passes_the_kit() {
    let s = onepassword::OnePasswordServer::start(onepassword::Options {
        tokens: vec![TOKEN.into()],
        rate_window: Duration::from_secs(1),
        ..onepassword::Options::default()
    })
    .await;
    check(
        "onepassword-events.yaml",
        s.url(),
        &[("account", "acme.1password.com")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_logs_definition_passes_the_kit() {
    let s = auth0::Auth0Server::start(auth0::Options {
        tokens: vec![TOKEN.into()],
        rate_window: Duration::from_secs(1),
        ..auth0::Options::default()
    })
    .await;
    check(
        "auth0-logs.yaml",
        s.url(),
        &[("domain", "acme.us.auth0.com")],
    )
    .await;
}
