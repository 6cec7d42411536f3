//! Offline validation of a definition: every problem names its field
//! (`spec.streams[0].records.path`) and says what to do.

use std::collections::HashSet;

use super::Problem;
use super::template;
use crate::api::definition::{
    ConnectorDefinitionSpec, CredentialKind, MissingNext, Pagination, PositionKind, Stream,
};

/// Template variables every stream has besides the parameters.
pub const BUILT_INS: &[&str] = &["start", "pageSize"];

/// All problems of a definition (empty: it is valid).
pub fn lint(spec: &ConnectorDefinitionSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut p = |f: String, m: &str| out.push(Problem::new(f, m));
    for (f, v) in [
        ("spec.displayName", &spec.display_name),
        ("spec.provider", &spec.provider),
        ("spec.version", &spec.version),
    ] {
        if v.trim().is_empty() {
            p(f.into(), "must not be empty");
        }
    }
    if !spec.support.url.starts_with("https://") {
        p(
            "spec.support.url".into(),
            "must be an https:// URL where users get help",
        );
    }
    let name_ok = regex::Regex::new("^[a-zA-Z][a-zA-Z0-9_]*$").expect("static regex");
    for (name, param) in &spec.parameters {
        let f = format!("spec.parameters.{name}");
        if !name_ok.is_match(name) || BUILT_INS.contains(&name.as_str()) || name == "cursor" {
            p(
                f.clone(),
                "names a parameter with letters, digits and _ (start, pageSize and cursor are built-ins)",
            );
        }
        if let Some(pat) = &param.pattern
            && let Err(e) = regex::Regex::new(pat)
        {
            p(format!("{f}.pattern"), &format!("does not compile: {e}"));
        }
        if let (Some(a), Some(b)) = (param.minimum, param.maximum)
            && a > b
        {
            p(format!("{f}.minimum"), "is above maximum");
        }
        if param.enum_.as_ref().is_some_and(Vec::is_empty) {
            p(format!("{f}.enum"), "must list at least one value");
        }
        if let Some(d) = &param.default
            && let Err(m) = super::params::check(param, d)
        {
            p(format!("{f}.default"), &m);
        }
    }
    for (i, id) in spec.identity.iter().enumerate() {
        if !spec.parameters.contains_key(id) {
            p(
                format!("spec.identity[{i}]"),
                &format!("{id:?} is not a parameter"),
            );
        }
    }
    if spec.credentials.is_empty() {
        p(
            "spec.credentials".into(),
            "must list at least one credential kind",
        );
    }
    for (i, c) in spec.credentials.iter().enumerate() {
        match c {
            CredentialKind::Oauth2ClientCredentials { .. } => p(
                format!("spec.credentials[{i}].oauth2ClientCredentials"),
                "is not supported yet by the engine: use headerApiKey, bearer or basic",
            ),
            CredentialKind::HeaderApiKey { header, .. } if header.trim().is_empty() => p(
                format!("spec.credentials[{i}].headerApiKey.header"),
                "must name a header",
            ),
            _ => {}
        }
    }
    if spec.streams.is_empty() {
        p("spec.streams".into(), "must list at least one stream");
    }
    let mut names = HashSet::new();
    for (i, s) in spec.streams.iter().enumerate() {
        if !names.insert(s.name.as_str()) || s.name.trim().is_empty() {
            out.push(Problem::new(
                format!("spec.streams[{i}].name"),
                "must be non-empty and unique",
            ));
        }
        stream(spec, s, &format!("spec.streams[{i}]"), &mut out);
    }
    out
}

