//! From HTTP request parts to a list of raw event objects: where the payload comes from (body
//! or `data=` in the query), form bodies, content encodings, compression hints, the optimistic
//! and legacy base64 unwraps, and every envelope an SDK has ever used.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::codec::{self, Compression};
use super::error::{CoreError, Result};
use super::timestamp;

/// Which family of route received the request; it decides the legacy unwrap, the default event
/// name for items without one, and the recording rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `/i/v0/e`, `/batch`
    Event,
    /// `/e`, `/capture`, `/track`: PostHog unwraps base64 a second time on these
    LegacyEvent,
    /// `/engage`: an item without `event` is a `$identify`
    Engage,
    /// Hogflare's `/identify`
    Identify,
    /// Hogflare's `/alias`
    Alias,
    /// Hogflare's `/groups`
    Groups,
    /// `/s`: session recording snapshots
    Recording,
}

impl RouteKind {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "event" => Self::Event,
            "legacy" => Self::LegacyEvent,
            "engage" => Self::Engage,
            "identify" => Self::Identify,
            "alias" => Self::Alias,
            "groups" => Self::Groups,
            "recording" => Self::Recording,
            _ => return None,
        })
    }

    fn is_legacy(self) -> bool {
        !matches!(self, Self::Event | Self::Recording)
    }
}

/// What the HTTP layer hands over for one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub route: RouteKind,
    pub body: &'a [u8],
    pub query: &'a [u8],
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
}

/// The request-level facts found while unpacking.
#[derive(Debug, Default)]
pub struct Envelope {
    pub token: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub historical_migration: bool,
    /// Fields of a form body or of a `{"data": …}` envelope that items inherit when they lack them.
    pub shared: Map<String, Value>,
}

#[derive(Debug)]
pub struct Unpacked {
    pub items: Vec<Value>,
    pub envelope: Envelope,
}

#[derive(Debug, Default)]
struct QueryParams {
    data: Option<String>,
    compression: Option<String>,
    underscore: Option<String>,
    sent_at: Option<String>,
}

fn parse_query(query: &[u8]) -> QueryParams {
    let mut params = QueryParams::default();
    for (key, value) in form_urlencoded::parse(query) {
        let slot = match key.as_ref() {
            "data" => &mut params.data,
            "compression" | "compression_method" => &mut params.compression,
            "_" => &mut params.underscore,
            "sent_at" => &mut params.sent_at,
            _ => continue,
        };
        if !value.is_empty() && value != "undefined" && slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    params
}

/// urldecoding turns `+` into a space; in base64 data a space can only have been a `+`.
fn repair_base64_spaces(value: String) -> String {
    let loose = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' '));
    if loose && value.contains(' ') {
        value.replace(' ', "+")
    } else {
        value
    }
}

fn is_form_content_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// `Content-Encoding` either packs the whole body (deflate, brotli) or is a compression hint.
fn apply_content_encoding(body: &[u8], encoding: Option<&str>, cap: usize) -> Result<(Option<Vec<u8>>, Compression)> {
    let Some(encoding) = encoding.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok((None, Compression::None));
    };
    let lower = encoding.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "identity" => (None, Compression::None),
        "gzip" | "x-gzip" | "gzip-js" => (None, Compression::Gzip),
        "deflate" | "zlib" => (Some(codec::inflate_deflate(body, cap)?), Compression::None),
        "br" => (Some(codec::unbrotli(body, cap)?), Compression::None),
        "lz64" | "lz-string" => (None, Compression::Lz64),
        "base64" | "b64" => (None, Compression::Base64),
        _ => return Err(CoreError::UnsupportedContentEncoding(encoding.to_owned())),
    })
}

const FORM_PREFIXES: [&[u8]; 5] = [b"data=", b"ver=", b"_=", b"ip=", b"compression="];

pub fn unpack(parts: &RequestParts<'_>, cap: usize) -> Result<Unpacked> {
    let query = parse_query(parts.query);
    let mut envelope = Envelope {
        sent_at: query
            .sent_at
            .as_deref()
            .and_then(timestamp::parse_text)
            .or_else(|| query.underscore.as_deref().and_then(timestamp::parse_query_millis)),
        ..Envelope::default()
    };
    let mut hint = query
        .compression
        .as_deref()
        .map_or(Compression::None, Compression::from_hint);

    let payload: Vec<u8> = if let Some(data) = query.data {
        let data = repair_base64_spaces(data).into_bytes();
        if hint == Compression::None && codec::looks_like_base64(&data) {
            codec::base64_decode(&data).unwrap_or(data)
        } else {
            data
        }
    } else {
        let (decoded, encoding_hint) = apply_content_encoding(parts.body, parts.content_encoding, cap)?;
        let body = decoded.unwrap_or_else(|| parts.body.to_vec());
        // curl and some proxies label JSON as a form; a body that starts like JSON is JSON.
        let looks_like_json = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'['));
        let is_form = (is_form_content_type(parts.content_type) && !looks_like_json) || body.starts_with(b"data=");
        if is_form {
            let mut data = None;
            for (key, value) in form_urlencoded::parse(&body) {
                match key.as_ref() {
                    "data" => data = Some(value.into_owned()),
                    "compression" if hint == Compression::None && !value.is_empty() => {
                        hint = Compression::from_hint(&value);
                    }
                    "api_key" | "token" if !value.trim().is_empty() => {
                        envelope
                            .shared
                            .entry(key.into_owned())
                            .or_insert(Value::String(value.into_owned()));
                    }
                    _ => {}
                }
            }
            let Some(data) = data.filter(|d| !d.is_empty()) else {
                return Err(CoreError::InvalidForm("missing data field".into()));
            };
            if hint == Compression::None {
                hint = encoding_hint;
            }
            repair_base64_spaces(data).into_bytes()
        } else {
            if hint == Compression::None {
                hint = encoding_hint;
            }
            let starts_like_form = FORM_PREFIXES.iter().any(|prefix| body.starts_with(prefix));
            if hint == Compression::None && !starts_like_form && codec::looks_like_base64(&body) {
                codec::base64_decode(&body).unwrap_or(body)
            } else {
                body
            }
        }
    };
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(CoreError::EmptyPayload);
    }

    let mut bytes = codec::decompress(payload, hint, cap)?;
    if parts.route.is_legacy() && codec::is_strict_base64(&bytes) {
        bytes = codec::decompress(codec::base64_decode(&bytes)?, Compression::None, cap)?;
    }
    let value = parse_json(&bytes)?;
    let items = classify(value, &mut envelope, hint, cap, 0)?;
    Ok(Unpacked { items, envelope })
}

