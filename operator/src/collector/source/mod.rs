//! Sources the collector reads. Only Okta's System Log today.

pub mod link;
pub mod okta;
