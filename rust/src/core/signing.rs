//! Request signing: an HMAC of the raw body, sent by the client in `X-POSTHOG-SIGNATURE`
//! (`sha256=<hex>` or bare hex) or `X-HUB-SIGNATURE` (`sha1=<hex>`); either valid header is enough.
//!
//! With a tolerance configured, the client also sends `X-POSTHOG-TIMESTAMP` (unix seconds) and
//! signs `<timestamp>.<body>`, so a captured request cannot be replayed after the window closes.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::error::{CoreError, Result};

/// The signature-bearing headers of one request, as sent (absent headers are `None`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    /// `X-POSTHOG-SIGNATURE`: sha256 unless the value names another algorithm.
    pub posthog: Option<&'a str>,
    /// `X-HUB-SIGNATURE`: sha1 unless the value names another algorithm.
    pub hub: Option<&'a str>,
    /// `X-POSTHOG-TIMESTAMP`, read only when a tolerance is configured.
    pub timestamp: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha1,
}

/// Verifies request signatures against one secret.
#[derive(Clone)]
pub struct Verifier {
    // Keyed once: cloning a keyed MAC skips hashing the secret into its pads on every request.
    sha256: Hmac<Sha256>,
    sha1: Hmac<Sha1>,
    tolerance_secs: Option<u64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keyed state: it is as good as the secret.
        f.debug_struct("Verifier")
            .field("tolerance_secs", &self.tolerance_secs)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `secret`; `tolerance_secs` turns on the signed-timestamp mode.
    pub fn new(secret: &[u8], tolerance_secs: Option<u64>) -> Self {
        Self {
            // HMAC takes keys of any length, so these cannot fail.
            sha256: <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!()),
            sha1: <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!()),
            tolerance_secs,
        }
    }

    /// Check a request: `Ok` when either header carries a valid signature of `body`.
    /// `now_secs` is the current unix time, used only in timestamp mode.
    pub fn verify(&self, headers: SignatureHeaders<'_>, body: &[u8], now_secs: i64) -> Result<()> {
        let candidates: Vec<(Algorithm, &str)> = [(headers.posthog, Algorithm::Sha256), (headers.hub, Algorithm::Sha1)]
            .into_iter()
            .filter_map(|(value, default)| {
                let value = value?.trim();
                (!value.is_empty()).then_some((default, value))
            })
            .collect();
        if candidates.is_empty() {
            return Err(CoreError::MissingSignature);
        }
        let prefix = match self.tolerance_secs {
            None => None,
            Some(tolerance) => Some(checked_timestamp(headers.timestamp, tolerance, now_secs)?),
        };
        let valid = candidates.into_iter().any(|(default, value)| {
            let Some((algorithm, expected)) = parse_signature(value, default) else {
                return false;
            };
            match algorithm {
                Algorithm::Sha256 => matches(self.sha256.clone(), prefix, body, &expected),
                Algorithm::Sha1 => matches(self.sha1.clone(), prefix, body, &expected),
            }
        });
        if valid {
            Ok(())
        } else {
            Err(CoreError::SignatureMismatch)
        }
    }
}

/// The timestamp header's text, once it is known to be within `tolerance` of `now_secs`.
fn checked_timestamp(header: Option<&str>, tolerance: u64, now_secs: i64) -> Result<&str> {
    let text = header
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(CoreError::MissingSignatureTimestamp)?;
    let sent: i64 = text.parse().map_err(|_| CoreError::SignatureTimestampOutOfRange)?;
    if sent.abs_diff(now_secs) > tolerance {
        return Err(CoreError::SignatureTimestampOutOfRange);
    }
    Ok(text)
}

