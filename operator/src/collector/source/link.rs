//! RFC 8288 `Link` header parsing, enough for Okta's `<url>; rel="next"` cursors.
//!
//! Written by hand (no dependency) and property-tested: the parser never panics on any input and
//! recovers every link from a well-formed header, including URLs with `,` or `;` inside `<...>`.

/// One link-value: the target and its `rel` types (lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub target: String,
    pub rels: Vec<String>,
}

/// Parses one header value into its links; malformed link-values are skipped.
pub fn parse(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Find the start of a target.
        while i < b.len() && b[i] != b'<' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i + 1;
        let Some(len) = value[start..].find('>') else {
            break;
        };
        let target = value[start..start + len].trim().to_string();
        i = start + len + 1;
        // Parameters until a top-level ',' (quoted strings may contain ',' and ';').
        let mut rels = Vec::new();
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if i >= b.len() || b[i] == b',' {
                i += 1;
                break;
            }
            if b[i] != b';' {
                // Garbage: skip to the next top-level ','.
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                continue;
            }
            i += 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let name_start = i;
            while i < b.len() && !matches!(b[i], b'=' | b';' | b',') {
                i += 1;
            }
            let name = value[name_start..i].trim().to_ascii_lowercase();
            let mut val = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                    i += 1;
                }
                if i < b.len() && b[i] == b'"' {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' && i + 1 < b.len() {
                            i += 1;
                        }
                        let ch = value[i..].chars().next().expect("in bounds");
                        val.push(ch);
                        i += ch.len_utf8();
                    }
                    i += 1; // closing quote (or end)
                } else {
                    let vs = i;
                    while i < b.len() && !matches!(b[i], b';' | b',') {
                        i += 1;
                    }
                    val = value[vs..i].trim().to_string();
                }
            }
            if name == "rel" {
                rels.extend(val.split_ascii_whitespace().map(|r| r.to_ascii_lowercase()));
            }
        }
        links.push(Link { target, rels });
    }
    links
}

/// The `rel="next"` target among any number of `Link` header values.
pub fn find_next<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    values
        .into_iter()
        .flat_map(parse)
        .find(|l| l.rels.iter().any(|r| r == "next"))
        .map(|l| l.target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn okta_style_headers() {
        let v = r#"<https://x.okta.com/api/v1/logs?limit=1000&after=1627500044869_1>; rel="next", <https://x.okta.com/api/v1/logs?since=a>; rel="self""#;
        assert_eq!(
            find_next([v]).as_deref(),
            Some("https://x.okta.com/api/v1/logs?limit=1000&after=1627500044869_1")
        );
        assert_eq!(
            find_next([r#"<a>; rel="self""#, "<b>; rel=next"]).as_deref(),
            Some("b")
        );
        assert_eq!(
            find_next([r#"<a>; title="x, y; rel=next"; rel="prev next""#]).as_deref(),
            Some("a")
        );
        assert_eq!(find_next([r#"<a>; rel="self""#]), None);
        assert_eq!(find_next(["garbage", "<unterminated; rel=next"]), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_link_like_noise(s in "[<>;,=\" a-z\\\\]{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn recovers_generated_links(
            links in proptest::collection::vec(
                ("[a-zA-Z0-9:/?&=_.,;%-]{0,60}", prop::sample::select(vec!["next", "self", "prev", "next self"]),
                 prop::bool::ANY, "[a-z ,;=]{0,12}"), 1..5)
        ) {
            let header = links.iter().map(|(url, rel, quoted, title)| {
                let rel = if *quoted || rel.contains(' ') { format!("\"{rel}\"") } else { rel.to_string() };
                format!("<{url}>; title=\"{title}\"; rel={rel}")
            }).collect::<Vec<_>>().join(", ");
            let parsed = parse(&header);
            prop_assert_eq!(parsed.len(), links.len());
            for (p, (url, rel, _, _)) in parsed.iter().zip(links.iter()) {
                prop_assert_eq!(&p.target, &url.trim().to_string());
                let want: Vec<String> = rel.split(' ').map(String::from).collect();
                prop_assert_eq!(&p.rels, &want);
            }
            let want_next = links.iter().find(|(_, r, _, _)| r.contains("next")).map(|(u, _, _, _)| u.trim().to_string());
            prop_assert_eq!(find_next([header.as_str()]), want_next);
        }
    }
}
