//! Byte-level codecs for request bodies: gzip, zlib, brotli, base64 and lz-string, each with a
//! hard cap on the bytes it may produce, so a decompression bomb costs milliseconds, not memory.

use std::io::Read;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};

use super::error::{CoreError, Result};
use super::lz64;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What the client told us (or what we recognised) about how the payload is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Lz64,
    Base64,
}

impl Compression {
    /// PostHog's hint names, matched case-insensitively; anything unknown means "no hint".
    pub fn from_hint(value: &str) -> Self {
        let value = value.trim();
        if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("gzip-js") {
            Self::Gzip
        } else if value.eq_ignore_ascii_case("lz64") || value.eq_ignore_ascii_case("lz-string") {
            Self::Lz64
        } else if value.eq_ignore_ascii_case("base64") || value.eq_ignore_ascii_case("b64") {
            Self::Base64
        } else {
            Self::None
        }
    }
}

pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// A zlib stream starts with CMF=0x78 (deflate, 32K window) and a header checksum.
pub fn is_zlib(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x78 && (u16::from(bytes[0]) << 8 | u16::from(bytes[1])) % 31 == 0
}

/// Up to this much is inflated straight into the result. Past it the rest is only counted, in a
/// small buffer, so a bomb is refused without its output ever being held (a forged gzip trailer
/// or a deflate stream says nothing of its size beforehand), and a body that does fit under the
/// cap is inflated a second time, into a buffer of its size.
const STORED_FIRST: usize = 8 << 20;

fn read_capped<R: Read>(
    open: impl Fn() -> Result<R>,
    cap: usize,
    codec: &'static str,
    size_hint: usize,
) -> Result<Vec<u8>> {
    let failed = |err: std::io::Error| CoreError::Decompression {
        codec,
        detail: err.to_string(),
    };
    let first = STORED_FIRST.min(cap);
    let mut out = Vec::with_capacity(size_hint.min(first));
    let mut reader = open()?;
    (&mut reader)
        .take(first as u64 + 1)
        .read_to_end(&mut out)
        .map_err(failed)?;
    if out.len() <= first {
        return Ok(out);
    }
    let mut total = out.len();
    drop(out);
    let mut scratch = vec![0u8; 64 << 10];
    while total <= cap {
        match reader.read(&mut scratch) {
            Ok(0) => break,
            Ok(read) => total += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(failed(err)),
        }
    }
    if total > cap {
        return Err(CoreError::PayloadTooLarge { limit: cap });
    }
    let mut out = Vec::with_capacity(total);
    open()?.read_to_end(&mut out).map_err(failed)?;
    Ok(out)
}

thread_local! {
    static LIBDEFLATE: std::cell::RefCell<libdeflater::Decompressor> =
        std::cell::RefCell::new(libdeflater::Decompressor::new());
}

/// Every member of a gzip body in turn (`gzip -c a b`). Bytes after a member that begin no other
/// (a newline a proxy added) end the body: PostHog's capture reads one member and ignores what
/// follows it.
struct GzipMembers<'a> {
    member: flate2::bufread::GzDecoder<&'a [u8]>,
}

impl Read for GzipMembers<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let read = self.member.read(buf)?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            let rest: &[u8] = self.member.get_ref();
            // Too short to be a member (the smallest is 18 bytes), it is stray bytes too.
            if rest.len() < 18 || !is_gzip(rest) {
                return Ok(0);
            }
            self.member = flate2::bufread::GzDecoder::new(rest);
        }
    }
}

/// Gunzip with libdeflate when the trailer's size field makes it possible (a single member, the
/// common case: it is several times faster than a streaming inflate on small bodies), else stream.
pub fn gunzip(bytes: &[u8], cap: usize) -> Result<Vec<u8>> {
    if bytes.len() >= 18 {
        let trailer: [u8; 4] = bytes[bytes.len() - 4..].try_into().unwrap_or_default();
        // The size field is the true size modulo 2^32, so the true size is at least this much,
        // when the body's last bytes are its trailer; past the cap, the streaming decoder below
        // tells a bomb (refused at the cap) from bytes after the trailer.
        let size = u32::from_le_bytes(trailer) as usize;
        let mut out = vec![0u8; if size > cap { 0 } else { size }];
        let done = LIBDEFLATE.with(|decompressor| decompressor.borrow_mut().gzip_decompress(bytes, &mut out));
        // libdeflate reads the first member and ignores what follows it, checking the first
        // member's own trailer: the body's last trailer must also describe what it read, or
        // there were several members.
        let crc: [u8; 4] = bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap_or_default();
        if size <= cap
            && done.is_ok_and(|written| written == size)
            && libdeflater::crc32(&out) == u32::from_le_bytes(crc)
        {
            return Ok(out);
        }
    }
    // Several members, bytes after the last, or a broken stream: the streaming decoder handles
    // the first two and explains the third.
    read_capped(
        || {
            Ok(GzipMembers {
                member: flate2::bufread::GzDecoder::new(bytes),
            })
        },
        cap,
        "gzip",
        bytes.len() * 8,
    )
}

