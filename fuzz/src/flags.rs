//! The flags target: one fuzz input is a flag set (Hogflare's format and PostHog's
//! local-evaluation document) and a user to evaluate it for.
//!
//! The input is split at 0xFF bytes, which UTF-8 never contains, into
//! [`PART_NAMES`]; missing parts take a neutral default.

use chrono::{DateTime, TimeZone, Utc};
use hogflare::core::flags::{FlagSet, Request, Shape};

use crate::json;

/// The parts of a flags input, in order.
pub const PART_NAMES: [&str; 8] = [
    "hogflare",
    "definitions",
    "person_properties",
    "groups",
    "group_properties",
    "distinct_id",
    "anon_distinct_id",
    "device_id",
];

/// Join parts into a fuzz input (the inverse of the split).
pub fn write(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            out.push(0xff);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A fixed instant, so that relative dates evaluate the same on replay.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).single().unwrap_or_default()
}

/// Compile and evaluate one fuzz input and check what came out; a broken invariant panics.
/// Returns how many flags compiled and how many of them are enabled for the user.
pub fn run(data: &[u8]) -> (usize, usize) {
    let parts: Vec<String> = data
        .split(|byte| *byte == 0xff)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    let part = |index: usize, default: &'static str| parts.get(index).map_or(default, String::as_str);
    let (set, problems) = FlagSet::compile(Some(part(0, "")), Some(part(1, "")));
    assert!(problems.iter().all(|problem| !problem.is_empty()));

    let request = Request {
        distinct_id: part(5, "user"),
        person_properties: part(2, "{}"),
        groups: part(3, "{}"),
        group_properties: part(4, "{}"),
        anon_distinct_id: parts.get(6).map(String::as_str),
        device_id: parts.get(7).map(String::as_str),
        ..Request::default()
    };
    let results = set.evaluate(&request, now());
    assert_eq!(results.len(), set.len(), "every flag is answered");
    for (flag, result) in &results {
        let key = &flag.definition.key;
        assert!(
            result.enabled || result.variant.is_none(),
            "{key}: a variant of a disabled flag"
        );
        // A payload is served as the document stored it, JSON or not, as PostHog does.
        assert!(
            result.enabled || result.payload.is_none(),
            "{key}: a payload for a disabled flag"
        );
    }
    let again: Vec<_> = set
        .evaluate(&request, now())
        .into_iter()
        .map(|(_, result)| result)
        .collect();
    assert!(
        results.iter().map(|(_, result)| result).eq(again.iter()),
        "evaluation is deterministic"
    );
    let body = set.evaluate_json(&request, now());
    let keys = json::object_keys(&body).unwrap_or_else(|err| panic!("flags body: {err}"));
    assert_eq!(keys, [b"flags".to_vec(), b"errorsWhileComputingFlags".to_vec()]);
    for shape in [
        Shape::Flags,
        Shape::FlagsTyped,
        Shape::DecideV1,
        Shape::DecideV2,
        Shape::DecideV3,
    ] {
        let answer = set.respond(&results, shape, "rid", 0);
        json::check_value(&answer).unwrap_or_else(|err| panic!("{shape:?} answer: {err}\n{answer}"));
    }

    if let Some((first, _)) = results.first() {
        let only = [first.definition.key.clone()];
        let asked = Request {
            flag_keys: Some(&only),
            ..request
        };
        let one = set.evaluate(&asked, now());
        assert_eq!(one.len(), 1, "asking for one flag answers one");
    }

    // The document served to SDKs for local evaluation compiles back without complaint.
    let definitions = set.definitions_json();
    json::check_value(&definitions).unwrap_or_else(|err| panic!("definitions: {err}"));
    let (again, problems) = FlagSet::compile(None, Some(&definitions));
    assert!(
        problems.is_empty(),
        "served definitions do not compile: {problems:?}\n{definitions}"
    );
    assert!(again.keys().all(|key| set.keys().any(|k| k == key)));

    let enabled = results.iter().filter(|(_, result)| result.enabled).count();
    (set.len(), enabled)
}
