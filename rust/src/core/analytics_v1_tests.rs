use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use super::*;
use crate::core::decode::{decode, DecodedRequest, DecoderConfig, HeaderFacts};
use crate::core::request::{RequestParts, RouteKind};

const TOKEN: &str = "phc_v1";
const UUID_A: &str = "0190a0c4-7b2e-7c3a-9f00-000000000001";
const UUID_B: &str = "0190a0c4-7b2e-7c3a-9f00-000000000002";

fn event(uuid: &str, name: &str, distinct_id: &str) -> Value {
    json!({"event": name, "uuid": uuid, "distinct_id": distinct_id,
           "timestamp": "2026-12-03T10:00:00.000000+00:00", "options": {}, "properties": {}})
}

fn body(batch: &[Value]) -> String {
    json!({"created_at": "2026-12-03T10:00:01+00:00", "batch": batch}).to_string()
}

fn headers(sent_at: Option<&'static str>) -> HeaderFacts<'static> {
    HeaderFacts {
        api_key: Some(TOKEN),
        sent_at,
        sdk_info: Some("posthog-python/7.91.1"),
        ..HeaderFacts::default()
    }
}

fn decode_v1(text: &str, headers: HeaderFacts<'_>) -> crate::core::error::Result<DecodedRequest> {
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 5).unwrap();
    decode(
        &RequestParts::posted(RouteKind::AnalyticsV1, text.as_bytes()),
        headers,
        &DecoderConfig::default(),
        now,
    )
}

/// Decode as sent at 10:00:01 by the client's clock and received at 11:00:05: an hour behind.
fn decode_an_hour_late(text: &str) -> DecodedRequest {
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 11, 0, 5).unwrap();
    decode(
        &RequestParts::posted(RouteKind::AnalyticsV1, text.as_bytes()),
        headers(Some("2026-12-03T10:00:01.000000+00:00")),
        &DecoderConfig::default(),
        now,
    )
    .unwrap()
}

fn results(decoded: &DecodedRequest) -> Value {
    serde_json::from_str(decoded.results.as_deref().unwrap()).unwrap()
}

fn properties(decoded: &DecodedRequest, index: usize) -> Value {
    serde_json::from_str(&decoded.events[index].properties).unwrap()
}

#[test]
fn the_sdk_info_header_names_the_library() {
    assert_eq!(sdk_info("posthog-python/7.91.1"), Some(("posthog-python", "7.91.1")));
    assert_eq!(sdk_info("posthog/sub-sdk/2.3.4"), Some(("posthog/sub-sdk", "2.3.4")));
    assert_eq!(sdk_info(" posthog-node / 5.70.0 "), Some(("posthog-node", "5.70.0")));
    for unusable in ["posthog-node", "/1.0", "posthog-node/", "   "] {
        assert_eq!(sdk_info(unusable), None, "{unusable:?}");
    }
    assert_eq!(sdk_info(&format!("{}/1.0", "x".repeat(200))), None);
}

#[test]
fn options_and_top_level_fields_become_the_properties_posthog_reads() {
    let mut first = event(UUID_A, "$pageview", "user-1");
    first["session_id"] = json!("sess-1");
    first["window_id"] = json!("win-1");
    first["options"] = json!({"process_person_profile": "false", "disable_skew_correction": 1,
                              "product_tour_id": "tour-9", "cookieless_mode": null, "future_option": [1]});
    first["properties"] = json!({"$lib": "client-says", "plan": "pro", "$set": {"name": "Ada"}});
    let decoded = decode_v1(&body(&[first]), headers(None)).unwrap();
    let props = properties(&decoded, 0);
    assert_eq!(props["$session_id"], "sess-1");
    assert_eq!(props["$window_id"], "win-1");
    assert_eq!(props["$process_person_profile"], false);
    assert_eq!(props["$ignore_sent_at"], true);
    assert_eq!(props["$product_tour_id"], "tour-9");
    assert!(props.get("$cookieless_mode").is_none());
    // The header names the library, over what the properties say.
    assert_eq!(
        (&props["$lib"], &props["$lib_version"]),
        (&json!("posthog-python"), &json!("7.91.1"))
    );
    assert_eq!(props["plan"], "pro");
    assert_eq!(decoded.token, TOKEN);
    assert_eq!(decoded.events[0].uuid.to_string(), UUID_A);
    assert_eq!(results(&decoded), json!({"results": {UUID_A: {"result": "ok"}}}));
}

