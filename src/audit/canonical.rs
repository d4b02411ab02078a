//! Recognising canonical JSON text: exactly the bytes serde_json writes for
//! the value the text parses to (object keys in byte order at every level,
//! no whitespace, serde's escapes, integers as serde writes them).
//!
//! Why: a record read back (central's ingest, `audit verify`, explain)
//! hashes its input in canonical form. The sidecar already wrote it so;
//! building a `Value` tree only to write the same bytes again and drop the
//! tree was ~40% of central's parse of a record. A text this check accepts
//! is kept as it came; anything else is parsed and written the slow way.
//!
//! Conservative by design: `true` only when the text is provably what
//! serde_json would write; floats, keys with escapes and anything unusual
//! answer `false` (the slow path, never a wrong hash). One pass, no
//! allocation; strings are skipped with `memchr` and checked for control
//! characters eight bytes at a time.

use super::json;

/// The most nested arrays and objects serde_json reads (its recursion
/// limit of 128 fails on the 128th level): deeper text is no value to it.
const MAX_DEPTH: usize = 127;

/// Whether `text` is exactly `serde_json::to_string` of the `Value` that
/// `serde_json::from_str` reads from it.
pub(crate) fn is_canonical(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = 0;
    value(bytes, &mut at, 0) && at == bytes.len()
}

fn value(b: &[u8], at: &mut usize, depth: usize) -> bool {
    match b.get(*at) {
        Some(b'{') => object(b, at, depth + 1),
        Some(b'[') => array(b, at, depth + 1),
        Some(b'"') => string(b, at).is_some(),
        Some(b't') => literal(b, at, b"true"),
        Some(b'f') => literal(b, at, b"false"),
        Some(b'n') => literal(b, at, b"null"),
        Some(b'-' | b'0'..=b'9') => integer(b, at),
        _ => false,
    }
}

fn object(b: &[u8], at: &mut usize, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    *at += 1;
    if b.get(*at) == Some(&b'}') {
        *at += 1;
        return true;
    }
    let mut previous: Option<&[u8]> = None;
    loop {
        if b.get(*at) != Some(&b'"') {
            return false;
        }
        // A key with an escape would have to be compared decoded (serde
        // sorts the decoded keys): left to the slow path.
        let Some((key, false)) = string(b, at) else {
            return false;
        };
        // Strictly increasing: out of order or repeated (serde keeps the
        // last of repeated keys) is not canonical.
        if previous.is_some_and(|p| p >= key) {
            return false;
        }
        previous = Some(key);
        if b.get(*at) != Some(&b':') {
            return false;
        }
        *at += 1;
        if !value(b, at, depth) {
            return false;
        }
        match after_item(b, at, b'}') {
            Some(true) => return true,
            Some(false) => {}
            None => return false,
        }
    }
}

fn array(b: &[u8], at: &mut usize, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    *at += 1;
    if b.get(*at) == Some(&b']') {
        *at += 1;
        return true;
    }
    loop {
        if !value(b, at, depth) {
            return false;
        }
        match after_item(b, at, b']') {
            Some(true) => return true,
            Some(false) => {}
            None => return false,
        }
    }
}

/// After a member or an element: `,` (more follow: `Some(false)`) or
/// `close` (the container ends: `Some(true)`); anything else is `None`.
fn after_item(b: &[u8], at: &mut usize, close: u8) -> Option<bool> {
    let next = *b.get(*at)?;
    *at += 1;
    match next {
        b',' => Some(false),
        c if c == close => Some(true),
        _ => None,
    }
}

/// A string at `*at` (its opening quote) written as serde writes it: its
/// raw content and whether it holds an escape; `None` when not canonical.
/// serde escapes `"` and `\` and control characters only: the short forms
/// `\b \t \n \f \r`, the others as `\u00xx` in lower-case hex.
fn string<'a>(b: &'a [u8], at: &mut usize) -> Option<(&'a [u8], bool)> {
    let start = *at + 1;
    let mut i = start;
    let mut escaped = false;
    loop {
        let rest = b.get(i..)?;
        let n = memchr::memchr2(b'"', b'\\', rest)?;
        // No `"` or `\` before `n`: the scan finds control characters.
        if json::scan(&rest[..n], false) {
            return None;
        }
        i += n;
        if b[i] == b'"' {
            *at = i + 1;
            return Some((&b[start..i], escaped));
        }
        escaped = true;
        match b.get(i + 1)? {
            b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => i += 2,
            b'u' => {
                let hex = b.get(i + 2..i + 6)?;
                let low = match hex[3] {
                    d @ b'0'..=b'9' => d - b'0',
                    d @ b'a'..=b'f' => d - b'a' + 10,
                    _ => return None,
                };
                let code = match hex[..3] {
                    [b'0', b'0', b'0'] => low,
                    [b'0', b'0', b'1'] => 0x10 + low,
                    _ => return None,
                };
                // These five have short forms, which serde uses.
                if matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return None;
                }
                i += 6;
            }
            _ => return None,
        }
    }
}

fn literal(b: &[u8], at: &mut usize, word: &[u8]) -> bool {
    if b.get(*at..).is_some_and(|rest| rest.starts_with(word)) {
        *at += word.len();
        true
    } else {
        false
    }
}

