//! Health: turning the collector's report into phases. "Ready" means the product accepted data,
//! not that objects were created. Pure functions, so every transition is unit-tested.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::conditions::Phase;
use crate::contract::{CollectorReport, DeliveryState, ProductHealth};

/// The health of one thing (a product or a connector) at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub phase: Phase,
    /// CamelCase, for conditions and Events.
    pub reason: String,
    /// For people: what is happening and what to do.
    pub message: String,
}

impl Health {
    pub fn new(phase: Phase, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Health {
            phase,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Time limits that turn silence into an error.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Nothing delivered this long after the binding was created -> Error.
    pub delivery_timeout: Duration,
    /// A report older than this means the collector is not running.
    pub report_stale_after: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            delivery_timeout: Duration::from_secs(30 * 60),
            report_stale_after: Duration::from_secs(120),
        }
    }
}

/// The health of one product (binding) that its collector is configured to feed.
///
/// `since` is when the binding started waiting (its creation); `collector` names the collector
/// for messages.
pub fn product_health(
    now: DateTime<Utc>,
    since: DateTime<Utc>,
    report: Option<&CollectorReport>,
    product_id: &str,
    collector: &str,
    deadlines: Deadlines,
) -> (Health, Option<ProductHealth>) {
    let timed_out = (now - since).to_std().unwrap_or_default() > deadlines.delivery_timeout;
    let timeout_text = humantime::format_duration(deadlines.delivery_timeout);
    let product = report.and_then(|r| r.products.get(product_id));
    let stale = report.is_some_and(|r| {
        r.updated_at
            .is_none_or(|at| (now - at).to_std().unwrap_or_default() > deadlines.report_stale_after)
    });
    let Some(p) = product else {
        let health = if timed_out {
            Health::new(
                Phase::Error,
                "NoDelivery",
                format!(
                    "nothing was delivered within {timeout_text}: collector {collector} has not started delivering to this product; check its Deployment and logs"
                ),
            )
        } else {
            Health::new(
                Phase::Pending,
                "WaitingForCollector",
                format!("waiting for collector {collector} to start delivering"),
            )
        };
        return (health, None);
    };
    let error_text = p
        .last_error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    let health = match (p.state, p.last_successful_delivery) {
        _ if stale && p.last_successful_delivery.is_some() => Health::new(
            Phase::Warning,
            "CollectorNotReporting",
            format!(
                "collector {collector} has not reported for over {}; deliveries may have stopped",
                humantime::format_duration(deadlines.report_stale_after)
            ),
        ),
        (DeliveryState::Rejected, _) => Health::new(
            Phase::Error,
            "ProductRejected",
            format!("the product rejects deliveries: {error_text}"),
        ),
        (DeliveryState::Retrying, Some(_)) => Health::new(
            Phase::Warning,
            "DeliveryDegraded",
            format!("retrying; {} events waiting: {error_text}", p.backlog),
        ),
        // Counters and times live in their own status fields; the message stays stable so that
        // only real transitions change conditions.
        (_, Some(_)) => Health::new(
            Phase::Ready,
            "DataFlowing",
            "the product accepts the events delivered to it",
        ),
        (_, None) if timed_out => Health::new(
            Phase::Error,
            "NoDelivery",
            if error_text.is_empty() {
                format!(
                    "nothing was delivered within {timeout_text}: no events to deliver, or the source is not being read"
                )
            } else {
                format!("nothing was delivered within {timeout_text}: {error_text}")
            },
        ),
        (DeliveryState::Retrying, None) => Health::new(
            Phase::Pending,
            "Retrying",
            format!("first delivery not yet accepted, retrying: {error_text}"),
        ),
        (_, None) => Health::new(
            Phase::Pending,
            "WaitingForData",
            "collector is running; waiting for the first events to deliver",
        ),
    };
    (health, Some(p.clone()))
}

/// How long until this report turns stale (its collector counts as not running), so the
/// reconcile can look again exactly then instead of at a timed sweep. `None` when there is no
/// report, or it is stale already (nothing more changes with time alone).
pub fn report_deadline(
    now: DateTime<Utc>,
    report: Option<&CollectorReport>,
    deadlines: Deadlines,
) -> Option<Duration> {
    let at = report?.updated_at?;
    let age = (now - at).to_std().unwrap_or_default();
    // One second past the limit, so the check at the deadline sees the report as stale.
    (age <= deadlines.report_stale_after)
        .then(|| deadlines.report_stale_after - age + Duration::from_secs(1))
}

/// A connector's phase from the phases of its products, once its credential is known to be good.
pub fn rollup(products: &[(String, Phase)]) -> Health {
    if products.is_empty() {
        return Health::new(
            Phase::Pending,
            "NoBindings",
            "no ProductBinding references this connector yet: create one to start collecting",
        );
    }
    let named = |phases: &[Phase]| -> Vec<&str> {
        products
            .iter()
            .filter(|(_, p)| phases.contains(p))
            .map(|(n, _)| n.as_str())
            .collect()
    };
    let bad = named(&[Phase::Error, Phase::Warning]);
    if !bad.is_empty() {
        return Health::new(
            Phase::Warning,
            "ProductsDegraded",
            format!("delivery is degraded for: {}", bad.join(", ")),
        );
    }
    let pending = named(&[Phase::Pending]);
    if !pending.is_empty() {
        return Health::new(
            Phase::Pending,
            "WaitingForDelivery",
            format!("waiting for the first delivery to: {}", pending.join(", ")),
        );
    }
    Health::new(
        Phase::Ready,
        "DataFlowing",
        format!("delivering to {} product(s)", products.len()),
    )
}