#[test]
fn each_event_gets_its_verdict_in_the_request_order() {
    let mut bad_time = event("0190A0C4-7B2E-7C3A-9F00-000000000003", "e", "u");
    bad_time["timestamp"] = json!("yesterday");
    let mut bad_properties = event("0190a0c4-7b2e-7c3a-9f00-000000000004", "e", "u");
    bad_properties["properties"] = json!([1, 2]);
    let mut bad_options = event("0190a0c4-7b2e-7c3a-9f00-000000000005", "e", "u");
    bad_options["options"] = json!({"process_person_profile": "perhaps"});
    let batch = vec![
        event(UUID_A, "kept", "u"),
        event(UUID_B, "", "u"),
        bad_time,
        bad_properties,
        bad_options,
        event("0190a0c4-7b2e-7c3a-9f00-000000000006", "e", "  "),
        event("0190a0c4-7b2e-7c3a-9f00-000000000007", &"n".repeat(201), "u"),
        event("0190a0c4-7b2e-7c3a-9f00-000000000008", "e", &"d".repeat(201)),
        event("0190a0c4-7b2e-7c3a-9f00-000000000009", "$performance_event", "u"),
        event("0190a0c4-7b2e-7c3a-9f00-00000000000a", "anonymous event", "Anonymous"),
    ];
    let sent: Vec<String> = batch
        .iter()
        .map(|event| event["uuid"].as_str().unwrap().to_owned())
        .collect();
    let decoded = decode_v1(&body(&batch), headers(None)).unwrap();
    assert_eq!(decoded.events.len(), 2);
    let drop = |details: &str| json!({"result": "drop", "details": details});
    let expected = [
        json!({"result": "ok"}),
        drop("missing_event_name"),
        drop("invalid_event_timestamp"),
        drop("malformed_event_properties"),
        drop("invalid_options"),
        drop("missing_distinct_id"),
        drop("event_name_too_long"),
        drop("distinct_id_too_large"),
        drop("dropped_performance_event"),
        json!({"result": "ok", "details": "person_processing_disabled"}),
    ];
    // Keyed by each uuid as the client wrote it (upper case too), which is how the SDKs look
    // their events up, in the request's order.
    let answer = results(&decoded);
    for (uuid, verdict) in sent.iter().zip(&expected) {
        assert_eq!(&answer["results"][uuid], verdict, "{uuid}");
    }
    let raw = decoded.results.as_deref().unwrap();
    let positions: Vec<usize> = sent.iter().map(|uuid| raw.find(uuid.as_str()).unwrap()).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{raw}");
    // The refusals are counted as any decoder drop is.
    let counted: Vec<(&str, u32)> = decoded
        .dropped
        .iter()
        .map(|(reason, n)| (reason.as_str(), *n))
        .collect();
    assert_eq!(counted.len(), 8, "{counted:?}");
    assert!(counted.iter().all(|(_, n)| *n == 1));
    // An illegal distinct id is kept without a person.
    assert_eq!(properties(&decoded, 1)["$process_person_profile"], false);
}

