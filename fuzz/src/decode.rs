//! The decode target: one fuzz input is one capture request ([`crate::case`]), decoded as the
//! server decodes it, and what comes out is checked.

use chrono::{DateTime, TimeZone, Utc};
use hogflare::core::analytics_v1;
use hogflare::core::decode::decode;
use hogflare::core::error::CoreError;
use hogflare::core::request::{self, RouteKind};
use hogflare::core::{nesting, timestamp, token};

use crate::case::{Case, Request, ALLOWED};
use crate::json;

/// The instant every fuzz request is decoded at, so that a replayed input decodes the same.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).single().unwrap_or_default()
}

/// Bytes hogflare may add to one event beyond what its item carried: `$sent_at`, the request's
/// facts and a recording's defaults. A recording also gets its distinct id, escaped, on top.
const ADDED_PER_EVENT: usize = 1024;

/// What GeoIP adds on top: the `$geoip_*` properties, and again in `$set` and `$set_once`.
const LOCATED_PER_EVENT: usize = 3072;

/// Decode one fuzz input and check what came out; a broken invariant panics. Returns how many
/// events were accepted, or the error the request got.
pub fn run(data: &[u8]) -> Result<usize, String> {
    check(&Case::read(data).request())
}

pub fn check(request: &Request) -> Result<usize, String> {
    let parts = request.parts();
    let config = &request.config;
    let cap = config.max_inflated_bytes;
    let decoded = match decode(&parts, request.headers, config, now()) {
        Ok(decoded) => decoded,
        Err(err) => {
            match &err {
                CoreError::PayloadTooLarge { limit } => assert_eq!(*limit, cap, "{err}"),
                CoreError::Store(_)
                | CoreError::Encoding(_)
                | CoreError::OutboxFull { .. }
                | CoreError::AlreadyCommitted
                | CoreError::MissingSignature
                | CoreError::SignatureMismatch
                | CoreError::MissingSignatureTimestamp
                | CoreError::SignatureTimestampOutOfRange => panic!("decoding cannot fail with {err:?}"),
                _ => {}
            }
            return Err(err.to_string());
        }
    };

    // Every item is accounted for: kept, filtered or dropped with a reason. Capture v1 answers
    // every item, so a request of only dropped items is an answer there, not an error.
    let (text, shared, items) = if request.route == RouteKind::AnalyticsV1 {
        let text = request::v1_text(&parts, cap)
            .unwrap_or_else(|err| panic!("the request decoded, but reading it again failed: {err}"));
        let translated = analytics_v1::translate(&text, &decoded.token, None)
            .unwrap_or_else(|err| panic!("the request decoded, but translating it again failed: {err}"));
        assert!(
            decoded.results.is_some(),
            "a capture v1 request is answered with its results"
        );
        (text, Vec::new(), translated.items.len())
    } else {
        let unpacked = match request::unpack(&parts, cap) {
            Ok(unpacked) => unpacked,
            Err(err) => panic!("the request decoded, but unpacking it again failed: {err}"),
        };
        assert!(
            !decoded.events.is_empty() || decoded.dropped.is_empty(),
            "a request whose items were all dropped is an error"
        );
        // The nesting guard's 64-byte scan counts as the byte scan does on the text it let by.
        for max in [0, 1, 2, 3, 8] {
            assert_eq!(
                nesting::check_depth(unpacked.text.as_bytes(), max).is_ok(),
                nesting::check_depth_by_strings(unpacked.text.as_bytes(), max).is_ok(),
                "the nesting scans disagree at depth {max} on {:?}",
                unpacked.text
            );
        }
        let items = unpacked.items.len();
        let shared = unpacked.envelope.shared.iter().map(|(_, raw)| raw.clone()).collect();
        (unpacked.text, shared, items)
    };
    let dropped: u32 = decoded.dropped.values().sum();
    assert_eq!(
        decoded.events.len() + decoded.filtered as usize + dropped as usize,
        items,
        "items kept + filtered + dropped"
    );
    assert_eq!(
        token::validate(&decoded.token).ok().as_deref(),
        Some(decoded.token.as_str()),
        "the token is valid and trimmed"
    );
    if config.project_tokens.is_some() {
        assert!(
            ALLOWED.contains(&decoded.token.as_str()),
            "{:?} is not allowed",
            decoded.token
        );
    }

    let input_keys = json::all_keys(&text, shared.iter().map(String::as_str));
    let (mut total, mut allowance) = (0usize, 0usize);
    let located = if config.geoip.is_some() { LOCATED_PER_EVENT } else { 0 };
    for event in &decoded.events {
        let keys = json::object_keys(&event.properties).unwrap_or_else(|err| panic!("properties: {err}"));
        json::check_entries_scan(&event.properties, &keys);
        let extra = event
            .extra
            .as_deref()
            .map(|extra| json::object_keys(extra).unwrap_or_else(|err| panic!("extra: {err}")));
        if let Some(context) = &event.context {
            json::check_value(context).unwrap_or_else(|err| panic!("context: {err}"));
        }
        // hogflare adds a key only when it is absent: a key twice in the output was twice in the input.
        if let Some(input_keys) = &input_keys {
            for key in json::repeated(&keys)
                .into_iter()
                .chain(extra.iter().flat_map(|k| json::repeated(k)))
            {
                assert!(
                    input_keys.get(key).is_some_and(|count| *count >= 2),
                    "key {:?} repeated in {:?} / {:?}",
                    String::from_utf8_lossy(key),
                    event.properties,
                    event.extra
                );
            }
        }
        for (what, text) in [("event", &event.event), ("distinct_id", &event.distinct_id)] {
            assert!(
                !text.is_empty() && text.chars().count() <= 200,
                "{what} {text:?} is empty or too long"
            );
        }
        assert!(!event.distinct_id.contains('\0'), "distinct_id keeps a NUL");
        if request.route == RouteKind::Recording {
            assert!(
                matches!(event.event.as_str(), "$snapshot" | "$snapshot_items"),
                "{}",
                event.event
            );
        } else {
            assert!(
                event.size() <= config.max_event_bytes,
                "event of {} bytes over the cap of {}",
                event.size(),
                config.max_event_bytes
            );
        }
        let _ = timestamp::format_rfc3339(event.timestamp);
        total += event.size();
        allowance += ADDED_PER_EVENT + located + 6 * event.distinct_id.len();
    }
    // What a request stores grows with what it sent (an item's properties are at most copied
    // twice, into `$set` or `$group_set`), never with the product of two of its parts.
    let bound = 3 * cap + allowance;
    assert!(
        total <= bound,
        "{} events of {total} bytes from a request capped at {cap} bytes",
        decoded.events.len()
    );
    Ok(decoded.events.len())
}