fn stream(spec: &ConnectorDefinitionSpec, s: &Stream, f: &str, out: &mut Vec<Problem>) {
    let mut p = |field: String, m: String| out.push(Problem::new(field, m));
    let known = |extra: &[&str], name: &str| {
        spec.parameters.contains_key(name) || BUILT_INS.contains(&name) || extra.contains(&name)
    };
    let params: Vec<&str> = spec.parameters.keys().map(String::as_str).collect();
    let check = |field: String, tpl: &str, extra: &[&str], p: &mut dyn FnMut(String, String)| {
        match template::names(tpl) {
            Err(e) => p(field, e),
            Ok(ns) => {
                for n in ns {
                    if !known(extra, n) {
                        p(
                            field.clone(),
                            format!(
                                "{{{{{n}}}}} is not a parameter (parameters: {}; built-ins: {})",
                                if params.is_empty() {
                                    "none".to_string()
                                } else {
                                    params.join(", ")
                                },
                                [BUILT_INS, extra].concat().join(", ")
                            ),
                        );
                    }
                }
            }
        }
    };
    check(format!("{f}.request.url"), &s.request.url, &[], &mut p);
    let sample = template::expand(&s.request.url, false, &|_| Some("x".into()));
    match sample.as_deref().map(url::Url::parse) {
        Ok(Ok(u)) if u.scheme() == "https" => {}
        Ok(Ok(_)) => p(format!("{f}.request.url"), "must be an https:// URL".into()),
        Ok(Err(e)) => p(format!("{f}.request.url"), format!("is not a URL: {e}")),
        Err(_) => {}
    }
    for (k, v) in &s.request.query {
        check(format!("{f}.request.query.{k}"), v, &[], &mut p);
    }
    for (k, v) in &s.request.headers {
        if k.eq_ignore_ascii_case("authorization") {
            p(
                format!("{f}.request.headers.{k}"),
                "credentials go in spec.credentials, never in a header template".into(),
            );
        }
        let only_params: Vec<&str> = Vec::new();
        check(format!("{f}.request.headers.{k}"), v, &only_params, &mut p);
    }
    if let Some(b) = &s.request.body {
        check(format!("{f}.request.body"), b, &[], &mut p);
        json_ok(format!("{f}.request.body"), b, &mut p);
    }
    if s.page_size == 0 {
        p(format!("{f}.pageSize"), "must be at least 1".into());
    }
    let want = match &s.pagination {
        Pagination::LinkHeader { on_missing_next } => {
            if *on_missing_next == MissingNext::RestartFromLastTime && !tpl_uses(s, "start") {
                p(
                    format!("{f}.pagination.linkHeader.onMissingNext"),
                    "restartFromLastTime needs {{start}} in the request (the restart's start time)"
                        .into(),
                );
            }
            PositionKind::NextUrl
        }
        Pagination::BodyCursor {
            cursor_path,
            has_more_path,
            next_body,
            cursor_param,
        } => {
            if !template::valid_path(cursor_path) {
                p(
                    format!("{f}.pagination.bodyCursor.cursorPath"),
                    format!("{cursor_path:?} is not a dotted path such as cursor"),
                );
            }
            if let Some(h) = has_more_path
                && !template::valid_path(h)
            {
                p(
                    format!("{f}.pagination.bodyCursor.hasMorePath"),
                    format!("{h:?} is not a dotted path such as has_more"),
                );
            }
            match (next_body, cursor_param) {
                (Some(b), None) => {
                    check(format!("{f}.pagination.bodyCursor.nextBody"), b, &["cursor"], &mut p);
                    json_ok(format!("{f}.pagination.bodyCursor.nextBody"), b, &mut p);
                    if !template::names(b).unwrap_or_default().contains(&"cursor") {
                        p(format!("{f}.pagination.bodyCursor.nextBody"), "must contain {{cursor}}".into());
                    }
                }
                (None, Some(_)) => {}
                _ => p(
                    format!("{f}.pagination.bodyCursor"),
                    "give exactly one of nextBody (cursor in the body) or cursorParam (in the query)".into(),
                ),
            }
            PositionKind::Cursor
        }
        Pagination::Offset { param } => {
            if param.trim().is_empty() {
                p(
                    format!("{f}.pagination.offset.param"),
                    "must name the query parameter".into(),
                );
            }
            PositionKind::Offset
        }
        Pagination::Checkpoint { param, seed } => {
            if param.trim().is_empty() {
                p(
                    format!("{f}.pagination.checkpoint.param"),
                    "must name the query parameter".into(),
                );
            }
            if let Some(sd) = seed {
                check(format!("{f}.pagination.checkpoint.seed"), sd, &[], &mut p);
            }
            PositionKind::LastRecordId
        }
    };
    if s.position != want {
        p(
            format!("{f}.position"),
            format!("this pagination persists {want:?}, not {:?}", s.position),
        );
    }
    for (name, path) in [
        ("path", Some(&s.records.path)),
        ("id", Some(&s.records.id)),
        ("time", Some(&s.records.time)),
        ("type", s.records.type_.as_ref()),
    ] {
        if let Some(path) = path
            && !template::valid_path(path)
        {
            p(
                format!("{f}.records.{name}"),
                format!(
                    "{path:?} is not a dotted path such as items or actor.id ($ = the whole body)"
                ),
            );
        }
    }
    if let Some(rl) = &s.rate_limit {
        if !(rl.share > 0.0 && rl.share <= 1.0) {
            p(
                format!("{f}.rateLimit.share"),
                "must be in (0, 1]: the share of the limit the collector may use".into(),
            );
        }
        for (n, h) in [
            ("limitHeader", &rl.limit_header),
            ("remainingHeader", &rl.remaining_header),
            ("resetHeader", &rl.reset_header),
        ] {
            if reqwest::header::HeaderName::try_from(h.as_str()).is_err() {
                p(
                    format!("{f}.rateLimit.{n}"),
                    format!("{h:?} is not a header name"),
                );
            }
        }
    }
    for (i, st) in s.retried_statuses.iter().enumerate() {
        if !(400..600).contains(st) {
            p(
                format!("{f}.retriedStatuses[{i}]"),
                format!("{st} is not a 4xx or 5xx status"),
            );
        }
    }
    let mut dur = |n: &str, v: &str| match humantime::parse_duration(v) {
        Ok(d) => Some(d),
        Err(e) => {
            p(
                format!("{f}.{n}"),
                format!("{v:?} is not a duration such as 15s or 90d: {e}"),
            );
            None
        }
    };
    let poll = dur("pollInterval", &s.poll_interval);
    let look = dur("lookback", &s.lookback);
    let ret = dur("retention", &s.retention);
    if let Some(l) = &s.late_arrival {
        dur("lateArrival", l);
    }
    if poll.is_some_and(|d| d < std::time::Duration::from_secs(1)) {
        out.push(Problem::new(
            format!("{f}.pollInterval"),
            "must be at least 1s",
        ));
    }
    if let (Some(l), Some(r)) = (look, ret)
        && l > r
    {
        out.push(Problem::new(
            format!("{f}.lookback"),
            "is longer than the retention",
        ));
    }
}

