//! `uc-testkit serve`: every test server in one process, for `make demo` and the e2e suite.
//!
//! Prints one JSON line on stdout once all servers listen (their URLs and the credentials they
//! accept; also written to `--info-file`), then serves until SIGINT/SIGTERM. Other processes
//! drive the servers through their `/_admin/` APIs (see the `uc_testkit::admin` docs).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use uc_testkit::{auth0, azure, github, hec, okta, onepassword, webhook};

#[derive(Parser)]
#[command(
    name = "uc-testkit",
    about = "Contract-faithful Okta, Azure, Splunk HEC and webhook test servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all servers on 127.0.0.1 until interrupted.
    Serve(Serve),
}

#[derive(Args)]
struct Serve {
    /// Port of the Okta server (0 = any free port).
    #[arg(long, default_value_t = 0)]
    okta_port: u16,
    #[arg(long, default_value_t = 0)]
    azure_port: u16,
    #[arg(long, default_value_t = 0)]
    hec_port: u16,
    #[arg(long, default_value_t = 0)]
    webhook_port: u16,
    /// Ports of the GitHub, 1Password and Auth0 servers; they accept every `--token`.
    #[arg(long, default_value_t = 0)]
    github_port: u16,
    #[arg(long, default_value_t = 0)]
    onepassword_port: u16,
    #[arg(long, default_value_t = 0)]
    auth0_port: u16,
    /// Okta API token to accept (Read-Only Administrator); repeatable.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Okta org domain to seed and feed (`--seed-events`, `--live-rate`); repeatable.
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// Events generated into each `--org` at start, persisted over the last 50 minutes: a
    /// connector created within 10 minutes with the default 1 h look-back sees all of them.
    #[arg(long, default_value_t = 0)]
    seed_events: usize,
    /// Live events per second appended to each `--org`.
    #[arg(long, default_value_t = 0.0)]
    live_rate: f64,
    /// Okta `/api/v1/logs` requests per window per token (Okta: 60).
    #[arg(long, default_value_t = 60)]
    okta_rate_limit: u32,
    /// Okta requests per window per org, all tokens together (Okta Workforce: 120).
    #[arg(long, default_value_t = 120)]
    okta_org_rate_limit: u32,
    /// Okta rate-limit window.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    okta_rate_window: Duration,
    /// Base URL put in Okta `Link` headers (default: from the request's Host header).
    #[arg(long)]
    okta_public_url: Option<String>,
    /// Entra tenant, client id and secret the Azure server accepts.
    #[arg(long, default_value_t = azure::Options::default().tenant_id)]
    azure_tenant: String,
    #[arg(long, default_value_t = azure::Options::default().client_id)]
    azure_client_id: String,
    #[arg(long, default_value_t = azure::Options::default().client_secret)]
    azure_client_secret: String,
    #[arg(long, default_value_t = azure::Options::default().dcr_immutable_id)]
    azure_dcr: String,
    #[arg(long, default_value_t = azure::Options::default().stream_name)]
    azure_stream: String,
    /// HEC token to accept; repeatable (default: the testkit's fixed token).
    #[arg(long = "hec-token")]
    hec_tokens: Vec<String>,
    /// `whsec_` secret the webhook receiver verifies (default: a fresh one, printed).
    #[arg(long)]
    webhook_secret: Option<String>,
    /// Keep only counters and uuids, not whole records (long runs, benchmarks).
    #[arg(long)]
    counters_only: bool,
    /// Also write the start-up JSON to this file.
    #[arg(long)]
    info_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Serve(a) = Cli::parse().command;
    let keep_records = !a.counters_only;
    let okta = okta::OktaServer::try_start(okta::Options {
        port: a.okta_port,
        tokens: a
            .tokens
            .iter()
            .map(|t| (t.clone(), okta::Permission::ReadOnlyAdmin))
            .collect(),
        rate_limit_per_token: a.okta_rate_limit,
        rate_limit_per_org: a.okta_org_rate_limit,
        rate_window: a.okta_rate_window,
        public_url: a.okta_public_url.clone(),
        ..okta::Options::default()
    })
    .await
    .with_context(|| format!("bind the Okta server on 127.0.0.1:{}", a.okta_port))?;
    let azure = azure::AzureServer::try_start(azure::Options {
        port: a.azure_port,
        tenant_id: a.azure_tenant,
        client_id: a.azure_client_id,
        client_secret: a.azure_client_secret,
        dcr_immutable_id: a.azure_dcr,
        stream_name: a.azure_stream,
        keep_records,
        ..azure::Options::default()
    })
    .await
    .with_context(|| format!("bind the Azure server on 127.0.0.1:{}", a.azure_port))?;
    let hec_tokens = if a.hec_tokens.is_empty() {
        vec![hec::Options::DEFAULT_TOKEN.to_string()]
    } else {
        a.hec_tokens
    };
    let hec = hec::HecServer::try_start(hec::Options {
        port: a.hec_port,
        tokens: hec_tokens.clone(),
        keep_records,
        ..hec::Options::default()
    })
    .await
    .with_context(|| format!("bind the HEC server on 127.0.0.1:{}", a.hec_port))?;
    let webhook_secret = a.webhook_secret.unwrap_or_else(webhook::generate_secret);
    let webhook = webhook::WebhookServer::try_start(webhook::Options {
        port: a.webhook_port,
        secrets: vec![webhook_secret.clone()],
        keep_records,
        ..webhook::Options::default()
    })
    .await
    .with_context(|| format!("start the webhook server on 127.0.0.1:{}", a.webhook_port))?;

