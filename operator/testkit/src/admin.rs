//! The JSON admin API every server exposes under `/_admin/`, for the e2e suite and `make demo`
//! scripts, which run the servers in another process (`uc-testkit serve`).
//!
//! Product servers (Azure, HEC, webhook):
//! - `GET  /_admin/stats`   -> [`crate::ProductStats`] (received total / unique / duplicates, requests by status)
//! - `GET  /_admin/records` -> JSON array of accepted records (empty if records are not kept)
//! - `POST /_admin/fault`   <- [`crate::ProductFault`], e.g. `{"kind":"status","status":503,"count":5,"retry_after_secs":2}`
//! - `POST /_admin/down`    <- [`Down`] `{"down":true}`: 503 on every delivery until `{"down":false}`
//! - `POST /_admin/clear`   forget received records, counters and queued faults
//!
//! Okta server: see [`crate::okta`] (`/_admin/stats`, `/_admin/fault`, `/_admin/down`,
//! `/_admin/tokens`, `/_admin/events`, `/_admin/live`, `/_admin/uuids`).

use serde::{Deserialize, Serialize};

/// Body of `POST /_admin/down`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Down {
    pub down: bool,
}
