//! Contract-faithful test servers for everything unified-connectors talks to.
//!
//! Okta, Entra ID / Azure Monitor, Splunk and customers' webhook receivers cannot be reached from
//! the test environment, so these servers follow the published contracts closely enough that a
//! collector passing against them is expected to pass against the real services (see
//! `shared/reference/okta-system-log.md` and `destinations.md`). Each server:
//!
//! - binds `127.0.0.1:0` by default (a free port; only loopback, ever) and runs on the caller's
//!   tokio runtime until dropped;
//! - exposes its state to in-process tests through methods, and to other processes (the e2e
//!   suite, `make demo`) through a small JSON admin API under `/_admin/` (see [`admin`]);
//! - can be told to misbehave ([`okta::Fault`], [`ProductFault`], and a "down" switch: 503 on
//!   everything) so that tests exercise retries, back-off and isolation.
//!
//! Servers: [`okta::OktaServer`] (System Log polling, rate limits, auth), [`azure::AzureServer`]
//! (Entra token endpoint + Logs Ingestion API), [`hec::HecServer`] (Splunk HTTP Event Collector),
//! [`webhook::WebhookServer`] (Standard Webhooks receiver). Product servers share the
//! [`Received`] view used to assert "every event exactly once".
//!
//! See `operator/testkit/README.md` for the `uc-testkit serve` binary and the admin API.

pub mod admin;
pub mod auth0;
pub mod azure;
pub mod github;
pub mod hec;
pub mod okta;
pub mod onepassword;
mod probe;
mod product;
mod received;
pub mod saas;
mod server;
#[cfg(test)]
mod test_util;
pub mod webhook;

pub use product::{ProductFault, ProductStats};
pub use received::{Received, ReceivedStats};
pub use server::LOOPBACK;
