//! Property operators as PostHog matches them: truth, numbers, text, regexes, dates.

use chrono::TimeZone;

use super::*;
use crate::core::flags::dates::{months_before, years_before};

fn matches(operator: &str, filter: &str, property: &str) -> bool {
    let filter: Value = sonic_rs::from_str(filter).unwrap();
    let property: Value = sonic_rs::from_str(property).unwrap();
    Operator::compile(operator, &filter)
        .unwrap()
        .matches(Some(&property), Utc::now())
}

#[test]
fn exact_compares_by_truth_when_the_filter_is_one() {
    for (filter, property, expected) in [
        (r#""false""#, r#""no""#, true),
        (r#""false""#, "0", true),
        (r#""FALSE""#, "false", true),
        (r#""true""#, r#""TRUE""#, true),
        (r#""true""#, r#""yes""#, false),
        ("true", "[true]", true),
        ("[]", "true", true),
        ("[]", r#""x""#, false),
        (r#"["true", "false"]"#, r#""x""#, true),
        (r#"["true", "yes"]"#, r#""YES""#, true),
        (r#"["true", "yes"]"#, "true", true),
        (r#""Chrome""#, r#""chrome""#, true),
    ] {
        assert_eq!(
            matches("exact", filter, property),
            expected,
            "exact {filter} against {property}"
        );
        assert_eq!(
            matches("is_not", filter, property),
            !expected,
            "is_not {filter} against {property}"
        );
    }
}

#[test]
fn numbers_are_read_whole_as_rust_reads_an_f64() {
    for (property, expected) in [
        ("6", true),
        (r#""6""#, true),
        (r#""6.""#, true),
        (r#"".6e1""#, true),
        (r#""+6""#, true),
        (r#"" 6""#, false),
        (r#""6 ""#, false),
        // PostHog's flag service parses with Rust's `f64` reading: infinities are numbers, and
        // `NaN` compares with nothing.
        (r#""inf""#, true),
        (r#""Infinity""#, true),
        (r#""-inf""#, false),
        (r#""NaN""#, false),
        (r#""1e999""#, true),
        (r#""6e""#, false),
        (r#"".""#, false),
        ("true", false),
    ] {
        assert_eq!(matches("gte", "5", property), expected, "gte 5 against {property}");
    }
}

#[test]
fn between_is_inclusive_and_not_between_its_complement() {
    for (property, inside) in [
        ("1", true),
        ("10", true),
        (r#""5.5""#, true),
        ("0.5", false),
        ("11", false),
    ] {
        assert_eq!(matches("between", "[1, 10]", property), inside, "between {property}");
        assert_eq!(
            matches("not_between", "[1, 10]", property),
            !inside,
            "not_between {property}"
        );
    }
    // Bounds that are not two numbers in order, and a property that is no number, match nothing.
    for bounds in ["[10, 1]", "[1]", r#"["a", 2]"#, "5"] {
        assert!(!matches("between", bounds, "5"), "between {bounds}");
        assert!(!matches("not_between", bounds, "5"), "not_between {bounds}");
    }
    assert!(!matches("between", "[1, 10]", r#""NaN""#));
    assert!(!matches("not_between", "[1, 10]", r#""NaN""#));
    assert!(!matches("not_between", "[1, 10]", r#""five""#));
    let absent = |operator: &str| {
        Operator::compile(operator, &sonic_rs::from_str("[1, 10]").unwrap())
            .unwrap()
            .matches(None, Utc::now())
    };
    assert!(!absent("between"));
    assert!(absent("not_between"));
}

#[test]
fn a_filter_without_a_value_matches_nothing_but_is_set_and_is_not_set() {
    for operator in [
        "exact",
        "is_not",
        "icontains",
        "not_icontains",
        "regex",
        "not_regex",
        "gt",
        "is_date_after",
    ] {
        let compiled = Operator::compile(operator, &Value::new_null()).unwrap();
        let property: Value = sonic_rs::from_str(r#""abc""#).unwrap();
        assert!(
            !compiled.matches(Some(&property), Utc::now()),
            "{operator} with a property"
        );
        assert!(!compiled.matches(None, Utc::now()), "{operator} without one");
    }
    assert!(Operator::compile("is_set", &Value::new_null())
        .unwrap()
        .matches(Some(&Value::from(1)), Utc::now()));
    assert!(Operator::compile("is_not_set", &Value::new_null())
        .unwrap()
        .matches(None, Utc::now()));
    assert!(Operator::compile("no_such_operator", &Value::new_null()).is_err());
}

#[test]
fn dates_in_the_forms_the_flag_service_reads() {
    for (filter, property, after) in [
        (r#""2024-06-01 10:30""#, r#""2024-06-01T10:31:00Z""#, true),
        (r#""2024-06-01T10:30""#, r#""2024-06-01 10:29:59""#, false),
        (r#""2024-01-01""#, r#""Sat, 01 Jun 2024 10:00:00 GMT""#, true),
        (r#""2024-01-01""#, r#""2024-06-01 10:00:00.250""#, true),
        // A number is a timestamp as a property, but no date as a filter.
        (r#""2024-01-01""#, "1717236000", true),
        ("1700000000", r#""2024-06-02""#, false),
    ] {
        assert_eq!(
            matches("is_date_after", filter, property),
            after,
            "{property} after {filter}"
        );
    }
}

#[test]
fn text_operators_lower_ascii_letters_only() {
    assert!(matches("icontains", r#""CHR""#, r#""chrome""#));
    assert!(!matches("icontains", r#""äbc""#, r#""ÄBCD""#));
    assert!(!matches("starts_with", r#""É""#, r#""école""#));
    assert!(matches("exact", r#""ÉCOLE""#, r#""école""#));
}

#[test]
fn lookaround_and_backreferences_are_patterns_too() {
    assert!(matches("regex", r#""^(?!test).*@x\\.com$""#, r#""a@x.com""#));
    assert!(!matches("regex", r#""^(?!test).*@x\\.com$""#, r#""test@x.com""#));
    assert!(matches("not_regex", r#""^(?!test).*@x\\.com$""#, r#""test@x.com""#));
    assert!(matches("regex", r#""(a)\\1""#, r#""aa""#));
    assert!(!matches("regex", r#""(unclosed""#, r#""(unclosed""#));
    assert!(!matches("not_regex", r#""(unclosed""#, r#""x""#));
    // An absent property is not matched by any pattern, even one that does not compile.
    let unclosed: Value = sonic_rs::from_str(r#""(unclosed""#).unwrap();
    assert!(Operator::compile("not_regex", &unclosed)
        .unwrap()
        .matches(None, Utc::now()));
    // Past PostHog's backtracking limit a pattern gives up and matches neither way.
    let runaway = r#""^(\\w+\\s?)*(?<=x)$""#;
    let text = format!(r#""{}!""#, "a".repeat(24));
    assert!(!matches("regex", runaway, &text));
    assert!(!matches("not_regex", runaway, &text));
    // ... and says it could not decide, which the flag's answer reports as an error.
    let text: Value = sonic_rs::from_str(&text).unwrap();
    let runaway: Value = sonic_rs::from_str(runaway).unwrap();
    for operator in ["regex", "not_regex"] {
        let compiled = Operator::compile(operator, &runaway).unwrap();
        assert_eq!(compiled.outcome(Some(&text), Utc::now()), None, "{operator}");
    }
}

#[test]
fn icontains_multi_wants_any_needle() {
    assert!(matches("icontains_multi", r#"["fox", "CHR"]"#, r#""Chrome""#));
    assert!(!matches("icontains_multi", r#"["fox", "edge"]"#, r#""Chrome""#));
    assert!(matches("not_icontains_multi", r#"["fox", "edge"]"#, r#""Chrome""#));
    assert!(!matches("not_icontains_multi", r#"["fox", "chr"]"#, r#""Chrome""#));
    let none = Operator::compile("not_icontains_multi", &sonic_rs::from_str(r#"["x"]"#).unwrap()).unwrap();
    assert!(none.matches(None, Utc::now()));
}

#[test]
fn months_and_years_ago_are_calendar_ones() {
    let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
    for (now, months, expected) in [
        (at(2024, 3, 31, 12), 1, at(2024, 2, 29, 12)),
        (at(2024, 3, 31, 12), 2, at(2024, 1, 29, 12)),
        (at(2024, 5, 31, 12), 1, at(2024, 4, 30, 12)),
        (at(2024, 1, 15, 8), 1, at(2023, 12, 15, 8)),
        (at(2024, 3, 31, 12), 12, at(2023, 3, 29, 12)),
        (at(2024, 3, 1, 12), 12, at(2023, 3, 1, 12)),
        (at(2024, 3, 1, 12), 0, at(2024, 3, 1, 12)),
    ] {
        assert_eq!(months_before(now, months), Some(expected), "{now} less {months} months");
    }
    for (now, years, expected) in [
        (at(2024, 3, 31, 12), 1, at(2023, 3, 31, 12)),
        (at(2024, 2, 29, 0), 1, at(2023, 2, 28, 0)),
        (at(2024, 2, 29, 0), 4, at(2020, 2, 28, 0)),
    ] {
        assert_eq!(years_before(now, years), Some(expected), "{now} less {years} years");
    }
    let relative = |text| match relative(text) {
        Some(DateTarget::MonthsAgo(months)) => Some(months),
        Some(DateTarget::YearsAgo(years)) => Some(years * 1000),
        _ => None,
    };
    assert_eq!(relative("-1m"), Some(1));
    assert_eq!(relative("2y"), Some(2000));
    assert_eq!(relative("3é"), None);
    assert_eq!(relative("09999m"), Some(9999));
    assert_eq!(relative("-10000m"), None);
    assert!(super::relative("+3d").is_none());
    assert!(super::relative(" -3d").is_none());
    assert!(super::relative("-3x").is_none());
}
