//! Microsoft Sentinel through the Azure Monitor Logs Ingestion API.
//!
//! Records are the Okta events as received (the DCR's transformation maps `published` to
//! `TimeGenerated`). Bodies are at most 1 MB of JSON before gzip, as the official SDKs do.
//! The Entra client-credentials token is cached until five minutes before it expires (or half its
//! lifetime when shorter) and dropped on a 401, so an expired or revoked token is replaced.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::Mutex;

use super::{ErrorKind, Product, SendError, error_from, json_array, network_error};
use crate::collector::config::read_secret;
use crate::collector::event::Event;
use crate::contract::SentinelSink;

/// Largest uncompressed body (the API's limit is 1 MB, compressed or not).
pub const MAX_BODY: usize = 1_000_000;

pub struct Sentinel {
    cfg: SentinelSink,
    http: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
}

impl Sentinel {
    pub fn new(cfg: SentinelSink) -> anyhow::Result<Self> {
        Ok(Sentinel {
            cfg,
            http: crate::http::client(Duration::from_secs(30)),
            token: Mutex::new(None),
        })
    }

    fn ingestion_url(&self) -> String {
        format!(
            "{}/dataCollectionRules/{}/streams/{}?api-version=2023-01-01",
            self.cfg.endpoint.trim_end_matches('/'),
            self.cfg.dcr_immutable_id,
            self.cfg.stream_name
        )
    }

    async fn bearer(&self) -> Result<String, SendError> {
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let secret =
            |r: anyhow::Result<String>| r.map_err(|e| SendError::fatal(format!("sentinel: {e:#}")));
        let tenant = secret(read_secret(&self.cfg.tenant_id).await)?;
        let client_id = secret(read_secret(&self.cfg.client_id).await)?;
        let client_secret = secret(read_secret(&self.cfg.client_secret).await)?;
        let authority = self
            .cfg
            .authority_host
            .as_deref()
            .unwrap_or("https://login.microsoftonline.com");
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            authority.trim_end_matches('/'),
            tenant
        );
        let resp = self
            .http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.as_str()),
                ("scope", "https://monitor.azure.com//.default"),
            ])
            .send()
            .await
            .map_err(|e| network_error("Entra ID token endpoint", &e))?;
        if !resp.status().is_success() {
            let mut err = error_from("Entra ID token endpoint", resp).await;
            // Bad credentials are ours to fix; 5xx/429 stay retryable.
            if !matches!(err.kind, ErrorKind::Retryable { .. }) {
                err.kind = ErrorKind::Fatal;
            }
            return Err(err);
        }
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: String,
            expires_in: u64,
        }
        let t: Token = resp.json().await.map_err(|e| {
            SendError::retryable(format!("Entra ID token response unreadable: {e}"))
        })?;
        let life = Duration::from_secs(t.expires_in);
        let margin = Duration::from_secs(300).min(life / 2);
        *cached = Some((t.access_token.clone(), Instant::now() + life - margin));
        Ok(t.access_token)
    }
}

impl Product for Sentinel {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        let body = json_array(batch);
        let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
        gz.write_all(&body).expect("writing to memory");
        let body = gz.finish().expect("writing to memory");
        let token = self.bearer().await?;
        let resp = self
            .http
            .post(self.ingestion_url())
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| network_error("sentinel", &e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status().as_u16() == 401 {
            // Expired or revoked: fetch a new token on the next attempt.
            *self.token.lock().await = None;
            let mut err = error_from("sentinel", resp).await;
            err.kind = ErrorKind::Retryable {
                retry_after: Some(Duration::from_millis(200)),
            };
            return Err(err);
        }
        Err(error_from("sentinel", resp).await)
    }

    fn max_batch_bytes(&self) -> usize {
        MAX_BODY
    }

    fn overhead_per_event(&self) -> usize {
        1
    }
}