pub fn parse_json(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|err| CoreError::InvalidJson(err.to_string()))
}

/// Sort out the envelopes: a bare array, `{batch: […]}`, `{data: …}`, or one event.
fn classify(value: Value, envelope: &mut Envelope, hint: Compression, cap: usize, depth: u8) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) => {
            if matches!(map.get("batch"), Some(Value::Array(_))) {
                if let Some(token) = super::token::from_envelope(&map) {
                    envelope.token = Some(token.to_owned());
                }
                if let Some(sent_at) = map.get("sent_at").and_then(timestamp::parse_value) {
                    envelope.sent_at = Some(sent_at);
                }
                envelope.historical_migration = matches!(map.get("historical_migration"), Some(Value::Bool(true)));
                let Some(Value::Array(items)) = map.shift_remove("batch") else {
                    unreachable!("checked above");
                };
                Ok(items)
            } else if depth == 0 && map.contains_key("data") && !map.contains_key("event") {
                let inner = map.shift_remove("data").unwrap_or(Value::Null);
                let inner_hint = map
                    .get("compression")
                    .and_then(Value::as_str)
                    .map_or(hint, Compression::from_hint);
                let inner = match inner {
                    Value::String(text) => {
                        let raw = text.into_bytes();
                        let bytes = codec::base64_decode(&raw).unwrap_or(raw);
                        parse_json(&codec::decompress(bytes, inner_hint, cap)?)?
                    }
                    other @ (Value::Array(_) | Value::Object(_)) => other,
                    _ => {
                        return Err(CoreError::InvalidShape(
                            "`data` must be an object, an array or a string".into(),
                        ))
                    }
                };
                for (key, value) in map {
                    if !key.starts_with("compression") {
                        envelope.shared.entry(key).or_insert(value);
                    }
                }
                classify(inner, envelope, hint, cap, depth + 1)
            } else {
                Ok(vec![Value::Object(map)])
            }
        }
        _ => Err(CoreError::InvalidShape("expected a json object or array".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;
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
        ];
        for case in cases {
            let body = case.to_string();
            let out = unpack(&parts(RouteKind::Event, body.as_bytes(), b"", None), CAP).unwrap();
            assert_eq!(out.items.len(), 1, "{case}");
            assert_eq!(out.items[0]["event"], "e");
        }
    }

    #[test]
    fn batch_envelope_reads_token_sent_at_and_historical_flag() {
        let body =
            json!({"token": "phc_x", "batch": [], "sent_at": "2024-01-01T00:00:00Z", "historical_migration": true});
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
        assert_eq!(out.items[0]["event"], ">>>");
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
    fn legacy_get_data_query() {
        let data = b64(br#"{"event":"e","properties":{"distinct_id":"d","token":"t"}}"#);
        let query = format!("data={data}&ip=1&_=1700000000000");
        let out = unpack(&parts(RouteKind::LegacyEvent, b"", query.as_bytes(), None), CAP).unwrap();
        assert_eq!(out.items[0]["event"], "e");
        assert!(out.envelope.sent_at.is_some());
    }

    #[test]
    fn legacy_routes_unwrap_base64_twice() {
        let inner = b64(br#"{"event":"e","distinct_id":"d"}"#);
        let outer = b64(inner.as_bytes());
        let out = unpack(&parts(RouteKind::LegacyEvent, outer.as_bytes(), b"", None), CAP).unwrap();
        assert_eq!(out.items[0]["event"], "e");
        assert!(unpack(&parts(RouteKind::Event, outer.as_bytes(), b"", None), CAP).is_err());
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
        let form = parts(
            RouteKind::Event,
            b"ver=1",
            b"",
            Some("application/x-www-form-urlencoded"),
        );
        assert!(matches!(unpack(&form, CAP), Err(CoreError::InvalidForm(_))));
        let mut bad = parts(RouteKind::Event, b"[]", b"", None);
        bad.content_encoding = Some("compress");
        assert!(matches!(
            unpack(&bad, CAP),
            Err(CoreError::UnsupportedContentEncoding(_))
        ));
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
}
