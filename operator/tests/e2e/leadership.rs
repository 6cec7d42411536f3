//! Leadership cannot overlap (issue 10 §3): two operator replicas elect a leader through the
//! Lease; the leader's process is paused (SIGSTOP, as a stalled node or a frozen VM would be),
//! the standby takes over, the old leader resumes (SIGCONT) with a queue of work — and the API
//! server's audit log shows that it made no write after the standby took the lease, and that
//! it stopped. Each replica sends `unified-connectors/<version> (<identity>)` as its user
//! agent, which is how the audit log tells them apart.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::support::operator::BIN;
use crate::support::world::connector;
use crate::support::{CONVERGE, TestEnv, print_log_tail, wait_for};

const LEASE: &str = "unified-connectors-leader";
/// The operator's lease duration and renew deadline (controller/leader.rs, client-go's defaults).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// One operator replica with leader election on, identified by `POD_NAME`.
struct Replica {
    child: Child,
    identity: String,
    log: PathBuf,
}

impl Replica {
    fn start(op_ns: &str, identity: &str) -> Replica {
        let log = std::env::temp_dir().join(format!("uc-e2e-{identity}.log"));
        let file = File::create(&log).expect("cannot create the replica's log");
        let child = Command::new(BIN)
            .args([
                "controller",
                "--namespace",
                op_ns,
                "--metrics-addr",
                "127.0.0.1:0",
                "--collector-image",
                "unified-connectors:e2e",
            ])
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Replica {
            child,
            identity: identity.into(),
            log,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {} failed", self.child.id());
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The user agent this replica's requests carry.
    fn agent_mark(&self) -> String {
        format!("({})", self.identity)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            print_log_tail(&self.identity, &self.log, 60);
        }
    }
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

/// One completed request from the audit log.
#[derive(Debug)]
struct Audited {
    at: DateTime<Utc>,
    /// `resource/name[/subresource]`.
    what: String,
    verb: String,
    code: i64,
    agent: String,
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Every completed write in the control plane's audit log (`cluster.sh` writes one).
fn audited_writes() -> Vec<Audited> {
    let dir = std::env::var("UC_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/uc-cluster".into());
    let path = PathBuf::from(dir).join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the API server's audit log {}: {e} (e2e/scripts/cluster.sh writes it unless UC_CLUSTER_AUDIT=0)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| WRITE_VERBS.contains(&e["verb"].as_str().unwrap_or_default()))
        .map(|e| {
            let o = &e["objectRef"];
            Audited {
                at: e["requestReceivedTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .expect("audit event without requestReceivedTimestamp"),
                verb: e["verb"].as_str().unwrap_or_default().into(),
                what: format!(
                    "{}/{}{}",
                    o["resource"].as_str().unwrap_or_default(),
                    o["name"].as_str().unwrap_or_default(),
                    o["subresource"]
                        .as_str()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default()
                ),
                code: e["responseStatus"]["code"].as_i64().unwrap_or_default(),
                agent: e["userAgent"].as_str().unwrap_or_default().into(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn a_paused_leader_makes_no_write_after_the_standby_takes_over() {
    let mut env = TestEnv::new("leader").await;
    let ns = env.namespace("sec").await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.op_ns);
    // Connectors whose token Secret is missing: every reconcile writes an Error status, with
    // no Okta involved.
    let missing = "no-such-secret";

    let mut a = Replica::start(&env.op_ns, &format!("uc-a-{}", env.id));
    wait_for("replica a to lead", CONVERGE, || async {
        match holder(&leases).await {
            Some(h) if h == a.identity => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let b = Replica::start(&env.op_ns, &format!("uc-b-{}", env.id));
    wait_for("replica b to stand by", CONVERGE, || async {
        if b.log().contains("standing by") {
            Ok(())
        } else {
            Err("no 'standing by' in its log yet")
        }
    })
    .await;
    env.apply(&ns, &connector("before", &env.domain("before"), missing))
        .await
        .unwrap();
    env.wait_phase(&ns, "UnifiedConnector", "before", "Error", CONVERGE)
        .await;

    // Pause the leader. It keeps its connections and its queue; the standby must wait out the
    // lease by its own clock before it takes over.
    a.signal("-STOP");
    let stopped = Instant::now();
    // Work the paused leader will find queued when it wakes up.
    env.apply(&ns, &connector("during", &env.domain("during"), missing))
        .await
        .unwrap();
    wait_for(
        "replica b to take the lease",
        LEASE_DURATION * 4,
        || async {
            match holder(&leases).await {
                Some(h) if h == b.identity => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took >= LEASE_DURATION - Duration::from_secs(3),
        "the standby took over {took:?} after the leader stopped: sooner than the lease allows"
    );
    env.wait_phase(&ns, "UnifiedConnector", "during", "Error", CONVERGE)
        .await;

    // Resume the old leader: it must find that its renew deadline passed, stop writing and exit.
    a.signal("-CONT");
    wait_for("the old leader to exit", Duration::from_secs(30), || {
        let exited = a.exited();
        async move { if exited { Ok(()) } else { Err("still running") } }
    })
    .await;
    assert!(
        a.log().contains("leadership lost"),
        "the old leader exited without saying it lost the lease"
    );
    // More work for the new leader, and time for the old one to misbehave if it could.
    env.apply(&ns, &connector("after", &env.domain("after"), missing))
        .await
        .unwrap();
    env.wait_phase(&ns, "UnifiedConnector", "after", "Error", CONVERGE)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let writes = audited_writes();
    let by = |r: &Replica| -> Vec<&Audited> {
        writes
            .iter()
            .filter(|w| w.agent.contains(&r.agent_mark()))
            .collect()
    };
    let (a_writes, b_writes) = (by(&a), by(&b));
    // The audit log does tell the replicas apart: the old leader wrote statuses before.
    assert!(
        a_writes
            .iter()
            .any(|w| w.what.contains("unifiedconnectors/before/status")),
        "no status write of replica a in the audit log: {a_writes:#?}"
    );
    let takeover = b_writes
        .iter()
        .find(|w| {
            w.what == format!("leases/{LEASE}")
                && ["create", "update"].contains(&w.verb.as_str())
                && (200..300).contains(&w.code)
        })
        .unwrap_or_else(|| panic!("no lease write by replica b in the audit log: {b_writes:#?}"))
        .at;
    let late: Vec<&&Audited> = a_writes.iter().filter(|w| w.at >= takeover).collect();
    assert!(
        late.is_empty(),
        "the old leader wrote after the standby took the lease at {takeover}: {late:#?}"
    );
    // Its last write came before its renew deadline ran out, not just before the takeover.
    let last = a_writes.iter().map(|w| w.at).max().unwrap();
    assert!(
        last <= takeover - chrono::Duration::from_std(LEASE_DURATION - RENEW_DEADLINE).unwrap(),
        "the old leader's last write ({last}) was less than {:?} before the takeover ({takeover})",
        LEASE_DURATION - RENEW_DEADLINE
    );
    assert!(
        b_writes
            .iter()
            .any(|w| w.what.contains("unifiedconnectors/during/status") && w.at > takeover),
        "the new leader did not reconcile the connector created while the old one was paused"
    );
    eprintln!(
        "leadership: the standby took over {took:?} after SIGSTOP; the old leader's last write {last}, takeover {takeover}; {} writes by a, {} by b",
        a_writes.len(),
        b_writes.len()
    );
    env.cleanup().await;
}
