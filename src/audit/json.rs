//! Writing JSON text by hand, for the writers that produce canonical
//! record bytes without building a tree (the record line, the input
//! document). Byte for byte what serde_json writes for the same value.

/// Append `s` as a JSON string (quoted, escaped as serde_json escapes).
pub fn string(out: &mut Vec<u8>, s: &str) {
    // Most ids, header names and values need no escaping: copy them as they
    // are; the rest goes through serde_json. The check looks at every byte
    // without stopping early, which the compiler turns into a vector loop
    // (stopping early kept it a byte loop, a tenth of the time spent
    // writing an input).
    let needs_escaping = s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escaping {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// `s` as a JSON string.
pub fn quoted(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    string(&mut out, s);
    // Valid UTF-8 in, escapes are ASCII: valid UTF-8 out.
    String::from_utf8(out).unwrap_or_default()
}

/// Append an unsigned integer.
pub fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_writes_them() {
        for s in [
            "",
            "plain",
            "quote \" and \\ backslash",
            "tab\tnewline\ncontrol\u{1}",
            "ünïcödé / slash",
            "\u{7f}\u{2028}",
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap_or_default(), "{s:?}");
            assert_eq!(quoted(s).as_bytes(), out.as_slice());
        }
        for n in [0, 7, 10, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            number(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
