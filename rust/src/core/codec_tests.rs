//! The body codecs: gzip members and trailers, caps, base64 and hints.

use super::*;
use std::io::Write;

fn gz(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn gzip_is_recognised_without_a_hint() {
    let body = gz(br#"{"event":"x"}"#);
    assert_eq!(
        decompress(body, Compression::None, 1 << 20).unwrap(),
        br#"{"event":"x"}"#
    );
}

#[test]
fn gzip_bomb_stops_at_the_cap() {
    let body = gz(&vec![0u8; 64 * 1024]);
    assert!(body.len() < 200);
    let err = decompress(body, Compression::Gzip, 1024).unwrap_err();
    assert!(matches!(err, CoreError::PayloadTooLarge { limit: 1024 }));
}

/// Bodies that inflate past what is stored first, each packed so that nothing tells their
/// size before they are inflated.
fn silent_about_their_size(data: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    // Two members: the trailer speaks of the second alone.
    let mut gzip = gz(&data[..data.len() / 3]);
    gzip.extend(gz(&data[data.len() / 3..]));
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(data).unwrap();
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    deflate.write_all(data).unwrap();
    let mut brotli = Vec::new();
    brotli::BrotliCompress(
        &mut &data[..],
        &mut brotli,
        &brotli::enc::BrotliEncoderParams::default(),
    )
    .unwrap();
    vec![
        ("gzip", gzip),
        ("zlib", zlib.finish().unwrap()),
        ("deflate", deflate.finish().unwrap()),
        ("brotli", brotli),
        ("zstd", zstd::encode_all(data, 1).unwrap()),
    ]
}

fn inflate(codec: &str, body: &[u8], cap: usize) -> Result<Vec<u8>> {
    match codec {
        "gzip" => gunzip(body, cap),
        "zlib" | "deflate" => inflate_deflate(body, cap),
        "brotli" => unbrotli(body, cap),
        _ => unzstd(body, cap),
    }
}

#[test]
fn a_body_past_what_is_stored_first_is_counted_then_refused_or_inflated_whole() {
    let data: Vec<u8> = (0..STORED_FIRST + (1 << 20))
        .map(|at| b"{\"event\":\"$pageview\"},"[at % 22])
        .collect();
    for (codec, body) in silent_about_their_size(&data) {
        assert!(body.len() < 1 << 20, "{codec}");
        let refused = inflate(codec, &body, data.len() - 1).unwrap_err();
        assert!(
            matches!(refused, CoreError::PayloadTooLarge { .. }),
            "{codec}: {refused}"
        );
        assert!(inflate(codec, &body, data.len()).unwrap() == data, "{codec}");
    }
    // A gzip trailer that lies about the size is refused at the cap too.
    let mut forged = gz(&data);
    let end = forged.len();
    forged[end - 4..].copy_from_slice(&100u32.to_le_bytes());
    let refused = gunzip(&forged, data.len() - 1).unwrap_err();
    assert!(matches!(refused, CoreError::PayloadTooLarge { .. }), "{refused}");
}

#[test]
fn every_member_of_a_gzip_body_is_read() {
    // Members of equal size: the last one's trailer gives the first one's size too.
    let mut body = gz(br#"[{"event":"a"},"#);
    body.extend(gz(br#"{"event":"bb"}]"#));
    assert_eq!(gunzip(&body, 1 << 20).unwrap(), br#"[{"event":"a"},{"event":"bb"}]"#);
}

#[test]
fn bytes_after_the_last_member_are_ignored() {
    let json = br#"{"api_key":"phc_a","batch":[{"event":"e","distinct_id":"x"}]}"#;
    for tail in [
        &b"\n"[..],
        b"\r\n",
        b" ",
        b"\0\0",
        b"\0\0\0\0\0\0\0\0\0",
        b"garbage after",
        b"\x1f\x8b",
        b"\x1f\x8b\x08\0",
    ] {
        let mut body = gz(json);
        body.extend_from_slice(tail);
        assert_eq!(gunzip(&body, 1 << 20).unwrap(), json, "{tail:?}");
        // Several members, then the stray bytes.
        let mut two = gz(&json[..10]);
        two.extend(gz(&json[10..]));
        two.extend_from_slice(tail);
        assert_eq!(gunzip(&two, 1 << 20).unwrap(), json, "{tail:?}");
    }
    // A stray tail does not hide a bomb from the cap.
    let mut bomb = gz(&vec![0u8; 64 * 1024]);
    bomb.extend_from_slice(b"\n");
    assert!(matches!(
        gunzip(&bomb, 1024),
        Err(CoreError::PayloadTooLarge { limit: 1024 })
    ));
    // A member cut short is still an error.
    let whole = gz(json);
    let cut = &whole[..whole.len() - 6];
    assert!(matches!(gunzip(cut, 1 << 20), Err(CoreError::Decompression { .. })));
}

#[test]
fn exactly_at_the_cap_passes_and_one_more_fails() {
    let data = vec![b'a'; 1000];
    assert_eq!(gunzip(&gz(&data), 1000).unwrap().len(), 1000);
    assert!(matches!(
        gunzip(&gz(&data), 999),
        Err(CoreError::PayloadTooLarge { .. })
    ));
    // The same without a size to read beforehand.
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(&data).unwrap();
    let zlib = zlib.finish().unwrap();
    assert_eq!(inflate_zlib(&zlib, 1000).unwrap().len(), 1000);
    assert!(matches!(
        inflate_zlib(&zlib, 999),
        Err(CoreError::PayloadTooLarge { .. })
    ));
}

#[test]
fn base64_hint_accepts_missing_padding_and_whitespace() {
    assert_eq!(
        decompress(b"eyJhIjox\nfQ".to_vec(), Compression::Base64, 100).unwrap(),
        br#"{"a":1}"#
    );
}

#[test]
fn json_under_a_base64_hint_is_read_as_sent() {
    for body in [&br#"[{"event":"e"}]"#[..], br#" {"a":1}"#] {
        assert_eq!(decompress(body.to_vec(), Compression::Base64, 100).unwrap(), body);
    }
    assert!(matches!(
        decompress(b"not base64!".to_vec(), Compression::Base64, 100),
        Err(CoreError::Decompression { codec: "base64", .. })
    ));
}

#[test]
fn hints_are_case_insensitive_and_unknown_means_none() {
    assert_eq!(Compression::from_hint("GZIP-JS"), Compression::Gzip);
    assert_eq!(Compression::from_hint("lz-string"), Compression::Lz64);
    assert_eq!(Compression::from_hint("b64"), Compression::Base64);
    assert_eq!(Compression::from_hint("undefined"), Compression::None);
}

#[test]
fn zlib_under_a_gzip_hint_is_inflated() {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(b"[1]").unwrap();
    let body = enc.finish().unwrap();
    assert!(is_zlib(&body));
    assert_eq!(decompress(body, Compression::Gzip, 100).unwrap(), b"[1]");
}

#[test]
fn optimistic_base64_check() {
    assert!(looks_like_base64(b"eyJhIjoxfQ=="));
    assert!(!looks_like_base64(br#"{"a":1}"#));
    assert!(!looks_like_base64(b"abc"));
}
