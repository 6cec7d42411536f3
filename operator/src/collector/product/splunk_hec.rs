//! Splunk HTTP Event Collector: envelopes `{"time","host","source","sourcetype","index","event"}`
//! stacked one after another, `time` taken from the event's `published`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::{ErrorKind, Product, SendError, error_from, network_error};
use crate::collector::config::read_secret;
use crate::collector::event::Event;
use crate::contract::SplunkHecSink;

pub struct SplunkHec {
    cfg: SplunkHecSink,
    http: reqwest::Client,
    /// The constant middle of every envelope (host, source, sourcetype, index), pre-serialised.
    fixed: String,
}

impl SplunkHec {
    pub fn new(cfg: SplunkHecSink, okta_domain: &str) -> Self {
        let mut fixed = format!(
            r#""host":{},"source":"okta:system_log","sourcetype":{}"#,
            serde_json::Value::from(okta_domain),
            serde_json::Value::from(cfg.sourcetype.as_str())
        );
        if let Some(index) = &cfg.index {
            fixed.push_str(&format!(
                r#","index":{}"#,
                serde_json::Value::from(index.as_str())
            ));
        }
        SplunkHec {
            cfg,
            http: crate::http::client(Duration::from_secs(30)),
            fixed,
        }
    }

    /// The request body for a batch.
    pub fn body(&self, batch: &[Arc<Event>]) -> Vec<u8> {
        let mut body = Vec::with_capacity(
            batch
                .iter()
                .map(|e| e.raw.len() + self.overhead_per_event())
                .sum(),
        );
        for e in batch {
            let time = e
                .published
                .unwrap_or_else(chrono::Utc::now)
                .timestamp_millis();
            write!(
                body,
                r#"{{"time":{}.{:03},{},"event":"#,
                time.div_euclid(1000),
                time.rem_euclid(1000),
                self.fixed
            )
            .expect("writing to memory");
            body.extend_from_slice(&e.raw);
            body.extend_from_slice(b"}\n");
        }
        body
    }
}

impl Product for SplunkHec {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        let token = read_secret(&self.cfg.token)
            .await
            .map_err(|e| SendError::fatal(format!("splunkHec: {e:#}")))?;
        let resp = self
            .http
            .post(format!(
                "{}/services/collector/event",
                self.cfg.url.trim_end_matches('/')
            ))
            .header("authorization", format!("Splunk {token}"))
            .header("content-type", "application/json")
            .body(self.body(batch))
            .send()
            .await
            .map_err(|e| network_error("splunkHec", &e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status().as_u16();
        let mut err = error_from("splunkHec", resp).await;
        // HEC answers 400 for both bad data (codes 5, 6, 12, 13) and ... an invalid index (7):
        // an unknown index is a configuration error, not a bad record.
        if status == 400 && err.message.contains("\"code\":7") {
            err.kind = ErrorKind::Fatal;
        }
        Err(err)
    }

    fn max_batch_bytes(&self) -> usize {
        // Splunk's default max_content_length is 800 MB; keep requests modest.
        4 * 1024 * 1024
    }

    fn overhead_per_event(&self) -> usize {
        self.fixed.len() + 40
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::event::parse_page;
    use crate::contract::SecretSource;

    #[test]
    fn envelopes_carry_published_time_and_the_raw_event() {
        let hec = SplunkHec::new(
            SplunkHecSink {
                url: "https://h".into(),
                token: SecretSource::Env("X".into()),
                index: Some("okta".into()),
                sourcetype: "OktaIM2:log".into(),
                allow_insecure_http: false,
            },
            "example.okta.com",
        );
        let body = bytes::Bytes::from_static(
            br#"[{"uuid":"a","published":"2026-01-01T00:00:01.023Z","eventType":"x","z":1},{"uuid":"b","published":"2026-01-01T00:00:02Z"}]"#,
        );
        let events: Vec<_> = parse_page(&body)
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect();
        let out = String::from_utf8(hec.body(&events)).unwrap();
        let envs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(envs.len(), 2);
        assert_eq!(envs[0]["time"].as_f64().unwrap(), 1767225601.023);
        assert_eq!(envs[0]["sourcetype"], "OktaIM2:log");
        assert_eq!(envs[0]["index"], "okta");
        assert_eq!(envs[0]["event"]["z"], 1);
        assert_eq!(envs[1]["event"]["uuid"], "b");
        assert!(
            out.len()
                <= events
                    .iter()
                    .map(|e| e.raw.len() + hec.overhead_per_event())
                    .sum()
        );
    }
}