/// True when the report says Okta refuses the collector's token now (after its last good poll).
pub fn source_auth_failed(report: &CollectorReport) -> bool {
    let s = &report.source;
    s.last_error.as_ref().is_some_and(|e| {
        matches!(e.status, Some(401) | Some(403))
            && s.last_successful_poll.is_none_or(|ok| e.at > ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ReportedError;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn report(at: i64, p: ProductHealth) -> CollectorReport {
        CollectorReport {
            version: 1,
            updated_at: Some(t(at)),
            products: [("ns/b".to_string(), p)].into(),
            ..Default::default()
        }
    }

    fn phase(now: i64, r: Option<&CollectorReport>) -> Phase {
        product_health(t(now), t(0), r, "ns/b", "uc-okta-x", Deadlines::default())
            .0
            .phase
    }

    #[test]
    fn pending_until_data_reaches_the_product_then_ready() {
        assert_eq!(phase(10, None), Phase::Pending);
        let waiting = report(10, ProductHealth::default());
        assert_eq!(phase(20, Some(&waiting)), Phase::Pending);
        let delivered = report(
            30,
            ProductHealth {
                state: DeliveryState::Delivering,
                last_successful_delivery: Some(t(29)),
                events_delivered: 10,
                ..Default::default()
            },
        );
        assert_eq!(phase(40, Some(&delivered)), Phase::Ready);
    }

    #[test]
    fn degraded_delivery_warns_and_rejection_is_an_error() {
        let err = Some(ReportedError {
            at: t(50),
            message: "503 from product".into(),
            status: Some(503),
        });
        let retrying = report(
            60,
            ProductHealth {
                state: DeliveryState::Retrying,
                last_successful_delivery: Some(t(10)),
                last_error: err.clone(),
                backlog: 500,
                ..Default::default()
            },
        );
        let (h, _) = product_health(
            t(61),
            t(0),
            Some(&retrying),
            "ns/b",
            "c",
            Deadlines::default(),
        );
        assert_eq!(h.phase, Phase::Warning);
        assert!(h.message.contains("500 events waiting") && h.message.contains("503 from product"));
        let rejected = report(
            60,
            ProductHealth {
                state: DeliveryState::Rejected,
                last_error: err,
                ..Default::default()
            },
        );
        assert_eq!(phase(61, Some(&rejected)), Phase::Error);
    }

    #[test]
    fn silence_past_the_deadline_is_an_error_and_a_stale_report_a_warning() {
        assert_eq!(phase(31 * 60, None), Phase::Error);
        let nothing = report(31 * 60, ProductHealth::default());
        assert_eq!(phase(31 * 60, Some(&nothing)), Phase::Error);
        let old = report(
            100,
            ProductHealth {
                last_successful_delivery: Some(t(99)),
                ..Default::default()
            },
        );
        assert_eq!(phase(100 + 121, Some(&old)), Phase::Warning);
    }

    #[test]
    fn a_fresh_report_is_looked_at_again_when_it_turns_stale() {
        let d = Deadlines::default();
        let r = report(100, ProductHealth::default());
        assert_eq!(
            report_deadline(t(130), Some(&r), d),
            Some(Duration::from_secs(91))
        );
        assert_eq!(report_deadline(t(100 + 121), Some(&r), d), None);
        assert_eq!(report_deadline(t(130), None, d), None);
        // At the deadline the product really reads as not reporting.
        let delivered = report(
            100,
            ProductHealth {
                last_successful_delivery: Some(t(99)),
                ..Default::default()
            },
        );
        let wake = 130
            + report_deadline(t(130), Some(&delivered), d)
                .unwrap()
                .as_secs() as i64;
        assert_eq!(phase(wake, Some(&delivered)), Phase::Warning);
        assert_eq!(phase(wake - 2, Some(&delivered)), Phase::Ready);
    }

    #[test]
    fn connector_rolls_up_its_products() {
        assert_eq!(rollup(&[]).phase, Phase::Pending);
        assert_eq!(
            rollup(&[("a".into(), Phase::Ready), ("b".into(), Phase::Ready)]).phase,
            Phase::Ready
        );
        assert_eq!(
            rollup(&[("a".into(), Phase::Ready), ("b".into(), Phase::Pending)]).phase,
            Phase::Pending
        );
        let degraded = rollup(&[("a".into(), Phase::Ready), ("b".into(), Phase::Error)]);
        assert_eq!(degraded.phase, Phase::Warning);
        assert!(degraded.message.contains('b'));
    }

    #[test]
    fn auth_failure_after_last_good_poll_is_detected() {
        let mut r = CollectorReport::default();
        r.source.last_successful_poll = Some(t(10));
        r.source.last_error = Some(ReportedError {
            at: t(20),
            message: "401".into(),
            status: Some(401),
        });
        assert!(source_auth_failed(&r));
        r.source.last_successful_poll = Some(t(30));
        assert!(!source_auth_failed(&r), "a later good poll clears it");
        r.source.last_error = Some(ReportedError {
            at: t(40),
            message: "503".into(),
            status: Some(503),
        });
        assert!(!source_auth_failed(&r));
    }
}