/// An integer serde reads as one and writes back the same: no leading
/// zero, no `-0` (read as the float -0.0), within `u64` (or `i64` when
/// negative; past that serde reads a float). Fractions and exponents are
/// floats, whose written form is not checked here: the slow path.
fn integer(b: &[u8], at: &mut usize) -> bool {
    let start = *at;
    let negative = b[start] == b'-';
    let digits = start + usize::from(negative);
    let end = digits
        + b.get(digits..).map_or(0, |rest| {
            rest.iter().take_while(|d| d.is_ascii_digit()).count()
        });
    if end == digits || (b[digits] == b'0' && end - digits > 1) {
        return false;
    }
    if matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(&b[start..end]) else {
        return false;
    };
    let fits = if negative {
        text != "-0" && text.parse::<i64>().is_ok()
    } else {
        text.parse::<u64>().is_ok()
    };
    *at = end;
    fits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// What serde_json writes for what it reads from `text`.
    fn serde_canonical(text: &str) -> Option<String> {
        serde_json::from_str::<Value>(text)
            .ok()
            .map(|v| v.to_string())
    }

    /// The property every accepted text must have.
    fn holds(text: &str) {
        if is_canonical(text) {
            assert_eq!(
                serde_canonical(text).as_deref(),
                Some(text),
                "accepted but not canonical: {text:?}"
            );
        }
    }

    fn holds_for_bytes(bytes: &[u8]) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            holds(text);
        }
    }

    #[test]
    fn what_serde_writes_is_accepted() {
        for text in [
            r#"{}"#,
            r#"[]"#,
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            r#"{"request":{"headers":{"accept":"*/*","x-id":"a\"b\\c\n\u001f"}}}"#,
            r#"[0,-1,18446744073709551615,-9223372036854775808]"#,
            r#""é ☃""#,
            "\"\u{7f}\u{2028}\"",
            r#"{"":0,"a":1}"#,
        ] {
            assert_eq!(serde_canonical(text).as_deref(), Some(text), "{text}");
            assert!(is_canonical(text), "{text}");
        }
    }

    #[test]
    fn what_serde_would_write_differently_is_refused() {
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{ "a":1}"#,
            r#"{"a":1} "#,
            r#"[1, 2]"#,
            r#"-0"#,
            r#"01"#,
            r#"1.0"#,
            r#"1e5"#,
            r#"18446744073709551616"#,
            r#"-9223372036854775809"#,
            r#""\/""#,
            r#""\u0041""#,
            r#""\u001F""#,
            r#""\u007f""#,
            r#""\u0008""#,
            r#""\u000a""#,
            r#"{"a\u0062":1}"#,
            r#"tru"#,
            r#"nul"#,
            r#""open"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            "",
        ] {
            assert!(!is_canonical(text), "{text}");
            holds(text);
        }
        // serde's nesting limit, exactly: 127 levels read, 128 do not.
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(serde_canonical(&nested(127)).is_some());
        assert!(is_canonical(&nested(127)));
        holds(&nested(127));
        assert!(serde_canonical(&nested(128)).is_none());
        assert!(!is_canonical(&nested(128)));
        assert!(!is_canonical(&format!(
            r#"{}{{"a":1}}{}"#,
            "[".repeat(127),
            "]".repeat(127)
        )));
    }

    /// Any JSON value: every kind of string (control characters, quotes,
    /// backslashes, non-ASCII), integers at the edges, floats, nesting.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-e\"\\\\\u{1}é]{0,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Whether the value holds a float or a key with an escape: the two
    /// things the check leaves to the slow path on purpose.
    fn has_slow_parts(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(has_slow_parts),
            Value::Object(map) => map.iter().any(|(k, v)| {
                k.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') || has_slow_parts(v)
            }),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// serde's own output is accepted (else the fast path never runs),
        /// unless it holds what is left to the slow path on purpose.
        #[test]
        fn serde_output_is_accepted(v in any_value()) {
            let text = v.to_string();
            holds(&text);
            if !has_slow_parts(&v) {
                prop_assert!(is_canonical(&text), "refused: {}", text);
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Texts near canonical ones: every position of serde's text with
        /// one byte inserted, replaced or removed (the bytes JSON's syntax
        /// turns on), and the pretty-printed text; accepted only when
        /// canonical.
        #[test]
        fn near_misses_are_refused_or_canonical(v in any_value()) {
            let text = v.to_string();
            for i in 0..=text.len() {
                let mut removed = text.clone().into_bytes();
                if i < removed.len() {
                    removed.remove(i);
                    holds_for_bytes(&removed);
                }
                for &byte in b" \t\n\"\\/,:{}[]0-.eEuabfnrt7" {
                    let mut inserted = text.clone().into_bytes();
                    inserted.insert(i, byte);
                    holds_for_bytes(&inserted);
                    if i < text.len() {
                        let mut replaced = text.clone().into_bytes();
                        replaced[i] = byte;
                        holds_for_bytes(&replaced);
                    }
                }
            }
            if let Ok(pretty) = serde_json::to_string_pretty(&v) {
                holds(&pretty);
            }
        }
    }
}
