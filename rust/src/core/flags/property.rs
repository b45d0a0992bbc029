//! Property operators, compiled once per flag and matched as PostHog's flag service matches them
//! (the server's rules: it has every stored property, so a missing key is an absent value).

use std::borrow::Cow;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use regex::Regex;
use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait, Value};

use super::semver::{SemverOp, SemverRange};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOp {
    Before,
    After,
    Exact,
}

/// When a date filter points: a fixed moment, or "n units ago", worked out at evaluation.
#[derive(Debug, Clone)]
pub enum DateTarget {
    Fixed(DateTime<Utc>),
    Relative(Duration),
    /// Calendar months, the day clamped month by month on the way back.
    MonthsAgo(u32),
    /// Calendar years, the same day (February 29 becomes the 28th).
    YearsAgo(u32),
}

/// Backtracking steps a pattern may take on one property before it gives up: PostHog's flag
/// service's limit, which also keeps a pattern a request's properties can feed from costing
/// every `/flags` call a fraction of a second.
const BACKTRACK_LIMIT: usize = 10_000;

/// A `regex` filter's pattern. Most compile to the linear-time engine; lookaround and
/// backreferences, which PostHog's flag service also accepts, to a backtracking one.
#[derive(Debug, Clone)]
pub enum Pattern {
    Linear(Regex),
    Backtracking(Box<fancy_regex::Regex>),
}

impl Pattern {
    fn compile(text: &str) -> Option<Self> {
        match Regex::new(text) {
            Ok(pattern) => Some(Self::Linear(pattern)),
            Err(_) => fancy_regex::RegexBuilder::new(text)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .ok()
                .map(|pattern| Self::Backtracking(Box::new(pattern))),
        }
    }

    /// Whether the text matches; `None` when backtracking gave up (`BACKTRACK_LIMIT`), which
    /// matches neither way.
    fn is_match(&self, text: &str) -> Option<bool> {
        match self {
            Self::Linear(pattern) => Some(pattern.is_match(text)),
            Self::Backtracking(pattern) => pattern.is_match(text).ok(),
        }
    }
}

/// What `exact` and `is_not` compare with.
#[derive(Debug, Clone)]
pub enum Expected {
    /// The filter is a boolean, `"true"`/`"false"` in any case, or a list of those: the property
    /// is compared by its truth (PostHog's default property matching).
    Truth(bool),
    /// Lower-case text, any of which the property's text must equal.
    Texts(Vec<String>),
}

#[derive(Debug, Clone)]
pub enum Operator {
    Exact(Expected),
    IsNot(Expected),
    IsSet,
    IsNotSet,
    IContains(String),
    NotIContains(String),
    /// Contains any of the needles (`icontains_multi`), or none of them (`not_icontains_multi`).
    IContainsAny(Vec<String>, bool),
    /// `None` when the pattern does not compile: never matches, negated or not.
    Regex(Option<Pattern>),
    NotRegex(Option<Pattern>),
    Compare(std::cmp::Ordering, bool, Option<f64>),
    Date(DateOp, Option<DateTarget>),
    StartsWith(String, bool),
    EndsWith(String, bool),
    Semver(SemverOp, Option<SemverRange>),
}

/// The text PostHog compares: a string's own text, anything else as JSON.
pub fn text_of(value: &Value) -> Cow<'_, str> {
    match value.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(sonic_rs::to_string(value).unwrap_or_default()),
    }
}

/// Lower case, without a copy when it already is: `exact` compares text lowered in full.
fn lower(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(text.to_lowercase())
    } else {
        text
    }
}

/// Only ASCII letters lowered: the text operators (`icontains`, `starts_with`, …) leave other
/// letters as they are, as PostHog's matching does.
fn ascii_lower(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        text
    }
}

/// A number as PostHog's numeric operators read one: a JSON number, or a string that is a
/// decimal number and nothing else (no spaces, `inf` or `nan`), finite.
fn number_of(value: &Value) -> Option<f64> {
    let number = match value.get_type() {
        JsonType::Number => value.as_f64(),
        JsonType::String => decimal(value.as_str()?),
        _ => None,
    };
    number.filter(|n| n.is_finite())
}

/// `[+-]?(digits[.digits?] | .digits)([eE][+-]?digits)?`, whole.
fn decimal(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits = |from: usize| bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let whole = digits(at);
    at += whole;
    let mut fraction = 0;
    if bytes.get(at) == Some(&b'.') {
        fraction = digits(at + 1);
        at += 1 + fraction;
    }
    if whole == 0 && fraction == 0 {
        return None;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1 + usize::from(matches!(bytes.get(at + 1), Some(b'+' | b'-')));
        let exponent = digits(at);
        if exponent == 0 {
            return None;
        }
        at += exponent;
    }
    (at == bytes.len()).then(|| text.parse().ok()).flatten()
}

