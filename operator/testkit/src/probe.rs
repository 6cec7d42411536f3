//! Cheap validation of JSON bodies: walk a document once, keeping only its shape and the string
//! at a path (the event `uuid`), without building a `serde_json::Value` tree. Product servers
//! accept tens of thousands of records per second in the benchmark, on the same cores as the
//! collector they measure, so their own parsing must cost little.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What a JSON value was, and the string found at the probed path inside it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) enum Shape {
    /// The field was absent (only from `#[serde(default)]`).
    #[default]
    Missing,
    Null,
    /// A string; `true` when empty (HEC's "blank").
    String {
        empty: bool,
    },
    /// An object, with the string at the path if there is one.
    Object {
        found: Option<String>,
    },
    /// A number, boolean or array.
    Other,
}

/// Probes a value for the string at `path` (object keys from the value itself).
#[derive(Clone, Copy)]
pub(crate) struct Probe<'p>(pub &'p [&'p str]);

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

/// The string at a path below an object, or `None`.
struct At<'p>(&'p [&'p str]);

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        match d.deserialize_any(Probe(self.0))? {
            Shape::Object { found } => Ok(found),
            _ => Ok(None),
        }
    }
}

/// Whether a map key equals the wanted one, without allocating.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// Probe of a leaf: when the path is exhausted the wanted value is a string.
struct Leaf;

impl<'de> DeserializeSeed<'de> for Leaf {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(StringVisitor)
    }
}

struct StringVisitor;

macro_rules! nothing {
    ($($m:ident: $t:ty),*) => {
        $(fn $m<E: de::Error>(self, _: $t) -> Result<Self::Value, E> { Ok(Self::Value::default()) })*
    };
}

impl<'de> Visitor<'de> for StringVisitor {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    nothing!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64);
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Shape, E> {
        Ok(Shape::String {
            empty: v.is_empty(),
        })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut found = None;
        match self.0.split_first() {
            None => while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {},
            Some((first, rest)) => {
                while let Some(hit) = map.next_key_seed(KeyIs(first))? {
                    if hit && found.is_none() {
                        found = if rest.is_empty() {
                            map.next_value_seed(Leaf)?
                        } else {
                            map.next_value_seed(At(rest))?
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
        }
        Ok(Shape::Object { found })
    }
}

/// Probes every element of a top-level JSON array; an error if the body is not an array.
pub(crate) fn array(body: &[u8], path: &[&str]) -> Result<Vec<Shape>, serde_json::Error> {
    struct Elements<'p>(&'p [&'p str]);
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = Vec<Shape>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Shape>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(64));
            while let Some(s) = seq.next_element_seed(Probe(self.0))? {
                out.push(s);
            }
            Ok(out)
        }
    }
    let mut d = serde_json::Deserializer::from_slice(body);
    let out = d.deserialize_seq(Elements(path))?;
    d.end()?;
    Ok(out)
}

/// A field probed for `uuid` (HEC's `event`), usable in `#[derive(Deserialize)]` structs.
#[derive(Default, Debug)]
pub(crate) struct UuidField(pub Shape);

impl<'de> Deserialize<'de> for UuidField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Probe(&["uuid"])).map(UuidField)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_strings_at_paths_and_reports_shapes() {
        let body = br#"[{"a":1,"uuid":"u1","x":{"uuid":"no"}}, {"event":{"b":[1,{"uuid":"no"}],"uuid":"u2"}}, 3, "s", null, {"uuid":7}]"#;
        let top = array(body, &["uuid"]).unwrap();
        assert_eq!(
            top[0],
            Shape::Object {
                found: Some("u1".into())
            }
        );
        assert_eq!(top[1], Shape::Object { found: None });
        assert_eq!(top[2], Shape::Other);
        assert_eq!(top[3], Shape::String { empty: false });
        assert_eq!(top[4], Shape::Null);
        assert_eq!(top[5], Shape::Object { found: None });
        let nested = array(body, &["event", "uuid"]).unwrap();
        assert_eq!(
            nested[1],
            Shape::Object {
                found: Some("u2".into())
            }
        );
        assert_eq!(
            array(br#"[{"uuid":"a\"b"}]"#, &["uuid"]).unwrap()[0],
            Shape::Object {
                found: Some("a\"b".into())
            }
        );
    }

    #[test]
    fn rejects_non_arrays_and_malformed_json() {
        assert!(array(br#"{"uuid":"x"}"#, &["uuid"]).is_err());
        assert!(array(br#"[{"uuid":"x"}"#, &["uuid"]).is_err());
        assert!(array(br#"[{"uuid":"x"}] trailing"#, &["uuid"]).is_err());
        assert_eq!(array(b"[]", &["uuid"]).unwrap(), vec![]);
    }

    use proptest::prelude::*;
    use serde_json::Value;

    /// What the probe must find, computed the slow way on a `Value` tree.
    fn expected(v: &Value, path: &[&str]) -> Shape {
        match v {
            Value::Null => Shape::Null,
            Value::String(s) => Shape::String {
                empty: s.is_empty(),
            },
            Value::Object(_) => {
                let mut at = Some(v);
                for k in path {
                    at = at.and_then(|x| x.as_object()).and_then(|o| o.get(*k));
                }
                Shape::Object {
                    found: at.and_then(Value::as_str).map(str::to_string),
                }
            }
            _ => Shape::Other,
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\\\"\\u{e9}]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("uuid".to_string()),
                        Just("event".to_string()),
                        "[a-z]{1,3}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn probe_agrees_with_a_full_parse(items in prop::collection::vec(json(), 0..6)) {
            let body = serde_json::to_vec(&items).unwrap();
            for path in [&["uuid"][..], &["event", "uuid"][..]] {
                let got = array(&body, path).unwrap();
                let want: Vec<Shape> = items.iter().map(|v| expected(v, path)).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn probe_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = array(&bytes, &["uuid"]);
        }
    }
}
