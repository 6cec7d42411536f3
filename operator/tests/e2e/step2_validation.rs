//! Step 2: the API server itself (the CRDs' OpenAPI schemas and CEL rules, no webhook) accepts
//! the documented samples and refuses mistakes with a message that names the field to fix.

use serde_json::{Value, json};

use crate::support::{TestEnv, cluster};

/// `config/samples/*.yaml` (secrets, connector, bindings), as JSON documents.
fn samples() -> Vec<Value> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut docs = Vec::new();
    for file in ["secrets.yaml", "connector.yaml", "bindings.yaml"] {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("config/samples/{file}: {e}"));
        for v in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    docs
}

fn sample(kind: &str, name: &str) -> Value {
    samples()
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("config/samples has no {kind} {name}"))
}

/// Applies `mutate` to a copy of `base`, renamed to `name`.
fn variant(base: &Value, name: &str, mutate: impl FnOnce(&mut Value)) -> Value {
    let mut v = base.clone();
    v["metadata"]["name"] = json!(name);
    mutate(&mut v);
    v
}

fn remove(v: &mut Value, path: &[&str]) {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = v;
    for p in parents {
        cur = &mut cur[*p];
    }
    cur.as_object_mut().unwrap().remove(*last);
}

#[tokio::test]
#[ignore = "needs a control plane: make e2e"]
async fn valid_samples_are_accepted_and_invalid_objects_rejected_naming_the_field() {
    let mut env = TestEnv::new("validation").await;
    let ns = env.namespace("samples").await;

    // Every sample is accepted as written (server-side apply, as the README tells people to).
    for doc in samples() {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let kind = doc["kind"].as_str().unwrap().to_string();
        let stored = env
            .apply(&ns, &doc)
            .await
            .unwrap_or_else(|e| panic!("sample {kind} {name} was refused: {e}"));
        if kind != "Secret" {
            let mut mismatches = Vec::new();
            crate::support::drift(&doc["spec"], &stored["spec"], ".spec", &mut mismatches);
            assert!(
                mismatches.is_empty(),
                "sample {kind} {name} was altered when stored: {mismatches:?}"
            );
        }
    }

    let uc = sample("UnifiedConnector", "okta-prod");
    let sentinel = sample("ProductBinding", "okta-to-sentinel");
    let splunk = sample("ProductBinding", "okta-to-splunk");
    let webhook = sample("ProductBinding", "okta-to-webhook");

    // (object, a field path the refusal must name)
    let cases: Vec<(Value, &str)> = vec![
        (
            variant(&uc, "bad-scheme", |v| {
                v["spec"]["source"]["okta"]["domain"] = json!("https://acme.okta.com")
            }),
            "spec.source.okta.domain",
        ),
        (
            variant(&uc, "bad-path", |v| {
                v["spec"]["source"]["okta"]["domain"] = json!("acme.okta.com/api/v1")
            }),
            "spec.source.okta.domain",
        ),
        (
            variant(&uc, "bad-port", |v| {
                v["spec"]["source"]["okta"]["domain"] = json!("acme.okta.com:443")
            }),
            "spec.source.okta.domain",
        ),
        (
            variant(&uc, "bad-host", |v| {
                v["spec"]["source"]["okta"]["domain"] = json!("not a host name")
            }),
            "spec.source.okta.domain",
        ),
        (
            variant(&uc, "bad-lookback", |v| {
                v["spec"]["lookback"] = json!("forever")
            }),
            "spec.lookback",
        ),
        (
            variant(&uc, "long-lookback", |v| {
                v["spec"]["lookback"] = json!("3000h")
            }),
            "spec.lookback",
        ),
        (
            variant(&uc, "no-secret-ref", |v| {
                remove(v, &["spec", "source", "okta", "credentialsSecretRef"])
            }),
            "spec.source.okta.credentialsSecretRef",
        ),
        (
            variant(&uc, "empty-secret-name", |v| {
                v["spec"]["source"]["okta"]["credentialsSecretRef"]["name"] = json!("")
            }),
            "spec.source.okta.credentialsSecretRef.name",
        ),
        (
            variant(&uc, "no-source", |v| remove(v, &["spec", "source"])),
            "spec.source",
        ),
        (
            variant(&sentinel, "two-products", |v| {
                v["spec"]["product"]["splunkHec"] = splunk["spec"]["product"]["splunkHec"].clone()
            }),
            "spec.product",
        ),
        (
            variant(&sentinel, "no-product", |v| {
                v["spec"]["product"] = json!({})
            }),
            "spec.product",
        ),
        (
            variant(&sentinel, "no-connector-ref", |v| {
                remove(v, &["spec", "connectorRef"])
            }),
            "spec.connectorRef",
        ),
        (
            variant(&sentinel, "no-sentinel-secret", |v| {
                remove(v, &["spec", "product", "sentinel", "credentialsSecretRef"])
            }),
            "spec.product.sentinel.credentialsSecretRef",
        ),
        (
            variant(&splunk, "no-splunk-token", |v| {
                remove(v, &["spec", "product", "splunkHec", "tokenSecretRef"])
            }),
            "spec.product.splunkHec.tokenSecretRef",
        ),
        (
            variant(&webhook, "no-webhook-secret", |v| {
                remove(v, &["spec", "product", "webhook", "signingSecretRef"])
            }),
            "spec.product.webhook.signingSecretRef",
        ),
    ];
    assert!(cases.len() >= 10);

    let mut failures = Vec::new();
    for (obj, field) in &cases {
        let what = format!(
            "{} {}",
            obj["kind"].as_str().unwrap(),
            obj["metadata"]["name"].as_str().unwrap()
        );
        match env.create(&ns, obj).await {
            Ok(_) => failures.push(format!(
                "{what}: accepted, expected a refusal naming {field}"
            )),
            Err(e) => match cluster::refusal(&e) {
                Some((422, reason, message, _))
                    if reason == "Invalid" && names_field(&message, field) => {}
                Some((code, reason, message, _)) => failures.push(format!(
                    "{what}: refused ({code} {reason}) but not naming {field}: {message}"
                )),
                None => failures.push(format!("{what}: unexpected error {e}")),
            },
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid objects were not refused properly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    env.cleanup().await;
}

/// The message names `field` as a path (followed by `:` or `.` or space, so `spec.source`
/// does not match just because `spec.source.okta.domain` is named elsewhere... unless it is
/// that path itself).
fn names_field(message: &str, field: &str) -> bool {
    message.match_indices(field).any(|(i, _)| {
        let next = message[i + field.len()..].chars().next();
        matches!(
            next,
            None | Some(':') | Some(' ') | Some(',') | Some('\'') | Some('"') | Some(')')
        )
    })
}

#[test]
fn names_field_wants_the_whole_path() {
    assert!(names_field(
        "spec.source.okta.domain: Invalid value",
        "spec.source.okta.domain"
    ));
    assert!(names_field(
        "UnifiedConnector.x is invalid: spec.source: Required value",
        "spec.source"
    ));
    assert!(!names_field(
        "spec.source.okta.domain: Invalid value",
        "spec.source"
    ));
}