/// Whether a value reads as a truth: a boolean, `"true"` or `"false"` in any case, or a list of
/// those.
fn is_truth(value: &Value) -> bool {
    match value.get_type() {
        JsonType::Boolean => true,
        JsonType::String => value
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false")),
        JsonType::Array => value.as_array().is_some_and(|items| items.iter().all(is_truth)),
        _ => false,
    }
}

/// A value's truth: `true`, `"true"` in any case, or a list of only those.
fn truth(value: &Value) -> bool {
    match value.get_type() {
        JsonType::Boolean => value.as_bool() == Some(true),
        JsonType::String => value.as_str().is_some_and(|t| t.eq_ignore_ascii_case("true")),
        JsonType::Array => value.as_array().is_some_and(|items| items.iter().all(truth)),
        _ => false,
    }
}

/// `-{n}{h|d|w|m|y}`: so long ago (the `-` may be left out), n below 10,000.
fn relative(text: &str) -> Option<DateTarget> {
    let body = text.strip_prefix('-').unwrap_or(text);
    // An ASCII unit, so that the count ends on a character boundary.
    let unit = *body.as_bytes().last().filter(|unit| unit.is_ascii())?;
    let count = &body[..body.len() - 1];
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Past u32, the count is past the limit all the same.
    let count: u32 = count.parse().ok().filter(|n| *n < 10_000)?;
    Some(match unit {
        b'h' => DateTarget::Relative(Duration::hours(count.into())),
        b'd' => DateTarget::Relative(Duration::days(count.into())),
        b'w' => DateTarget::Relative(Duration::weeks(count.into())),
        b'm' => DateTarget::MonthsAgo(count),
        b'y' => DateTarget::YearsAgo(count),
        _ => return None,
    })
}

/// `months` calendar months before `now`, at the same time of day. The day of the month is
/// clamped month by month on the way back (March 31 less two months is January 29, through
/// February 29; less twelve months, March 29), as PostHog steps back.
fn months_before(now: DateTime<Utc>, months: u32) -> Option<DateTime<Utc>> {
    let current = i64::from(now.year()) * 12 + i64::from(now.month0());
    let target = current - i64::from(months);
    let mut day = now.day();
    let mut index = current - 1;
    while index >= target && day > 28 {
        day = day.min(days_in_month(index.div_euclid(12), index.rem_euclid(12))?);
        index -= 1;
    }
    on_day(now, target.div_euclid(12), target.rem_euclid(12), day)
}

/// `years` calendar years before `now`: the same day and time, February 29 the 28th (the year
/// before a leap year is never one).
fn years_before(now: DateTime<Utc>, years: u32) -> Option<DateTime<Utc>> {
    let day = if years > 0 && now.month() == 2 && now.day() == 29 {
        28
    } else {
        now.day()
    };
    on_day(
        now,
        i64::from(now.year()) - i64::from(years),
        i64::from(now.month0()),
        day,
    )
}

fn on_day(now: DateTime<Utc>, year: i64, month0: i64, day: u32) -> Option<DateTime<Utc>> {
    if !(1..=9999).contains(&year) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, u32::try_from(month0).ok()? + 1, day)?;
    Some(date.and_time(now.time()).and_utc())
}

fn days_in_month(year: i64, month0: i64) -> Option<u32> {
    let (next_year, next_month0) = if month0 == 11 {
        (year + 1, 0)
    } else {
        (year, month0 + 1)
    };
    let first_of_next =
        NaiveDate::from_ymd_opt(i32::try_from(next_year).ok()?, u32::try_from(next_month0).ok()? + 1, 1)?;
    Some(first_of_next.pred_opt()?.day())
}

