//! Persisted positions and the published report: a local file (standalone) or the state
//! ConfigMap (Kubernetes, keys `positions.json` and `report.json`, written by server-side apply
//! so the collector owns only those keys).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::contract::{CollectorReport, POSITIONS_KEY, REPORT_KEY, StateConfig};

/// One product's (or the head's) place in the source: the cursor of the page holding its first
/// unhandled event, and the uuids of that page it has already handled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub cursor: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handled: Vec<String>,
}

/// Everything the collector needs to resume without loss.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Positions {
    pub version: u32,
    /// The source these cursors belong to (its logs URL); positions of another source are ignored.
    pub source: String,
    /// The head's cursor: the oldest page an attached product still needs.
    pub head: Option<String>,
    /// Newest `published` read: tells whether a newly added product starts before the head.
    pub head_published: Option<DateTime<Utc>>,
    pub products: BTreeMap<String, Position>,
}

/// The standalone state file: positions and the last report.
#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    positions: Option<Positions>,
    report: Option<CollectorReport>,
}

pub enum Store {
    File(PathBuf),
    ConfigMap {
        api: Box<kube::Api<ConfigMap>>,
        name: String,
    },
}

const FIELD_MANAGER: &str = "unified-connectors-collector";

impl Store {
    pub async fn new(cfg: &StateConfig) -> anyhow::Result<Store> {
        Ok(match cfg {
            StateConfig::File { path } => Store::File(path.clone()),
            StateConfig::ConfigMap { namespace, name } => {
                let client = kube::Client::try_default()
                    .await
                    .context("state.configMap: cannot reach the Kubernetes API")?;
                Store::ConfigMap {
                    api: Box::new(kube::Api::namespaced(client, namespace)),
                    name: name.clone(),
                }
            }
        })
    }

    /// The persisted positions, if any. A corrupt document is an error (never silently restart
    /// from scratch: that would re-deliver or skip).
    pub async fn load(&self) -> anyhow::Result<Option<Positions>> {
        match self {
            Store::File(path) => match tokio::fs::read(path).await {
                Ok(b) => {
                    let f: StateFile = serde_json::from_slice(&b)
                        .with_context(|| format!("state file {} is corrupt", path.display()))?;
                    Ok(f.positions)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => {
                    Err(e).with_context(|| format!("cannot read state file {}", path.display()))
                }
            },
            Store::ConfigMap { api, name } => {
                let Some(cm) = api
                    .get_opt(name)
                    .await
                    .context("reading the state ConfigMap")?
                else {
                    return Ok(None);
                };
                match cm.data.as_ref().and_then(|d| d.get(POSITIONS_KEY)) {
                    Some(text) => Ok(Some(serde_json::from_str(text).with_context(|| {
                        format!("ConfigMap {name} key {POSITIONS_KEY} is corrupt")
                    })?)),
                    None => Ok(None),
                }
            }
        }
    }

    pub async fn save(
        &self,
        positions: &Positions,
        report: &CollectorReport,
    ) -> anyhow::Result<()> {
        match self {
            Store::File(path) => {
                let doc = StateFile {
                    positions: Some(positions.clone()),
                    report: Some(report.clone()),
                };
                let bytes = serde_json::to_vec_pretty(&doc)?;
                let tmp = path.with_extension("tmp");
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    tokio::fs::create_dir_all(dir).await.ok();
                }
                tokio::fs::write(&tmp, &bytes)
                    .await
                    .with_context(|| format!("writing {}", tmp.display()))?;
                tokio::fs::rename(&tmp, path)
                    .await
                    .with_context(|| format!("replacing {}", path.display()))?;
                Ok(())
            }
            Store::ConfigMap { api, name } => {
                let patch = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": { "name": name },
                    "data": {
                        POSITIONS_KEY: serde_json::to_string(positions)?,
                        REPORT_KEY: serde_json::to_string(report)?,
                    }
                });
                api.patch(
                    name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
                .with_context(|| format!("writing the state ConfigMap {name}"))?;
                Ok(())
            }
        }
    }
}

/// Reads the report of a standalone state file (for tests and tooling).
pub fn read_file_report(path: &std::path::Path) -> anyhow::Result<Option<CollectorReport>> {
    let f: StateFile = serde_json::from_slice(&std::fs::read(path)?)?;
    Ok(f.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_round_trips_and_refuses_corruption() {
        let dir = std::env::temp_dir().join(format!("uc-state-{}", uuid::Uuid::new_v4()));
        let path = dir.join("state.json");
        let store = Store::File(path.clone());
        assert_eq!(store.load().await.unwrap(), None);
        let mut p = Positions {
            version: 1,
            source: "s".into(),
            head: Some("h".into()),
            ..Default::default()
        };
        p.products.insert(
            "a".into(),
            Position {
                cursor: "c".into(),
                handled: vec!["u1".into()],
            },
        );
        store.save(&p, &CollectorReport::default()).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(p));
        assert!(read_file_report(&path).unwrap().is_some());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(store.load().await.is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
