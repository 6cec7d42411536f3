//! unified-connectors: collect each SaaS audit-log source once, deliver it to every bound product.
//!
//! Data flows one way: resources -> [`controller`] -> collector objects -> [`collector`] -> products.
//! Health flows back through the API server: collector -> state ConfigMap ([`contract`]) -> controller -> status.

pub mod api;
pub mod collector;
pub mod contract;
pub mod controller;
pub mod definition;
pub mod guard;
pub mod http;
pub mod telemetry;
