//! Writing JSON text by hand, for the writers that produce canonical
//! record bytes without building a tree (the record line, the input
//! document). Byte for byte what serde_json writes for the same value.

/// Append `s` as a JSON string (quoted, escaped as serde_json escapes).
pub fn string(out: &mut Vec<u8>, s: &str) {
    // Most ids, header names and values need no escaping: copy them as they
    // are; the rest goes through serde_json.
    if scan(s.as_bytes(), false) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        copy_quoted(out, s.as_bytes());
    }
}

/// Append a protobuf `string` field's bytes as a JSON string: what
/// [`string`] writes for the text `authz::message::text` reads from them
/// (bytes that are not UTF-8 read as the empty string). Printable ASCII,
/// nearly every header and id, is copied after one pass over it, instead
/// of one pass to validate UTF-8 and another to look for escapes.
pub fn text(out: &mut Vec<u8>, bytes: &[u8]) {
    if scan(bytes, true) {
        string(out, std::str::from_utf8(bytes).unwrap_or(""));
    } else {
        copy_quoted(out, bytes);
    }
}

fn copy_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// Whether `bytes` hold a byte JSON escapes (a control character, `"`,
/// `\`) or, with `non_ascii`, one at or above 0x80. Eight bytes at a time
/// (SWAR): the strings written are mostly 5–40 bytes, too short for the
/// compiler's vector loop, which left them to a byte-at-a-time tail.
pub(super) fn scan(bytes: &[u8], non_ascii: bool) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Each test says exactly whether some byte of `w` matches (a borrow
    // can only mark a byte above one that really matches).
    let flags = |w: u64| {
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let quote =
            (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'"')));
        let backslash =
            (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'\\')));
        let high = if non_ascii { w } else { 0 };
        (control | quote | backslash | high) & HIGH
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        found |= flags(u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    // The tail's bytes sit in the word's low bytes; flags above them (its
    // zero padding reads as control characters) are cut off. A borrow only
    // moves up, so the padding cannot mark a real byte.
    let keep = (1u64 << (8 * rest.len())) - 1;
    found |= flags(tail(rest)) & keep;
    found != 0
}

/// The last 0–7 bytes as the low bytes of a word, from two overlapping
/// loads of fixed size combined in registers: a copy of variable length
/// was a call to `memcpy`, and small copies into a stack array then read
/// as one word stalled store forwarding; either was half the scan's time.
fn tail(rest: &[u8]) -> u64 {
    let n = rest.len();
    let le32 = |b: &[u8]| b.iter().rev().fold(0u64, |w, &x| (w << 8) | u64::from(x));
    if n >= 4 {
        le32(&rest[..4]) | (le32(&rest[n - 4..]) << (8 * (n - 4)))
    } else if n >= 2 {
        le32(&rest[..2]) | (le32(&rest[n - 2..]) << (8 * (n - 2)))
    } else {
        rest.first().map_or(0, |&x| u64::from(x))
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
    fn the_scan_finds_every_byte_a_byte_loop_finds() {
        let needs = |b: u8, non_ascii: bool| {
            b < 0x20 || b == b'"' || b == b'\\' || (non_ascii && b >= 0x80)
        };
        for len in 1..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    // Neighbours that stress the borrows: the byte just
                    // above each threshold.
                    for fill in [b'a', 0x20, 0x23, 0x5d, 0x7f, 0x80, 0xff] {
                        let mut bytes = vec![fill; len];
                        bytes[at] = b;
                        for non_ascii in [false, true] {
                            let expected = bytes.iter().any(|&x| needs(x, non_ascii));
                            assert_eq!(scan(&bytes, non_ascii), expected, "{bytes:?} {non_ascii}");
                        }
                    }
                }
            }
        }
        assert!(!scan(b"", true));
    }

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
            let mut from_bytes = Vec::new();
            text(&mut from_bytes, s.as_bytes());
            assert_eq!(from_bytes, out, "{s:?} as bytes");
        }
        // Not UTF-8: the empty string, as `authz::message::text` reads it.
        let mut out = Vec::new();
        text(&mut out, b"ok \xff\xfe");
        assert_eq!(out, b"\"\"");
        for n in [0, 7, 10, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            number(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
