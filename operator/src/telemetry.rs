//! Tracing set-up shared by the controller and the collector.
