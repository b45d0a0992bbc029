//! Request bodies in every envelope and encoding the SDKs send, and the errors for the rest.

use super::*;
use base64::Engine;
use sonic_rs::{json, JsonValueTrait};

fn first_event(out: &Unpacked) -> String {
    let item: sonic_rs::Value = sonic_rs::from_str(out.item(0).as_str()).unwrap();
    item["event"].as_str().unwrap().to_owned()
}
use std::io::Write;

const CAP: usize = 1 << 20;

fn parts<'a>(route: RouteKind, body: &'a [u8], query: &'a [u8], ct: Option<&'a str>) -> RequestParts<'a> {
    RequestParts {
        route,
        body,
        query,
        content_type: ct,
        content_encoding: None,
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn every_envelope_shape() {
    let event = json!({"event": "e", "distinct_id": "d"});
    let cases = [
        json!([event]),
        json!({"api_key": "phc", "batch": [event], "sent_at": "2024-01-01T00:00:00Z"}),
        event.clone(),
        json!({"data": [event], "api_key": "phc"}),
        json!({"data": b64(event.to_string().as_bytes())}),
        // Hogflare's envelope of a packed body: base64 of gzip, the packing named beside it.
        json!({"data": b64(&gz(event.to_string().as_bytes())), "compression": "gzip"}),
        json!({"data": b64(&gz(event.to_string().as_bytes())), "compression": "gzip-js"}),
        json!({"data": b64(event.to_string().as_bytes()), "compression": "base64"}),
    ];
    for case in cases {
        let body = case.to_string();
        let out = unpack(&parts(RouteKind::Event, body.as_bytes(), b"", None), CAP).unwrap();
        assert_eq!(out.items.len(), 1, "{case}");
        assert_eq!(first_event(&out), "e");
    }
}

#[test]
fn shared_fields_count_against_the_cap_once_per_item() {
    let items = vec![r#"{"event":"a","distinct_id":"b"}"#; 100].join(",");
    let body = format!(r#"{{"data":[{items}],"pad":"{}"}}"#, "x".repeat(1000));
    let out = unpack(&parts(RouteKind::Event, body.as_bytes(), b"", None), 1 << 20).unwrap();
    assert_eq!(out.item_values().count(), 100);
    assert!(matches!(
        unpack(&parts(RouteKind::Event, body.as_bytes(), b"", None), 64 << 10),
        Err(CoreError::PayloadTooLarge { .. })
    ));
}

#[test]
fn item_values_follow_the_items_in_every_layout() {
    for body in [
        r#"{"k":1,"batch":[{"event":"a"},{"event":"b"}],"z":2}"#,
        r#"[{"event":"a"},{"event":"b"}]"#,
        r#"{"event":"a"}"#,
    ] {
        let out = unpack(&parts(RouteKind::Event, body.as_bytes(), b"", None), CAP).unwrap();
        let names: Vec<&str> = out.item_values().filter_map(|item| item["event"].as_str()).collect();
        assert_eq!(names, ["a", "b"][..out.items.len()], "{body}");
    }
}

#[test]
fn batch_envelope_reads_token_sent_at_and_historical_flag() {
    let body = json!({"token": "phc_x", "batch": [], "sent_at": "2024-01-01T00:00:00Z", "historical_migration": true});
    let out = unpack(&parts(RouteKind::Event, body.to_string().as_bytes(), b"", None), CAP).unwrap();
    assert_eq!(out.envelope.token.as_deref(), Some("phc_x"));
    assert!(out.envelope.historical_migration);
    assert!(out.envelope.sent_at.is_some());
}

#[test]
fn form_body_with_base64_data_and_the_plus_repair() {
    // The base64 of this JSON contains a '+', which urldecoding turns into a space.
    let json = br#"[{"event":">>>","distinct_id":"d"}]"#;
    let encoded = b64(json);
    assert!(encoded.contains('+'));
    let body = format!("data={encoded}&compression=base64");
    let out = unpack(
        &parts(
            RouteKind::Event,
            body.as_bytes(),
            b"",
            Some("application/x-www-form-urlencoded"),
        ),
        CAP,
    )
    .unwrap();
    assert_eq!(first_event(&out), ">>>");
}

#[test]
fn form_data_in_base64_without_a_hint() {
    let json = br#"[{"event":"e","distinct_id":"d"}]"#;
    let body = format!("data={}", b64(json));
    let form = Some("application/x-www-form-urlencoded");
    let out = unpack(&parts(RouteKind::Event, body.as_bytes(), b"", form), CAP).unwrap();
    assert_eq!(first_event(&out), "e");
}

#[test]
fn gzip_and_base64_bodies_labelled_a_form_are_what_their_bytes_say() {
    // `curl --data-binary @events.gz` labels the body a form.
    let json = br#"[{"event":"e","distinct_id":"d"}]"#;
    let form = Some("application/x-www-form-urlencoded");
    for (body, query) in [
        (gz(json), &b""[..]),
        (gz(json), b"compression=gzip-js"),
        (b64(json).into_bytes(), b""),
        (b64(&gz(json)).into_bytes(), b"compression=base64"),
    ] {
        let out = unpack(&parts(RouteKind::Event, &body, query, form), CAP).unwrap();
        assert_eq!(first_event(&out), "e");
    }
}

#[test]
fn gzip_body_with_and_without_hints() {
    let body = gz(br#"[{"event":"e","distinct_id":"d"}]"#);
    for query in [&b""[..], b"compression=gzip-js", b"compression=base64&_=1700000000000"] {
        let out = unpack(&parts(RouteKind::Event, &body, query, Some("text/plain")), CAP).unwrap();
        assert_eq!(out.items.len(), 1);
    }
}

#[test]
fn an_unknown_content_encoding_is_no_hint() {
    let plain = br#"[{"event":"e","distinct_id":"d"}]"#;
    let gzipped = gz(plain);
    for (body, encoding) in [
        (&plain[..], "compress"),
        (&gzipped[..], "gzip, deflate"),
        (&plain[..], "x-unheard-of"),
    ] {
        let mut request = parts(RouteKind::Event, body, b"", None);
        request.content_encoding = Some(encoding);
        assert_eq!(unpack(&request, CAP).unwrap().items.len(), 1, "{encoding}");
    }
}

#[test]
fn legacy_get_data_query() {
    let data = b64(br#"{"event":"e","properties":{"distinct_id":"d","token":"t"}}"#);
    let query = format!("data={data}&ip=1&_=1700000000000");
    let out = unpack(&parts(RouteKind::LegacyEvent, b"", query.as_bytes(), None), CAP).unwrap();
    assert_eq!(first_event(&out), "e");
    assert!(out.envelope.sent_at.is_some());
}

#[test]
fn legacy_routes_unwrap_base64_twice() {
    let inner = b64(br#"{"event":"e","distinct_id":"d"}"#);
    let outer = b64(inner.as_bytes());
    let out = unpack(&parts(RouteKind::LegacyEvent, outer.as_bytes(), b"", None), CAP).unwrap();
    assert_eq!(first_event(&out), "e");
    assert!(unpack(&parts(RouteKind::Event, outer.as_bytes(), b"", None), CAP).is_err());
}

#[test]
fn a_body_that_only_looks_like_base64_is_read_as_sent() {
    // `null`, `true` and `abcd` are valid base64 of bytes no client packs: the error is about
    // the body itself.
    for (body, form) in [("null", "data=null"), ("true", "data=true")] {
        for (sent, ct) in [(body, None), (form, Some("application/x-www-form-urlencoded"))] {
            for route in [RouteKind::Event, RouteKind::LegacyEvent] {
                let err = unpack(&parts(route, sent.as_bytes(), b"", ct), CAP).unwrap_err();
                assert!(matches!(err, CoreError::InvalidShape(_)), "{sent}: {err:?}");
            }
        }
    }
    match unpack(&parts(RouteKind::Event, b"abcd", b"", None), CAP) {
        Err(CoreError::InvalidJson(detail)) => assert!(!detail.contains("utf-8"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors() {
    assert!(matches!(
        unpack(&parts(RouteKind::Event, b"", b"", None), CAP),
        Err(CoreError::EmptyPayload)
    ));
    assert!(matches!(
        unpack(&parts(RouteKind::Event, b"{", b"", None), CAP),
        Err(CoreError::InvalidJson(_))
    ));
    assert!(matches!(
        unpack(&parts(RouteKind::Event, b"42", b"", None), CAP),
        Err(CoreError::InvalidShape(_))
    ));
    match unpack(
        &parts(RouteKind::Event, br#"{"distinct_id": secret-value}"#, b"", None),
        CAP,
    ) {
        Err(CoreError::InvalidJson(why)) => {
            assert!(
                why.contains("column") && !why.contains("secret") && !why.contains('\n'),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    let form = parts(
        RouteKind::Event,
        b"ver=1",
        b"",
        Some("application/x-www-form-urlencoded"),
    );
    assert!(matches!(unpack(&form, CAP), Err(CoreError::InvalidForm(_))));
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert!(matches!(
        unpack(&parts(RouteKind::Event, deep.as_bytes(), b"", None), CAP),
        Err(CoreError::InvalidJson(_))
    ));
    let invalid_utf8 = b"[{\"event\":\"\xff\"}]";
    assert!(matches!(
        unpack(&parts(RouteKind::Event, invalid_utf8, b"", None), CAP),
        Err(CoreError::InvalidJson(_))
    ));
}

#[test]
fn base64_of_gzip_named_gzip_is_unwrapped_first() {
    let body = b64(&gz(br#"[{"event":"e","distinct_id":"d"}]"#));
    for (route, query, encoding) in [
        (RouteKind::Event, &b"compression=gzip-js"[..], None),
        (RouteKind::Event, &b"compression=gzip"[..], None),
        (RouteKind::Event, &b""[..], Some("gzip")),
        (RouteKind::LegacyEvent, &b"compression=gzip-js"[..], None),
    ] {
        let request = RequestParts {
            content_encoding: encoding,
            ..parts(route, body.as_bytes(), query, Some("text/plain"))
        };
        let out = unpack(&request, CAP).unwrap();
        assert_eq!(first_event(&out), "e", "{:?} {encoding:?}", std::str::from_utf8(query));
    }
    let query = format!("data={}&compression=gzip-js", body.replace('+', "%2B"));
    let out = unpack(&parts(RouteKind::Event, b"", query.as_bytes(), None), CAP).unwrap();
    assert_eq!(first_event(&out), "e");
}
