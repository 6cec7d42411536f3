//! `{{name}}` templates, and dotted JSON paths read without copying or parsing more than needed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The `{{name}}`s of a template, in order; an unterminated `{{` is an error.
pub fn names(tpl: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = tpl;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated `{{{{` in {tpl:?}"))?;
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Expands `{{name}}` with `vars`; `json` escapes values for use inside a JSON string.
pub fn expand(
    tpl: &str,
    json: bool,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(tpl.len() + 32);
    let mut rest = tpl;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated `{{{{` in {tpl:?}"))?;
        let name = after[..end].trim();
        let v = vars(name).ok_or_else(|| name.to_string())?;
        if json {
            let q = serde_json::to_string(&v).expect("a string serialises");
            out.push_str(&q[1..q.len() - 1]);
        } else {
            out.push_str(&v);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A dotted path (`items`, `response.metadata.next_offset`); `$` or `` is the whole body.
pub fn segments(path: &str) -> Vec<String> {
    let p = path.trim();
    let p = p.strip_prefix("$.").unwrap_or(p);
    if p.is_empty() || p == "$" {
        return Vec::new();
    }
    p.split('.').map(str::to_string).collect()
}

/// Whether a path is well-formed: non-empty segments of printable characters.
pub fn valid_path(path: &str) -> bool {
    let p = path.trim();
    p == "$"
        || segments(p)
            .iter()
            .all(|s| !s.is_empty() && !s.contains(['[', ']', ' ', '*']))
            && !p.is_empty()
}

/// The value at `segs` under `raw`, if every segment names a member of an object.
pub fn get<'a>(raw: &'a RawValue, segs: &[String]) -> Option<&'a RawValue> {
    let mut cur = raw;
    for s in segs {
        cur = fields(cur, &[s.as_str()]).pop().flatten()?;
    }
    Some(cur)
}

/// The top-level members `keys` of an object in one pass (`None` each if not an object).
pub fn fields<'a>(raw: &'a RawValue, keys: &[&str]) -> Vec<Option<&'a RawValue>> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de::Deserializer::deserialize_map(&mut de, Fields { keys })
        .unwrap_or_else(|_| vec![None; keys.len()])
}

/// The top-level keys of an object (error messages).
pub fn keys(raw: &RawValue) -> Vec<String> {
    serde_json::from_str::<std::collections::BTreeMap<String, IgnoredAny>>(raw.get())
        .map(|m| m.into_keys().collect())
        .unwrap_or_default()
}

/// A string value's text, or a number's digits.
pub fn scalar(raw: &RawValue) -> Option<String> {
    let t = raw.get().trim();
    if t.starts_with('"') {
        serde_json::from_str::<String>(t).ok()
    } else if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(t.to_string())
    } else {
        None
    }
}

struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

struct Fields<'k> {
    keys: &'k [&'k str],
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Vec<Option<&'de RawValue>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![None; self.keys.len()];
        while let Some(k) = map.next_key::<Key<'de>>()? {
            match self.keys.iter().position(|x| *x == k.0) {
                Some(i) if out[i].is_none() => out[i] = Some(map.next_value::<&'de RawValue>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = Vec<Option<&'de RawValue>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn templates_expand_and_name_unknown_variables() {
        let vars = |n: &str| (n == "domain").then(|| "acme.okta.com".to_string());
        assert_eq!(
            expand("https://{{domain}}/api", false, &vars).unwrap(),
            "https://acme.okta.com/api"
        );
        assert_eq!(expand("{{ nope }}", false, &vars).unwrap_err(), "nope");
        assert!(expand("{{domain", false, &vars).is_err());
        let q = |_: &str| Some("a\"b".to_string());
        assert_eq!(
            expand(r#"{"c":"{{x}}"}"#, true, &q).unwrap(),
            r#"{"c":"a\"b"}"#
        );
        assert_eq!(names("{{a}}/{{ b }}").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn paths_find_members_without_parsing_the_rest() {
        let r = raw(r#"{"a":{"b":[1,2]},"c":"x\"y","n":12,"e":"\u00e9"}"#);
        assert_eq!(get(&r, &segments("a.b")).unwrap().get(), "[1,2]");
        assert_eq!(get(&r, &segments("$")).unwrap().get(), r.get());
        assert!(get(&r, &segments("a.zz")).is_none());
        assert!(
            get(&r, &segments("c.d")).is_none(),
            "a string has no members"
        );
        let f = fields(&r, &["n", "c", "missing"]);
        assert_eq!(scalar(f[0].unwrap()).unwrap(), "12");
        assert_eq!(scalar(f[1].unwrap()).unwrap(), "x\"y");
        assert!(f[2].is_none());
        assert_eq!(keys(&r), vec!["a", "c", "e", "n"]);
        assert!(valid_path("items") && valid_path("$") && !valid_path("a..b") && !valid_path(""));
    }

    proptest! {
        #[test]
        fn fields_never_panic(s in "\\PC{0,120}") {
            if let Ok(r) = RawValue::from_string(s) {
                let _ = fields(&r, &["a", "b"]);
            }
        }

        #[test]
        fn fields_find_generated_members(
            members in proptest::collection::btree_map("[a-z_@]{1,8}", "[a-zA-Z0-9 \"\\\\]{0,12}", 1..8)
        ) {
            let v = serde_json::to_string(&members).unwrap();
            let r = raw(&v);
            let keys: Vec<&str> = members.keys().map(String::as_str).collect();
            let found = fields(&r, &keys);
            for (k, f) in keys.iter().zip(found) {
                prop_assert_eq!(scalar(f.unwrap()).unwrap(), members[*k].clone());
            }
        }
    }
}
