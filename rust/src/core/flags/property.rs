//! Property operators, compiled once per flag and matched as PostHog's flag service matches them
//! (the server's rules: it has every stored property, so a missing key is an absent value).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use regex::Regex;
use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait, Value};

use super::dates::{parse_date, relative, DateOp, DateTarget};
use super::semver::{SemverOp, SemverRange};

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
    /// `None` when the pattern does not compile: never matches a present property, negated or
    /// not (an absent one is still not matched by `not_regex`'s pattern, as on PostHog).
    Regex(Option<Pattern>),
    NotRegex(Option<Pattern>),
    Compare(std::cmp::Ordering, bool, Option<f64>),
    Date(DateOp, Option<DateTarget>),
    StartsWith(String, bool),
    EndsWith(String, bool),
    Semver(SemverOp, Option<SemverRange>),
    /// `between` (`true`) or `not_between` an inclusive `[low, high]`; `None` when the bounds are
    /// not two numbers in order, which matches nothing.
    Between(Option<(f64, f64)>, bool),
    /// A filter with no value (or `null`) for an operator that needs one: matches nothing.
    Never,
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

/// A number as PostHog's numeric operators read one: a JSON number, or a string Rust reads as
/// an `f64` whole (so `inf`, `Infinity` and `NaN` too, in any case; no spaces). A `NaN`
/// compares with nothing.
fn number_of(value: &Value) -> Option<f64> {
    match value.get_type() {
        JsonType::Number => value.as_f64(),
        JsonType::String => value.as_str()?.parse().ok(),
        _ => None,
    }
}

/// `between`'s bounds: two numbers, the first not above the second.
fn bounds_of(value: &Value) -> Option<(f64, f64)> {
    let items = value.as_array().filter(|items| items.len() == 2)?;
    let (low, high) = (number_of(&items[0])?, number_of(&items[1])?);
    (low <= high).then_some((low, high))
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
        // The filter's date is text; a number there matches nothing (PostHog's server).
        let date = || match value.as_str().and_then(relative) {
            Some(ago) => Some(ago),
            None => value.as_str().and_then(|_| parse_date(value)).map(DateTarget::Fixed),
        };
        if value.is_null() && !matches!(operator, "is_set" | "is_not_set") {
            return if Self::known(operator) {
                Ok(Self::Never)
            } else {
                Err(format!("unknown operator {operator:?}"))
            };
        }
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
            "between" => Self::Between(bounds_of(value), true),
            "not_between" => Self::Between(bounds_of(value), false),
            other => match SemverOp::parse(other) {
                Some(op) => Self::Semver(op, SemverRange::parse(op, &text_of(value))),
                None => return Err(format!("unknown operator {other:?}")),
            },
        })
    }

    /// Whether PostHog's flag service knows an operator by this name.
    fn known(operator: &str) -> bool {
        Self::compile(operator, &Value::from(0)).is_ok()
    }

    /// Whether a property (absent: `None`) matches, or `None` when it cannot be decided (a
    /// pattern that gave up backtracking), which PostHog reports as an evaluation error.
    pub fn outcome(&self, property: Option<&Value>, now: DateTime<Utc>) -> Option<bool> {
        if let (Some(value), Self::Regex(Some(pattern)) | Self::NotRegex(Some(pattern))) = (property, self) {
            let found = pattern.is_match(&text_of(value))?;
            return Some(found == matches!(self, Self::Regex(_)));
        }
        Some(self.matches(property, now))
    }

    /// Whether a property (absent: `None`) matches; what cannot be decided does not.
    pub fn matches(&self, property: Option<&Value>, now: DateTime<Utc>) -> bool {
        let Some(value) = property else {
            // Absent: only the negative operators hold.
            return matches!(
                self,
                Self::IsNot(..) | Self::IsNotSet | Self::NotIContains(_) | Self::NotRegex(_)
            ) || matches!(
                self,
                Self::StartsWith(_, false)
                    | Self::EndsWith(_, false)
                    | Self::IContainsAny(_, false)
                    | Self::Between(_, false)
            );
        };
        match self {
            Self::Exact(expected) => exact(expected, value),
            Self::IsNot(expected) => !exact(expected, value),
            Self::IsSet => true,
            Self::IsNotSet | Self::Never => false,
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
                let Some(target) = target.as_ref().and_then(|target| target.at(now)) else {
                    return false;
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
            Self::Between(bounds, inside) => match (bounds, number_of(value)) {
                (Some((low, high)), Some(actual)) if !actual.is_nan() => (*low..=*high).contains(&actual) == *inside,
                _ => false,
            },
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
#[path = "property_tests.rs"]
mod tests;
