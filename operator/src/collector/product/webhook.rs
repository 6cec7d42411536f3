//! A generic endpoint receiving JSON arrays of events, signed per Standard Webhooks 1.0.
//!
//! `webhook-id` is derived from the batch's event uuids, so a retried batch carries the same id
//! and a receiver can drop the repeat (idempotency key).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{ErrorKind, Product, SendError, error_from, json_array, network_error};
use crate::collector::config::read_secret;
use crate::collector::event::Event;
use crate::contract::WebhookSink;

pub struct Webhook {
    cfg: WebhookSink,
    http: reqwest::Client,
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` with the key from `whsec_<base64>`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| "the webhook signing secret is not whsec_<base64>".to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// A stable message id for a batch: the same events give the same id on every retry.
pub fn message_id(batch: &[Arc<Event>]) -> String {
    let mut h = Sha256::new();
    for e in batch {
        h.update(e.key.to_be_bytes());
    }
    format!("msg_{}", hex::encode(&h.finalize()[..16]))
}

impl Webhook {
    pub fn new(cfg: WebhookSink) -> Self {
        Webhook {
            cfg,
            http: crate::http::client(Duration::from_secs(30)),
        }
    }
}

impl Product for Webhook {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        let secret = read_secret(&self.cfg.signing_secret)
            .await
            .map_err(|e| SendError::fatal(format!("webhook: {e:#}")))?;
        let body = json_array(batch);
        let id = message_id(batch);
        let ts = chrono::Utc::now().timestamp();
        let sig = signature(&secret, &id, ts, &body).map_err(SendError::fatal)?;
        let mut req = self
            .http
            .post(&self.cfg.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig);
        for (k, v) in &self.cfg.headers {
            req = req.header(k, v);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| network_error("webhook", &e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let mut err = error_from("webhook", resp).await;
        if err.status == Some(410) {
            err.kind = ErrorKind::Fatal;
            err.message = format!("webhook endpoint is gone (410): {}", err.message);
        }
        Err(err)
    }

    fn max_batch_bytes(&self) -> usize {
        4 * 1024 * 1024
    }

    fn overhead_per_event(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference implementations.
        let sig = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
