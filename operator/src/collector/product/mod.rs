//! Destination products behind one small interface: send a batch, and say whether a failure is
//! worth retrying ([`ErrorKind::Retryable`]), is about the records ([`ErrorKind::Rejected`]: the
//! pipeline splits the batch and reports the bad record), or about us ([`ErrorKind::Fatal`]:
//! credentials, endpoint gone; retried slowly, backlog kept). Adding a product = one file here
//! plus a [`SinkConfig`] variant.

pub mod sentinel;
pub mod splunk_hec;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::event::Event;
use crate::contract::{OktaSourceConfig, SinkConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Retryable { retry_after: Option<Duration> },
    Rejected,
    Fatal,
}

/// A failed delivery; `message` never contains a secret.
#[derive(Debug, Clone)]
pub struct SendError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        SendError {
            kind: ErrorKind::Retryable { retry_after: None },
            status: None,
            message: message.into(),
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        SendError {
            kind: ErrorKind::Fatal,
            status: None,
            message: message.into(),
        }
    }
}

/// What every product implements.
pub trait Product: Send + Sync {
    /// Sends one batch (already within [`Product::max_batch_bytes`]).
    fn send(&self, batch: &[Arc<Event>]) -> impl Future<Output = Result<(), SendError>> + Send;
    /// Largest request body the product accepts, in bytes of uncompressed payload.
    fn max_batch_bytes(&self) -> usize;
    /// Bytes a record takes in the body beyond the raw event (envelopes, separators).
    fn overhead_per_event(&self) -> usize;
}

/// The configured products, dispatched statically.
pub enum AnyProduct {
    Sentinel(sentinel::Sentinel),
    SplunkHec(splunk_hec::SplunkHec),
    Webhook(webhook::Webhook),
}

impl AnyProduct {
    pub fn new(sink: &SinkConfig, source: &OktaSourceConfig) -> anyhow::Result<Self> {
        Ok(match sink {
            SinkConfig::Sentinel(s) => AnyProduct::Sentinel(sentinel::Sentinel::new(s.clone())?),
            SinkConfig::SplunkHec(s) => {
                AnyProduct::SplunkHec(splunk_hec::SplunkHec::new(s.clone(), &source.domain))
            }
            SinkConfig::Webhook(s) => AnyProduct::Webhook(webhook::Webhook::new(s.clone())),
        })
    }
}

impl Product for AnyProduct {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        match self {
            AnyProduct::Sentinel(p) => p.send(batch).await,
            AnyProduct::SplunkHec(p) => p.send(batch).await,
            AnyProduct::Webhook(p) => p.send(batch).await,
        }
    }
    fn max_batch_bytes(&self) -> usize {
        match self {
            AnyProduct::Sentinel(p) => p.max_batch_bytes(),
            AnyProduct::SplunkHec(p) => p.max_batch_bytes(),
            AnyProduct::Webhook(p) => p.max_batch_bytes(),
        }
    }
    fn overhead_per_event(&self) -> usize {
        match self {
            AnyProduct::Sentinel(p) => p.overhead_per_event(),
            AnyProduct::SplunkHec(p) => p.overhead_per_event(),
            AnyProduct::Webhook(p) => p.overhead_per_event(),
        }
    }
}

/// The common HTTP status classification; products refine it where their API says otherwise.
pub fn classify(status: u16, headers: &HeaderMap) -> ErrorKind {
    match status {
        408 | 429 | 500..=599 => ErrorKind::Retryable {
            retry_after: retry_after(headers),
        },
        400 | 413 | 422 => ErrorKind::Rejected,
        _ => ErrorKind::Fatal,
    }
}

/// `Retry-After` as seconds (HTTP dates are rare on these APIs; they fall back to back-off).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(600.0)))
}

/// Turns a non-2xx answer into a [`SendError`], with a short excerpt of the body.
pub async fn error_from(product: &str, resp: reqwest::Response) -> SendError {
    let status = resp.status().as_u16();
    let kind = classify(status, resp.headers());
    let body = resp.text().await.unwrap_or_default();
    let excerpt: String = body.chars().take(200).collect();
    SendError {
        kind,
        status: Some(status),
        message: format!("{product} answered {status}: {excerpt}"),
    }
}

/// A network-level failure (no answer): retryable.
pub fn network_error(product: &str, e: &reqwest::Error) -> SendError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    SendError::retryable(format!("{product}: {what}"))
}

/// `[raw,raw,...]`: the JSON array body shared by Sentinel and webhooks.
pub fn json_array(batch: &[Arc<Event>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|e| e.raw.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&e.raw);
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let h = HeaderMap::new();
        assert_eq!(
            classify(503, &h),
            ErrorKind::Retryable { retry_after: None }
        );
        assert_eq!(classify(400, &h), ErrorKind::Rejected);
        assert_eq!(classify(401, &h), ErrorKind::Fatal);
        assert_eq!(classify(410, &h), ErrorKind::Fatal);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            classify(429, &h),
            ErrorKind::Retryable {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }
}