/// A date from a filter value or a property: RFC 3339, a plain date or date-time, or (for
/// properties) unix seconds.
pub fn parse_date(value: &Value) -> Option<DateTime<Utc>> {
    let seconds = if value.is_number() {
        value.as_f64()
    } else {
        value.as_str().and_then(|t| t.trim().parse::<f64>().ok())
    };
    if let Some(seconds) = seconds.filter(|s| s.is_finite()) {
        return DateTime::from_timestamp_micros((seconds * 1e6) as i64);
    }
    let text = value.as_str()?.trim();
    if let Ok(moment) = DateTime::parse_from_rfc3339(text) {
        return Some(moment.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(moment) = NaiveDateTime::parse_from_str(text, format) {
            return Some(moment.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|moment| moment.and_utc())
}

impl Operator {
    /// Compile a filter's operator and value; unknown operators are an error.
    pub fn compile(operator: &str, value: &Value) -> Result<Self, String> {
        use std::cmp::Ordering::{Greater, Less};
        let list = || -> Vec<String> {
            match value.as_array() {
                Some(items) => items.iter().map(|item| text_of(item).to_lowercase()).collect(),
                None => vec![text_of(value).to_lowercase()],
            }
        };
        let expected = || {
            if is_truth(value) {
                Expected::Truth(truth(value))
            } else {
                Expected::Texts(list())
            }
        };
        let lowered = || ascii_lower(text_of(value)).into_owned();
        let needles = || -> Vec<String> {
            match value.as_array() {
                Some(items) => items
                    .iter()
                    .map(|item| ascii_lower(text_of(item)).into_owned())
                    .collect(),
                None => vec![lowered()],
            }
        };
        let regex = || Pattern::compile(&text_of(value));
        let number = || number_of(value);
        let date = || match value.as_str().and_then(relative) {
            Some(ago) => Some(ago),
            None => parse_date(value).map(DateTarget::Fixed),
        };
        Ok(match operator {
            "exact" => Self::Exact(expected()),
            "is_not" => Self::IsNot(expected()),
            "is_set" => Self::IsSet,
            "is_not_set" => Self::IsNotSet,
            "icontains" => Self::IContains(lowered()),
            "not_icontains" => Self::NotIContains(lowered()),
            "icontains_multi" => Self::IContainsAny(needles(), true),
            "not_icontains_multi" => Self::IContainsAny(needles(), false),
            "regex" => Self::Regex(regex()),
            "not_regex" => Self::NotRegex(regex()),
            "gt" => Self::Compare(Greater, false, number()),
            "gte" => Self::Compare(Greater, true, number()),
            "lt" => Self::Compare(Less, false, number()),
            "lte" => Self::Compare(Less, true, number()),
            "is_date_before" => Self::Date(DateOp::Before, date()),
            "is_date_after" => Self::Date(DateOp::After, date()),
            "is_date_exact" => Self::Date(DateOp::Exact, date()),
            "starts_with" => Self::StartsWith(lowered(), true),
            "not_starts_with" => Self::StartsWith(lowered(), false),
            "ends_with" => Self::EndsWith(lowered(), true),
            "not_ends_with" => Self::EndsWith(lowered(), false),
            other => match SemverOp::parse(other) {
                Some(op) => Self::Semver(op, SemverRange::parse(op, &text_of(value))),
                None => return Err(format!("unknown operator {other:?}")),
            },
        })
    }

    /// Whether a property (absent: `None`) matches.
    pub fn matches(&self, property: Option<&Value>, now: DateTime<Utc>) -> bool {
        let Some(value) = property else {
            // Absent: only the negative operators hold.
            return matches!(
                self,
                Self::IsNot(..) | Self::IsNotSet | Self::NotIContains(_) | Self::NotRegex(Some(_))
            ) || matches!(
                self,
                Self::StartsWith(_, false) | Self::EndsWith(_, false) | Self::IContainsAny(_, false)
            );
        };
        match self {
            Self::Exact(expected) => exact(expected, value),
            Self::IsNot(expected) => !exact(expected, value),
            Self::IsSet => true,
            Self::IsNotSet => false,
            Self::IContains(needle) => ascii_lower(text_of(value)).contains(needle.as_str()),
            Self::NotIContains(needle) => !ascii_lower(text_of(value)).contains(needle.as_str()),
            Self::IContainsAny(needles, positive) => {
                let text = ascii_lower(text_of(value));
                needles.iter().any(|needle| text.contains(needle.as_str())) == *positive
            }
            Self::Regex(pattern) => pattern.as_ref().and_then(|p| p.is_match(&text_of(value))) == Some(true),
            Self::NotRegex(pattern) => pattern.as_ref().and_then(|p| p.is_match(&text_of(value))) == Some(false),
            Self::Compare(direction, or_equal, expected) => match (number_of(value), expected) {
                (Some(actual), Some(expected)) => match actual.partial_cmp(expected) {
                    Some(std::cmp::Ordering::Equal) => *or_equal,
                    Some(order) => order == *direction,
                    None => false,
                },
                _ => false,
            },
            Self::Date(op, target) => {
                let target = match target {
                    Some(DateTarget::Fixed(moment)) => *moment,
                    Some(DateTarget::Relative(ago)) => now - *ago,
                    Some(DateTarget::MonthsAgo(months)) => match months_before(now, *months) {
                        Some(moment) => moment,
                        None => return false,
                    },
                    Some(DateTarget::YearsAgo(years)) => match years_before(now, *years) {
                        Some(moment) => moment,
                        None => return false,
                    },
                    None => return false,
                };
                let Some(actual) = parse_date(value) else { return false };
                match op {
                    DateOp::Before => actual < target,
                    DateOp::After => actual > target,
                    DateOp::Exact => actual == target,
                }
            }
            Self::StartsWith(prefix, positive) => ascii_lower(text_of(value)).starts_with(prefix.as_str()) == *positive,
            Self::EndsWith(suffix, positive) => ascii_lower(text_of(value)).ends_with(suffix.as_str()) == *positive,
            Self::Semver(op, range) => range.as_ref().is_some_and(|range| range.matches(*op, &text_of(value))),
        }
    }
}

/// PostHog's `exact`: by truth when the filter is a truth, else case-insensitive text equality
/// against any of the expected values.
fn exact(expected: &Expected, value: &Value) -> bool {
    match expected {
        Expected::Truth(wanted) => truth(value) == *wanted,
        Expected::Texts(texts) => {
            let actual = lower(text_of(value));
            texts.iter().any(|candidate| *candidate == actual)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

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
}