pub fn inflate_zlib(bytes: &[u8], cap: usize) -> Result<Vec<u8>> {
    read_capped(
        || Ok(flate2::read::ZlibDecoder::new(bytes)),
        cap,
        "zlib",
        bytes.len() * 8,
    )
}

pub fn inflate_raw_deflate(bytes: &[u8], cap: usize) -> Result<Vec<u8>> {
    read_capped(
        || Ok(flate2::read::DeflateDecoder::new(bytes)),
        cap,
        "deflate",
        bytes.len() * 8,
    )
}

pub fn unbrotli(bytes: &[u8], cap: usize) -> Result<Vec<u8>> {
    read_capped(
        || Ok(brotli::Decompressor::new(bytes, 8192)),
        cap,
        "brotli",
        bytes.len() * 8,
    )
}

/// The window a zstd body may use: 8 MB, HTTP's limit for `Content-Encoding: zstd` (RFC 9659),
/// rather than the library's 128 MB for each request.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

pub fn unzstd(bytes: &[u8], cap: usize) -> Result<Vec<u8>> {
    let failed = |err: std::io::Error| CoreError::Decompression {
        codec: "zstd",
        detail: err.to_string(),
    };
    let open = || {
        let mut decoder = zstd::stream::read::Decoder::new(bytes).map_err(failed)?;
        decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(failed)?;
        Ok(decoder)
    };
    read_capped(open, cap, "zstd", bytes.len() * 8)
}

/// `Content-Encoding: deflate` is zlib-wrapped by the HTTP spec, but some clients send raw
/// deflate; the zlib header tells them apart.
pub fn inflate_deflate(bytes: &[u8], cap: usize) -> Result<Vec<u8>> {
    if is_zlib(bytes) {
        inflate_zlib(bytes, cap)
    } else {
        inflate_raw_deflate(bytes, cap)
    }
}

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64 as browsers and SDKs write it: standard alphabet, padding optional, line breaks and
/// stray whitespace ignored; the URL-safe alphabet is accepted too.
pub fn base64_decode(bytes: &[u8]) -> Result<Vec<u8>> {
    let cleaned: Vec<u8>;
    let input = if bytes.iter().any(u8::is_ascii_whitespace) {
        cleaned = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        &cleaned[..]
    } else {
        bytes
    };
    LENIENT
        .decode(input)
        .or_else(|_| LENIENT_URL_SAFE.decode(input))
        .map_err(|err| CoreError::Decompression {
            codec: "base64",
            detail: err.to_string(),
        })
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}

/// PostHog's optimistic check: the first 128 bytes are base64 and the length is a multiple of 4.
pub fn looks_like_base64(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len().is_multiple_of(4) && bytes.iter().take(128).all(|&b| is_base64_byte(b))
}

/// The strict check used before a second unwrap on legacy routes: every byte is base64.
pub fn is_strict_base64(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len().is_multiple_of(4) && bytes.iter().all(|&b| is_base64_byte(b))
}

pub fn lz64_decode(bytes: &[u8], cap: usize) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(bytes).map_err(|_| CoreError::Decompression {
        codec: "lz64",
        detail: "payload is not ascii".into(),
    })?;
    let units = lz64::decompress_from_base64(text.trim(), cap)?;
    let decoded = String::from_utf16_lossy(&units).into_bytes();
    if decoded.len() > cap {
        return Err(CoreError::PayloadTooLarge { limit: cap });
    }
    Ok(decoded)
}

/// Apply a compression hint, recognising gzip by its magic bytes whatever the hint says
/// (posthog-js ≥ 1.398 sends gzip with no hint at all).
pub fn decompress(bytes: Vec<u8>, hint: Compression, cap: usize) -> Result<Vec<u8>> {
    if is_gzip(&bytes) {
        return gunzip(&bytes, cap);
    }
    match hint {
        Compression::Gzip if is_zlib(&bytes) => inflate_zlib(&bytes, cap),
        Compression::Lz64 => lz64_decode(&bytes, cap),
        // PostHog's capture acts on the gzip and lz64 hints alone: JSON sent under a base64 hint
        // is read as sent.
        Compression::Base64 if starts_json(&bytes) => check_cap(bytes, cap),
        Compression::Base64 => {
            let decoded = base64_decode(&bytes)?;
            if is_gzip(&decoded) {
                gunzip(&decoded, cap)
            } else {
                check_cap(decoded, cap)
            }
        }
        Compression::Gzip | Compression::None => check_cap(bytes, cap),
    }
}

/// Whether the first byte that is not whitespace opens a JSON object or array (neither is a
/// base64 character).
fn starts_json(bytes: &[u8]) -> bool {
    matches!(bytes.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['))
}

pub fn check_cap(bytes: Vec<u8>, cap: usize) -> Result<Vec<u8>> {
    if bytes.len() > cap {
        Err(CoreError::PayloadTooLarge { limit: cap })
    } else {
        Ok(bytes)
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
