//! Loading and validating the collector config ([`CollectorConfig`]), with errors that name the
//! offending field so that a hand-written standalone config is easy to fix.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use url::Url;

use crate::contract::{
    CONTRACT_VERSION, CollectorConfig, ProductConfig, SecretSource, SinkConfig, SourceConfig,
};

/// A validated config plus the hash the report carries (so the operator knows which config is live).
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// Holds only the products that passed [`validate_product`].
    pub config: CollectorConfig,
    pub hash: String,
    /// Products left out because their settings are invalid, by id, with the error: the collector
    /// runs the others and reports these as rejected, so one bad product never stops the rest.
    pub refused: BTreeMap<String, String>,
}

/// Reads `path` (YAML; JSON is YAML too), then validates it.
pub fn load(path: &Path) -> anyhow::Result<LoadedConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read collector config {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid collector config {}", path.display()))
}

/// Parses and validates config text.
pub fn parse(text: &str) -> anyhow::Result<LoadedConfig> {
    // One form for the operator and for people: enum variants are maps (`source: {okta: {...}}`).
    // serde-saphyr's errors name the line and column and show the offending snippet; the config
    // holds file paths and variable names for secrets, never their values, so the snippet is safe.
    let mut config: CollectorConfig = serde_saphyr::from_str(text)?;
    validate_shared(&config)?;
    let refused = refuse_invalid_products(&mut config);
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    Ok(LoadedConfig {
        config,
        hash,
        refused,
    })
}

/// Checks what serde cannot, strictly: the shared settings and every product.
pub fn validate(c: &CollectorConfig) -> anyhow::Result<()> {
    validate_shared(c)?;
    for (i, p) in c.products.iter().enumerate() {
        validate_product(
            p,
            &format!("products[{i}].sink"),
            &format!("products[{i}].filter"),
        )?;
    }
    Ok(())
}

/// Removes the products whose settings are invalid, returning why each was left out.
fn refuse_invalid_products(c: &mut CollectorConfig) -> BTreeMap<String, String> {
    let mut refused = BTreeMap::new();
    let mut i = 0;
    c.products.retain(|p| {
        let at = format!("products[{i}]");
        i += 1;
        match validate_product(p, &format!("{at}.sink"), &format!("{at}.filter")) {
            Ok(()) => true,
            Err(e) => {
                refused.insert(p.id.clone(), format!("{e:#}"));
                false
            }
        }
    });
    refused
}

/// Checks the settings every product depends on: versions, the source, ranges, unique product
/// ids. A failure here stops the collector; a product's own settings are [`validate_product`]'s.
fn validate_shared(c: &CollectorConfig) -> anyhow::Result<()> {
    if c.version != CONTRACT_VERSION {
        bail!(
            "version: {} is not supported (this collector understands version {CONTRACT_VERSION})",
            c.version
        );
    }
    let SourceConfig::Okta(okta) = &c.source;
    if okta.domain.trim().is_empty() || okta.domain.contains('/') {
        bail!("source.okta.domain: expected a host name such as example.okta.com");
    }
    if let Ok(ip) = okta.domain.trim_end_matches('.').parse()
        && crate::guard::is_metadata_or_link_local(ip)
    {
        bail!(
            "source.okta.domain: {ip} is a link-local or metadata address; the token is never sent there"
        );
    }
    if let Some(base) = &okta.base_url {
        check_url("source.okta.baseUrl", base, okta.allow_insecure_http)?;
    }
    check_secret("source.okta.token", &okta.token)?;
    if !(okta.rate_limit_share > 0.0 && okta.rate_limit_share <= 1.0) {
        bail!(
            "source.okta.rateLimitShare: {} is outside (0, 1]",
            okta.rate_limit_share
        );
    }
    if !(1..=1000).contains(&okta.page_limit) {
        bail!(
            "source.okta.pageLimit: {} is outside 1..=1000",
            okta.page_limit
        );
    }
    if okta.poll_interval.is_zero() {
        bail!("source.okta.pollInterval: must be greater than zero");
    }
    let mut ids = HashSet::new();
    for (i, p) in c.products.iter().enumerate() {
        let at = format!("products[{i}]");
        if p.id.trim().is_empty() {
            bail!("{at}.id: must not be empty");
        }
        if !ids.insert(p.id.as_str()) {
            bail!("{at}.id: {:?} is used by another product", p.id);
        }
    }
    let t = &c.tuning;
    if t.max_backlog_events == 0 || t.batch_max_events == 0 || t.batch_max_bytes < 1024 {
        bail!("tuning: maxBacklogEvents and batchMaxEvents must be > 0, batchMaxBytes >= 1024");
    }
    if t.persist_interval.is_zero() {
        bail!("tuning.persistInterval: must be greater than zero");
    }
    c.listen.parse::<SocketAddr>().with_context(|| {
        format!(
            "listen: {:?} is not an address such as 0.0.0.0:9090",
            c.listen
        )
    })?;
    Ok(())
}

