//! A connector's parameters checked against its definition's schema subset, defaults applied,
//! and the source identity they make up.

use std::collections::BTreeMap;

use super::Problem;
use crate::api::definition::{ConnectorDefinitionSpec, ParamType, Parameter};

/// The parameter values to expand templates with: given ones checked, defaults added.
pub fn resolve(
    spec: &ConnectorDefinitionSpec,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Vec<Problem>> {
    let mut problems = Vec::new();
    for name in given.keys() {
        if !spec.parameters.contains_key(name) {
            let known: Vec<&str> = spec.parameters.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                format!("parameters.{name}"),
                format!(
                    "not a parameter of this definition (it has: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (name, p) in &spec.parameters {
        let field = format!("parameters.{name}");
        match given.get(name).or(p.default.as_ref()) {
            Some(v) => match check(p, v) {
                Ok(()) => {
                    out.insert(name.clone(), v.clone());
                }
                Err(m) => problems.push(Problem::new(field, m)),
            },
            None if p.required => {
                problems.push(Problem::new(field, format!("required: {}", describe(p))))
            }
            None => {
                out.insert(name.clone(), String::new());
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn describe(p: &Parameter) -> String {
    if p.description.is_empty() {
        "give a value".into()
    } else {
        p.description.clone()
    }
}

/// Checks one value against its parameter's schema; the message says what would be accepted.
pub fn check(p: &Parameter, v: &str) -> Result<(), String> {
    match p.type_ {
        ParamType::Integer => {
            let n: i64 = v.parse().map_err(|_| format!("{v:?} is not an integer"))?;
            if let Some(min) = p.minimum
                && n < min
            {
                return Err(format!("{n} is below the minimum {min}"));
            }
            if let Some(max) = p.maximum
                && n > max
            {
                return Err(format!("{n} is above the maximum {max}"));
            }
        }
        ParamType::Boolean if v != "true" && v != "false" => {
            return Err(format!("{v:?} is not true or false"));
        }
        _ => {}
    }
    let len = v.chars().count() as u32;
    if let Some(min) = p.min_length
        && len < min
    {
        return Err(format!("{v:?} is shorter than {min} characters"));
    }
    if let Some(max) = p.max_length
        && len > max
    {
        return Err(format!("{v:?} is longer than {max} characters"));
    }
    if let Some(values) = &p.enum_
        && !values.iter().any(|e| e == v)
    {
        return Err(format!("{v:?} must be one of: {}", values.join(", ")));
    }
    if let Some(pattern) = &p.pattern {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| format!("the definition's pattern does not compile: {e}"))?;
        if !re.is_match(v) {
            return Err(format!("{v:?} does not match {pattern}: {}", describe(p)));
        }
    }
    Ok(())
}

/// `value` as identities compare it: trimmed, lower-cased, without a trailing dot
/// (`ACME.okta.com.` = `acme.okta.com`).
pub fn normalise(value: &str) -> String {
    value.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The identity of a source instance: the definition, and its identity parameters normalised.
pub fn identity(
    name: &str,
    spec: &ConnectorDefinitionSpec,
    values: &BTreeMap<String, String>,
) -> String {
    let parts: Vec<String> = spec
        .identity
        .iter()
        .map(|p| normalise(values.get(p).map_or("", String::as_str)))
        .collect();
    format!("{name}:{}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(type_: ParamType) -> Parameter {
        Parameter {
            type_,
            ..Parameter::default()
        }
    }

    #[test]
    fn values_are_checked_against_the_schema_subset() {
        let mut p = param(ParamType::String);
        p.pattern = Some("[a-z0-9-]+".into());
        p.max_length = Some(10);
        assert!(check(&p, "acme-1").is_ok());
        assert!(check(&p, "Acme").unwrap_err().contains("does not match"));
        assert!(check(&p, "abcdefghijk").unwrap_err().contains("longer"));
        let mut n = param(ParamType::Integer);
        n.minimum = Some(1);
        n.maximum = Some(100);
        assert!(check(&n, "100").is_ok());
        assert!(check(&n, "0").unwrap_err().contains("minimum"));
        assert!(check(&n, "x").unwrap_err().contains("integer"));
        let mut e = param(ParamType::String);
        e.enum_ = Some(vec!["a".into(), "b".into()]);
        assert!(check(&e, "c").unwrap_err().contains("one of: a, b"));
        assert!(check(&param(ParamType::Boolean), "yes").is_err());
    }

    #[test]
    fn identity_is_normalised() {
        assert_eq!(normalise(" ACME.okta.com. "), "acme.okta.com");
    }
}