    let github = github::GithubServer::try_start(github::Options {
        port: a.github_port,
        tokens: a.tokens.clone(),
        ..github::Options::default()
    })
    .await
    .with_context(|| format!("bind the GitHub server on 127.0.0.1:{}", a.github_port))?;
    let onepassword = onepassword::OnePasswordServer::try_start(onepassword::Options {
        port: a.onepassword_port,
        tokens: a.tokens.clone(),
        ..onepassword::Options::default()
    })
    .await
    .with_context(|| {
        format!(
            "bind the 1Password server on 127.0.0.1:{}",
            a.onepassword_port
        )
    })?;
    let auth0 = auth0::Auth0Server::try_start(auth0::Options {
        port: a.auth0_port,
        tokens: a.tokens.clone(),
        ..auth0::Options::default()
    })
    .await
    .with_context(|| format!("bind the Auth0 server on 127.0.0.1:{}", a.auth0_port))?;

    for org in &a.orgs {
        if a.seed_events > 0 {
            let start = chrono::Utc::now() - chrono::Duration::minutes(50);
            let spacing_ms = (3_000_000 / a.seed_events as u64).max(1);
            okta.generate_events(
                org,
                a.seed_events,
                &okta::GenerateOptions {
                    start: Some(start),
                    spacing_ms,
                    ..Default::default()
                },
            );
        }
        if a.live_rate > 0.0 {
            okta.start_live(org, a.live_rate);
        }
    }

    // Test credentials only: printing them is the point (scripts configure the collector with them).
    let info = json!({
        "okta": { "url": okta.url(), "url_template": okta.url_template(), "default_org": okta.default_org(), "tokens": a.tokens },
        "azure": {
            "url": azure.url(),
            "tenant_id": azure.options().tenant_id,
            "client_id": azure.options().client_id,
            "client_secret": azure.options().client_secret,
            "dcr_immutable_id": azure.options().dcr_immutable_id,
            "stream_name": azure.options().stream_name,
        },
        "hec": { "url": hec.url(), "tokens": hec_tokens },
        "webhook": { "url": webhook.url(), "secret": webhook_secret },
        "github": { "url": github.url(), "enterprise": github::DEFAULT_ENTERPRISE },
        "onepassword": { "url": onepassword.url() },
        "auth0": { "url": auth0.url() },
    });
    let line = serde_json::to_string(&info)?;
    if let Some(path) = &a.info_file {
        // Written then renamed, so a script polling for the file never reads half of it.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{line}\n"))
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    }
    println!("{line}");
    tracing::info!(okta = %okta.url(), azure = %azure.url(), hec = %hec.url(), webhook = %webhook.url(), "test servers listening");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    Ok(())
}
