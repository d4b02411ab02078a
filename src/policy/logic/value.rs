//! Values seen by the evaluator and the JavaScript coercions JSONLogic is
//! defined by (jsonlogic.com follows `json-logic-js`, so `==`, truthiness,
//! `+` and string conversion behave as in JavaScript).

use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// A value during evaluation. Borrows from the input or the compiled rule
/// wherever it can, so evaluating a policy against a request allocates only
/// when an operator builds something new (`cat`, `map`, `merge`, ...).
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    /// An array or object borrowed from the input or a rule constant.
    Json(&'a Value),
    /// An array built during evaluation.
    List(Vec<Val<'a>>),
}

impl<'a> Val<'a> {
    /// Borrow a JSON value, unpacking scalars so that every operator sees one
    /// representation per JavaScript type.
    pub fn from_json(value: &'a Value) -> Val<'a> {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(Cow::Borrowed(s.as_str())),
            Value::Array(_) | Value::Object(_) => Val::Json(value),
        }
    }

    pub fn str(s: &'a str) -> Val<'a> {
        Val::Str(Cow::Borrowed(s))
    }

    /// JavaScript truthiness, except that an empty array is false (JSONLogic).
    pub fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0 && !n.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::Json(Value::Array(items)) => !items.is_empty(),
            Val::Json(_) => true,
            Val::List(items) => !items.is_empty(),
        }
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Val::List(_) | Val::Json(Value::Array(_)))
    }

    /// Number of elements when this is an array.
    pub fn array_len(&self) -> Option<usize> {
        match self {
            Val::List(items) => Some(items.len()),
            Val::Json(Value::Array(items)) => Some(items.len()),
            _ => None,
        }
    }

    /// The elements of an array, borrowed where possible.
    pub fn array_items(&self) -> Option<Vec<Val<'a>>> {
        match self {
            Val::List(items) => Some(items.clone()),
            Val::Json(Value::Array(items)) => Some(items.iter().map(Val::from_json).collect()),
            _ => None,
        }
    }

    /// Consume into array elements (no copy for built lists).
    pub fn into_array_items(self) -> Option<Vec<Val<'a>>> {
        match self {
            Val::List(items) => Some(items),
            Val::Json(Value::Array(items)) => Some(items.iter().map(Val::from_json).collect()),
            _ => None,
        }
    }

    /// Index into an array value.
    pub fn array_get(&self, index: usize) -> Option<Val<'a>> {
        match self {
            Val::List(items) => items.get(index).cloned(),
            Val::Json(Value::Array(items)) => items.get(index).map(Val::from_json),
            _ => None,
        }
    }

    /// `obj[key]` for one path segment: object member, or array index.
    pub fn member(&self, key: &str) -> Option<Val<'a>> {
        match self {
            Val::Json(Value::Object(map)) => map.get(key).map(Val::from_json),
            Val::Json(Value::Array(_)) | Val::List(_) => {
                key.parse::<usize>().ok().and_then(|i| self.array_get(i))
            }
            _ => None,
        }
    }

    /// Convert into an owned JSON value (results of `eval`, test output).
    pub fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => number_to_json(*n),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Json(v) => (*v).clone(),
            Val::List(items) => Value::Array(items.iter().map(Val::to_json).collect()),
        }
    }

    /// JavaScript `Number(x)`.
    pub fn to_number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Num(n) => *n,
            Val::Str(s) => string_to_number(s),
            Val::Json(Value::Object(_)) => f64::NAN,
            Val::Json(_) | Val::List(_) => string_to_number(&self.to_js_string()),
        }
    }

    /// JavaScript `parseFloat(x)`: the longest numeric prefix.
    pub fn parse_float(&self) -> f64 {
        match self {
            Val::Num(n) => *n,
            other => parse_float_prefix(&other.to_js_string()),
        }
    }

    /// JavaScript `String(x)`.
    pub fn to_js_string(&self) -> Cow<'a, str> {
        match self {
            Val::Str(s) => s.clone(),
            Val::Null => Cow::Borrowed("null"),
            Val::Bool(true) => Cow::Borrowed("true"),
            Val::Bool(false) => Cow::Borrowed("false"),
            Val::Num(n) => Cow::Owned(number_to_js_string(*n)),
            Val::Json(Value::Object(_)) => Cow::Borrowed("[object Object]"),
            Val::Json(Value::Array(_)) | Val::List(_) => {
                let items = self.array_items().unwrap_or_default();
                let parts: Vec<Cow<'_, str>> = items
                    .iter()
                    .map(|item| match item {
                        // Array.prototype.join renders null (and undefined) as "".
                        Val::Null => Cow::Borrowed(""),
                        other => other.to_js_string(),
                    })
                    .collect();
                Cow::Owned(parts.join(","))
            }
            Val::Json(scalar) => Val::from_json(scalar).to_js_string(),
        }
    }

    fn is_object(&self) -> bool {
        matches!(self, Val::Json(Value::Object(_)))
    }

    /// JavaScript `ToPrimitive` for the comparison operators: arrays and
    /// objects become strings, everything else stays as it is.
    fn to_primitive(&self) -> Val<'a> {
        match self {
            Val::Json(_) | Val::List(_) => Val::Str(self.to_js_string()),
            other => other.clone(),
        }
    }

    /// Identity of a borrowed array/object, for `==` between two references.
    fn same_reference(&self, other: &Val<'_>) -> bool {
        match (self, other) {
            (Val::Json(a), Val::Json(b)) => std::ptr::eq(*a, *b),
            _ => false,
        }
    }
}

