//! One org's System Log in persistence order, indexed by position so a page is a slice copy.
//!
//! Events are serialised once, when appended, into one buffer (each followed by a comma), so a
//! 1000-event page is `[` + one contiguous slice + `]`: no per-request JSON work and no scan of
//! the whole log (the `since` lookup is a binary search on the non-decreasing persistence times).

/// Position-indexed, append-only event log of one org.
#[derive(Default)]
pub(crate) struct OrgLog {
    /// Serialised events, each followed by `,`.
    buf: Vec<u8>,
    /// Offset in `buf` where event `i` starts.
    starts: Vec<usize>,
    /// Persistence time of event `i` (epoch ms), non-decreasing.
    persisted: Vec<i64>,
    /// `published` of event `i` (epoch ms; `i64::MIN` when absent or unparseable).
    published: Vec<i64>,
    /// `uuid` of event `i` when it has one.
    uuids: Vec<Option<Box<str>>>,
}

impl OrgLog {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Persistence time of the newest event, if any.
    pub fn last_persisted(&self) -> Option<i64> {
        self.persisted.last().copied()
    }

    /// Appends one serialised event. `persisted` is clamped so persistence order stays monotonic.
    pub fn push(
        &mut self,
        json: &[u8],
        persisted: i64,
        published: i64,
        uuid: Option<String>,
    ) -> i64 {
        let persisted = persisted.max(self.last_persisted().unwrap_or(i64::MIN));
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(json);
        self.buf.push(b',');
        self.persisted.push(persisted);
        self.published.push(published);
        self.uuids.push(uuid.map(String::into_boxed_str));
        persisted
    }

    /// First position whose persistence time is `>= since_ms`.
    pub fn position_since(&self, since_ms: i64) -> usize {
        self.persisted.partition_point(|&p| p < since_ms)
    }

    pub fn persisted_at(&self, pos: usize) -> i64 {
        self.persisted[pos]
    }

    pub fn published_at(&self, pos: usize) -> i64 {
        self.published[pos]
    }

    /// The serialised event at `pos`.
    pub fn event(&self, pos: usize) -> &[u8] {
        let end = self.starts.get(pos + 1).copied().unwrap_or(self.buf.len()) - 1;
        &self.buf[self.starts[pos]..end]
    }

    /// Writes events `from..to` as a JSON array into `out`.
    pub fn write_page(&self, from: usize, to: usize, out: &mut Vec<u8>) {
        out.push(b'[');
        if from < to {
            let end = self.starts.get(to).copied().unwrap_or(self.buf.len()) - 1;
            out.extend_from_slice(&self.buf[self.starts[from]..end]);
        }
        out.push(b']');
    }

    /// Byte length of events `from..to` (to size the output buffer).
    pub fn page_bytes(&self, from: usize, to: usize) -> usize {
        if from >= to {
            return 0;
        }
        self.starts.get(to).copied().unwrap_or(self.buf.len()) - self.starts[from]
    }

    /// Uuids in persistence order (events without one are skipped).
    pub fn uuids(&self) -> Vec<String> {
        self.uuids.iter().flatten().map(|u| u.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_json_arrays_of_the_slice() {
        let mut log = OrgLog::default();
        log.push(br#"{"a":1}"#, 10, 0, Some("u1".into()));
        log.push(br#"{"b":2}"#, 5, 0, None); // clamped to 10
        log.push(br#"{"c":3}"#, 20, 0, Some("u3".into()));
        let mut out = Vec::new();
        log.write_page(0, 3, &mut out);
        assert_eq!(out, br#"[{"a":1},{"b":2},{"c":3}]"#);
        out.clear();
        log.write_page(1, 2, &mut out);
        assert_eq!(out, br#"[{"b":2}]"#);
        out.clear();
        log.write_page(3, 3, &mut out);
        assert_eq!(out, b"[]");
        assert_eq!(log.persisted_at(1), 10);
        assert_eq!(log.position_since(10), 0);
        assert_eq!(log.position_since(11), 2);
        assert_eq!(log.position_since(21), 3);
        assert_eq!(log.event(2), br#"{"c":3}"#);
        assert_eq!(log.uuids(), vec!["u1", "u3"]);
    }
}
