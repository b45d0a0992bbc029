//! Project tokens: where PostHog looks for them, and what it refuses.

use sonic_rs::{JsonValueTrait, Object, Value};

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

fn as_token(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(JsonValueTrait::as_str)
        .filter(|text| !text.trim().is_empty())
}

/// An event's own token: `token`, `$token` or `api_key`, else `properties.token`.
pub fn from_event(event: &Object) -> Option<&str> {
    as_token(event.get(&"token"))
        .or_else(|| as_token(event.get(&"$token")))
        .or_else(|| as_token(event.get(&"api_key")))
        .or_else(|| as_token(event.get(&"properties").and_then(|properties| properties.get("token"))))
}

/// An envelope's token: `api_key` or `token`.
pub fn from_envelope(envelope: &Object) -> Option<&str> {
    as_token(envelope.get(&"api_key")).or_else(|| as_token(envelope.get(&"token")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::{json, JsonContainerTrait};

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

    #[test]
    fn event_token_sources_in_order() {
        let event = json!({"api_key": "b", "properties": {"token": "c"}});
        assert_eq!(from_event(event.as_object().unwrap()), Some("b"));
        let event = json!({"properties": {"token": "c"}});
        assert_eq!(from_event(event.as_object().unwrap()), Some("c"));
        let event = json!({"$token": "a", "api_key": "b"});
        assert_eq!(from_event(event.as_object().unwrap()), Some("a"));
        assert_eq!(from_event(json!({"token": ""}).as_object().unwrap()), None);
    }
}
