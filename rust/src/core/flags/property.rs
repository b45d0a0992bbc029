//! Property operators, compiled once per flag and matched as PostHog's flag service matches them
//! (the server's rules: it has every stored property, so a missing key is an absent value).

use std::borrow::Cow;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
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
}

#[derive(Debug, Clone)]
pub enum Operator {
    /// The values to compare with, and the filter's own boolean when it is one: then the
    /// property is read as a boolean (`"true"` in any case is true, anything else false).
    Exact(Vec<String>, Option<bool>),
    IsNot(Vec<String>, Option<bool>),
    IsSet,
    IsNotSet,
    IContains(String),
    NotIContains(String),
    /// `None` when the pattern does not compile: never matches, negated or not.
    Regex(Option<Regex>),
    NotRegex(Option<Regex>),
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

/// Lower case, without a copy when it already is.
fn lower(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(text.to_lowercase())
    } else {
        text
    }
}

fn number_of(value: &Value) -> Option<f64> {
    match value.get_type() {
        JsonType::Number => value.as_f64(),
        JsonType::String => value.as_str()?.trim().parse().ok(),
        _ => None,
    }
}

fn truthiness(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn relative(text: &str) -> Option<Duration> {
    let text = text.trim();
    let body = text.strip_prefix('-').unwrap_or(text);
    let unit = body.chars().last()?;
    let count: i64 = body[..body.len() - unit.len_utf8()].parse().ok()?;
    if !(0..10_000).contains(&count) {
        return None;
    }
    Some(match unit {
        'h' => Duration::hours(count),
        'd' => Duration::days(count),
        'w' => Duration::weeks(count),
        'm' => Duration::days(count * 30),
        'y' => Duration::days(count * 365),
        _ => return None,
    })
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
        let lowered = || text_of(value).to_lowercase();
        let regex = || Regex::new(&text_of(value)).ok();
        let number = || number_of(value);
        let date = || match value.as_str().and_then(relative) {
            Some(ago) => Some(DateTarget::Relative(ago)),
            None => parse_date(value).map(DateTarget::Fixed),
        };
        Ok(match operator {
            "exact" => Self::Exact(list(), value.as_bool()),
            "is_not" => Self::IsNot(list(), value.as_bool()),
            "is_set" => Self::IsSet,
            "is_not_set" => Self::IsNotSet,
            "icontains" => Self::IContains(lowered()),
            "not_icontains" => Self::NotIContains(lowered()),
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
            ) || matches!(self, Self::StartsWith(_, false) | Self::EndsWith(_, false));
        };
        match self {
            Self::Exact(expected, boolean) => exact(expected, *boolean, value),
            Self::IsNot(expected, boolean) => !exact(expected, *boolean, value),
            Self::IsSet => true,
            Self::IsNotSet => false,
            Self::IContains(needle) => lower(text_of(value)).contains(needle.as_str()),
            Self::NotIContains(needle) => !lower(text_of(value)).contains(needle.as_str()),
            Self::Regex(pattern) => pattern.as_ref().is_some_and(|p| p.is_match(&text_of(value))),
            Self::NotRegex(pattern) => pattern.as_ref().is_some_and(|p| !p.is_match(&text_of(value))),
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
                    None => return false,
                };
                let Some(actual) = parse_date(value) else { return false };
                match op {
                    DateOp::Before => actual < target,
                    DateOp::After => actual > target,
                    DateOp::Exact => actual == target,
                }
            }
            Self::StartsWith(prefix, positive) => lower(text_of(value)).starts_with(prefix.as_str()) == *positive,
            Self::EndsWith(suffix, positive) => lower(text_of(value)).ends_with(suffix.as_str()) == *positive,
            Self::Semver(op, range) => range.as_ref().is_some_and(|range| range.matches(*op, &text_of(value))),
        }
    }
}

/// PostHog's `exact`: case-insensitive text equality against any of the expected values, with
/// booleans and `"true"`/`"false"` compared by truth.
fn exact(expected: &[String], boolean: Option<bool>, value: &Value) -> bool {
    if let Some(wanted) = boolean {
        let truth = value
            .as_bool()
            .unwrap_or_else(|| value.as_str().is_some_and(|t| t.eq_ignore_ascii_case("true")));
        return truth == wanted;
    }
    let actual = lower(text_of(value));
    expected.iter().any(|candidate| {
        *candidate == actual || matches!((truthiness(candidate), truthiness(&actual)), (Some(a), Some(b)) if a == b)
    })
}
