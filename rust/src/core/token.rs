//! Project tokens: what PostHog refuses.

use super::error::{CoreError, InvalidTokenReason, Result};

/// Validate a token as PostHog's capture does and return it trimmed.
pub fn validate(raw: &str) -> Result<String> {
    let token = raw.trim();
    let reason = if token.is_empty() {
        Some(InvalidTokenReason::Empty)
    } else if token.chars().count() > 64 {
        Some(InvalidTokenReason::TooLong)
    } else if !token.is_ascii() {
        Some(InvalidTokenReason::NotAscii)
    } else if token.starts_with("phx_") {
        Some(InvalidTokenReason::PersonalApiKey)
    } else if token.contains('\0') {
        Some(InvalidTokenReason::NullByte)
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CoreError::InvalidToken(reason)),
        None => Ok(token.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posthog_rules() {
        assert_eq!(validate("  phc_abc ").unwrap(), "phc_abc");
        for (token, reason) in [
            ("   ", InvalidTokenReason::Empty),
            (&"x".repeat(65)[..], InvalidTokenReason::TooLong),
            ("phc_é", InvalidTokenReason::NotAscii),
            ("phx_personal", InvalidTokenReason::PersonalApiKey),
            ("phc_\0", InvalidTokenReason::NullByte),
        ] {
            assert!(
                matches!(validate(token), Err(CoreError::InvalidToken(r)) if r == reason),
                "{token:?}"
            );
        }
        assert!(validate(&"x".repeat(64)).is_ok());
    }
}
