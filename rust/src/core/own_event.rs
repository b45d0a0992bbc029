//! Events hogflare writes itself, for its admin routes: no SDK sent them, so their rows say
//! `source: "hogflare"` (which models may trust where they ignore the same event sent by a
//! client), and they carry no person and no enrichment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::decode::{accepted_token, DecodedRequest, DecoderConfig};
use super::error::{CoreError, Result};
use super::event::NormalizedEvent;
use super::person_event::{PersonEvent, PersonMode};
use super::row::SOURCE_HOGFLARE;

impl NormalizedEvent {
    /// An event that has no person (nor groups): its row's person columns stay empty.
    pub fn without_person(
        uuid: Uuid,
        event: &str,
        distinct_id: &str,
        timestamp: DateTime<Utc>,
        properties: String,
    ) -> Self {
        Self {
            uuid,
            event: event.to_owned(),
            distinct_id: distinct_id.to_owned(),
            timestamp,
            properties,
            context: None,
            extra: None,
            person: PersonEvent {
                mode: PersonMode::Without,
                ..PersonEvent::default()
            },
            cookieless: None,
        }
    }
}

/// One event of the project `token`, timestamped `now`; `properties` is a JSON object's text.
pub fn own_event(
    config: &DecoderConfig,
    token: &str,
    event: &str,
    distinct_id: &str,
    properties: String,
    now: DateTime<Utc>,
) -> Result<DecodedRequest> {
    let token = accepted_token(token, config)?;
    if !properties.trim_start().starts_with('{') {
        return Err(CoreError::InvalidShape("properties must be a JSON object".into()));
    }
    let event = NormalizedEvent::without_person(Uuid::now_v7(), event, distinct_id, now, properties);
    Ok(DecodedRequest {
        token,
        team_id: config.team_id,
        created_at: now,
        events: vec![event],
        dropped: BTreeMap::new(),
        warnings: BTreeMap::new(),
        filtered: 0,
        results: None,
        source: SOURCE_HOGFLARE,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::core::error::InvalidTokenReason;

    #[test]
    fn a_row_of_hogflare_without_a_person() {
        let config = DecoderConfig {
            team_id: Some(7),
            ..DecoderConfig::default()
        };
        let decoded = own_event(&config, " phc_a ", "$e", "d", r#"{"a":1}"#.into(), Utc::now()).unwrap();
        assert_eq!(
            (decoded.token.as_str(), decoded.team_id, decoded.source),
            ("phc_a", Some(7), "hogflare")
        );
        let [event] = &decoded.events[..] else {
            panic!("one event")
        };
        assert_eq!((event.event.as_str(), event.distinct_id.as_str()), ("$e", "d"));
        assert_eq!(event.person.mode, PersonMode::Without);
    }

    #[test]
    fn tokens_as_capture_takes_them() {
        let only = DecoderConfig {
            project_tokens: Some(HashSet::from(["phc_a".to_owned()])),
            ..DecoderConfig::default()
        };
        let made = |token: &str| own_event(&only, token, "$e", "d", "{}".into(), Utc::now());
        assert!(matches!(made("phc_b"), Err(CoreError::UnknownToken)));
        assert!(matches!(
            made("phx_key"),
            Err(CoreError::InvalidToken(InvalidTokenReason::PersonalApiKey))
        ));
        assert!(made("phc_a").is_ok());
        let any = DecoderConfig::default();
        assert!(own_event(&any, "phc", "$e", "d", "[1]".into(), Utc::now()).is_err());
    }
}
