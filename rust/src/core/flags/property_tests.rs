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
fn numbers_are_read_whole_and_finite() {
    for (property, expected) in [
        ("6", true),
        (r#""6""#, true),
        (r#""6.""#, true),
        (r#"".6e1""#, true),
        (r#""+6""#, true),
        (r#"" 6""#, false),
        (r#""6 ""#, false),
        (r#""inf""#, false),
        (r#""NaN""#, false),
        (r#""1e999""#, false),
        (r#""6e""#, false),
        (r#"".""#, false),
        ("true", false),
    ] {
        assert_eq!(matches("gte", "5", property), expected, "gte 5 against {property}");
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