#[test]
fn a_batch_whose_events_cannot_be_told_apart_is_refused_whole() {
    let mut numeric_session = event(UUID_A, "e", "u");
    numeric_session["session_id"] = json!(7);
    let mut missing_uuid = event(UUID_A, "e", "u");
    missing_uuid.as_object_mut().unwrap().remove("uuid");
    let cases = [
        (body(&[event(UUID_A, "e", "u"), event(&UUID_A.to_uppercase(), "f", "u")]), "repeats"),
        (body(&[event("not-a-uuid", "e", "u")]), "not a uuid"),
        (body(&[event("  ", "e", "u")]), "uuid is empty"),
        (body(&[missing_uuid]), "uuid is missing"),
        (body(&[numeric_session]), "session_id must be a string"),
        (body(&[json!({"event": 1, "uuid": UUID_A, "distinct_id": "u", "timestamp": "t"})]), "event must be a string"),
        (body(&[json!("not an event")]), "must be an object"),
        (json!({"batch": [event(UUID_A, "e", "u")]}).to_string(), "created_at is missing"),
        (json!({"created_at": "now", "batch": [event(UUID_A, "e", "u")]}).to_string(), "RFC 3339"),
        (json!({"created_at": "2026-12-03T10:00:00Z", "batch": {}}).to_string(), "batch must be an array"),
        (
            json!({"created_at": "2026-12-03T10:00:00Z", "historical_migration": "yes", "batch": [event(UUID_A, "e", "u")]}).to_string(),
            "historical_migration",
        ),
        (json!([event(UUID_A, "e", "u")]).to_string(), "json object"),
    ];
    for (text, message) in cases {
        let err = decode_v1(&text, headers(None)).unwrap_err();
        assert!(matches!(err, CoreError::InvalidShape(_)), "{text}: {err}");
        assert!(err.to_string().contains(message), "{text}: {err}");
    }
    assert!(matches!(
        decode_v1(&body(&[]), headers(None)),
        Err(CoreError::EmptyBatch)
    ));
}

