//! Event timestamps as PostHog computes them: clock-skew correction against `sent_at`,
//! `offset`, `$ignore_sent_at`, a clamp on the far future, and lenient parsing.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use sonic_rs::{JsonType, JsonValueTrait, Value};

/// Events more than this far in the future are moved to "now" (PostHog's ingestion rule).
const MAX_FUTURE: TimeDelta = TimeDelta::hours(23);

/// Numbers below this are epoch seconds, not milliseconds: 1e11 ms is March 1973, while 1e11 s
/// is the year 5138. PostHog reads every number as milliseconds; seconds are a common mistake.
const SECONDS_THRESHOLD: f64 = 1e11;

pub fn from_epoch_number(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() {
        return None;
    }
    let millis = if value.abs() < SECONDS_THRESHOLD {
        value * 1000.0
    } else {
        value
    };
    DateTime::from_timestamp_micros((millis * 1000.0).round() as i64)
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    const FORMATS: [&str; 8] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y/%m/%dT%H:%M:%S%.f",
        "%Y/%m/%d %H:%M",
        "%Y%m%dT%H%M%S%.f",
    ];
    for format in FORMATS {
        if let Ok(parsed) = NaiveDateTime::parse_from_str(text, format) {
            return Some(parsed);
        }
    }
    for format in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"] {
        if let Ok(date) = NaiveDate::parse_from_str(text, format) {
            return date.and_hms_opt(0, 0, 0);
        }
    }
    None
}

/// `+03` and `+0300` are turned into `+03:00` so that RFC 3339 parsing accepts them.
fn normalise_offset(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let sign_at = text.rfind(['+', '-'])?;
    // The sign must come after the time part (`T..` or ` ..`), not inside the date.
    if sign_at < 11 || !bytes[10].is_ascii_alphabetic() && bytes[10] != b' ' {
        return None;
    }
    let tail = &text[sign_at + 1..];
    let digits: String = tail.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != tail.len() || !(digits.len() == 2 || digits.len() == 4) {
        return None;
    }
    let minutes = if digits.len() == 4 { &digits[2..] } else { "00" };
    Some(format!("{}{}:{}", &text[..=sign_at], &digits[..2], minutes))
}

pub fn parse_text(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed.with_timezone(&Utc));
    }
    if let Some(fixed) = normalise_offset(text) {
        if let Ok(parsed) = DateTime::parse_from_rfc3339(&fixed) {
            return Some(parsed.with_timezone(&Utc));
        }
    }
    if let Some(naive) = parse_naive(text.trim_end_matches('Z')) {
        return Some(naive.and_utc());
    }
    // What server libraries print: Ruby's `Time#to_s` (`2024-03-01 18:20:30 +0800`), and a
    // time named UTC or GMT.
    for format in ["%Y-%m-%d %H:%M:%S%.f %z", "%Y-%m-%dT%H:%M:%S%.f %z"] {
        if let Ok(parsed) = DateTime::parse_from_str(text, format) {
            return Some(parsed.with_timezone(&Utc));
        }
    }
    let named_utc = [" UTC", " GMT"].iter().find_map(|zone| {
        let split = text.len().checked_sub(zone.len())?;
        (text.is_char_boundary(split) && text[split..].eq_ignore_ascii_case(zone)).then(|| &text[..split])
    });
    if let Some(naive) = named_utc.and_then(|rest| parse_naive(rest.trim_end())) {
        return Some(naive.and_utc());
    }
    if let Ok(parsed) = DateTime::parse_from_rfc2822(text) {
        return Some(parsed.with_timezone(&Utc));
    }
    if let Ok(number) = text.parse::<f64>() {
        return from_epoch_number(number);
    }
    None
}

/// A timestamp as any SDK sends it: an ISO string (strict or lenient) or epoch milliseconds.
pub fn parse_value(value: &Value) -> Option<DateTime<Utc>> {
    match value.get_type() {
        JsonType::String => value.as_str().and_then(parse_text),
        JsonType::Number => value.as_f64().and_then(from_epoch_number),
        _ => None,
    }
}

/// What the client said about when an event happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientTime {
    pub timestamp: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub offset_ms: Option<i64>,
    pub ignore_sent_at: bool,
}

/// The event time PostHog would store, and whether it had to be clamped or reset.
pub fn resolve(now: DateTime<Utc>, client: ClientTime) -> (DateTime<Utc>, bool) {
    // Out-of-range arithmetic (a timestamp and sent_at years apart, a huge offset) counts as a
    // timestamp hogflare could not use: the event keeps `now`, and is flagged as adjusted.
    let mut overflowed = false;
    let mut ts = now;
    if let Some(timestamp) = client.timestamp {
        ts = match client.sent_at {
            Some(sent_at) if !client.ignore_sent_at => {
                now.checked_add_signed(timestamp - sent_at).unwrap_or_else(|| {
                    overflowed = true;
                    now
                })
            }
            _ => timestamp,
        };
    }
    if let Some(offset) = client.offset_ms {
        ts = TimeDelta::try_milliseconds(offset)
            .and_then(|delta| now.checked_sub_signed(delta))
            .unwrap_or_else(|| {
                overflowed = true;
                now
            });
    }
    let mut adjusted = overflowed;
    if ts - now > MAX_FUTURE {
        ts = now;
        adjusted = true;
    }
    // PostHog's range starts at year 0; the lake's starts at year 1 (Python's dates, which
    // pyiceberg reads a file's statistics with), and one row outside it would stop the shipping.
    if !(1..=9999).contains(&chrono::Datelike::year(&ts)) {
        ts = DateTime::UNIX_EPOCH;
        adjusted = true;
    }
    (ts, adjusted)
}

