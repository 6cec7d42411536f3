//! Helpers for the servers' own tests.

/// A plain-HTTP client (reqwest is built without a default crypto provider: install ring).
pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The URL of the `Link` header with `rel="<rel>"`.
pub(crate) fn link(r: &reqwest::Response, rel: &str) -> Option<String> {
    r.headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (url, params) = v.split_once(';')?;
            params.contains(&format!("rel=\"{rel}\"")).then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        })
}