/// Checks one product's settings as the collector will use them. `sink_at` and `filter_at` name
/// where those settings came from (`products[0].sink` in a config file, `spec.product` in a
/// ProductBinding), so the operator runs this very code on each binding before it reaches a
/// shared config and its message names the binding's own field.
pub fn validate_product(p: &ProductConfig, sink_at: &str, filter_at: &str) -> anyhow::Result<()> {
    for t in &p.filter.event_types {
        if t.is_empty() || t.trim_end_matches('*').contains('*') {
            bail!("{filter_at}.eventTypes: {t:?} (only a trailing '*' is allowed)");
        }
    }
    match &p.sink {
        SinkConfig::Sentinel(s) => {
            let at = format!("{sink_at}.sentinel");
            check_url(
                &format!("{at}.endpoint"),
                &s.endpoint,
                s.allow_insecure_http,
            )?;
            if let Some(a) = &s.authority_host {
                check_url(&format!("{at}.authorityHost"), a, s.allow_insecure_http)?;
            }
            if s.dcr_immutable_id.trim().is_empty() {
                bail!("{at}.dcrImmutableId: must not be empty");
            }
            if !s.stream_name.starts_with("Custom-") || s.stream_name.len() == "Custom-".len() {
                bail!(
                    "{at}.streamName: {:?} must be a custom stream, Custom-<name> (Microsoft- streams take no custom data)",
                    s.stream_name
                );
            }
            check_secret(&format!("{at}.tenantId"), &s.tenant_id)?;
            check_secret(&format!("{at}.clientId"), &s.client_id)?;
            check_secret(&format!("{at}.clientSecret"), &s.client_secret)?;
        }
        SinkConfig::SplunkHec(s) => {
            let at = format!("{sink_at}.splunkHec");
            check_url(&format!("{at}.url"), &s.url, s.allow_insecure_http)?;
            check_secret(&format!("{at}.token"), &s.token)?;
            if s.sourcetype.trim().is_empty() {
                bail!("{at}.sourcetype: must not be empty (Splunk files events by it)");
            }
        }
        SinkConfig::Webhook(s) => {
            let at = format!("{sink_at}.webhook");
            check_url(&format!("{at}.url"), &s.url, s.allow_insecure_http)?;
            check_secret(&format!("{at}.signingSecret"), &s.signing_secret)?;
            for (name, value) in &s.headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    bail!(
                        "{at}.headers: {name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
                    );
                }
                crate::guard::extra_header(&format!("{at}.headers"), name)
                    .map_err(anyhow::Error::msg)?;
                if reqwest::header::HeaderValue::from_str(value).is_err() {
                    bail!(
                        "{at}.headers.{name}: the value holds a control character (such as CR or LF) or non-ASCII text"
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_url(field: &str, value: &str, allow_http: bool) -> anyhow::Result<()> {
    // The value is not echoed: a URL that fails to parse may still hold a password.
    let url = Url::parse(value).map_err(|e| anyhow::anyhow!("{field}: not a valid URL ({e})"))?;
    let Some(host) = url.host().filter(|h| !h.to_string().is_empty()) else {
        bail!("{field}: {value:?} has no host");
    };
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "{field}: holds a user name or password; remove it from the URL (credentials go in the Secret the binding names)"
        );
    }
    crate::guard::product_host(field, &host).map_err(anyhow::Error::msg)?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => bail!(
            "{field}: plain http:// is refused; use https:// or set allowInsecureHttp: true (tests only)"
        ),
        other => bail!("{field}: unsupported scheme {other:?}"),
    }
}

fn check_secret(field: &str, s: &SecretSource) -> anyhow::Result<()> {
    match s {
        SecretSource::File(p) if p.as_os_str().is_empty() => bail!("{field}.file: empty path"),
        SecretSource::Env(v) if v.is_empty() => bail!("{field}.env: empty variable name"),
        _ => Ok(()),
    }
}

/// Reads a secret's current value (trimmed). The value is never logged; errors name only the source.
pub async fn read_secret(s: &SecretSource) -> anyhow::Result<String> {
    let value = match s {
        // A small local file: read in place (no blocking-pool thread per request).
        SecretSource::File(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read secret file {}", p.display()))?,
        SecretSource::Env(v) => {
            std::env::var(v).with_context(|| format!("environment variable {v} is not set"))?
        }
    };
    let value = value.trim();
    if value.is_empty() {
        bail!("secret {} is empty", describe(s));
    }
    Ok(value.to_string())
}

/// Where a secret comes from, for messages (never its value).
pub fn describe(s: &SecretSource) -> String {
    match s {
        SecretSource::File(p) => format!("file {}", p.display()),
        SecretSource::Env(v) => format!("env {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
version: 1
source:
  okta:
    domain: example.okta.com
    baseUrl: http://127.0.0.1:1
    allowInsecureHttp: true
    token: { file: /tmp/t }
    since: 2026-01-01T00:00:00Z
products:
  - id: a
    since: 2026-01-01T00:00:00Z
    sink:
      webhook: { url: "https://x.example/hook", signingSecret: { env: S } }
state: { file: { path: /tmp/state.json } }
"#;

    #[test]
    fn accepts_a_minimal_config_with_defaults() {
        let c = parse(OK).unwrap().config;
        let SourceConfig::Okta(o) = &c.source;
        assert_eq!(o.page_limit, 1000);
        assert_eq!(o.poll_interval.as_secs(), 15);
        assert_eq!(c.listen, "0.0.0.0:9090");
    }

    #[test]
    fn reads_back_what_the_operator_renders() {
        let c = parse(OK).unwrap().config;
        let rendered = serde_saphyr::to_string(&c).unwrap();
        // The map form people write, so a rendered config is also a template for a hand-written one.
        assert!(
            rendered.contains("okta:") && !rendered.contains('!'),
            "{rendered}"
        );
        assert_eq!(parse(&rendered).unwrap().config, c);
        let broken = rendered.replace("domain:", "domian:");
        assert!(format!("{:#}", parse(&broken).unwrap_err()).contains("domian"));
    }

    #[test]
    fn refuses_plain_http_without_opt_in() {
        let text = OK.replace("allowInsecureHttp: true", "allowInsecureHttp: false");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(
            err.contains("source.okta.baseUrl") && err.contains("allowInsecureHttp"),
            "{err}"
        );
    }

    #[test]
    fn names_the_field_in_errors() {
        let text = OK.replace("id: a", "id: \"\"");
        assert!(format!("{:#}", parse(&text).unwrap_err()).contains("products[0].id"));
        let text = OK.replace("version: 1", "version: 7");
        assert!(format!("{:#}", parse(&text).unwrap_err()).contains("version"));
        let text = OK.replace(
            "domain: example.okta.com",
            "domain: example.okta.com\n    pageLimit: 5000",
        );
        assert!(format!("{:#}", parse(&text).unwrap_err()).contains("pageLimit"));
        let text = OK.replace("domain:", "domian:");
        assert!(format!("{:#}", parse(&text).unwrap_err()).contains("domian"));
    }

    #[test]
    fn a_bad_product_is_left_out_and_the_others_run() {
        let two = OK.replace(
            "state:",
            r#"  - id: bad
    since: 2026-01-01T00:00:00Z
    sink:
      webhook: { url: "https://x.example/hook", signingSecret: { env: S }, headers: { "X Bad": v } }
state:"#,
        );
        let loaded = parse(&two).unwrap();
        let ids: Vec<_> = loaded
            .config
            .products
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, ["a"]);
        let why = &loaded.refused["bad"];
        assert!(why.contains("products[1].sink.webhook.headers"), "{why}");
        assert!(validate(&serde_saphyr::from_str(&two).unwrap()).is_err());
    }

    #[test]
    fn product_settings_the_api_server_accepts_are_checked() {
        let bad = [
            (
                "url: \"https://x.example/hook\"",
                "url: \"https://x y.example/hook\"",
                "webhook.url",
            ),
            (
                "signingSecret: { env: S }",
                "signingSecret: { env: S }, headers: { X-A: \"a\\r\\nb\" }",
                "headers.X-A",
            ),
        ];
        for (from, to, field) in bad {
            let text = OK.replace(from, to);
            assert_ne!(text, OK, "{to}");
            let loaded = parse(&text).unwrap();
            assert!(loaded.config.products.is_empty(), "{to}");
            assert!(
                loaded.refused["a"].contains(field),
                "{}",
                loaded.refused["a"]
            );
        }
    }
}
