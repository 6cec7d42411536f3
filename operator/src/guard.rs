//! Where a credential may be sent. A source domain or product URL comes from a user's object,
//! and the operator and collector send secrets there (an Okta token, a HEC token, an Entra ID
//! client secret), from inside the cluster: a domain of `kubernetes.default.svc` or a webhook to
//! the cloud's metadata address would turn the operator into a way to reach what its users
//! cannot. These checks run at plan time in the operator and again in the collector, whose HTTP
//! clients also check every resolved address ([`SafeResolver`]) and never follow redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Environment variable with a comma-separated allow-list of source domains that the
/// cluster-internal rule would refuse (the tests' fakes, a private Okta proxy). An entry
/// `*.example` allows every name under `example`.
pub const ALLOW_SOURCE_DOMAINS_ENV: &str = "UC_ALLOW_SOURCE_DOMAINS";

/// Whether `ip` is link-local or a cloud metadata address: refused as a product or source
/// address whatever the allow-list says (no product lives there; credentials sent there leak).
pub fn is_metadata_or_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() // 169.254.0.0/16: AWS, Azure, GCP, OpenStack metadata
                || v4 == Ipv4Addr::new(100, 100, 100, 200) // Alibaba Cloud metadata
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_metadata_or_link_local(IpAddr::V4(v4));
            }
            (v6.segments()[0] & 0xffc0) == 0xfe80 // fe80::/10
                || v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) // AWS IPv6 metadata
                || v6.is_unspecified()
        }
    }
}

/// Host names that always mean a metadata service.
const METADATA_HOSTS: [&str; 3] = [
    "metadata.google.internal",
    "metadata.goog",
    "instance-data.ec2.internal",
];

/// Suffixes of cluster-internal and local names.
const INTERNAL_SUFFIXES: [&str; 6] = [
    ".svc",
    ".cluster.local",
    ".local",
    ".localhost",
    ".internal",
    ".localdomain",
];

/// Checks a product URL's host: refused when it is a link-local or metadata address or name.
/// Loopback and private addresses are allowed (a HEC or webhook receiver in the cluster is normal).
pub fn product_host(field: &str, host: &url::Host<&str>) -> Result<(), String> {
    let refused = match host {
        url::Host::Ipv4(ip) => is_metadata_or_link_local(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => is_metadata_or_link_local(IpAddr::V6(*ip)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            METADATA_HOSTS.contains(&d.as_str())
        }
    };
    if refused {
        return Err(format!(
            "{field}: {host} is a link-local or cloud metadata address; credentials are never sent there: use the product's own host name"
        ));
    }
    Ok(())
}

/// Checks a source domain (normalised: lower case, no trailing dot). Refused: IP literals,
/// single-label names, `localhost` and cluster-internal or local names, unless `allow` lists
/// it; metadata names and addresses always.
pub fn source_domain(domain: &str, allow: &[String]) -> Result<(), String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let field = "spec.source.okta.domain";
    if let Ok(ip) = d.parse::<IpAddr>()
        && is_metadata_or_link_local(ip)
    {
        return Err(format!(
            "{field}: {d} is a link-local or metadata address; the API token is never sent there"
        ));
    }
    if METADATA_HOSTS.contains(&d.as_str()) {
        return Err(format!(
            "{field}: {d} is a cloud metadata service; the API token is never sent there"
        ));
    }
    if allowed(&d, allow) {
        return Ok(());
    }
    let why = if d.parse::<IpAddr>().is_ok() {
        Some("an IP address")
    } else if !d.contains('.') || d == "localhost" {
        Some("not a fully qualified name")
    } else if INTERNAL_SUFFIXES.iter().any(|s| d.ends_with(s)) {
        Some("a cluster-internal or local name")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "{field}: {d} is {why}, and the operator would send the API token there; use your Okta domain (such as yourcompany.okta.com), or start the operator with --allow-source-domain {d} if this is intended"
        )),
    }
}

fn allowed(domain: &str, allow: &[String]) -> bool {
    allow.iter().any(|a| {
        let a = a.trim().trim_end_matches('.').to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(suffix) => domain.ends_with(&format!(".{suffix}")),
            None => a == domain,
        }
    })
}

/// Header names a user may not set on a webhook: credentials (which belong in a Secret), the
/// Standard Webhooks signature headers (which the collector computes), and framing headers.
const RESERVED_HEADERS: [&str; 12] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
];

/// Header names that look like a credential, refused so that none is stored in plain text in
/// the collector's ConfigMap.
fn credential_like(name: &str) -> bool {
    [
        "token",
        "secret",
        "passw",
        "apikey",
        "api-key",
        "api_key",
        "x-auth",
        "credential",
        "signature",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// Checks an extra header's name for a webhook.
pub fn extra_header(field: &str, name: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{field}: {name} is set by the collector or carries a credential; remove it (the signing secret goes in signingSecretRef)"
        ));
    }
    if credential_like(&lower) {
        return Err(format!(
            "{field}: {name} looks like a credential, and extra headers are stored in plain text in the collector's ConfigMap; remove it (put secrets in a Secret: signingSecretRef)"
        ));
    }
    Ok(())
}

/// A DNS resolver that drops link-local and metadata addresses, so a product or source name
/// that resolves there (by accident or by a hostile DNS answer) gets no connection, and so no
/// credential, from the collector or the operator.
#[derive(Clone, Copy, Debug, Default)]
pub struct SafeResolver;

impl reqwest::dns::Resolve for SafeResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let safe: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_metadata_or_link_local(a.ip()))
                .collect();
            if safe.is_empty() && !all.is_empty() {
                let msg =
                    format!("{host} resolves only to link-local or metadata addresses; refused");
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    msg,
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(safe.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_domains() {
        for ok in [
            "acme.okta.com",
            "acme.oktapreview.com",
            "login.acme.example",
        ] {
            assert!(source_domain(ok, &[]).is_ok(), "{ok}");
        }
        for bad in [
            "169.254.169.254",
            "10.0.0.1",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "okta",
            "metadata.google.internal",
            "printer.local",
            "::1",
        ] {
            let e = source_domain(bad, &[]).unwrap_err();
            assert!(e.contains("spec.source.okta.domain"), "{e}");
        }
        let allow = vec!["*.svc".to_string(), "10.0.0.1".to_string()];
        assert!(source_domain("okta.fake.svc", &allow).is_ok());
        assert!(source_domain("10.0.0.1", &allow).is_ok());
        // Metadata is never allowed.
        let all = vec![
            "169.254.169.254".to_string(),
            "metadata.google.internal".into(),
        ];
        assert!(source_domain("169.254.169.254", &all).is_err());
        assert!(source_domain("metadata.google.internal", &all).is_err());
    }

    #[test]
    fn product_hosts() {
        let check = |u: &str| {
            let url = url::Url::parse(u).unwrap();
            product_host("f", &url.host().unwrap())
        };
        assert!(check("https://splunk.example.com:8088").is_ok());
        assert!(check("http://127.0.0.1:8088").is_ok());
        assert!(check("https://10.1.2.3/hook").is_ok());
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal/computeMetadata/v1",
            "http://100.100.100.200/",
            "http://0.0.0.0/",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers() {
        assert!(extra_header("h", "X-Route").is_ok());
        for bad in [
            "Authorization",
            "cookie",
            "Webhook-Signature",
            "X-Api-Key",
            "X-Auth-Token",
            "Host",
        ] {
            assert!(extra_header("h", bad).is_err(), "{bad}");
        }
    }
}
