//! Realistic Okta LogEvent JSON, shaped like what the System Log API returns (required fields plus
//! the usual optional objects), so collectors and products handle real-sized, real-shaped events.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

/// `(eventType, legacyEventType, displayMessage, severity)` of commonly seen events.
pub const EVENT_TYPES: &[(&str, &str, &str, &str)] = &[
    (
        "user.session.start",
        "core.user_auth.login_success",
        "User login to Okta",
        "INFO",
    ),
    (
        "user.authentication.sso",
        "app.auth.sso",
        "User single sign on to app",
        "INFO",
    ),
    (
        "policy.evaluate_sign_on",
        "",
        "Evaluation of sign-on policy",
        "INFO",
    ),
    (
        "user.authentication.auth_via_mfa",
        "core.user.factor.attempt_success",
        "Authentication of user via MFA",
        "INFO",
    ),
    (
        "user.session.end",
        "core.user_auth.logout_success",
        "User logout from Okta",
        "INFO",
    ),
    (
        "user.account.lock",
        "core.user.account.locked",
        "Max sign in attempts exceeded",
        "WARN",
    ),
    (
        "user.authentication.verify",
        "",
        "Verify user identity",
        "INFO",
    ),
    (
        "app.oauth2.as.token.grant.access_token",
        "",
        "OAuth2 access token is granted",
        "INFO",
    ),
    (
        "user.lifecycle.create",
        "core.user.config.user_creation.success",
        "Create Okta user",
        "INFO",
    ),
    (
        "group.user_membership.add",
        "core.user_group_member.user_add",
        "Add user to group membership",
        "INFO",
    ),
    (
        "system.api_token.create",
        "api.token.create",
        "Create API token",
        "INFO",
    ),
    (
        "security.threat.detected",
        "",
        "Request from suspicious actor",
        "WARN",
    ),
];

const CITIES: &[(&str, &str, &str, &str, f64, f64)] = &[
    (
        "San Francisco",
        "California",
        "United States",
        "94105",
        37.7852,
        -122.3874,
    ),
    (
        "London",
        "England",
        "United Kingdom",
        "EC1A",
        51.5164,
        -0.093,
    ),
    ("Paris", "Ile-de-France", "France", "75001", 48.8628, 2.3292),
    (
        "Sydney",
        "New South Wales",
        "Australia",
        "2000",
        -33.8688,
        151.2093,
    ),
    ("Toronto", "Ontario", "Canada", "M5H", 43.6532, -79.3832),
];

const USERS: &[(&str, &str)] = &[
    ("ada.lovelace", "Ada Lovelace"),
    ("alan.turing", "Alan Turing"),
    ("grace.hopper", "Grace Hopper"),
    ("edsger.dijkstra", "Edsger Dijkstra"),
    ("barbara.liskov", "Barbara Liskov"),
    ("ken.thompson", "Ken Thompson"),
];

const AGENTS: &[(&str, &str, &str)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Windows 10",
        "CHROME",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
        "Mac OS X",
        "SAFARI",
    ),
    (
        "okta-sdk-java/8.2.3 java/17.0.8 Linux/5.15.0",
        "Linux",
        "UNKNOWN",
    ),
];

