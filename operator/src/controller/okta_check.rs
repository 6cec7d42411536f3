//! Validates an Okta API token once, before its connector joins a collector, and remembers the
//! verdict so reconciles do not spend the customer's System Log quota.
//!
//! The check is `GET /api/v1/logs?limit=1`: it proves both that the token is valid and that its
//! admin may read the System Log (what `/users/me` alone would not show).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::secrets::SecretValue;

/// What Okta said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// 401: the token is wrong, expired or revoked.
    Invalid(String),
    /// 403: valid, but its admin may not read the System Log.
    Forbidden(String),
    /// Okta could not be asked (network, 5xx, 429): not the token's fault; retried later.
    Unreachable(String),
}

impl Verdict {
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Valid => "TokenValid",
            Verdict::Invalid(_) => "InvalidToken",
            Verdict::Forbidden(_) => "TokenLacksPermission",
            Verdict::Unreachable(_) => "OktaUnreachable",
        }
    }
    pub fn message(&self) -> String {
        match self {
            Verdict::Valid => "Okta accepted the API token and it may read the System Log".into(),
            Verdict::Invalid(m) | Verdict::Forbidden(m) | Verdict::Unreachable(m) => m.clone(),
        }
    }
}

/// How long verdicts are trusted before asking Okta again.
const VALID_TTL: Duration = Duration::from_secs(30 * 60);
const REJECTED_TTL: Duration = Duration::from_secs(2 * 60);

/// Where Okta lives: `https://{domain}` in production, a test server in tests.
#[derive(Clone, Debug)]
pub struct OktaEndpoint {
    template: Option<String>,
}

impl OktaEndpoint {
    /// `template` replaces `https://{domain}`; `{domain}` inside it is substituted.
    pub fn new(template: Option<String>) -> Self {
        OktaEndpoint { template }
    }
    pub fn base_url(&self, domain: &str) -> String {
        match &self.template {
            Some(t) => t
                .replace("{domain}", domain)
                .trim_end_matches('/')
                .to_string(),
            None => format!("https://{domain}"),
        }
    }
    /// True when the base URL is plain http (only possible through the test-only template).
    pub fn is_insecure(&self) -> bool {
        self.template
            .as_deref()
            .is_some_and(|t| t.starts_with("http://"))
    }
    pub fn is_overridden(&self) -> bool {
        self.template.is_some()
    }
}

/// (domain, SHA-256 of the token): verdicts are per org and per token, never keyed by the token itself.
type VerdictKey = (String, [u8; 32]);

pub struct TokenChecker {
    http: reqwest::Client,
    endpoint: OktaEndpoint,
    /// The last verdict per token and when Okta gave it (`None`: carried over from the status
    /// a previous operator process wrote, not yet re-checked by this one).
    cache: Mutex<HashMap<VerdictKey, (Verdict, Option<Instant>)>>,
    metrics: Option<super::metrics::Metrics>,
}

impl TokenChecker {
    pub fn new(endpoint: OktaEndpoint, metrics: Option<super::metrics::Metrics>) -> Self {
        TokenChecker {
            http: crate::http::client(Duration::from_secs(20)),
            endpoint,
            cache: Mutex::default(),
            metrics,
        }
    }

    pub fn endpoint(&self) -> &OktaEndpoint {
        &self.endpoint
    }

    /// The last known verdict, however old: what status shows until Okta is asked again, so an
    /// expiring verdict or an operator restart never flips a healthy object to "not validated".
    pub fn cached(&self, domain: &str, token: &SecretValue) -> Option<Verdict> {
        let cache = self.cache.lock().expect("token cache lock");
        cache
            .get(&(domain.to_string(), token.fingerprint()))
            .map(|(v, _)| v.clone())
    }

