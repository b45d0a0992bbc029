//! The raw JSON helpers: parsing, splicing, escapes and lone surrogates.

use super::*;

#[test]
fn entries_round_trip_in_order() {
    let mut object =
        RawObject::parse(r#"{"b": 1, "a": {"x": [1, 2]}, "c\n": "é", "n": 12345678901234567890}"#).unwrap();
    assert_eq!(object.get("a"), Some(r#"{"x": [1, 2]}"#));
    object.set("z", "true");
    object.take("b");
    assert_eq!(
        object.to_json(),
        r#"{"a":{"x": [1, 2]},"c\n":"é","n":12345678901234567890,"z":true}"#
    );
}

#[test]
fn a_key_set_keeps_one_value() {
    let mut object = RawObject::parse(r#"{"a": 1, "b": 2, "a": 3, "a": 4}"#).unwrap();
    object.set("a", "5");
    assert_eq!(object.to_json(), r#"{"a":5,"b":2}"#);
}

#[test]
fn unicode_escapes_are_checked() {
    for good in [
        r#""plain""#,
        r#""\u00e9 \n \\u \"""#,
        r#""\ud83d\ude00""#,
        r#""\\""#,
        "\"\\\\\"",
    ] {
        assert!(check_unicode_escapes(good).is_ok(), "{good}");
    }
    for bad in [
        r#""\u""#,
        r#""\uZZZZ""#,
        r#""\u12"#,
        r#""\ud800""#,
        r#""\ud800\u0041""#,
        r#""\udc00""#,
        "\\",
    ] {
        assert!(check_unicode_escapes(bad).is_err(), "{bad}");
    }
}

#[test]
fn lone_surrogates_are_replaced() {
    for (text, repaired) in [
        (r#""\ud83d""#, r#""\uFFFD""#),
        (
            r#"["\ud83d","\ud83d\ude00","\ude00x","\uDBFF\u0041"]"#,
            r#"["\uFFFD","\ud83d\ude00","\uFFFDx","\uFFFD\u0041"]"#,
        ),
        (r#""é \\ud800 \\\ud800""#, r#""é \\ud800 \\\uFFFD""#),
        (r#""\u00e9 \n \uD83D\uDE00""#, r#""\u00e9 \n \uD83D\uDE00""#),
        (r#""\ud800\"#, r#""\uFFFD\"#),
        (r#""\ud83dé \é""#, r#""\uFFFDé \é""#),
    ] {
        assert_eq!(replace_lone_surrogates(text), repaired, "{text}");
        assert!(
            check_unicode_escapes(repaired).is_ok() || repaired.contains("\\é") || repaired.ends_with('\\'),
            "{repaired}"
        );
    }
    // A pair, or no surrogate at all, is the text itself, not a copy.
    for whole in [r#""\ud83d\ude00""#, r#""\u00e9""#] {
        assert!(matches!(replace_lone_surrogates(whole), Cow::Borrowed(_)), "{whole}");
    }
}

#[test]
fn appending_to_objects() {
    let add = [("$sent_at", string_literal("2024")), ("n", "1".to_owned())];
    assert_eq!(append_entries(r#"{"a":1}"#, &add), r#"{"a":1,"$sent_at":"2024","n":1}"#);
    assert_eq!(append_entries("{ }\n", &add), r#"{ "$sent_at":"2024","n":1}"#);
    assert_eq!(append_entries::<&str>("{}", &[]), "{}");
}

#[test]
fn splicing_into_a_nested_object() {
    let text = r#"{"a": 1, "$set": {"x": 2} , "b": 3}"#;
    let object = RawObject::parse(text).unwrap();
    let inner = object.get("$set").unwrap();
    let start = offset_in(text, inner).unwrap();
    let with = append_entries(inner, &[("y", "4".to_owned())]);
    assert_eq!(
        splice(text, vec![(start..start + inner.len(), with)]),
        r#"{"a": 1, "$set": {"x": 2,"y":4} , "b": 3}"#
    );
    assert_eq!(offset_in(text, "elsewhere"), None);
}

#[test]
fn strings() {
    assert_eq!(as_str(r#""plain""#).as_deref(), Some("plain"));
    assert_eq!(as_str(r#""a\"b\u00e9""#).as_deref(), Some("a\"bé"));
    assert_eq!(as_str("12"), None);
    assert_eq!(string_literal("q\"\u{1}"), r#""q\"\u0001""#);
}

#[test]
fn invalid_values_are_refused() {
    assert!(RawObject::parse(r#"{"a": [1, 2}"#).is_err());
    assert!(RawObject::parse(r#"{"a": tru}"#).is_err());
    assert!(RawObject::parse("[1]").is_err());
}

#[test]
fn an_entry_is_cut_out_with_its_comma() {
    let cut = |text: &str, value: &str| {
        let start = text.rfind(value).unwrap();
        entry_around(text, "k", start..start + value.len()).map(|range| splice(text, vec![(range, String::new())]))
    };
    for (text, value, without) in [
        (r#"{"a":1,"k":true}"#, "true", r#"{"a":1}"#),
        (r#"{"k":true,"a":1}"#, "true", r#"{"a":1}"#),
        (r#"{"a":1,"k":true,"b":2}"#, "true", r#"{"a":1,"b":2}"#),
        (r#"{"k":true}"#, "true", "{}"),
        (r#"{ "k" : {"k":1} , "a" : [1] }"#, r#"{"k":1}"#, r#"{ "a" : [1] }"#),
        (r#"{"a":{"k":1},"k":"x"}"#, r#""x""#, r#"{"a":{"k":1}}"#),
    ] {
        assert_eq!(cut(text, value).as_deref(), Some(without), "{text}");
        sonic_rs::from_str::<sonic_rs::Value>(without).unwrap();
    }
    // A key written with escapes, or another key: nothing to cut.
    assert_eq!(cut(r#"{"\u006b":1}"#, "1"), None);
    assert_eq!(cut(r#"{"kk":1}"#, "1"), None);
    assert_eq!(cut(r#"{"xk":1}"#, "1"), None);
}