/// JavaScript `==` (the abstract equality comparison).
pub fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    use Val::*;
    match (a, b) {
        (Null, Null) => true,
        (Null, _) | (_, Null) => false,
        (Num(x), Num(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        (Bool(x), Bool(y)) => x == y,
        (Num(x), Str(s)) | (Str(s), Num(x)) => *x == string_to_number(s),
        (Bool(x), other) | (other, Bool(x)) => loose_eq(&Num(f64::from(u8::from(*x))), other),
        (Json(_) | List(_), Json(_) | List(_)) => a.same_reference(b),
        (Json(_) | List(_), _) => loose_eq(&a.to_primitive(), b),
        (_, Json(_) | List(_)) => loose_eq(a, &b.to_primitive()),
    }
}

/// JavaScript `===`.
pub fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    use Val::*;
    match (a, b) {
        (Null, Null) => true,
        (Num(x), Num(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        (Bool(x), Bool(y)) => x == y,
        _ => a.same_reference(b),
    }
}

/// JavaScript relational comparison (`<` and friends). `None` when the
/// operands are incomparable (a NaN is involved), which makes every
/// comparison false, as in JavaScript.
pub fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    let (pa, pb) = (a.to_primitive(), b.to_primitive());
    if let (Val::Str(x), Val::Str(y)) = (&pa, &pb) {
        return Some(x.as_ref().cmp(y.as_ref()));
    }
    if pa.is_object() || pb.is_object() {
        return None;
    }
    pa.to_number().partial_cmp(&pb.to_number())
}

/// JSON rendering of a number: integral values as integers so `1 + 1`
/// prints `2`, as in JavaScript.
pub fn number_to_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        // Exact: |n| < 2^53 and integral.
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// JavaScript `String(number)` for the values JSON can carry.
pub fn number_to_js_string(n: f64) -> String {
    if n.is_nan() {
        "NaN".to_owned()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{n:.0}")
    } else {
        format!("{n}")
    }
}

/// JavaScript `Number(string)`: whitespace-trimmed, empty is 0, anything
/// that is not entirely a number is NaN.
pub fn string_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_or(f64::NAN, |v| v as f64);
    }
    // Rust accepts "inf"/"nan" spellings JavaScript does not.
    if t.bytes()
        .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript `parseFloat`: leading whitespace skipped, longest valid
/// decimal prefix, NaN when there is none.
pub fn parse_float_prefix(s: &str) -> f64 {
    let t = s.trim_start();
    if t.starts_with("Infinity") || t.starts_with("+Infinity") {
        return f64::INFINITY;
    }
    if t.starts_with("-Infinity") {
        return f64::NEG_INFINITY;
    }
    let bytes = t.as_bytes();
    let mut end = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        end = 1;
    }
    let digits_start = end;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    if end < bytes.len() && bytes[end] == b'.' {
        end += 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
    }
    let mantissa = &t[digits_start..end];
    if mantissa.is_empty() || mantissa == "." {
        return f64::NAN;
    }
    // Optional exponent, only when followed by digits.
    if end < bytes.len() && matches!(bytes[end], b'e' | b'E') {
        let mut exp_end = end + 1;
        if exp_end < bytes.len() && matches!(bytes[exp_end], b'+' | b'-') {
            exp_end += 1;
        }
        let exp_digits = exp_end;
        while exp_end < bytes.len() && bytes[exp_end].is_ascii_digit() {
            exp_end += 1;
        }
        if exp_end > exp_digits {
            end = exp_end;
        }
    }
    t[..end].parse::<f64>().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn javascript_equality_coercions() {
        let one = Val::Num(1.0);
        assert!(loose_eq(&one, &Val::str("1")));
        assert!(loose_eq(&Val::Num(0.0), &Val::Bool(false)));
        assert!(!loose_eq(&Val::Null, &Val::Num(0.0)));
        let arr = json!([1]);
        assert!(loose_eq(&Val::from_json(&arr), &Val::Num(1.0)));
        assert!(!strict_eq(&one, &Val::str("1")));
    }

    #[test]
    fn number_parsing_matches_javascript() {
        assert_eq!(string_to_number(" 12 "), 12.0);
        assert!(string_to_number("12px").is_nan());
        assert!(string_to_number("inf").is_nan());
        assert_eq!(parse_float_prefix("12px"), 12.0);
        assert_eq!(parse_float_prefix("1e3x"), 1000.0);
        assert!(parse_float_prefix("").is_nan());
        assert_eq!(number_to_js_string(3.0), "3");
        assert_eq!(number_to_js_string(0.5), "0.5");
    }

    #[test]
    fn relational_comparison_of_strings_and_numbers() {
        assert_eq!(
            compare(&Val::str("a"), &Val::str("b")),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare(&Val::str("11"), &Val::Num(2.0)),
            Some(Ordering::Greater)
        );
        assert_eq!(compare(&Val::str("x"), &Val::Num(2.0)), None);
    }
}