/// Okta object ids look like `00u1a2b3c4d5e6f7g8h9` (prefix + 17 base-62-ish characters).
pub fn okta_id(rng: &mut impl Rng, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = String::with_capacity(20);
    id.push_str(prefix);
    for _ in 0..17 {
        id.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    id
}

/// Okta's timestamp format: RFC 3339 UTC with milliseconds, `2024-01-01T12:00:00.123Z`.
pub fn okta_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One LogEvent with a fresh v4 `uuid`, `published` = `published`, of type `event_type` (or a
/// random realistic one when `None`). About 2 KB of JSON, like real events.
pub fn log_event(rng: &mut impl Rng, published: DateTime<Utc>, event_type: Option<&str>) -> Value {
    let &(default_type, legacy, message, severity) = EVENT_TYPES.choose(rng).expect("non-empty");
    let event_type = event_type.unwrap_or(default_type);
    let (login, name) = *USERS.choose(rng).expect("non-empty");
    let &(city, state, country, postal, lat, lon) = CITIES.choose(rng).expect("non-empty");
    let &(ua, os, browser) = AGENTS.choose(rng).expect("non-empty");
    let ip = format!(
        "{}.{}.{}.{}",
        rng.random_range(1..224),
        rng.random_range(0..256),
        rng.random_range(0..256),
        rng.random_range(1..255)
    );
    let failure = severity == "WARN" || rng.random_ratio(1, 20);
    let uuid = uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string();
    let request_id = format!("Z{}AAA", okta_id(rng, "").to_uppercase());
    let session = format!("102{}", okta_id(rng, ""));
    let user_id = okta_id(rng, "00u");
    let geo = json!({
        "city": city,
        "state": state,
        "country": country,
        "postalCode": postal,
        "geolocation": { "lat": lat, "lon": lon }
    });
    json!({
        "actor": {
            "id": user_id,
            "type": "User",
            "alternateId": format!("{login}@example.com"),
            "displayName": name,
            "detailEntry": null
        },
        "client": {
            "userAgent": { "rawUserAgent": ua, "os": os, "browser": browser },
            "zone": "null",
            "device": "Computer",
            "id": null,
            "ipAddress": ip,
            "geographicalContext": geo
        },
        "device": null,
        "authenticationContext": {
            "authenticationProvider": null,
            "credentialProvider": null,
            "credentialType": null,
            "issuer": null,
            "interface": null,
            "authenticationStep": 0,
            "externalSessionId": session
        },
        "displayMessage": message,
        "eventType": event_type,
        "outcome": if failure {
            json!({ "result": "FAILURE", "reason": "INVALID_CREDENTIALS" })
        } else {
            json!({ "result": "SUCCESS", "reason": null })
        },
        "published": okta_time(published),
        "securityContext": {
            "asNumber": 7922,
            "asOrg": "comcast",
            "isp": "comcast cable communications llc",
            "domain": "comcast.net",
            "isProxy": false
        },
        "severity": severity,
        "debugContext": {
            "debugData": {
                "requestId": request_id,
                "requestUri": "/idp/idx/identify",
                "threatSuspected": "false",
                "url": "/idp/idx/identify?",
                "dtHash": format!("{:064x}", rng.random::<u128>())
            }
        },
        "legacyEventType": if legacy.is_empty() { Value::Null } else { Value::from(legacy) },
        "transaction": { "type": "WEB", "id": request_id, "detail": {} },
        "uuid": uuid,
        "version": "0",
        "request": {
            "ipChain": [{
                "ip": ip,
                "geographicalContext": geo,
                "version": "V4",
                "source": null
            }]
        },
        "target": [{
            "id": okta_id(rng, "0oa"),
            "type": "AppInstance",
            "alternateId": "Example App",
            "displayName": "Example App",
            "detailEntry": null
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn events_have_the_required_fields() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t = Utc::now();
        let e = log_event(&mut rng, t, None);
        for field in ["uuid", "published", "eventType", "version", "severity"] {
            assert!(
                e.get(field).is_some_and(|v| !v.is_null()),
                "{field} missing in {e}"
            );
        }
        assert_eq!(e["published"], okta_time(t));
        let u = uuid::Uuid::parse_str(e["uuid"].as_str().unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(log_event(&mut rng, t, Some("x.y"))["eventType"], "x.y");
        let size = serde_json::to_vec(&e).unwrap().len();
        assert!((1200..4000).contains(&size), "event of {size} bytes");
    }
}

/// Pre-serialised events with holes for `published` and `uuid`, so generating large logs costs
/// a copy and two small formats per event instead of building and serialising a JSON tree
/// (benchmarks generate hundreds of thousands of events). Other fields repeat across events
/// drawn from the same template; each template is an independent [`log_event`].
pub(crate) struct Templates {
    /// One pool per requested event type (or a single mixed pool).
    pools: Vec<Vec<Template>>,
}

struct Template {
    head: Vec<u8>,
    mid: Vec<u8>,
    tail: Vec<u8>,
}

const PUBLISHED_HOLE: &str = "@@published@@";
const UUID_HOLE: &str = "@@uuid@@";

fn find(hay: &[u8], needle: &str) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the hole is in the template")
}

impl Templates {
    /// `event_types` empty = one pool of the realistic mix; else one pool per type, used round-robin.
    pub fn new(rng: &mut impl Rng, event_types: &[String]) -> Templates {
        let make = |rng: &mut _, ty: Option<&str>| {
            let mut e = log_event(rng, Utc::now(), ty);
            e["published"] = PUBLISHED_HOLE.into();
            e["uuid"] = UUID_HOLE.into();
            let json = serde_json::to_vec(&e).expect("a Value serialises");
            // Keys serialise sorted: `published` comes before `uuid`.
            let p = find(&json, PUBLISHED_HOLE);
            let u = find(&json, UUID_HOLE);
            Template {
                head: json[..p].to_vec(),
                mid: json[p + PUBLISHED_HOLE.len()..u].to_vec(),
                tail: json[u + UUID_HOLE.len()..].to_vec(),
            }
        };
        let pools = if event_types.is_empty() {
            vec![(0..64).map(|_| make(rng, None)).collect()]
        } else {
            event_types
                .iter()
                .map(|t| (0..8).map(|_| make(rng, Some(t))).collect())
                .collect()
        };
        Templates { pools }
    }

    /// Writes event number `i` (its type is pool `i % pools`) published at `published` into
    /// `out`, and returns its fresh v4 uuid.
    pub fn render(
        &self,
        rng: &mut impl Rng,
        i: usize,
        published: DateTime<Utc>,
        out: &mut Vec<u8>,
    ) -> String {
        let pool = &self.pools[i % self.pools.len()];
        let t = &pool[rng.random_range(0..pool.len())];
        let uuid = uuid::Builder::from_random_bytes(rng.random())
            .into_uuid()
            .to_string();
        out.extend_from_slice(&t.head);
        out.extend_from_slice(okta_time(published).as_bytes());
        out.extend_from_slice(&t.mid);
        out.extend_from_slice(uuid.as_bytes());
        out.extend_from_slice(&t.tail);
        uuid
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn rendered_events_are_valid_json_with_the_given_uuid_published_and_type() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = Templates::new(&mut rng, &["a.b".into(), "c.d".into()]);
        let when = Utc::now();
        let mut out = Vec::new();
        let u0 = t.render(&mut rng, 0, when, &mut out);
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (
                e["uuid"].as_str(),
                e["published"].as_str(),
                e["eventType"].as_str()
            ),
            (
                Some(u0.as_str()),
                Some(okta_time(when).as_str()),
                Some("a.b")
            )
        );
        out.clear();
        let u1 = t.render(&mut rng, 1, when, &mut out);
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["eventType"], "c.d");
        assert_ne!(u0, u1);
    }
}