    /// The cached verdict, if still fresh enough not to ask Okta.
    fn fresh(&self, domain: &str, token: &SecretValue) -> Option<Verdict> {
        let cache = self.cache.lock().expect("token cache lock");
        cache
            .get(&(domain.to_string(), token.fingerprint()))
            .and_then(|(v, at)| {
                let ttl = if *v == Verdict::Valid {
                    VALID_TTL
                } else {
                    REJECTED_TTL
                };
                at.is_some_and(|at| at.elapsed() < ttl).then(|| v.clone())
            })
    }

    /// Carries a verdict over from an object's status (written by an earlier operator process)
    /// as the last known one, to be re-checked at the next sync. Never overrides a real answer.
    pub fn seed(&self, domain: &str, token: &SecretValue, verdict: Verdict) {
        self.cache
            .lock()
            .expect("token cache lock")
            .entry((domain.to_string(), token.fingerprint()))
            .or_insert((verdict, None));
    }

    /// Forgets a verdict, e.g. when the collector reports that Okta now refuses the token.
    pub fn invalidate(&self, domain: &str, token: &SecretValue) {
        self.cache
            .lock()
            .expect("token cache lock")
            .remove(&(domain.to_string(), token.fingerprint()));
    }

    /// The verdict for a token, asking Okta only when nothing fresh is cached. When Okta cannot
    /// be asked, the last known verdict stands (an outage says nothing about the token).
    pub async fn check(&self, domain: &str, token: &SecretValue) -> Verdict {
        if let Some(v) = self.fresh(domain, token) {
            return v;
        }
        let verdict = self.ask_okta(domain, token).await;
        if let Some(m) = &self.metrics {
            m.token_checks.with_label_values(&[verdict.reason()]).inc();
        }
        if matches!(verdict, Verdict::Unreachable(_)) {
            return self.cached(domain, token).unwrap_or(verdict);
        }
        self.cache.lock().expect("token cache lock").insert(
            (domain.to_string(), token.fingerprint()),
            (verdict.clone(), Some(Instant::now())),
        );
        verdict
    }

    async fn ask_okta(&self, domain: &str, token: &SecretValue) -> Verdict {
        let url = format!("{}/api/v1/logs?limit=1", self.endpoint.base_url(domain));
        let response = self
            .http
            .get(&url)
            .header("Authorization", format!("SSWS {}", token.expose()))
            .header("Accept", "application/json")
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Verdict::Unreachable(format!(
                    "could not reach Okta at {domain} to validate the API token: {}; will retry",
                    redact_error(&e)
                ));
            }
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        classify(domain, status, &body)
    }
}

/// reqwest errors print the URL; ours never holds a secret, but strip the query anyway.
fn redact_error(e: &reqwest::Error) -> String {
    let mut e_str = e.to_string();
    if let Some(url) = e.url() {
        e_str = e_str.replace(
            url.as_str(),
            &format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.path()
            ),
        );
    }
    e_str
}

