//! What the three product servers share: the [`Received`] store, the "down" switch, injected
//! faults and request counters, and the `/_admin/` routes exposing them to other processes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::received::{Received, ReceivedStats};

/// A misbehaviour injected into a product server; faults queue up and apply to the next
/// delivery requests in order (`count` requests each).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProductFault {
    /// Answer `status` (429, 500, 503, 410...) with the product's error body, plus
    /// `Retry-After: retry_after_secs` when set. Nothing is stored.
    Status {
        status: u16,
        count: u32,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Wait `delay_ms` before handling the request normally (slow product; client time-outs).
    Delay { delay_ms: u64, count: u32 },
}

impl ProductFault {
    /// `count` answers with `status` and no `Retry-After`.
    pub fn status(status: u16, count: u32) -> ProductFault {
        ProductFault::Status {
            status,
            count,
            retry_after_secs: None,
        }
    }

    /// `count` answers with `status` and `Retry-After: secs`.
    pub fn status_retry_after(status: u16, count: u32, secs: u64) -> ProductFault {
        ProductFault::Status {
            status,
            count,
            retry_after_secs: Some(secs),
        }
    }

    /// `count` requests delayed by `delay`.
    pub fn delay(delay: Duration, count: u32) -> ProductFault {
        ProductFault::Delay {
            delay_ms: delay.as_millis() as u64,
            count,
        }
    }
}

/// Counters of a product server, as served by `GET /_admin/stats`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ProductStats {
    pub received: ReceivedStats,
    /// Delivery requests seen (any outcome).
    pub requests: u64,
    /// Delivery requests by HTTP status answered.
    pub by_status: BTreeMap<u16, u64>,
    /// Whether the server currently answers 503 to everything.
    pub down: bool,
    /// Faults still queued.
    pub pending_faults: usize,
    /// Server-specific counters (`tokens_issued` for Azure, `repeated_message_ids` for webhooks...).
    #[serde(default)]
    pub extra: BTreeMap<String, u64>,
}

/// The methods every product server has, delegating to its `shared.core` ([`ProductCore`]).
macro_rules! product_server_methods {
    ($down_doc:literal) => {
        /// Records accepted so far (what tests assert "exactly once" on).
        pub fn received(&self) -> &$crate::Received {
            &self.shared.core.received
        }

        /// Queues a fault for the next delivery requests.
        pub fn inject(&self, fault: $crate::ProductFault) {
            self.shared.core.inject(fault);
        }

        #[doc = $down_doc]
        pub fn set_down(&self, down: bool) {
            self.shared.core.set_down(down);
        }

        /// Counters, as served by `GET /_admin/stats`.
        pub fn stats(&self) -> $crate::ProductStats {
            self.shared.core.stats()
        }
    };
}
pub(crate) use product_server_methods;

/// A delivery request the shared gate refused (down, or an injected status).
pub(crate) struct Rejected {
    pub status: axum::http::StatusCode,
    retry_after_secs: Option<u64>,
}

impl Rejected {
    fn new(status: u16, retry_after_secs: Option<u64>) -> Rejected {
        let status = axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE);
        Rejected {
            status,
            retry_after_secs,
        }
    }

    /// `body` (the product's own error answer) with the refusal's status and `Retry-After`.
    pub fn answer(&self, mut body: axum::response::Response) -> axum::response::Response {
        *body.status_mut() = self.status;
        if let Some(secs) = self.retry_after_secs {
            body.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        body
    }
}

pub(crate) struct ProductCore {
    pub received: Received,
    down: AtomicBool,
    faults: Mutex<VecDeque<ProductFault>>,
    by_status: Mutex<BTreeMap<u16, u64>>,
    extra: Mutex<BTreeMap<String, u64>>,
}

