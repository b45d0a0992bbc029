//! Seed inputs for each target, made from the project's fixtures: the recorded SDK requests,
//! one hand-written payload per envelope and route, each packing the decode harness knows, and
//! the flag evaluation table.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::case::{Case, Packing, CONTENT_TYPES, ENCODINGS, HINTS, ROUTES};
use hogflare::core::decode::route_for_path;
use hogflare::core::request::RouteKind;

pub struct Seed {
    pub name: String,
    pub input: Vec<u8>,
    /// How many events the decode harness must accept from it.
    pub events: Option<usize>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn index_of<T: PartialEq>(table: &[T], wanted: &T) -> u8 {
    table.iter().position(|entry| entry == wanted).unwrap_or(0) as u8
}

fn route_index(route: RouteKind) -> u8 {
    index_of(&ROUTES, &route)
}

/// The recorded SDK requests as they arrived, then hand-written payloads.
pub fn decode() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let expected = read_json(&fixtures().join("expected.json"));
    for (name, count) in expected.as_object().into_iter().flatten() {
        let meta = read_json(&fixtures().join(format!("{name}.json")));
        let header = |key: &str| meta["headers"][key].as_str();
        let content_type = header("content-type").unwrap_or_default();
        let path = meta["path"].as_str().unwrap_or_default();
        let case = Case {
            route: route_index(route_for_path(path).unwrap_or(RouteKind::Event)),
            content_type: index_of(&CONTENT_TYPES, &Some(content_type)),
            encoding: index_of(&ENCODINGS, &header("content-encoding")),
            query: meta["query"].as_str().unwrap_or_default().as_bytes().to_vec(),
            payload: std::fs::read(fixtures().join(format!("{name}.body"))).unwrap_or_default(),
            ..Case::default()
        };
        seeds.push(Seed {
            name: name.clone(),
            input: case.write(),
            events: count.as_u64().map(|n| n as usize),
        });
    }

    let event = json!({"event": "signed up", "distinct_id": "user-1", "properties": {"plan": "pro"}});
    let payloads: Vec<(&str, RouteKind, Value, usize)> = vec![
        (
            "batch",
            RouteKind::Event,
            json!({"api_key": "phc", "sent_at": "2024-06-01T11:59:59Z", "historical_migration": true, "batch": [
                {"event": "a", "distinct_id": "d", "uuid": "0190c6a4-0000-7000-8000-000000000001",
                 "timestamp": "2024-06-01T11:00:00Z", "offset": 5, "properties": {"$set": {"a": 1}}, "$set": {"b": 2}},
                {"event": "$performance_event", "distinct_id": "d"},
                {"event": "no id"},
                "not an object",
            ]}),
            1,
        ),
        (
            "array",
            RouteKind::Event,
            json!([{"event": "$pageview", "properties": {"distinct_id": 42, "token": "phc", "$ignore_sent_at": true,
                "$geoip_disable": false, "capture_internal": false, "$ip": "81.2.69.160"}, "timestamp": 1_717_243_000_000_i64}]),
            1,
        ),
        (
            "single",
            RouteKind::LegacyEvent,
            json!({"event": "x", "$distinct_id": "d", "token": "phc", "$set_once": {"first": 1}, "$unset": ["a"],
                "context": {"library": "segment"}, "type": "track", "kept": [1, 2.5e3, null]}),
            1,
        ),
        (
            "data-envelope",
            RouteKind::LegacyEvent,
            json!({"data": [{"event": "a", "distinct_id": "b"}, {"event": "c", "distinct_id": "d"}], "api_key": "phc", "ver": "1.2"}),
            2,
        ),
        (
            "data-string-envelope",
            RouteKind::Event,
            json!({"data": "W3siZXZlbnQiOiJlIiwiZGlzdGluY3RfaWQiOiJkIn1d", "token": "phc"}),
            1,
        ),
        (
            "engage",
            RouteKind::Engage,
            json!({"$token": "phc", "$distinct_id": "d", "$set": {"email": "a@example.com"}}),
            1,
        ),
        (
            "identify",
            RouteKind::Identify,
            json!({"token": "phc", "distinct_id": "d", "$anon_distinct_id": "anon", "properties": {"email": "e"}}),
            1,
        ),
        (
            "alias",
            RouteKind::Alias,
            json!({"token": "phc", "distinct_id": "d", "alias": "e"}),
            1,
        ),
        (
            "groups",
            RouteKind::Groups,
            json!({"token": "phc", "group_type": "company", "group_key": "acme", "properties": {"name": "Acme"}}),
            1,
        ),
        (
            "segment-page",
            RouteKind::Event,
            json!({"type": "page", "distinct_id": "d", "token": "phc", "sent_at": 1_717_243_000}),
            1,
        ),
        (
            "recording",
            RouteKind::Recording,
            json!({"api_key": "phc", "batch": [{"event": "$snapshot", "properties": {"$session_id": "s-1",
                "$window_id": "w", "$snapshot_data": [{"type": 2, "data": {}, "timestamp": 1}], "distinct_id": "d"}}]}),
            1,
        ),
        (
            "recording-chunked",
            RouteKind::Recording,
            json!({"event": "$snapshot", "token": "phc", "metadata": {"distinct_id": "d"}, "chunk": "eJwLyS8q"}),
            1,
        ),
        (
            "plain-event",
            RouteKind::Event,
            json!({"api_key": "phc", "batch": [event]}),
            1,
        ),
        (
            "analytics-v1",
            RouteKind::AnalyticsV1,
            json!({"created_at": "2024-06-01T12:00:00Z", "historical_migration": false, "batch": [
                {"event": "a", "uuid": "0190c6a4-0000-7000-8000-000000000001", "distinct_id": "d",
                 "timestamp": "2024-06-01T11:59:00.123456+00:00", "session_id": "s", "window_id": null,
                 "options": {"process_person_profile": "false", "product_tour_id": 7},
                 "properties": {"$set": {"a": 1}}},
                {"event": "", "uuid": "0190C6A4-0000-7000-8000-000000000002", "distinct_id": "d",
                 "timestamp": "2024-06-01T11:59:00Z"},
            ]}),
            1,
        ),
    ];
    for (name, route, payload, events) in payloads {
        seeds.push(Seed {
            name: format!("json-{name}"),
            input: Case {
                route: route_index(route),
                extras: 0b0110_1101,
                // Capture v1's token is a header's.
                api_key_header: route == RouteKind::AnalyticsV1,
                payload: payload.to_string().into_bytes(),
                ..Case::default()
            }
            .write(),
            events: Some(events),
        });
    }