/// Turns Okta's answer into a verdict with an actionable message. Okta error bodies carry
/// `errorCode` and `errorSummary`, never the token.
pub fn classify(domain: &str, status: u16, body: &str) -> Verdict {
    let summary = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .map(|v| {
            let code = v.get("errorCode").and_then(|c| c.as_str()).unwrap_or("");
            let text = v.get("errorSummary").and_then(|c| c.as_str()).unwrap_or("");
            format!("{code} {text}").trim().to_string()
        })
        .unwrap_or_default();
    let detail = if summary.is_empty() {
        String::new()
    } else {
        format!(" ({summary})")
    };
    match status {
        200..=299 => Verdict::Valid,
        401 => Verdict::Invalid(format!(
            "Okta {domain} rejected the API token (401{detail}): it is wrong, expired or revoked. Create a token in the Okta Admin Console (Security > API > Tokens) and update the Secret"
        )),
        403 => Verdict::Forbidden(format!(
            "the API token may not read the System Log of {domain} (403{detail}): create it as an admin with the Read-Only Administrator role (or a custom role with okta.logs.read) and update the Secret"
        )),
        404 => Verdict::Invalid(format!(
            "{domain} has no System Log API (404{detail}): check spec.source.okta.domain names your Okta org, such as yourcompany.okta.com"
        )),
        429 => Verdict::Unreachable(format!(
            "Okta {domain} is rate limiting (429{detail}); will validate the token again shortly"
        )),
        s => Verdict::Unreachable(format!(
            "Okta {domain} answered {s}{detail} while validating the token; will retry"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn okta_answers_become_actionable_verdicts() {
        assert_eq!(classify("a.okta.com", 200, "[]"), Verdict::Valid);
        let bad = classify(
            "a.okta.com",
            401,
            r#"{"errorCode":"E0000011","errorSummary":"Invalid token provided"}"#,
        );
        assert_eq!(bad.reason(), "InvalidToken");
        assert!(
            bad.message().contains("E0000011 Invalid token provided")
                && bad.message().contains("update the Secret")
        );
        let forbidden = classify("a.okta.com", 403, r#"{"errorCode":"E0000006"}"#);
        assert_eq!(forbidden.reason(), "TokenLacksPermission");
        assert!(forbidden.message().contains("Read-Only Administrator"));
        assert!(matches!(
            classify("a.okta.com", 503, "oops"),
            Verdict::Unreachable(_)
        ));
        assert!(matches!(
            classify("a.okta.com", 429, ""),
            Verdict::Unreachable(_)
        ));
    }

    #[test]
    fn endpoint_template_substitutes_the_domain() {
        let e = OktaEndpoint::new(Some("http://127.0.0.1:9/orgs/{domain}/".into()));
        assert_eq!(
            e.base_url("a.okta.com"),
            "http://127.0.0.1:9/orgs/a.okta.com"
        );
        assert!(e.is_insecure());
        assert_eq!(
            OktaEndpoint::new(None).base_url("a.okta.com"),
            "https://a.okta.com"
        );
    }

    #[tokio::test]
    async fn verdicts_are_cached_per_token() {
        let checker = TokenChecker::new(OktaEndpoint::new(Some("http://127.0.0.1:1".into())), None);
        let token = SecretValue::new("t");
        // Nothing listens on port 1: unreachable, and unreachable verdicts are not cached.
        assert!(matches!(
            checker.check("a.okta.com", &token).await,
            Verdict::Unreachable(_)
        ));
        assert_eq!(checker.cached("a.okta.com", &token), None);
        checker.cache.lock().unwrap().insert(
            ("a.okta.com".into(), token.fingerprint()),
            (Verdict::Valid, Some(Instant::now())),
        );
        assert_eq!(checker.check("a.okta.com", &token).await, Verdict::Valid);
        assert_eq!(
            checker.cached("b.okta.com", &token),
            None,
            "verdicts are per domain"
        );
        checker.invalidate("a.okta.com", &token);
        assert_eq!(checker.cached("a.okta.com", &token), None);
    }

    #[tokio::test]
    async fn a_verdict_carried_over_from_status_holds_until_okta_answers() {
        // Nothing listens on port 1: Okta cannot be asked, as right after a restart in an outage.
        let checker = TokenChecker::new(OktaEndpoint::new(Some("http://127.0.0.1:1".into())), None);
        let token = SecretValue::new("t");
        checker.seed("a.okta.com", &token, Verdict::Valid);
        assert_eq!(checker.cached("a.okta.com", &token), Some(Verdict::Valid));
        assert_eq!(
            checker.fresh("a.okta.com", &token),
            None,
            "re-checked at the next sync"
        );
        assert_eq!(
            checker.check("a.okta.com", &token).await,
            Verdict::Valid,
            "Okta unreachable: the last known verdict stands"
        );
        // A seed never overrides an answer from Okta.
        let bad = SecretValue::new("bad");
        checker.cache.lock().unwrap().insert(
            ("a.okta.com".into(), bad.fingerprint()),
            (Verdict::Invalid("401".into()), Some(Instant::now())),
        );
        checker.seed("a.okta.com", &bad, Verdict::Valid);
        assert_eq!(
            checker.cached("a.okta.com", &bad),
            Some(Verdict::Invalid("401".into()))
        );
    }
}
