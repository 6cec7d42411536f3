//! One Okta System Log event, kept byte for byte as Okta sent it. Only what routing and dedupe
//! need is parsed out (`uuid`, `published`, `eventType`); everything else passes through untouched.

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// An event and the few fields the pipeline reads.
#[derive(Debug)]
pub struct Event {
    /// Dedupe key derived from `uuid` (the uuid's 128 bits, or a hash for non-UUID strings).
    pub key: u128,
    pub uuid: Box<str>,
    pub published: Option<DateTime<Utc>>,
    pub event_type: Box<str>,
    /// The event's JSON exactly as received (a slice of the page body: no copy).
    pub raw: Bytes,
    /// When the collector read it (batch age).
    pub read_at: Instant,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    uuid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    published: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "eventType")]
    event_type: Option<Cow<'a, str>>,
}

/// Why a page body could not be used; the page is retried, never skipped.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("response body is not a JSON array of events: {0}")]
    NotAnArray(String),
    #[error("event #{index} is not a JSON object with string uuid/published/eventType: {reason}")]
    BadEvent { index: usize, reason: String },
}

/// The dedupe key of a uuid string.
pub fn key_of(uuid: &str) -> u128 {
    match uuid::Uuid::parse_str(uuid) {
        Ok(u) => u.as_u128(),
        Err(_) => {
            let d = Sha256::digest(uuid.as_bytes());
            u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
        }
    }
}

/// Splits a page body (`[ {...}, ... ]`) into events without copying them.
///
/// An event without `uuid` is kept (never dropped) with a key hashed from its bytes, so it is
/// still delivered once; a malformed body is an error (the caller retries the same cursor).
pub fn parse_page(body: &Bytes) -> Result<Vec<Event>, ParseError> {
    let items: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|e| ParseError::NotAnArray(e.to_string()))?;
    let now = Instant::now();
    let base = body.as_ptr() as usize;
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let text = item.get();
        let head: Head = serde_json::from_str(text).map_err(|e| ParseError::BadEvent {
            index,
            reason: e.to_string(),
        })?;
        let start = text.as_ptr() as usize - base;
        let raw = body.slice(start..start + text.len());
        let (uuid, key) = match head.uuid {
            Some(u) if !u.is_empty() => {
                let key = key_of(&u);
                (u.into_owned().into_boxed_str(), key)
            }
            _ => {
                let d = Sha256::digest(&raw);
                let hash = hex::encode(&d[..16]);
                let key = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
                (format!("sha256:{hash}").into_boxed_str(), key)
            }
        };
        let published = head
            .published
            .and_then(|p| DateTime::parse_from_rfc3339(&p).ok())
            .map(|d| d.with_timezone(&Utc));
        out.push(Event {
            key,
            uuid,
            published,
            event_type: head
                .event_type
                .unwrap_or_default()
                .into_owned()
                .into_boxed_str(),
            raw,
            read_at: now,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_unknown_fields_and_raw_bytes() {
        let body = Bytes::from_static(
            br#"[ {"uuid":"9a3d0c1e-6d1b-4f7e-8b7e-2f4b9d1f0a11","published":"2026-01-01T00:00:01.123Z","eventType":"user.session.start","zzz":{"a":[1,2]}} ,{"uuid":"x","eventType":"a"}]"#,
        );
        let ev = parse_page(&body).unwrap();
        assert_eq!(ev.len(), 2);
        assert!(
            std::str::from_utf8(&ev[0].raw)
                .unwrap()
                .contains(r#""zzz":{"a":[1,2]}"#)
        );
        assert!(ev[0].raw.starts_with(b"{") && ev[0].raw.ends_with(b"}"));
        assert_eq!(&*ev[0].event_type, "user.session.start");
        assert_eq!(ev[0].published.unwrap().timestamp_millis(), 1767225601123);
        assert_eq!(ev[1].published, None);
        assert_ne!(ev[0].key, ev[1].key);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for b in [
            &b"[{\"uuid\":"[..],
            b"{}",
            b"[1]",
            b"[{\"uuid\":5}]",
            b"",
            b"null",
        ] {
            assert!(parse_page(&Bytes::copy_from_slice(b)).is_err(), "{:?}", b);
        }
    }

    #[test]
    fn missing_uuid_gets_a_stable_content_key() {
        let body =
            Bytes::from_static(br#"[{"eventType":"a"},{"eventType":"a"},{"eventType":"b"}]"#);
        let ev = parse_page(&body).unwrap();
        assert_eq!(ev[0].key, ev[1].key);
        assert_ne!(ev[0].key, ev[2].key);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_page(&Bytes::from(data));
        }

        #[test]
        fn round_trips_generated_events(
            events in proptest::collection::vec(
                ("[a-f0-9-]{1,36}", "[a-z.]{0,20}", 0i64..4_000_000_000_000i64, "\\PC{0,30}"), 0..20)
        ) {
            let values: Vec<serde_json::Value> = events.iter().map(|(u, t, ms, extra)| {
                let published = DateTime::<Utc>::from_timestamp_millis(*ms).unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                serde_json::json!({"extra": extra, "uuid": u, "eventType": t, "published": published, "n": {"x": [1, "}"]}})
            }).collect();
            let body = Bytes::from(serde_json::to_vec_pretty(&values).unwrap());
            let parsed = parse_page(&body).unwrap();
            prop_assert_eq!(parsed.len(), values.len());
            for (p, (v, (u, t, ms, _))) in parsed.iter().zip(values.iter().zip(events.iter())) {
                prop_assert_eq!(&*p.uuid, u.as_str());
                prop_assert_eq!(&*p.event_type, t.as_str());
                prop_assert_eq!(p.published.unwrap().timestamp_millis(), *ms);
                let back: serde_json::Value = serde_json::from_slice(&p.raw).unwrap();
                prop_assert_eq!(&back, v);
            }
        }
    }
}
