//! Flux's view of readiness: runs the Go helper `kstatus` (sigs.k8s.io/cli-utils
//! `status.Compute`, built by `make control-plane`) on objects read from the API server.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize;

#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Verdict {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `InProgress`, `Current`, `Failed`, `Terminating`, `NotFound` or `Unknown`.
    pub status: String,
    pub message: String,
}

/// `$UC_KSTATUS`, else the binary in the control-plane cache's `current` link.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("UC_KSTATUS") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("unified-connectors/control-plane/current/kstatus")
}

/// The verdict on one object (as JSON, exactly as the API server returned it).
pub fn compute(obj: &serde_json::Value) -> Verdict {
    let bin = binary();
    let mut child = Command::new(&bin)
        .args(["-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (make control-plane builds it): {e}",
                bin.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(obj.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kstatus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<Verdict> = serde_json::from_slice(&out.stdout).expect("kstatus printed no JSON");
    assert_eq!(v.len(), 1, "kstatus judged {} objects, expected 1", v.len());
    v.remove(0)
}
