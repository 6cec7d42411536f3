//! Shared machinery for the end-to-end tests: the cluster connection and CRDs ([`cluster`]),
//! the operator as a child process ([`operator`]), the collector started from its rendered
//! Deployment ([`collector`]), Flux's readiness verdict ([`kstatus`]) and deadline-bound waits.
#![allow(dead_code, unused_imports)] // each test module uses a different subset

pub mod cluster;
pub mod collector;
pub mod kstatus;
pub mod operator;
pub mod world;

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

pub use cluster::{TestEnv, apply_crds, client};
pub use collector::LocalCollector;
pub use operator::Operator;
pub use world::World;

/// Default deadline for the operator to converge on a change (generous: 2 shared cores).
pub const CONVERGE: Duration = Duration::from_secs(60);

/// Polls `check` every 250 ms until it returns `Ok`, and returns that value. `Err` means
/// "not yet" and describes what was seen; at the deadline the test fails with `what` and the
/// last observation, so a timeout says why.
pub async fn wait_for<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts that `check` keeps returning `Ok` for the whole `period` (for "nothing changes" and
/// "stays deleted" claims); fails at the first `Err`.
pub async fn stays<E, F, Fut>(what: &str, period: Duration, mut check: F)
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let end = Instant::now() + period;
    while Instant::now() < end {
        if let Err(e) = check().await {
            panic!("{what} did not hold: {e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A short random suffix for unique names (namespaces, domains) per test.
pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// Collects every place where `applied` is not reproduced in `live` (extra fields in `live`
/// are allowed: they are server defaults and status).
pub fn drift(
    applied: &serde_json::Value,
    live: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    match (applied, live) {
        (serde_json::Value::Object(a), serde_json::Value::Object(l)) => {
            for (k, av) in a {
                let p = format!("{path}.{k}");
                match l.get(k) {
                    Some(lv) => drift(av, lv, &p, out),
                    None => out.push(format!(
                        "{p}: applied {} but the server dropped it",
                        short(av)
                    )),
                }
            }
        }
        (serde_json::Value::Array(a), serde_json::Value::Array(l)) => {
            if a.len() != l.len() {
                out.push(format!(
                    "{path}: applied {} items, stored {}",
                    a.len(),
                    l.len()
                ));
            }
            for (i, (av, lv)) in a.iter().zip(l).enumerate() {
                drift(av, lv, &format!("{path}[{i}]"), out);
            }
        }
        (serde_json::Value::Number(a), serde_json::Value::Number(l))
            if a.as_f64() == l.as_f64() => {}
        (a, l) if a == l => {}
        (a, l) => out.push(format!(
            "{path}: applied {} but stored {}",
            short(a),
            short(l)
        )),
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

/// Prints the last `lines` lines of a child process's log file to stderr (for failing tests).
pub fn print_log_tail(label: &str, path: &std::path::Path, lines: usize) {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(lines).collect();
    eprintln!(
        "----- {label} log ({}), last {} lines -----",
        path.display(),
        tail.len()
    );
    for l in tail.iter().rev() {
        eprintln!("{l}");
    }
}
