//! A webhook receiver that verifies Standard Webhooks 1.0 signatures, like a careful customer
//! endpoint would.
//!
//! `POST /` (any path) with headers `webhook-id`, `webhook-timestamp` (unix seconds, within
//! [`Options::tolerance`] of now) and `webhook-signature` (space-separated `v1,<base64>` entries,
//! any of which may match; each is base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed by the
//! base64-decoded part of a `whsec_` secret, any of [`Options::secrets`] to allow rotation).
//! Missing headers -> 400; stale timestamp or no matching signature -> 401; body not a JSON
//! array -> 400; success -> 204 and the records are stored in [`crate::Received`] (uuid at top-level
//! `uuid`). A `webhook-id` seen again is counted (`repeated_message_ids`): senders must reuse
//! the id when they retry the same message, and receivers deduplicate on it.
//!
//! Faults ([`crate::ProductFault`]: 429/5xx with `Retry-After`, 410 "endpoint disabled"), "down" and the
//! `/_admin/` API of [`crate::admin`] apply to deliveries.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::probe::{self, Shape};
use crate::product::{MAX_REQUEST_BYTES, ProductCore};
use crate::received::Item;
use crate::server::Running;

/// Standard base64 (the encoding of Standard Webhooks secrets and signatures).
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A fresh `whsec_<base64 of 24 random bytes>` secret.
pub fn generate_secret() -> String {
    format!("whsec_{}", b64(&rand::random::<[u8; 24]>()))
}

/// The key bytes of a `whsec_` secret (a secret without the prefix is taken as base64 too).
pub fn secret_key(secret: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`: what a sender puts in
/// `webhook-signature` (exposed so tests can forge valid and invalid requests).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret_key(secret).expect("a whsec_ secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any size");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64(&mac.finalize().into_bytes()))
}

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// `0` = a free port.
    pub port: u16,
    /// Accepted `whsec_` secrets (several during a rotation). Default: one fresh secret.
    pub secrets: Vec<String>,
    /// How far `webhook-timestamp` may be from now (Standard Webhooks: 5 minutes).
    pub tolerance: Duration,
    /// Keep whole records (tests) or only counters and uuids (benchmarks).
    pub keep_records: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            secrets: vec![generate_secret()],
            tolerance: Duration::from_secs(300),
            keep_records: true,
        }
    }
}

struct Shared {
    core: Arc<ProductCore>,
    keys: Mutex<Vec<Vec<u8>>>,
    tolerance: Duration,
    message_ids: Mutex<HashSet<String>>,
}

/// A running webhook receiver; stops when dropped.
pub struct WebhookServer {
    shared: Arc<Shared>,
    secrets: Vec<String>,
    running: Running,
}

impl WebhookServer {
    /// Starts on `127.0.0.1:<opts.port>`; panics if the port cannot be bound or a secret is not base64.
    pub async fn start(opts: Options) -> WebhookServer {
        Self::try_start(opts)
            .await
            .expect("start the webhook test server")
    }

    pub async fn try_start(opts: Options) -> std::io::Result<WebhookServer> {
        let keys = opts
            .secrets
            .iter()
            .map(|s| {
                secret_key(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            core: ProductCore::new(opts.keep_records),
            keys: Mutex::new(keys),
            tolerance: opts.tolerance,
            message_ids: Mutex::new(HashSet::new()),
        });
        let router = Router::new()
            .route("/", post(deliver))
            .route("/{*path}", post(deliver))
            .with_state(shared.clone())
            .merge(shared.core.admin_router())
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES));
        let running = Running::spawn(opts.port, router).await?;
        Ok(WebhookServer {
            shared,
            secrets: opts.secrets,
            running,
        })
    }

    /// `http://127.0.0.1:PORT` (deliveries may go to any path below it).
    pub fn url(&self) -> String {
        self.running.url()
    }

    /// The first configured secret (`whsec_...`), to put in the collector's config.
    pub fn secret(&self) -> &str {
        &self.secrets[0]
    }

    /// Replaces the accepted secrets (rotation tests).
    pub fn set_secrets(&self, secrets: &[&str]) {
        let keys = secrets
            .iter()
            .map(|s| secret_key(s).expect("whsec_ secrets are base64"))
            .collect();
        *self.shared.keys.lock().unwrap() = keys;
    }

    /// Deliveries whose `webhook-id` had already been accepted.
    pub fn repeated_message_ids(&self) -> u64 {
        self.shared.core.extra("repeated_message_ids")
    }

    crate::product::product_server_methods!(
        "While down, deliveries get 503 with `Retry-After: 1`."
    );
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn deliver(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let resp = deliver_inner(&s, &headers, &body).await;
    s.core.count(resp.status().as_u16());
    resp
}

async fn deliver_inner(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(rej) = s.core.gate().await {
        return rej.answer(refuse(rej.status, "injected failure (test server)"));
    }
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sigs)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "missing webhook-id, webhook-timestamp or webhook-signature",
        );
    };
    let Ok(timestamp) = ts.trim().parse::<i64>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "webhook-timestamp is not an integer",
        );
    };
    let now = chrono::Utc::now().timestamp();
    if (now - timestamp).unsigned_abs() > s.tolerance.as_secs() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "webhook-timestamp too far from now",
        );
    }
    if !verify(&s.keys.lock().unwrap(), id, timestamp, body, sigs) {
        return refuse(StatusCode::UNAUTHORIZED, "no matching signature");
    }
    let shapes = match probe::array(body, &["uuid"]) {
        Ok(shapes) => shapes,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("body is not a JSON array: {e}"),
            );
        }
    };
    if !s.message_ids.lock().unwrap().insert(id.to_string()) {
        s.core.bump("repeated_message_ids");
    }
    let records: Vec<Option<Value>> = if s.core.received.keeps_records() {
        serde_json::from_slice::<Vec<Value>>(body)
            .expect("validated above")
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; shapes.len()]
    };
    let items = shapes
        .into_iter()
        .zip(records)
        .map(|(shape, record)| Item {
            uuid: if let Shape::Object { found } = shape {
                found
            } else {
                None
            },
            record,
        })
        .collect();
    s.core.received.accept(items);
    StatusCode::NO_CONTENT.into_response()
}

/// Whether any `v1,` entry of `signatures` is a valid MAC under any key (constant-time compare).
fn verify(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8], signatures: &str) -> bool {
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .any(|sig| {
            keys.iter().any(|key| {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
                mac.update(format!("{id}.{timestamp}.").as_bytes());
                mac.update(body);
                mac.verify_slice(&sig).is_ok()
            })
        })
}

#[cfg(test)]
mod tests;
