//! The one place HTTP clients are built, so TLS setup, timeouts and the user agent are uniform.

use std::sync::Once;
use std::time::Duration;

/// User agent sent to sources and products, so their operators can tell who is calling.
pub const USER_AGENT: &str = concat!("unified-connectors/", env!("CARGO_PKG_VERSION"));

static CRYPTO: Once = Once::new();

/// reqwest is built without a bundled crypto provider (kube already links `ring`); install it once.
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client with connect and request time-outs; `timeout` bounds a whole request (Okta itself gives up after 30 s).
pub fn client(timeout: Duration) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .tls_backend_rustls()
        .build()
        .expect("the HTTP client configuration is static and valid")
}