    // Every packing, with the labels a client would send along with it.
    let payload = json!({"api_key": "phc", "batch": [event, event]})
        .to_string()
        .into_bytes();
    let form = index_of(&CONTENT_TYPES, &Some("application/x-www-form-urlencoded"));
    let encoding = |name: &str| index_of(&ENCODINGS, &Some(name));
    let hint = |name: &str| index_of(&HINTS, &Some(name));
    let packings = [
        (Packing::Raw, 0, 0, 0),
        (Packing::Gzip, 0, encoding("gzip"), 0),
        (Packing::Zlib, 0, encoding("deflate"), 0),
        (Packing::RawDeflate, 0, encoding("deflate"), 0),
        (Packing::Brotli, 0, encoding("br"), 0),
        (Packing::Base64, 0, 0, 0),
        (Packing::Base64UrlSafe, 0, 0, hint("base64")),
        (Packing::Lz64, 0, 0, hint("lz64")),
        (Packing::GzipBase64, 0, encoding("base64"), 0),
        (Packing::Base64Twice, 0, 0, 0),
        (Packing::Form, form, 0, 0),
        (Packing::FormBase64, form, 0, hint("base64")),
        (Packing::QueryData, 0, 0, 0),
        (Packing::QueryBase64, 0, 0, 0),
        (Packing::QueryLz64, 0, 0, hint("lz64")),
        (Packing::FormGzipBase64, form, 0, hint("base64")),
    ];
    for (packing, content_type, encoding, hint) in packings {
        let route = if packing == Packing::Base64Twice {
            RouteKind::LegacyEvent
        } else {
            RouteKind::Event
        };
        seeds.push(Seed {
            name: format!("packing-{packing:?}").to_lowercase(),
            input: Case {
                route: route_index(route),
                packing: packing as u8,
                content_type,
                encoding,
                hint,
                underscore: true,
                payload: payload.clone(),
                ..Case::default()
            }
            .write(),
            events: Some(2),
        });
    }
    seeds
}

/// The flag evaluation table (each PostHog flag with the flags and cohorts it needs, and its
/// user) and the Hogflare-format flags with their PostHog counterparts.
pub fn flags() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let dir = fixtures().join("flags");
    let text = |value: &Value| {
        if value.is_null() {
            "{}".to_owned()
        } else {
            value.to_string()
        }
    };
    for (index, case) in read_json(&dir.join("cases.json"))
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut flags = vec![case["flag"].clone()];
        flags.extend(case["other_flags"].as_array().into_iter().flatten().cloned());
        let document = json!({
            "flags": flags,
            "cohorts": case.get("cohorts").cloned().unwrap_or_else(|| json!({})),
            "group_type_mapping": case.get("group_type_mapping").cloned().unwrap_or_else(|| json!({})),
        });
        let context = &case["context"];
        let parts = [
            String::new(),
            document.to_string(),
            text(&context["person_properties"]),
            text(&context["groups"]),
            text(&context["group_properties"]),
            context["distinct_id"].as_str().unwrap_or("user").to_owned(),
        ];
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        seeds.push(Seed {
            name: format!("case-{index:03}"),
            input: crate::flags::write(&parts),
            events: None,
        });
    }
    for (index, case) in read_json(&dir.join("hogflare_format.json"))
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let context = case["contexts"][0]["context"].clone();
        let hogflare = json!([case["hogflare"]]).to_string();
        let posthog = json!({"flags": [case["posthog"]]}).to_string();
        let person = text(&context["person_properties"]);
        let distinct_id = context["distinct_id"].as_str().unwrap_or("user");
        for (which, parts) in [
            ("hogflare", [hogflare.as_str(), ""]),
            ("posthog", ["", posthog.as_str()]),
        ] {
            seeds.push(Seed {
                name: format!("format-{index:02}-{which}"),
                input: crate::flags::write(&[parts[0], parts[1], &person, "{}", "{}", distinct_id]),
                events: None,
            });
        }
    }
    seeds
}
