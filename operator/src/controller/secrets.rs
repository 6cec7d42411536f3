//! Reading referenced Secrets from the cache, with errors that name the Secret and key to fix.
//! Secret values only ever travel inside [`SecretValue`], whose `Debug` is redacted.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};

/// A secret value. Prints as `<redacted>` so it cannot leak through logs or error chains.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// SHA-256 of the value: compares values without keeping or showing them.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a referenced Secret key could not be used. Messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "Secret {namespace}/{name} not found (referenced by {field}): create it with key '{key}'"
    )]
    NotFound {
        namespace: String,
        name: String,
        key: String,
        field: String,
    },
    #[error(
        "Secret {namespace}/{name} has no key '{key}' (referenced by {field}); it has: {available}"
    )]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
        field: String,
        available: String,
    },
    #[error(
        "Secret {namespace}/{name} key '{key}' (referenced by {field}) is empty or not UTF-8 text"
    )]
    Unusable {
        namespace: String,
        name: String,
        key: String,
        field: String,
    },
}

impl SecretError {
    /// Condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            SecretError::NotFound { .. } => "SecretNotFound",
            SecretError::KeyMissing { .. } => "SecretKeyMissing",
            SecretError::Unusable { .. } => "SecretKeyInvalid",
        }
    }
}

/// Reads `key` of Secret `namespace/name` from the cache. `field` is the spec path that refers to
/// it, so the error tells the user which reference to check.
pub fn read_key(
    secrets: &Store<Secret>,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<SecretValue, SecretError> {
    let ctx = |available: Option<String>| {
        (
            namespace.to_string(),
            name.to_string(),
            key.to_string(),
            field.to_string(),
            available,
        )
    };
    let secret = secrets
        .get(&ObjectRef::new(name).within(namespace))
        .ok_or_else(|| {
            let (namespace, name, key, field, _) = ctx(None);
            SecretError::NotFound {
                namespace,
                name,
                key,
                field,
            }
        })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        });
    let Some(bytes) = value else {
        let mut keys: Vec<String> = secret.data.iter().flat_map(|d| d.keys().cloned()).collect();
        keys.sort();
        let available = if keys.is_empty() {
            "no keys".to_string()
        } else {
            keys.join(", ")
        };
        let (namespace, name, key, field, _) = ctx(None);
        return Err(SecretError::KeyMissing {
            namespace,
            name,
            key,
            field,
            available,
        });
    };
    match String::from_utf8(bytes) {
        Ok(s) if !s.trim().is_empty() => Ok(SecretValue(s.trim().to_string())),
        _ => {
            let (namespace, name, key, field, _) = ctx(None);
            Err(SecretError::Unusable {
                namespace,
                name,
                key,
                field,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    pub fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    pub fn store_of(secrets: Vec<Secret>) -> Store<Secret> {
        let mut writer = Writer::default();
        let store = writer.as_reader();
        writer.apply_watcher_event(&Event::Init);
        for s in secrets {
            writer.apply_watcher_event(&Event::InitApply(s));
        }
        writer.apply_watcher_event(&Event::InitDone);
        store
    }

    #[test]
    fn errors_name_the_secret_key_and_field() {
        let store = store_of(vec![secret(
            "team-a",
            "okta",
            &[("other", "x"), ("blank", "  ")],
        )]);
        let missing = read_key(
            &store,
            "team-a",
            "nope",
            "token",
            "spec.source.okta.credentialsSecretRef",
        )
        .unwrap_err();
        assert_eq!(missing.reason(), "SecretNotFound");
        assert!(
            missing.to_string().contains("team-a/nope") && missing.to_string().contains("'token'")
        );
        let no_key = read_key(
            &store,
            "team-a",
            "okta",
            "token",
            "spec.source.okta.credentialsSecretRef",
        )
        .unwrap_err();
        assert!(
            no_key.to_string().contains("has no key 'token'")
                && no_key.to_string().contains("blank, other"),
            "{no_key}"
        );
        let blank = read_key(&store, "team-a", "okta", "blank", "f").unwrap_err();
        assert_eq!(blank.reason(), "SecretKeyInvalid");
    }

    #[test]
    fn values_are_trimmed_and_never_printed() {
        let store = store_of(vec![secret("ns", "s", &[("token", "00abc-secret\n")])]);
        let v = read_key(&store, "ns", "s", "token", "f").unwrap();
        assert_eq!(v.expose(), "00abc-secret");
        assert_eq!(format!("{v:?}"), "<redacted>");
    }
}