fn tpl_uses(s: &Stream, name: &str) -> bool {
    std::iter::once(&s.request.url)
        .chain(s.request.query.values())
        .chain(s.request.body.iter())
        .any(|t| template::names(t).unwrap_or_default().contains(&name))
}

fn json_ok(field: String, tpl: &str, p: &mut dyn FnMut(String, String)) {
    if let Ok(t) = template::expand(tpl, true, &|_| Some("1".into()))
        && let Err(e) = serde_json::from_str::<serde_json::Value>(&t)
    {
        p(field, format!("is not JSON once expanded: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{BUILT_IN, parse};

    fn okta() -> ConnectorDefinitionSpec {
        parse(BUILT_IN[0].1).unwrap().spec
    }

    fn fields(spec: &ConnectorDefinitionSpec) -> Vec<String> {
        lint(spec).into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn each_problem_names_its_field() {
        let mut s = okta();
        s.streams[0].request.url = "https://{{tenant}}/api/v1/logs".into();
        s.streams[0].records.path = "items..x".into();
        s.streams[0].position = PositionKind::Cursor;
        s.streams[0].poll_interval = "soon".into();
        s.identity = vec!["org".into()];
        s.credentials.push(CredentialKind::Oauth2ClientCredentials {
            token_url: "https://x/token".into(),
            scopes: vec![],
            private_key_jwt: true,
        });
        s.streams[0]
            .request
            .headers
            .insert("Authorization".into(), "SSWS {{domain}}".into());
        assert_eq!(
            fields(&s),
            vec![
                "spec.identity[0]",
                "spec.credentials[1].oauth2ClientCredentials",
                "spec.streams[0].request.url",
                "spec.streams[0].request.headers.Authorization",
                "spec.streams[0].position",
                "spec.streams[0].records.path",
                "spec.streams[0].pollInterval",
            ]
        );
        let msg = lint(&s)[2].to_string();
        assert!(
            msg.contains("{{tenant}} is not a parameter (parameters: domain"),
            "{msg}"
        );
    }

    #[test]
    fn body_cursors_need_a_place_for_the_cursor() {
        let mut s = parse(BUILT_IN[2].1).unwrap().spec;
        if let Pagination::BodyCursor { next_body, .. } = &mut s.streams[0].pagination {
            *next_body = Some(r#"{"limit": 10}"#.into());
        }
        assert_eq!(
            fields(&s),
            vec!["spec.streams[0].pagination.bodyCursor.nextBody"]
        );
    }
}
