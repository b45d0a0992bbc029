//! JSON values as PostHog's ingestion, written in JavaScript, reads them: `String()` of a value,
//! whether a condition takes it as true, and the deep equality its group updates compare with.

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

/// Whether two JSON texts hold equal values as `fast-deep-equal` compares them, which PostHog's
/// group updates use to decide whether a `$group_set` value changes a group: numbers by value
/// (`1` is `1.0`), no conversion between types (`"2"` is not `2`), arrays item by item, objects
/// key by key whatever their order. Unreadable text is equal to nothing.
pub fn deeply_equal(a: &str, b: &str) -> bool {
    if a == b {
        return sonic_rs::from_str::<Value>(a).is_ok();
    }
    match (sonic_rs::from_str::<Value>(a), sonic_rs::from_str::<Value>(b)) {
        (Ok(a), Ok(b)) => same_value(&a, &b),
        _ => false,
    }
}

#[allow(clippy::float_cmp)] // JavaScript's `===` compares numbers exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.get_type(), b.get_type()) {
        (JsonType::Number, JsonType::Number) => a.as_f64() == b.as_f64(),
        (JsonType::String, JsonType::String) => a.as_str() == b.as_str(),
        (JsonType::Boolean, JsonType::Boolean) => a.as_bool() == b.as_bool(),
        (JsonType::Null, JsonType::Null) => true,
        (JsonType::Array, JsonType::Array) => match (a.as_array(), b.as_array()) {
            (Some(a), Some(b)) => a.len() == b.len() && a.iter().zip(b.iter()).all(|(a, b)| same_value(a, b)),
            _ => false,
        },
        (JsonType::Object, JsonType::Object) => match (a.as_object(), b.as_object()) {
            (Some(a), Some(b)) => {
                a.len() == b.len() && a.iter().all(|(key, a)| b.get(&key).is_some_and(|b| same_value(a, b)))
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether JavaScript reads a JSON value as true in a condition: everything but `null`,
/// `false`, `0` and `""`.
pub fn truthy(raw: &str) -> bool {
    let raw = raw.trim();
    match raw {
        "null" | "false" | "\"\"" => false,
        _ if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => raw.parse::<f64>() != Ok(0.0),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_equality_as_fast_deep_equal_has_it() {
        for (a, b) in [
            ("2", "2"),
            ("1", "1.0"),
            ("1e3", "1000"),
            ("0", "-0"),
            (r#""x""#, r#""x""#),
            ("null", "null"),
            ("[1,[2]]", "[1.0, [2]]"),
            (r#"{"a":1,"b":{"c":[true]}}"#, r#"{"b":{"c":[true]},"a":1}"#),
        ] {
            assert!(deeply_equal(a, b), "{a} equals {b}");
            assert!(deeply_equal(b, a), "{b} equals {a}");
        }
        for (a, b) in [
            ("2", r#""2""#),
            ("1", "true"),
            ("0", r#""""#),
            ("0", "false"),
            ("null", "0"),
            ("[2]", "2"),
            ("[1]", "[1,1]"),
            (r#"{"a":1}"#, r#"{"a":1,"b":1}"#),
            (r#"{"a":1}"#, r#"{"b":1}"#),
            (r#""x""#, r#""X""#),
            ("not json", "not json"),
        ] {
            assert!(!deeply_equal(a, b), "{a} differs from {b}");
            assert!(!deeply_equal(b, a), "{b} differs from {a}");
        }
    }

    #[test]
    fn truthiness_as_javascript_has_it() {
        for raw in ["null", "false", "0", "-0", "0.0", "0e5", r#""""#, " 0 "] {
            assert!(!truthy(raw), "{raw} is false");
        }
        for raw in ["true", "1", "-1", "0.5", r#""0""#, r#"" ""#, "[]", "{}", r#""false""#] {
            assert!(truthy(raw), "{raw} is true");
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