/// `_` in the query: epoch milliseconds, ignored when it parses to 2020 or earlier (seconds).
pub fn parse_query_millis(text: &str) -> Option<DateTime<Utc>> {
    let millis: i64 = text.trim().parse().ok()?;
    let parsed = DateTime::from_timestamp_millis(millis)?;
    (chrono::Datelike::year(&parsed) > 2020).then_some(parsed)
}

pub fn to_micros(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

pub fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

pub fn format_rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::json;

    fn at(text: &str) -> DateTime<Utc> {
        parse_text(text).unwrap()
    }

    #[test]
    fn lenient_formats() {
        let expected = at("2024-03-01T10:20:30Z");
        for text in [
            "2024-03-01T10:20:30Z",
            "2024-03-01T10:20:30.000+00:00",
            "2024-03-01T12:20:30+02",
            "2024-03-01T12:20:30+0200",
            "2024-03-01 10:20:30",
            "2024-03-01T10:20:30",
            "2024/03/01 10:20:30",
            "Fri, 01 Mar 2024 10:20:30 +0000",
            "2024-03-01 18:20:30 +0800",
            "2024-03-01 08:20:30 -02:00",
            "2024-03-01 10:20:30 UTC",
            "2024-03-01 10:20:30.000 gmt",
            "1709288430000",
        ] {
            assert_eq!(parse_text(text), Some(expected), "{text}");
        }
        assert_eq!(parse_text("2024-03-01"), Some(at("2024-03-01T00:00:00Z")));
        assert_eq!(parse_value(&json!(1_709_288_430_000_i64)), Some(expected));
        assert_eq!(parse_value(&json!(1_709_288_430)), Some(expected));
        assert_eq!(parse_text("yesterday"), None);
        assert_eq!(parse_value(&json!(true)), None);
    }

    #[test]
    fn skew_correction() {
        let now = at("2024-01-01T12:00:00Z");
        let client = ClientTime {
            timestamp: Some(at("2024-01-01T09:59:00Z")),
            sent_at: Some(at("2024-01-01T10:00:00Z")),
            ..ClientTime::default()
        };
        assert_eq!(resolve(now, client).0, at("2024-01-01T11:59:00Z"));
        let ignored = ClientTime {
            ignore_sent_at: true,
            ..client
        };
        assert_eq!(resolve(now, ignored).0, at("2024-01-01T09:59:00Z"));
    }

    #[test]
    fn offset_and_future_clamp() {
        let now = at("2024-01-01T12:00:00Z");
        let client = ClientTime {
            offset_ms: Some(1500),
            ..ClientTime::default()
        };
        assert_eq!(resolve(now, client).0, at("2024-01-01T11:59:58.500Z"));
        let future = ClientTime {
            timestamp: Some(at("2024-01-03T12:00:00Z")),
            ..ClientTime::default()
        };
        assert_eq!(resolve(now, future), (now, true));
        let near = ClientTime {
            timestamp: Some(at("2024-01-02T10:00:00Z")),
            ..ClientTime::default()
        };
        assert_eq!(resolve(now, near).0, at("2024-01-02T10:00:00Z"));
        assert_eq!(resolve(now, ClientTime::default()), (now, false));
    }

    #[test]
    fn arithmetic_out_of_range_falls_back_to_now() {
        let now = at("2024-01-01T12:00:00Z");
        let far = |text: &str| parse_value(&json!(text.parse::<f64>().unwrap()));
        let skewed = ClientTime {
            timestamp: far("8.2e15"),
            sent_at: far("-8e15"),
            ..ClientTime::default()
        };
        assert_eq!(resolve(now, skewed), (now, true));
        for offset in [i64::MIN, i64::MAX, -100_000_000_000_000_000] {
            let client = ClientTime {
                offset_ms: Some(offset),
                ..ClientTime::default()
            };
            assert_eq!(resolve(now, client), (now, true), "{offset}");
        }
    }

    #[test]
    fn years_outside_the_lakes_range_become_the_epoch() {
        let now = at("2024-01-01T12:00:00Z");
        for (text, expected) in [
            ("0000-06-01T00:00:00Z", DateTime::UNIX_EPOCH),
            ("0001-01-01T00:00:00Z", at("0001-01-01T00:00:00Z")),
            ("9999-12-31T23:59:59Z", now),
        ] {
            let client = ClientTime {
                timestamp: Some(at(text)),
                ignore_sent_at: true,
                ..ClientTime::default()
            };
            assert_eq!(resolve(now, client).0, expected, "{text}");
        }
    }

    #[test]
    fn query_millis_rejects_seconds() {
        assert!(parse_query_millis("1709288430000").is_some());
        assert!(parse_query_millis("1709288430").is_none());
        assert!(parse_query_millis("abc").is_none());
    }
}
