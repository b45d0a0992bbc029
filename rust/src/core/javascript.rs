//! JSON values as PostHog's ingestion, written in JavaScript, reads them: `String()` of a value,
//! and the loose `==` its group updates compare with.

use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait, Value};

/// A value as JavaScript's `String()` writes it: an object is `[object Object]`, an array its
/// items' strings joined by commas, a number its shortest round-trip digits.
pub fn string(value: &Value) -> String {
    match value.get_type() {
        JsonType::Null => String::new(),
        JsonType::Boolean => value.as_bool().unwrap_or_default().to_string(),
        JsonType::String => value.as_str().unwrap_or_default().to_owned(),
        JsonType::Object => "[object Object]".to_owned(),
        JsonType::Array => value
            .as_array()
            .map(|items| items.iter().map(string).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        JsonType::Number => value.as_f64().map(number).unwrap_or_default(),
    }
}

/// A number as JavaScript prints it: the shortest digits that read back, in exponent form
/// outside 1e-6..1e21.
pub fn number(number: f64) -> String {
    if number == 0.0 {
        return "0".to_owned();
    }
    let magnitude = number.abs();
    if (1e-6..1e21).contains(&magnitude) {
        return number.to_string();
    }
    let text = format!("{number:e}");
    match text.split_once('e') {
        Some((digits, exponent)) if !exponent.starts_with('-') => format!("{digits}e+{exponent}"),
        _ => text,
    }
}

/// Whether two JSON texts are equal under JavaScript's `==`, which PostHog's group updates use
/// to decide whether a `$group_set` value changes a group: `"2" == 2`, `"" == 0`, `1 == true`,
/// `[2] == "2"`, and two objects are never equal (each is a new object). Unreadable text is
/// equal to nothing.
#[allow(clippy::float_cmp)] // JavaScript's `==` compares numbers exactly.
pub fn loosely_equal(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (sonic_rs::from_str::<Value>(a), sonic_rs::from_str::<Value>(b)) else {
        return false;
    };
    let is_object = |value: &Value| matches!(value.get_type(), JsonType::Object | JsonType::Array);
    if a.is_null() || b.is_null() {
        return a.is_null() && b.is_null();
    }
    if is_object(&a) && is_object(&b) {
        return false;
    }
    match (primitive(&a), primitive(&b)) {
        (Primitive::Number(a), Primitive::Number(b)) => a == b,
        (Primitive::Text(a), Primitive::Text(b)) => a == b,
        (Primitive::Number(n), Primitive::Text(t)) | (Primitive::Text(t), Primitive::Number(n)) => {
            to_number(&t) == Some(n)
        }
    }
}

enum Primitive {
    Number(f64),
    Text(String),
}

/// What `==` compares a non-null value as: booleans as numbers, objects as their `String()`.
fn primitive(value: &Value) -> Primitive {
    match value.get_type() {
        JsonType::Boolean => Primitive::Number(if value.as_bool().unwrap_or_default() { 1.0 } else { 0.0 }),
        JsonType::Number => Primitive::Number(value.as_f64().unwrap_or(f64::NAN)),
        _ => Primitive::Text(string(value)),
    }
}

/// JavaScript's `Number(text)`: surrounding white space ignored, empty text is 0, decimal
/// (with exponent), `Infinity`, and unsigned `0x`, `0o`, `0b` literals; `None` where it gives NaN.
fn to_number(text: &str) -> Option<f64> {
    // JavaScript's white space and line terminators: Unicode's, less U+0085, plus U+FEFF.
    let text = text.trim_matches(|c: char| (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}');
    if text.is_empty() {
        return Some(0.0);
    }
    let radix = match text.get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("0x") => Some(16),
        Some("0o") => Some(8),
        Some("0b") => Some(2),
        _ => None,
    };
    if let Some(radix) = radix {
        let digits = &text[2..];
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        return Some(digits.chars().fold(0.0, |total, c| {
            total * f64::from(radix) + f64::from(c.to_digit(radix).unwrap_or_default())
        }));
    }
    match text.trim_start_matches(['+', '-']) {
        "Infinity" => {
            let sign = if text.starts_with('-') { -1.0 } else { 1.0 };
            return (text.len() <= "+Infinity".len()).then_some(sign * f64::INFINITY);
        }
        // Rust reads `inf`, `nan` and the like; JavaScript reads only digits here.
        rest if !rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') => return None,
        _ => {}
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_equality_as_javascript_has_it() {
        for (a, b) in [
            ("2", r#""2""#),
            ("0", r#""""#),
            ("0", r#"" \n""#),
            ("1", "true"),
            ("0", "false"),
            (r#""1""#, "true"),
            ("16", r#""0x10""#),
            ("5", r#""0b101""#),
            ("2.5", r#"" 2.5e0 ""#),
            ("0.5", r#"".5""#),
            ("[2]", "2"),
            (r#"["a","b"]"#, r#""a,b""#),
            ("[]", r#""""#),
            ("[]", "0"),
            (r#"{"a":1}"#, r#""[object Object]""#),
            ("null", "null"),
            (r#""x""#, r#""x""#),
            ("1e3", "1000"),
        ] {
            assert!(loosely_equal(a, b), "{a} == {b}");
            assert!(loosely_equal(b, a), "{b} == {a}");
        }
        for (a, b) in [
            ("null", "0"),
            ("null", r#""""#),
            ("null", "false"),
            (r#"{"a":1}"#, r#"{"a":1}"#),
            ("[1]", "[1]"),
            (r#""abc""#, "0"),
            (r#""inf""#, "1"),
            (r#""\u0085 1""#, "1"),
            (r#""-0x10""#, "-16"),
            (r#""1_0""#, "10"),
            (r#""2""#, "true"),
            (r#""x""#, r#""X""#),
            ("2", "3"),
        ] {
            assert!(!loosely_equal(a, b), "{a} != {b}");
        }
    }

    #[test]
    fn strings_as_javascript_writes_them() {
        let value = |text: &str| sonic_rs::from_str::<Value>(text).unwrap();
        assert_eq!(string(&value("1e21")), "1e+21");
        assert_eq!(string(&value("1.50")), "1.5");
        assert_eq!(string(&value(r#"[1,null,{"a":1}]"#)), "1,,[object Object]");
    }
}