impl ProductCore {
    pub fn new(keep_records: bool) -> Arc<ProductCore> {
        Arc::new(ProductCore {
            received: Received::new(keep_records),
            down: AtomicBool::new(false),
            faults: Mutex::new(VecDeque::new()),
            by_status: Mutex::new(BTreeMap::new()),
            extra: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn inject(&self, fault: ProductFault) {
        self.faults.lock().unwrap().push_back(fault);
    }

    /// Applies "down" and the next queued fault (sleeping for delays).
    pub async fn gate(&self) -> Result<(), Rejected> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Rejected::new(503, Some(1)));
        }
        let fault = {
            let mut q = self.faults.lock().unwrap();
            let fault = q.front_mut().map(|f| {
                match f {
                    ProductFault::Status { count, .. } | ProductFault::Delay { count, .. } => {
                        *count = count.saturating_sub(1)
                    }
                }
                f.clone()
            });
            if let Some(
                ProductFault::Status { count: 0, .. } | ProductFault::Delay { count: 0, .. },
            ) = q.front()
            {
                q.pop_front();
            }
            fault
        };
        match fault {
            Some(ProductFault::Status {
                status,
                retry_after_secs,
                ..
            }) => Err(Rejected::new(status, retry_after_secs)),
            Some(ProductFault::Delay { delay_ms, .. }) => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts one delivery request answered with `status`.
    pub fn count(&self, status: u16) {
        *self.by_status.lock().unwrap().entry(status).or_insert(0) += 1;
    }

    /// Adds one to a server-specific counter.
    pub fn bump(&self, name: &str) {
        *self
            .extra
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert(0) += 1;
    }

    /// A server-specific counter.
    pub fn extra(&self, name: &str) -> u64 {
        self.extra.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    pub fn stats(&self) -> ProductStats {
        let by_status = self.by_status.lock().unwrap().clone();
        ProductStats {
            received: self.received.stats(),
            requests: by_status.values().sum(),
            by_status,
            down: self.down.load(Ordering::SeqCst),
            pending_faults: self.faults.lock().unwrap().len(),
            extra: self.extra.lock().unwrap().clone(),
        }
    }

    /// `/_admin/stats`, `/_admin/fault`, `/_admin/down`, `/_admin/clear`, `/_admin/records`.
    pub fn admin_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_admin/stats", get(|State(c): State<Arc<ProductCore>>| async move { Json(c.stats()) }))
            .route(
                "/_admin/fault",
                post(|State(c): State<Arc<ProductCore>>, Json(f): Json<ProductFault>| async move {
                    c.inject(f);
                    Json(c.stats())
                }),
            )
            .route(
                "/_admin/down",
                post(|State(c): State<Arc<ProductCore>>, Json(d): Json<crate::admin::Down>| async move {
                    c.set_down(d.down);
                    Json(c.stats())
                }),
            )
            .route(
                "/_admin/clear",
                post(|State(c): State<Arc<ProductCore>>| async move {
                    c.received.clear();
                    c.by_status.lock().unwrap().clear();
                    c.extra.lock().unwrap().clear();
                    c.faults.lock().unwrap().clear();
                    Json(c.stats())
                }),
            )
            .route("/_admin/records", get(|State(c): State<Arc<ProductCore>>| async move { Json(c.received.records()) }))
            .with_state(self.clone())
    }
}

/// Request bodies may be large (HEC batches, oversized Azure calls that must get *our* 413):
/// axum's default 2 MB extractor limit is lifted to this.
pub(crate) const MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// Decodes a body according to `Content-Encoding` (`gzip` or identity), refusing to inflate
/// beyond `max_decoded` bytes (a decompression bomb must not take the test process down).
pub(crate) fn decode_body<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
    max_decoded: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, String> {
    use std::io::Read;
    let encoding = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(std::borrow::Cow::Borrowed(body)),
        Some("gzip") => {
            let mut out = Vec::with_capacity(body.len() * 4);
            let mut dec = flate2::read::GzDecoder::new(body).take(max_decoded as u64 + 1);
            dec.read_to_end(&mut out)
                .map_err(|e| format!("invalid gzip body: {e}"))?;
            if out.len() > max_decoded {
                return Err(format!("decompressed body larger than {max_decoded} bytes"));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        Some(other) => Err(format!("unsupported Content-Encoding '{other}'")),
    }
}
