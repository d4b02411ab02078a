//! The input document written straight to canonical JSON for a decision
//! record: keys in byte order at every level, compact, `--mask` paths left
//! out as they are met. It is the same document `RequestView::document`
//! materialises for rules (a test compares the bytes), without building a
//! tree of `Value`s only to serialise and drop it: that tree was two thirds
//! of the cost of recording inputs.

use super::{query_pairs, Body, RequestView};
use crate::audit::inputs::MaskCursor;
use crate::audit::json::{self, string};
use crate::authz::message::text;
use crate::policy::logic::Val;
use serde_json::Value;
use std::borrow::Cow;

/// Writes one JSON object, keys given in sorted order by the caller.
struct Object<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut Vec<u8>) -> Object<'o> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Start `key` unless a mask ends at it; the cursor for its value.
    fn key<'m>(
        &mut self,
        key: &str,
        cursor: MaskCursor<'m>,
        hits: &mut u64,
    ) -> Option<MaskCursor<'m>> {
        let child = self.enter(key, cursor, hits)?;
        string(self.out, key);
        self.out.push(b':');
        Some(child)
    }

    /// [`Object::key`] for the document's own field names, which need no
    /// escaping: copied without looking for any.
    fn field<'m>(
        &mut self,
        name: &'static str,
        cursor: MaskCursor<'m>,
        hits: &mut u64,
    ) -> Option<MaskCursor<'m>> {
        let child = self.enter(name, cursor, hits)?;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        Some(child)
    }

    fn enter<'m>(
        &mut self,
        key: &str,
        cursor: MaskCursor<'m>,
        hits: &mut u64,
    ) -> Option<MaskCursor<'m>> {
        match cursor.enter(key) {
            Err(bits) => {
                *hits |= bits;
                None
            }
            Ok(child) => {
                if !self.first {
                    self.out.push(b',');
                }
                self.first = false;
                Some(child)
            }
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON value, masks applied inside objects (and arrays, by index).
fn json(out: &mut Vec<u8>, value: &Value, cursor: MaskCursor<'_>, hits: &mut u64) {
    match value {
        Value::Object(map) => {
            let mut o = Object::open(out);
            for (k, v) in map {
                if let Some(child) = o.key(k, cursor, hits) {
                    json(o.out, v, child, hits);
                }
            }
            o.close();
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Array elements are never removed, only masked inside.
                let child = cursor.enter_index(i);
                json(out, item, child, hits);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn val(out: &mut Vec<u8>, v: &Val<'_>, cursor: MaskCursor<'_>, hits: &mut u64) {
    match v {
        Val::Str(s) => string(out, s),
        Val::Json(value) => json(out, value, cursor, hits),
        Val::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                val(out, item, cursor, hits);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, &scalar.to_json());
        }
    }
}

/// Sorted by key, in place; of equal keys the first (`keep_last` false) or
/// the last one counts, as a map built by `entry().or_insert` or by
/// `insert` would.
fn sorted<K: AsRef<str>, V>(mut pairs: Vec<(K, V)>, keep_last: bool) -> Vec<(K, V)> {
    // Stable: equal keys keep their order, so "first" and "last" hold.
    pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    // `dedup_by` keeps the earlier of two equal neighbours; for "last
    // wins" the later one's pair moves into it first.
    pairs.dedup_by(|later, kept| {
        let same = later.0.as_ref() == kept.0.as_ref();
        if same && keep_last {
            std::mem::swap(later, kept);
        }
        same
    });
    pairs
}

impl RequestView<'_> {
    /// Write the input document to `out` as canonical JSON, leaving out
    /// what `cursor`'s masks name; the bits of the masks that hit.
    pub fn write_document(&self, cursor: MaskCursor<'_>, out: &mut Vec<u8>) -> u64 {
        let mut hits = 0;
        let h = &mut hits;
        let mut doc = Object::open(out);
        if let Some(c) = doc.field("context", cursor, h) {
            let entries: Vec<(&str, &[u8])> = self
                .attributes
                .map(|a| {
                    a.context_extensions
                        .iter()
                        .map(|e| (text(&e.key), e.value.as_ref()))
                        .collect()
                })
                .unwrap_or_default();
            let mut o = Object::open(doc.out);
            for (k, v) in sorted(entries, true) {
                if o.key(k, c, h).is_some() {
                    json::text(o.out, v);
                }
            }
            o.close();
        }
        if let Some(c) = doc.field("destination", cursor, h) {
            self.write_peer(false, c, doc.out, h);
        }
        if let Some(c) = doc.field("metadata", cursor, h) {
            json(doc.out, self.metadata(), c, h);
        }
        if let Some(c) = doc.field("principal", cursor, h) {
            let mut o = Object::open(doc.out);
            if let Some(id) = self.principal_id() {
                if let Some(c) = o.field("id", c, h) {
                    val(o.out, &id, c, h);
                }
            }
            if let Some(roles) = self.principal_roles() {
                if let Some(c) = o.field("roles", c, h) {
                    val(o.out, &roles, c, h);
                }
            }
            o.close();
        }
        if let Some(c) = doc.field("request", cursor, h) {
            self.write_request(c, doc.out, h);
        }
        if let Some(c) = doc.field("source", cursor, h) {
            self.write_peer(true, c, doc.out, h);
        }
        if let Some(c) = doc.field("time", cursor, h) {
            let mut o = Object::open(doc.out);
            if o.field("unix", c, h).is_some() {
                let _ = serde_json::to_writer(&mut *o.out, &self.now_unix);
            }
            o.close();
        }
        doc.close();
        hits
    }

    fn write_peer(&self, source: bool, cursor: MaskCursor<'_>, out: &mut Vec<u8>, h: &mut u64) {
        let mut o = Object::open(out);
        if self.peer(source).is_some() {
            for (key, value) in [
                ("address", self.peer_address(source)),
                ("port", self.peer_port(source)),
                ("principal", self.peer_principal(source)),
            ] {
                if let Some(value) = value {
                    if let Some(c) = o.field(key, cursor, h) {
                        val(o.out, &value, c, h);
                    }
                }
            }
        }
        o.close();
    }

    fn write_request(&self, cursor: MaskCursor<'_>, out: &mut Vec<u8>, h: &mut u64) {
        let mut o = Object::open(out);
        match self.body() {
            Body::Json(v) => {
                if let Some(c) = o.field("body", cursor, h) {
                    json(o.out, v, c, h);
                }
            }
            Body::Invalid(e) => {
                if o.field("bodyError", cursor, h).is_some() {
                    string(o.out, e);
                }
            }
            Body::Absent => {}
        }
        if let Some(c) = o.field("headers", cursor, h) {
            // As `document()` builds them: the header map (a later entry
            // of a repeated name wins), then raw headers not already there.
            let mut headers: Vec<(Cow<'_, str>, &[u8])> = Vec::new();
            if let Some(http) = self.http {
                let entries = http
                    .headers
                    .iter()
                    .map(|e| (Cow::Borrowed(text(&e.key)), e.value.as_ref()))
                    .collect();
                headers = sorted(entries, true);
                if let Some(raw) = &http.header_map {
                    let mut extra: Vec<(Cow<'_, str>, &[u8])> = Vec::new();
                    for entry in &raw.headers {
                        let key = text(&entry.key).to_ascii_lowercase();
                        let known = headers
                            .binary_search_by(|(k, _)| k.as_ref().cmp(key.as_str()))
                            .is_ok()
                            || extra.iter().any(|(k, _)| *k == key);
                        if !known {
                            let value = self.header(&key).unwrap_or("").as_bytes();
                            extra.push((Cow::Owned(key), value));
                        }
                    }
                    headers.extend(extra);
                    headers = sorted(headers, false);
                }
            }
            let mut hs = Object::open(o.out);
            for (k, v) in &headers {
                if hs.key(k, c, h).is_some() {
                    json::text(hs.out, v);
                }
            }
            hs.close();
        }
        if let Some(http) = self.http {
            if o.field("host", cursor, h).is_some() {
                json::text(o.out, &http.host);
            }
        }
        for (key, value) in [
            ("id", Val::str(self.request_id())),
            ("method", Val::str(self.method())),
            ("path", Val::str(self.path())),
        ] {
            if let Some(c) = o.field(key, cursor, h) {
                val(o.out, &value, c, h);
            }
        }
        if let Some(http) = self.http {
            if o.field("protocol", cursor, h).is_some() {
                json::text(o.out, &http.protocol);
            }
        }
        if let Some(c) = o.field("query", cursor, h) {
            let pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> =
                query_pairs(self.query_string()).collect();
            let mut q = Object::open(o.out);
            for (k, v) in sorted(pairs, false) {
                if q.key(&k, c, h).is_some() {
                    string(q.out, &v);
                }
            }
            q.close();
        }
        if let Some(http) = self.http {
            if o.field("scheme", cursor, h).is_some() {
                json::text(o.out, &http.scheme);
            }
        }
        if o.field("segments", cursor, h).is_some() {
            // As `Val::List(self.segments())` writes, without the list.
            o.out.push(b'[');
            for (i, segment) in self.path().split('/').filter(|s| !s.is_empty()).enumerate() {
                if i > 0 {
                    o.out.push(b',');
                }
                string(o.out, segment);
            }
            o.out.push(b']');
        }
        if let Some(c) = o.field("size", cursor, h) {
            val(o.out, &Val::Num(self.size()), c, h);
        }
        o.close();
    }
}
