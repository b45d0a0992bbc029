//! The whole decode of one request: unpack the body, settle the token, normalise every item.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::error::{CoreError, Result};
use super::event::{self, DropReason, ItemContext, NormalizedEvent, Outcome, Warning};
use super::request::{self, RequestParts, RouteKind};
use super::timestamp;
use super::token;

/// Settings that do not change between requests.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub team_id: Option<i64>,
    /// When set, only these tokens are accepted.
    pub project_tokens: Option<HashSet<String>>,
    /// Largest decompressed payload, in bytes.
    pub max_inflated_bytes: usize,
    /// Largest single analytics event, in bytes (PostHog discards events over 1 MB).
    pub max_event_bytes: usize,
}

/// Headers that carry request-level facts.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeaderFacts<'a> {
    pub api_key: Option<&'a str>,
    pub sent_at: Option<&'a str>,
}

/// Everything decoded from one request.
#[derive(Debug)]
pub struct DecodedRequest {
    pub token: String,
    pub team_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub events: Vec<NormalizedEvent>,
    pub dropped: BTreeMap<DropReason, u32>,
    pub warnings: BTreeMap<Warning, u32>,
    pub filtered: u32,
}

fn resolve_token(
    unpacked: &request::Unpacked,
    headers: HeaderFacts<'_>,
    config: &DecoderConfig,
) -> Result<String> {
    let raw = if let Some(token) = &unpacked.envelope.token {
        token.clone()
    } else {
        let mut seen: Option<&str> = None;
        for item in &unpacked.items {
            let Value::Object(map) = item else { continue };
            if let Some(found) = token::from_event(map) {
                match seen {
                    Some(previous) if previous.trim() != found.trim() => return Err(CoreError::MultipleTokens),
                    _ => seen = Some(found),
                }
            }
        }
        seen.map(str::to_owned)
            .or_else(|| token::from_envelope(&unpacked.envelope.shared).map(str::to_owned))
            .or_else(|| headers.api_key.filter(|key| !key.trim().is_empty()).map(str::to_owned))
            .ok_or(CoreError::NoToken)?
    };
    let token = token::validate(&raw)?;
    if let Some(allowed) = &config.project_tokens {
        if !allowed.contains(&token) {
            return Err(CoreError::UnknownToken);
        }
    }
    Ok(token)
}

pub fn decode(
    parts: &RequestParts<'_>,
    headers: HeaderFacts<'_>,
    config: &DecoderConfig,
    now: DateTime<Utc>,
) -> Result<DecodedRequest> {
    let mut unpacked = request::unpack(parts, config.max_inflated_bytes)?;
    if unpacked.items.is_empty() {
        return Err(CoreError::EmptyBatch);
    }
    let token = resolve_token(&unpacked, headers, config)?;
    let sent_at = unpacked
        .envelope
        .sent_at
        .or_else(|| headers.sent_at.and_then(timestamp::parse_text));
    let items = std::mem::take(&mut unpacked.items);
    let ctx = ItemContext {
        route: parts.route,
        now,
        sent_at,
        historical_migration: unpacked.envelope.historical_migration,
        shared: &unpacked.envelope.shared,
        max_event_bytes: config.max_event_bytes,
    };

    let mut decoded = DecodedRequest {
        token,
        team_id: config.team_id,
        created_at: now,
        events: Vec::with_capacity(items.len()),
        dropped: BTreeMap::new(),
        warnings: BTreeMap::new(),
        filtered: 0,
    };
    let mut warnings = Vec::new();
    for item in items {
        match event::normalize(item, &ctx, &mut warnings) {
            Outcome::Event(event) => decoded.events.push(*event),
            Outcome::Filtered => decoded.filtered += 1,
            Outcome::Dropped(reason) => *decoded.dropped.entry(reason).or_default() += 1,
        }
    }
    for warning in warnings {
        *decoded.warnings.entry(warning).or_default() += 1;
    }
    if decoded.events.is_empty() && !decoded.dropped.is_empty() {
        let reasons: Vec<String> = decoded
            .dropped
            .iter()
            .map(|(reason, count)| format!("{}: {count}", reason.as_str()))
            .collect();
        return Err(CoreError::NoValidEvent(reasons.join(", ")));
    }
    Ok(decoded)
}

/// The route kind for a request path, without its trailing slash.
pub fn route_for_path(path: &str) -> Option<RouteKind> {
    Some(match path.trim_end_matches('/') {
        "/i/v0/e" | "/batch" => RouteKind::Event,
        "/e" | "/capture" | "/track" => RouteKind::LegacyEvent,
        "/engage" => RouteKind::Engage,
        "/identify" => RouteKind::Identify,
        "/alias" => RouteKind::Alias,
        "/groups" => RouteKind::Groups,
        "/s" => RouteKind::Recording,
        _ => return None,
    })
}
