//! The one place HTTP clients are built, so TLS setup, timeouts and the user agent are uniform.
//!
//! Besides the system's CA bundle, every client trusts the PEM bundle named by
//! [`EXTRA_CA_ENV`]: the CA of a TLS-inspecting proxy, or of a product (a Splunk, a webhook
//! receiver) whose certificate a private CA signed. The operator and the collector read it alike,
//! so the token check and the collector reach the same hosts.

use std::path::Path;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use reqwest::Certificate;

/// User agent sent to sources and products, so their operators can tell who is calling.
pub const USER_AGENT: &str = concat!("unified-connectors/", env!("CARGO_PKG_VERSION"));

/// Environment variable naming a PEM file of extra trusted CAs (added to the system's, not instead).
pub const EXTRA_CA_ENV: &str = "UC_EXTRA_CA_FILE";

static CRYPTO: Once = Once::new();
static EXTRA_CA: OnceLock<Result<Vec<Certificate>, String>> = OnceLock::new();

/// reqwest is built without a bundled crypto provider (kube already links `ring`); install it once.
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Reads a PEM bundle; the error names the variable, the file and the fix.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<Certificate>, String> {
    let at = format!("{EXTRA_CA_ENV}={}", path.display());
    let pem = std::fs::read(path).map_err(|e| {
        format!("{at}: cannot read the CA bundle: {e} (mount the file into the pod, or unset {EXTRA_CA_ENV})")
    })?;
    let certs = Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{at}: not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{at}: holds no certificate (expected one or more -----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    // A bundle whose PEM parses but whose DER does not is refused when a client is built with it.
    try_client(Duration::from_secs(1), &certs).map_err(|e| format!("{at}: unusable: {e}"))?;
    Ok(certs)
}

/// The extra CAs from [`EXTRA_CA_ENV`], read once per process.
fn extra_ca() -> &'static Result<Vec<Certificate>, String> {
    EXTRA_CA.get_or_init(|| match std::env::var_os(EXTRA_CA_ENV) {
        Some(p) if !p.is_empty() => load_ca_bundle(Path::new(&p)),
        _ => Ok(Vec::new()),
    })
}

/// Checks at startup that the extra CA bundle, if one is named, can be used; returns how many
/// certificates it holds. A process that would otherwise fail every TLS handshake later stops
/// here with a message saying which file is wrong.
pub fn check_extra_ca() -> anyhow::Result<usize> {
    match extra_ca() {
        Ok(certs) => Ok(certs.len()),
        Err(e) => anyhow::bail!("{e}"),
    }
}

/// A client with connect and request time-outs; `timeout` bounds a whole request (Okta itself gives up after 30 s).
pub fn client(timeout: Duration) -> reqwest::Client {
    // An unusable bundle was refused by `check_extra_ca` at startup; a library user who skipped
    // that check gets the system's CAs only, never a panic.
    let extra = extra_ca().as_deref().unwrap_or_default();
    try_client(timeout, extra).expect("the HTTP client configuration is static and valid")
}

/// A client trusting the system's CAs plus `extra`.
pub fn try_client(timeout: Duration, extra: &[Certificate]) -> reqwest::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        // Every request carries a credential: never to a link-local or metadata address, and
        // never on to wherever a redirect points (no source or product API redirects).
        .dns_resolver(std::sync::Arc::new(crate::guard::SafeResolver))
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_rustls()
        .tls_certs_merge(extra.iter().cloned())
        .build()
}