/// `algo=hex` or bare hex. The text before the first `=` names the algorithm; only sha256 and
/// sha1 are known. `None` for anything unreadable, which then simply does not verify.
fn parse_signature(value: &str, default: Algorithm) -> Option<(Algorithm, Vec<u8>)> {
    let (algorithm, hex) = match value.split_once('=') {
        Some((name, hex)) => {
            let algorithm = match name.trim().to_ascii_lowercase().as_str() {
                "sha256" => Algorithm::Sha256,
                "sha1" => Algorithm::Sha1,
                _ => return None,
            };
            (algorithm, hex.trim())
        }
        None => (default, value),
    };
    Some((algorithm, decode_hex(hex)?))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Constant-time comparison of the MAC of `[prefix "."] body` with `expected` (`verify_slice`).
fn matches<M: Mac>(mut mac: M, prefix: Option<&str>, body: &[u8], expected: &[u8]) -> bool {
    if let Some(prefix) = prefix {
        mac.update(prefix.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"The quick brown fox jumps over the lazy dog";
    // Generated with Python: hmac.new(b"key", BODY, hashlib.sha256 / hashlib.sha1).hexdigest()
    const SHA256_HEX: &str = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    const SHA1_HEX: &str = "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9";
    // hmac.new(b"whsec_test", b'1700000000.{"event":"a"}', hashlib.sha256).hexdigest()
    const TIMESTAMPED_HEX: &str = "19e96b57b7dfbc7b2c9361ad7f38f0e6341a2a70d7f389711a9f198d9e20d5ee";
    // hmac.new(b"whsec_test", b"", hashlib.sha256).hexdigest()
    const EMPTY_HEX: &str = "43c0f4d23c8e8841358fad4624b1a592799222b29f25bb59baea43cdcb522ed1";

    fn posthog(value: &str) -> SignatureHeaders<'_> {
        SignatureHeaders {
            posthog: Some(value),
            ..SignatureHeaders::default()
        }
    }

    fn hex(bytes: &[u8]) -> String {
        use std::fmt::Write;
        bytes.iter().fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
    }

    #[test]
    fn the_hmac_crates_agree_with_python() {
        let mut sha256 = <Hmac<Sha256> as Mac>::new_from_slice(b"key").unwrap();
        sha256.update(BODY);
        assert_eq!(hex(&sha256.finalize().into_bytes()), SHA256_HEX);
        let mut sha1 = <Hmac<Sha1> as Mac>::new_from_slice(b"key").unwrap();
        sha1.update(BODY);
        assert_eq!(hex(&sha1.finalize().into_bytes()), SHA1_HEX);
    }

    #[test]
    fn accepted_header_forms() {
        let verifier = Verifier::new(b"key", None);
        let prefixed = format!("sha256={SHA256_HEX}");
        let upper = SHA256_HEX.to_ascii_uppercase();
        for value in [
            prefixed.as_str(),
            SHA256_HEX,
            upper.as_str(),
            " sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8 ",
        ] {
            verifier.verify(posthog(value), BODY, 0).unwrap();
        }
        let hub = format!("sha1={SHA1_HEX}");
        for value in [hub.as_str(), SHA1_HEX] {
            let headers = SignatureHeaders {
                hub: Some(value),
                ..SignatureHeaders::default()
            };
            verifier.verify(headers, BODY, 0).unwrap();
        }
        // The algorithm named in the value wins over the header's default.
        verifier.verify(posthog(&hub), BODY, 0).unwrap();
        Verifier::new(b"whsec_test", None)
            .verify(posthog(EMPTY_HEX), b"", 0)
            .unwrap();
    }

    #[test]
    fn either_valid_header_is_enough() {
        let verifier = Verifier::new(b"key", None);
        let headers = SignatureHeaders {
            posthog: Some("sha256=00"),
            hub: Some(SHA1_HEX),
            timestamp: None,
        };
        verifier.verify(headers, BODY, 0).unwrap();
    }

    #[test]
    fn refusals() {
        let verifier = Verifier::new(b"key", None);
        let missing = verifier.verify(SignatureHeaders::default(), BODY, 0).unwrap_err();
        assert_eq!(missing.to_string(), "missing signature header");
        assert!(matches!(
            verifier.verify(posthog("  "), BODY, 0),
            Err(CoreError::MissingSignature)
        ));
        let tampered = verifier.verify(posthog(SHA256_HEX), b"The quick brown fox jumps over the lazy cat", 0);
        assert_eq!(tampered.unwrap_err().to_string(), "signature verification failed");
        for bad in ["md5=abcd", "sha256=zz", "sha256=f7b", &SHA256_HEX[..62], SHA1_HEX] {
            assert!(
                matches!(
                    verifier.verify(posthog(bad), BODY, 0),
                    Err(CoreError::SignatureMismatch)
                ),
                "{bad}"
            );
        }
        let other_secret = Verifier::new(b"not the key", None);
        assert!(other_secret.verify(posthog(SHA256_HEX), BODY, 0).is_err());
    }

    #[test]
    fn timestamp_mode() {
        let verifier = Verifier::new(b"whsec_test", Some(300));
        let body = br#"{"event":"a"}"#;
        let signed = |timestamp| SignatureHeaders {
            posthog: Some(TIMESTAMPED_HEX),
            hub: None,
            timestamp,
        };
        verifier
            .verify(signed(Some("1700000000")), body, 1_700_000_000)
            .unwrap();
        verifier
            .verify(signed(Some("1700000000")), body, 1_700_000_300)
            .unwrap();
        verifier
            .verify(signed(Some("1700000000")), body, 1_699_999_700)
            .unwrap();
        assert!(matches!(
            verifier.verify(signed(Some("1700000000")), body, 1_700_000_301),
            Err(CoreError::SignatureTimestampOutOfRange)
        ));
        assert!(matches!(
            verifier.verify(signed(Some("soon")), body, 1_700_000_000),
            Err(CoreError::SignatureTimestampOutOfRange)
        ));
        assert!(matches!(
            verifier.verify(signed(None), body, 1_700_000_000),
            Err(CoreError::MissingSignatureTimestamp)
        ));
        // A timestamp other than the signed one changes the message.
        assert!(matches!(
            verifier.verify(signed(Some("1700000001")), body, 1_700_000_000),
            Err(CoreError::SignatureMismatch)
        ));
        // Without the mode, the timestamp is not part of the message.
        assert!(Verifier::new(b"whsec_test", None)
            .verify(signed(Some("1700000000")), body, 0)
            .is_err());
    }
}