#[test]
fn malformed_json_anywhere_in_the_body_is_refused() {
    let good = body(&[event(UUID_A, "e", "u")]);
    let broken_property = good.replace(r#""properties":{}"#, r#""properties":{"a":[1,,2]}"#);
    let broken_unknown_field = good.replace(r#""options":{}"#, r#""options":{},"extra":{"a":}"#);
    let cases = [
        broken_property,
        broken_unknown_field,
        format!("{good} trailing"),
        format!("{good}}}"),
        good[..good.len() - 1].to_owned(),
        "{".to_owned(),
        "not json".to_owned(),
    ];
    for text in cases {
        let err = decode_v1(&text, headers(None)).unwrap_err();
        assert!(matches!(err, CoreError::InvalidJson(_)), "{text}: {err}");
    }
    assert!(decode_v1(&format!(" \n{good}\n "), headers(None)).is_ok());
}

#[test]
fn properties_keep_what_the_client_wrote() {
    let mut sent = event(UUID_A, "e", "u");
    sent["session_id"] = json!("s-1");
    sent["properties"] = json!({"plan": "pro", "$session_id": "the client's", "nested": {"a": [1, 2.50, "\u{e9}"]}, "quote": "a\"b", "k\"ey\n": 1});
    let decoded = decode_v1(&body(&[sent]), headers(None)).unwrap();
    let properties = properties(&decoded, 0);
    assert_eq!(properties["plan"], "pro");
    assert_eq!(properties["$session_id"], "s-1");
    assert_eq!(properties["nested"], json!({"a": [1, 2.50, "\u{e9}"]}));
    assert_eq!(properties["quote"], "a\"b");
    assert_eq!(properties["k\"ey\n"], 1);
}

#[test]
fn escapes_the_checked_iteration_steps_over_are_checked_too() {
    // Read as JSON, `"\u"` breaks the body; stepped over without reading the escape, it would
    // hide the second event inside the first's unknown field.
    let smuggled = r#"{"created_at":"2026-12-03T10:00:01Z","batch":[
        {"uuid":"0190a0c4-7b2e-7c3a-9f00-000000000001","event":"e","distinct_id":"u","timestamp":"2026-12-03T10:00:00Z","x":["\u"{"a"]},
        {"uuid":"0190a0c4-7b2e-7c3a-9f00-000000000002","event":"e2","distinct_id":"u","timestamp":"2026-12-03T10:00:00Z","y":"\u"}"a"}]}"#;
    let good = body(&[event(UUID_A, "e", "u")]);
    let unknown_field = |value: &str| good.replace(r#""options":{}"#, &format!(r#""options":{{}},"x":{value}"#));
    for text in [smuggled.to_owned(), unknown_field(r#""\uZZZZ""#)] {
        let err = decode_v1(&text, headers(None)).unwrap_err();
        assert!(matches!(err, CoreError::InvalidJson(_)), "{text}: {err}");
    }
    // Half of a surrogate pair stands in as U+FFFD before the body is read, as on every route.
    for text in [
        unknown_field(r#""\ud83d\ude00 \\u""#),
        unknown_field(r#""\ud800""#),
        good.replace(r#""options":{}"#, r#""options":{"y":"\udc00"}"#),
    ] {
        let decoded = decode_v1(&text, headers(None)).unwrap();
        assert_eq!(decoded.events.len(), 1, "{text}");
    }
    let cut = decode_v1(&good.replace(r#""event":"e""#, r#""event":"\ud800""#), headers(None)).unwrap();
    assert_eq!(cut.events[0].event, "\u{fffd}");
}

#[test]
fn options_read_however_the_body_is_spaced() {
    let mut spaced = event(UUID_A, "e", "u");
    spaced["options"] = json!({"process_person_profile": 0, "product_tour_id": 42});
    let mut pretty = event(UUID_B, "f", "u");
    pretty["options"] = json!({"product_tour_id": 7, "cookieless_mode": false});
    let text = serde_json::to_string_pretty(&json!({"created_at": "2026-12-03T10:00:01Z", "batch": [spaced]}))
        .unwrap()
        .replace("0,", "0 ,")
        .replace("42", "42 ");
    let decoded = decode_v1(&text, headers(None)).unwrap();
    assert_eq!(properties(&decoded, 0)["$process_person_profile"], false);
    assert_eq!(
        properties(&decoded, 0)["$product_tour_id"],
        "42",
        "a string, as PostHog coerces it"
    );
    let pretty =
        serde_json::to_string_pretty(&json!({"created_at": "2026-12-03T10:00:01Z", "batch": [pretty]})).unwrap();
    let decoded = decode_v1(&pretty, headers(None)).unwrap();
    assert_eq!(properties(&decoded, 0)["$product_tour_id"], "7");
    // Whitespace is JSON's four characters only.
    let good = body(&[event(UUID_A, "e", "u")]);
    for trailing in ["\u{a0}", "\u{c}", "\u{2028}"] {
        let err = decode_v1(&format!("{good}{trailing}"), headers(None)).unwrap_err();
        assert!(matches!(err, CoreError::InvalidJson(_)), "{trailing:?}: {err}");
    }
}

#[test]
fn what_v1_sets_is_the_only_value_of_its_key() {
    let sent = r#"{"created_at":"2026-12-03T10:00:01Z","batch":[{"uuid":"0190a0c4-7b2e-7c3a-9f00-000000000001",
        "event":"e","distinct_id":"u","timestamp":"2026-12-03T10:00:00Z","session_id":"s-v1",
        "options":{"disable_skew_correction":true},
        "properties":{"$ignore_sent_at":false,"$session_id":"c1","$ignore_sent_at":false,"$session_id":"c2"}}]}"#;
    let decoded = decode_an_hour_late(sent);
    // Skew correction is off, as the options asked: the event keeps its own time.
    assert_eq!(
        decoded.events[0].timestamp,
        Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap()
    );
    let stored = &decoded.events[0].properties;
    assert_eq!(stored.matches(r#""$session_id""#).count(), 1, "{stored}");
    assert_eq!(stored.matches(r#""$ignore_sent_at""#).count(), 1, "{stored}");
    assert_eq!(properties(&decoded, 0)["$session_id"], "s-v1");
}

#[test]
fn the_token_is_the_bearers_and_is_checked_like_any_other() {
    let text = body(&[event(UUID_A, "e", "u")]);
    let no_token = HeaderFacts {
        api_key: None,
        ..headers(None)
    };
    assert!(matches!(decode_v1(&text, no_token), Err(CoreError::NoToken)));
    let personal = HeaderFacts {
        api_key: Some("phx_personal"),
        ..headers(None)
    };
    assert!(matches!(decode_v1(&text, personal), Err(CoreError::InvalidToken(_))));
    // A project the server does not take is refused before its body is read.
    let config = DecoderConfig {
        project_tokens: Some(std::iter::once("phc_other".to_owned()).collect()),
        ..DecoderConfig::default()
    };
    let garbage = RequestParts::posted(RouteKind::AnalyticsV1, b"\x00 not even json");
    assert!(matches!(
        decode(&garbage, headers(None), &config, Utc::now()),
        Err(CoreError::UnknownToken)
    ));
    // A token in the properties does not name another project.
    let mut other = event(UUID_A, "e", "u");
    other["properties"] = json!({"token": "phc_other"});
    assert_eq!(decode_v1(&body(&[other]), headers(None)).unwrap().token, TOKEN);
}

#[test]
fn the_request_timestamp_corrects_the_clock_skew() {
    // The client's clock is an hour behind: its event at 10:00 was sent at (its) 10:00:01,
    // received at 11:00:05.
    let text = body(&[event(UUID_A, "e", "u")]);
    let decoded = decode_an_hour_late(&text);
    assert_eq!(
        decoded.events[0].timestamp,
        Utc.with_ymd_and_hms(2026, 12, 3, 11, 0, 4).unwrap()
    );
    let err = decode_v1(&text, headers(Some("a while ago"))).unwrap_err();
    assert!(err.to_string().contains("PostHog-Request-Timestamp"), "{err}");
}

#[test]
fn every_event_dropped_is_still_an_answer() {
    let decoded = decode_v1(&body(&[event(UUID_A, "", "u")]), headers(None)).unwrap();
    assert!(decoded.events.is_empty());
    assert_eq!(
        results(&decoded),
        json!({"results": {UUID_A: {"result": "drop", "details": "missing_event_name"}}})
    );
}

#[test]
fn the_decoders_own_drops_are_answered_with_its_reasons() {
    let mut large = event(UUID_B, "e", "u");
    large["properties"] = json!({"blob": "x".repeat(2 << 20)});
    let decoded = decode_v1(&body(&[event(UUID_A, "e", "u"), large]), headers(None)).unwrap();
    assert_eq!(
        results(&decoded)["results"][UUID_B],
        json!({"result": "drop", "details": "event_too_large"})
    );
    assert_eq!(decoded.events.len(), 1);
}

#[test]
fn bodies_packed_as_the_sdks_pack_them() {
    use std::io::Write;
    let text = body(&[event(UUID_A, "e", "u")]);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(text.as_bytes()).unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(text.as_bytes()).unwrap();
    let packed = [
        ("gzip", gzip.finish().unwrap()),
        ("deflate", zlib.finish().unwrap()),
        ("zstd", zstd::encode_all(text.as_bytes(), 3).unwrap()),
    ];
    for (encoding, bytes) in packed {
        let parts = RequestParts {
            content_encoding: Some(encoding),
            ..RequestParts::posted(RouteKind::AnalyticsV1, &bytes)
        };
        let decoded = decode(&parts, headers(None), &DecoderConfig::default(), Utc::now()).unwrap();
        assert_eq!(decoded.events.len(), 1, "{encoding}");
    }
}
