//! Runs a collector as a local process from the Deployment the operator rendered, since no
//! kubelet runs here. What the pod would get, the process gets: the container's command, args
//! and env (fieldRefs resolved), and its mounted ConfigMap and Secret volumes materialised as
//! files. The mount paths (`/etc/unified-connectors/config`, `/etc/unified-connectors/secrets`)
//! are rewritten to a temp dir in args, env and the config files, and `UC_CONFIG_DIR` /
//! `UC_SECRETS_DIR` point there too. The only other change: the config's `listen` address
//! becomes a free loopback port (several collectors run side by side). So the manifests
//! themselves are what is tested.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use unified_connectors::contract;

pub struct LocalCollector {
    child: Option<Child>,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    /// Where its `/metrics`, `/healthz` and `/readyz` answer.
    pub listen: String,
    /// The collector.yaml it runs with (after the path rewrite).
    pub config_path: PathBuf,
}

impl LocalCollector {
    /// Reads Deployment `namespace/name` and starts its first container locally.
    pub async fn start(client: &Client, namespace: &str, name: &str) -> Result<LocalCollector> {
        let deploy = Api::<Deployment>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .with_context(|| format!("reading Deployment {namespace}/{name}"))?;
        let pod = deploy
            .spec
            .and_then(|s| s.template.spec)
            .ok_or_else(|| anyhow!("Deployment {name} has no pod spec"))?;
        let container = pod
            .containers
            .first()
            .ok_or_else(|| anyhow!("Deployment {name} has no container"))?;

        let dir = std::env::temp_dir().join(format!("uc-e2e-collector-{name}-{}", super::suffix()));
        std::fs::create_dir_all(&dir)?;

        // Materialise mounted volumes; remember mountPath -> local dir.
        let volumes: BTreeMap<String, _> = pod
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for m in container.volume_mounts.clone().unwrap_or_default() {
            let vol = volumes
                .get(&m.name)
                .ok_or_else(|| anyhow!("volumeMount {} names no volume", m.name))?;
            let local = dir.join(&m.name);
            std::fs::create_dir_all(&local)?;
            let files: BTreeMap<String, Vec<u8>> = if let Some(cm) = &vol.config_map {
                let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                    .get(&cm.name)
                    .await
                    .with_context(|| {
                        format!("reading ConfigMap {} of volume {}", cm.name, m.name)
                    })?;
                cm.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect()
            } else if let Some(s) = &vol.secret {
                let sname = s
                    .secret_name
                    .clone()
                    .ok_or_else(|| anyhow!("secret volume {} without secretName", m.name))?;
                let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                    .get(&sname)
                    .await
                    .with_context(|| format!("reading Secret {sname} of volume {}", m.name))?;
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            } else if vol.empty_dir.is_some() {
                BTreeMap::new()
            } else {
                bail!(
                    "volume {} is of a type the local runner does not support",
                    m.name
                );
            };
            let wanted_items = vol
                .config_map
                .as_ref()
                .and_then(|c| c.items.clone())
                .or_else(|| vol.secret.as_ref().and_then(|s| s.items.clone()));
            match wanted_items {
                Some(items) => {
                    for it in items {
                        let data = files
                            .get(&it.key)
                            .ok_or_else(|| anyhow!("volume {} lacks key {}", m.name, it.key))?;
                        write_file(&local.join(&it.path), data)?;
                    }
                }
                None => {
                    for (k, data) in &files {
                        write_file(&local.join(k), data)?;
                    }
                }
            }
            let target = match &m.sub_path {
                Some(sp) if !sp.is_empty() => local.join(sp),
                _ => local,
            };
            mounts.push((m.mount_path.clone(), target));
        }
        // Longest mount path first, so nested mounts rewrite correctly.
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let rewrite = |s: &str| -> String {
            let mut out = s.to_string();
            for (from, to) in &mounts {
                out = out.replace(from.as_str(), &to.to_string_lossy());
            }
            out
        };

        // Rewrite paths inside the materialised ConfigMap files and move `listen` to loopback.
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut config_path = PathBuf::new();
        for (mount_path, local) in &mounts {
            if !local.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(local)? {
                let p = entry?.path();
                let Ok(text) = std::fs::read_to_string(&p) else {
                    continue;
                };
                let mut text = rewrite(&text);
                if p.file_name().is_some_and(|n| n == contract::CONFIG_KEY) {
                    let mut cfg: serde_json::Value =
                        serde_saphyr::from_str(&text).context("collector.yaml is not YAML")?;
                    cfg["listen"] = serde_json::Value::from(listen.clone());
                    text = serde_saphyr::to_string(&cfg)?;
                    config_path = p.clone();
                }
                if mount_path.as_str() != contract::SECRETS_DIR {
                    std::fs::write(&p, text)?;
                }
            }
        }

        let mut env: Vec<(String, String)> = Vec::new();
        for e in container.env.clone().unwrap_or_default() {
            let value = if let Some(v) = e.value {
                rewrite(&v)
            } else if let Some(from) = e.value_from {
                if let Some(f) = from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.namespace" => namespace.to_string(),
                        "metadata.name" => format!("{name}-local"),
                        other => bail!("env {} uses fieldRef {other}, unsupported locally", e.name),
                    }
                } else if let Some(s) = from.secret_key_ref {
                    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                        .get(&s.name)
                        .await?;
                    let v = secret
                        .data
                        .unwrap_or_default()
                        .remove(&s.key)
                        .ok_or_else(|| anyhow!("Secret {} lacks {}", s.name, s.key))?;
                    String::from_utf8(v.0)?
                } else if let Some(c) = from.config_map_key_ref {
                    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                        .get(&c.name)
                        .await?;
                    cm.data
                        .unwrap_or_default()
                        .remove(&c.key)
                        .ok_or_else(|| anyhow!("ConfigMap {} lacks {}", c.name, c.key))?
                } else {
                    bail!("env {} has an unsupported valueFrom", e.name);
                }
            } else {
                String::new()
            };
            env.push((e.name, value));
        }
        for (mount_path, local) in &mounts {
            if mount_path == contract::CONFIG_DIR {
                env.push(("UC_CONFIG_DIR".into(), local.to_string_lossy().into()));
            }
            if mount_path == contract::SECRETS_DIR {
                env.push(("UC_SECRETS_DIR".into(), local.to_string_lossy().into()));
            }
        }

        // The image's binary is this build's binary.
        let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
        argv.extend(container.args.clone().unwrap_or_default());
        let argv: Vec<String> = argv.iter().map(|a| rewrite(a)).collect();
        let (program, args) = match argv.split_first() {
            Some((first, rest))
                if Path::new(first)
                    .file_name()
                    .is_some_and(|n| n == "unified-connectors") =>
            {
                (super::operator::BIN.to_string(), rest.to_vec())
            }
            // No command: the image entrypoint is the binary, args follow.
            _ if container.command.is_none() => (super::operator::BIN.to_string(), argv.clone()),
            _ => bail!("collector command {argv:?} is not the unified-connectors binary"),
        };

        let log_path = dir.join("collector.log");
        let log = File::create(&log_path)?;
        let child = Command::new(&program)
            .args(&args)
            .envs(env)
            .env(
                "RUST_LOG",
                std::env::var("UC_E2E_COLLECTOR_LOG")
                    .unwrap_or_else(|_| "info,unified_connectors=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {program} {args:?}"))?;
        Ok(LocalCollector {
            child: Some(child),
            dir,
            log_path,
            listen,
            config_path,
        })
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().map(|s| s.is_none()).unwrap_or(false))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for LocalCollector {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            super::print_log_tail("collector", &self.log_path, 60);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data)?;
    Ok(())
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
