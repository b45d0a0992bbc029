//! Dates in flag filters: fixed moments, and PostHog's relative ones (`-7d`, `-1m`) stepped back
//! through the calendar as PostHog steps.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use sonic_rs::{JsonValueTrait, Value};

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

impl DateTarget {
    /// The moment the target names, seen from `now`; `None` past the calendar's range.
    pub fn at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Fixed(moment) => Some(*moment),
            Self::Relative(ago) => now.checked_sub_signed(*ago),
            Self::MonthsAgo(months) => months_before(now, *months),
            Self::YearsAgo(years) => years_before(now, *years),
        }
    }
}

/// `-{n}{h|d|w|m|y}`: so long ago (the `-` may be left out), n below 10,000.
pub fn relative(text: &str) -> Option<DateTarget> {
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
pub(super) fn months_before(now: DateTime<Utc>, months: u32) -> Option<DateTime<Utc>> {
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
pub(super) fn years_before(now: DateTime<Utc>, years: u32) -> Option<DateTime<Utc>> {
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
    if let Some(midnight) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
    {
        return Some(midnight.and_utc());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(moment) = NaiveDateTime::parse_from_str(text, format) {
            return Some(moment.and_utc());
        }
    }
    // What JavaScript's `toUTCString()` writes ("Sat, 01 Jun 2024 10:00:00 GMT"), which the
    // flag service's fallback parser also reads.
    DateTime::parse_from_rfc2822(text)
        .ok()
        .map(|moment| moment.with_timezone(&Utc))
}
