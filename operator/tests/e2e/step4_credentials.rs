//! Step 4: credential problems are named precisely in status, and fixing them recovers without
//! restarting anything: a missing Secret, a missing key, a token Okta does not know (401) and a
//! token whose user may not read the System Log (403). The token never appears in status.

use crate::support::cluster::condition;
use crate::support::world::{GOOD_TOKEN, NO_ROLE_TOKEN, connector};
use crate::support::{CONVERGE, TestEnv, World, wait_for};

const BOGUS: &str = "00bogus-token-okta-does-not-know";

struct Case {
    name: &'static str,
    secret: &'static str,
    reason: &'static str,
    /// Words the message must contain to be actionable.
    says: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: make e2e"]
async fn credential_problems_show_the_right_condition_and_recover_without_restart() {
    let mut env = TestEnv::new("creds").await;
    let world = World::start().await;
    let args = world.operator_args();
    let mut op = env.start_operator(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ns = env.namespace("sec").await;

    let cases = [
        Case {
            name: "missing",
            secret: "absent",
            reason: "SecretNotFound",
            says: &["absent", "not found"],
        },
        Case {
            name: "wrong-key",
            secret: "wrong-key",
            reason: "SecretKeyMissing",
            says: &["wrong-key", "token"],
        },
        Case {
            name: "invalid",
            secret: "invalid",
            reason: "InvalidToken",
            says: &["Secret"],
        },
        Case {
            name: "no-perm",
            secret: "no-perm",
            reason: "TokenLacksPermission",
            says: &["admin"],
        },
    ];
    world.secrets(&env, &ns, GOOD_TOKEN).await; // the product Secrets
    env.put_secret(&ns, "wrong-key", &[("tok", GOOD_TOKEN)])
        .await;
    env.put_secret(&ns, "invalid", &[("token", BOGUS)]).await;
    env.put_secret(&ns, "no-perm", &[("token", NO_ROLE_TOKEN)])
        .await;
    for c in &cases {
        let domain = env.domain(c.name);
        env.apply(&ns, &connector(c.name, &domain, c.secret))
            .await
            .unwrap();
        env.apply(&ns, &world.webhook(&format!("{}-hook", c.name), c.name))
            .await
            .unwrap();
    }

    for c in &cases {
        let obj = env
            .wait_phase(&ns, "UnifiedConnector", c.name, "Error", CONVERGE)
            .await;
        let (status, reason, message) =
            condition(&obj, "CredentialsValid").expect("no CredentialsValid condition");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", c.reason),
            "{}: {message}",
            c.name
        );
        for word in c.says {
            assert!(
                message.to_lowercase().contains(&word.to_lowercase()),
                "{}: message {message:?} lacks {word:?}",
                c.name
            );
        }
        let (stalled, stalled_reason, _) =
            condition(&obj, "Stalled").expect("no Stalled condition");
        assert_eq!(
            (stalled.as_str(), stalled_reason.as_str()),
            ("True", c.reason),
            "{}",
            c.name
        );
        let text = obj["status"].to_string();
        for secret in [GOOD_TOKEN, BOGUS, NO_ROLE_TOKEN] {
            assert!(!text.contains(secret), "{}: status leaks a token", c.name);
        }
    }
    // Nothing is collected for a connector whose credential does not work.
    assert!(
        env.collectors().await.is_empty(),
        "a collector was created for a bad credential"
    );

    // Fix each the way a person would: create the Secret, add the key, paste a working token.
    let pid = op.pid();
    env.put_secret(&ns, "absent", &[("token", GOOD_TOKEN)])
        .await;
    env.put_secret(&ns, "wrong-key", &[("token", GOOD_TOKEN)])
        .await;
    env.put_secret(&ns, "invalid", &[("token", GOOD_TOKEN)])
        .await;
    env.put_secret(&ns, "no-perm", &[("token", GOOD_TOKEN)])
        .await;
    for c in &cases {
        wait_for(&format!("{} to recover", c.name), CONVERGE, || async {
            let obj = env.get(&ns, "UnifiedConnector", c.name).await.unwrap();
            match (
                condition(&obj, "CredentialsValid"),
                condition(&obj, "Stalled"),
            ) {
                (Some((cv, _, _)), Some((st, _, _))) if cv == "True" && st == "False" => Ok(()),
                _ => Err(obj["status"].to_string()),
            }
        })
        .await;
    }
    assert!(op.is_running() && op.pid() == pid, "the operator restarted");
    // Now that the tokens work, each org gets its collector.
    wait_for("four collectors", CONVERGE, || async {
        let n = env.collectors().await.len();
        if n == 4 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    env.cleanup().await;
}
