//! From HTTP request parts to a list of raw event objects: where the payload comes from (body
//! or `data=` in the query), form bodies, content encodings, compression hints, the optimistic
//! and legacy base64 unwraps, and every envelope an SDK has ever used.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::codec::{self, Compression};
use super::error::{CoreError, Result};
use super::nesting::{check_depth, MAX_DEPTH};
use super::rawjson;
use super::timestamp;

#[path = "request_envelope.rs"]
mod envelope;

use envelope::classify;
pub use envelope::Unpacked;

/// Which family of route received the request; it decides the legacy unwrap, the default event
/// name for items without one, and the recording rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `/i/v0/e`, `/batch`
    Event,
    /// `/e`, `/capture`, `/track`
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
    /// `/i/v1/analytics/events`: PostHog's capture v1, each event answered on its own
    AnalyticsV1,
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
            "analytics_v1" => Self::AnalyticsV1,
            _ => return None,
        })
    }

    /// PostHog unwraps base64 a second time on its legacy paths (`/e`, `/capture`, `/track`,
    /// `/engage`); Hogflare's own routes are treated the same.
    fn is_legacy(self) -> bool {
        !matches!(self, Self::Event | Self::Recording | Self::AnalyticsV1)
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

#[cfg(test)]
impl<'a> RequestParts<'a> {
    /// A POST of `body` with no query string nor content headers, as most tests send.
    pub(crate) fn posted(route: RouteKind, body: &'a [u8]) -> Self {
        Self {
            route,
            body,
            query: b"",
            content_type: None,
            content_encoding: None,
        }
    }
}

/// The request-level facts found while unpacking.
#[derive(Debug, Default)]
pub struct Envelope {
    pub token: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub historical_migration: bool,
    /// Fields of a form body or of a `{"data": …}` envelope that items inherit when they lack
    /// them: key and raw JSON value.
    pub shared: Vec<(String, String)>,
    /// The keys of `shared`, so that an envelope of many fields is not quadratic to read.
    shared_keys: HashSet<String>,
}

impl Envelope {
    fn share(&mut self, key: &str, raw: String) {
        if self.shared_keys.insert(key.to_owned()) {
            self.shared.push((key.to_owned(), raw));
        }
    }

    /// What the copies of the shared fields would take if every item carried them.
    fn shared_bytes(&self, items: usize) -> usize {
        let one: usize = self.shared.iter().map(|(key, raw)| key.len() + raw.len()).sum();
        one.saturating_mul(items)
    }
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

/// A `data=` value, from the query or a form: base64 even without a compression hint, as
/// posthog-js's legacy transports send it, and unwrapped before a gzip hint applies.
fn data_field(data: String, hint: Compression) -> Vec<u8> {
    let data = repair_base64_spaces(data).into_bytes();
    if unwraps_base64(hint) && codec::looks_like_base64(&data) {
        optimistic_base64(data)
    } else {
        data
    }
}

/// A body that merely looks like base64 (`null`, `true`, a four-letter word) is kept as sent
/// unless its decoding is something a client packs: JSON, gzip, zlib, or base64 again (legacy
/// routes); so such a body's error names the body, not the bytes of a decoding nobody sent.
fn optimistic_base64(body: Vec<u8>) -> Vec<u8> {
    match codec::base64_decode(&body) {
        Ok(decoded) if is_packed_payload(&decoded) => decoded,
        _ => body,
    }
}

fn starts_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['))
}

fn is_packed_payload(decoded: &[u8]) -> bool {
    starts_like_json(decoded) || codec::is_gzip(decoded) || codec::is_zlib(decoded) || codec::is_strict_base64(decoded)
}

/// Whether a payload that looks like base64 is decoded before the hint applies: always but for
/// an explicit base64 or lz64 hint (lz64 text looks like base64 and is its own decoding), as
/// PostHog's capture does, since a client that base64-encodes its gzip still names it gzip.
fn unwraps_base64(hint: Compression) -> bool {
    matches!(hint, Compression::None | Compression::Gzip)
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
        "gzip" | "x-gzip" | "gzip-js" => (None, Compression::Gzip),
        "deflate" | "zlib" => (Some(codec::inflate_deflate(body, cap)?), Compression::None),
        "br" => (Some(codec::unbrotli(body, cap)?), Compression::None),
        "zstd" => (Some(codec::unzstd(body, cap)?), Compression::None),
        "lz64" | "lz-string" => (None, Compression::Lz64),
        "base64" | "b64" => (None, Compression::Base64),
        // `identity`, and as PostHog reads it, an encoding it does not know: no hint (gzip is
        // still recognised by its magic bytes).
        _ => (None, Compression::None),
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
        data_field(data, hint)
    } else {
        let (decoded, encoding_hint) = apply_content_encoding(parts.body, parts.content_encoding, cap)?;
        let body = decoded.unwrap_or_else(|| parts.body.to_vec());
        // curl and some proxies label any body a form: one that starts like JSON is JSON, and
        // gzip or base64 (which no form can be) are what their bytes say.
        let is_form = (is_form_content_type(parts.content_type)
            && !starts_like_json(&body)
            && !codec::is_gzip(&body)
            && !codec::looks_like_base64(&body))
            || body.starts_with(b"data=");
        if is_form {
            let mut data = None;
            for (key, value) in form_urlencoded::parse(&body) {
                match key.as_ref() {
                    "data" => data = Some(value.into_owned()),
                    "compression" if hint == Compression::None && !value.is_empty() => {
                        hint = Compression::from_hint(&value);
                    }
                    "api_key" | "token" if !value.trim().is_empty() => {
                        envelope.share(&key, rawjson::string_literal(&value));
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
            data_field(data, hint)
        } else {
            if hint == Compression::None {
                hint = encoding_hint;
            }
            let starts_like_form = FORM_PREFIXES.iter().any(|prefix| body.starts_with(prefix));
            if unwraps_base64(hint) && !starts_like_form && codec::looks_like_base64(&body) {
                optimistic_base64(body)
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
        bytes = codec::decompress(optimistic_base64(bytes), Compression::None, cap)?;
    }
    let unpacked = classify(into_text(bytes)?, &mut envelope, hint, cap, 0)?;
    // Each item that lacks a shared field gets its own copy, so the copies count against the
    // cap as if the client had sent them: else one large field beside many small items would
    // take memory in proportion to their product.
    let copies = unpacked.envelope.shared_bytes(unpacked.items.len());
    if unpacked.text.len().saturating_add(copies) > cap {
        return Err(CoreError::PayloadTooLarge { limit: cap });
    }
    Ok(unpacked)
}

/// Capture v1's body: JSON, packed by its `Content-Encoding` only (gzip also by its magic bytes).
pub fn v1_text(parts: &RequestParts<'_>, cap: usize) -> Result<String> {
    let (decoded, hint) = apply_content_encoding(parts.body, parts.content_encoding, cap)?;
    let body = decoded.unwrap_or_else(|| parts.body.to_vec());
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CoreError::EmptyPayload);
    }
    into_text(codec::decompress(body, hint, cap)?)
}

/// A body in a legacy shape that hogflare wrote itself (capture v1's events, translated).
pub fn unpack_json(text: String, cap: usize) -> Result<Unpacked> {
    classify(text, &mut Envelope::default(), Compression::None, cap, 0)
}

fn into_text(bytes: Vec<u8>) -> Result<String> {
    check_depth(&bytes, MAX_DEPTH)?;
    let text =
        String::from_utf8(bytes).map_err(|err| CoreError::InvalidJson(format!("payload is not valid utf-8: {err}")))?;
    let repaired = match rawjson::replace_lone_surrogates(&text) {
        Cow::Owned(repaired) => Some(repaired),
        Cow::Borrowed(_) => None,
    };
    Ok(repaired.unwrap_or(text))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
