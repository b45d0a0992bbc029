//! The whole decode of one request: unpack the body, settle the token, normalise every item.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::analytics_v1::{self, Verdict};
use super::cookieless::CookielessMode;
use super::enrich::{Enrichment, Locator};
use super::error::{CoreError, Result};
use super::event::{self, DropReason, ItemContext, NormalizedEvent, Outcome, Warning};
use super::geoip::GeoIp;
use super::rawjson;
use super::request::{self, RequestParts, RouteKind};
use super::row::SOURCE_POSTHOG;
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
    /// Where events are located from; `None` turns GeoIP off.
    pub geoip: Option<Arc<GeoIp>>,
    pub cookieless: CookielessMode,
}

impl Default for DecoderConfig {
    /// PostHog's limits, every token accepted, no GeoIP (what tests and benchmarks decode with;
    /// the server builds its own from its settings).
    fn default() -> Self {
        Self {
            team_id: None,
            project_tokens: None,
            max_inflated_bytes: 100 << 20,
            max_event_bytes: 1 << 20,
            geoip: None,
            cookieless: CookielessMode::default(),
        }
    }
}

/// Headers that carry request-level facts.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeaderFacts<'a> {
    pub api_key: Option<&'a str>,
    pub sent_at: Option<&'a str>,
    /// `PostHog-Sdk-Info` (capture v1): the library that sent the events, as `<lib>/<version>`.
    pub sdk_info: Option<&'a str>,
    /// What the connection and proxy headers say about the client, added to every event.
    pub enrichment: Enrichment<'a>,
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
    /// Capture v1's answer, which gives every event of the request its verdict.
    pub results: Option<String>,
    /// The rows' `source`: `posthog` for what an SDK sent, `hogflare` for what hogflare wrote.
    pub source: &'static str,
}

/// The request's token: the envelope's, else the one its events agree on, else the form's or the
/// header's. Only the events that are kept must agree: a dropped item naming another project
/// does not sink the batch. When every item was dropped, the first token found still names the
/// project, so the answer is a 400 about the items rather than a 401.
fn resolve_token(
    unpacked: &request::Unpacked,
    item_tokens: &[(Option<String>, bool)],
    headers: HeaderFacts<'_>,
    config: &DecoderConfig,
) -> Result<String> {
    let raw = if let Some(token) = &unpacked.envelope.token {
        token.clone()
    } else {
        let mut seen: Option<&str> = None;
        for (found, _) in item_tokens.iter().filter(|(_, kept)| *kept) {
            let Some(found) = found else { continue };
            match seen {
                Some(previous) if previous.trim() != found.trim() => return Err(CoreError::MultipleTokens),
                _ => seen = Some(found),
            }
        }
        seen.or_else(|| item_tokens.iter().find_map(|(found, _)| found.as_deref()))
            .map(str::to_owned)
            .or_else(|| {
                ["api_key", "token"].into_iter().find_map(|key| {
                    unpacked
                        .envelope
                        .shared
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, raw)| rawjson::as_str(raw).map(std::borrow::Cow::into_owned))
                })
            })
            .or_else(|| headers.api_key.filter(|key| !key.trim().is_empty()).map(str::to_owned))
            .ok_or(CoreError::NoToken)?
    };
    accepted_token(&raw, config)
}

/// `raw` as a project token: valid by PostHog's rule, and one of `HOGFLARE_PROJECT_TOKENS` when
/// they are set.
pub fn accepted_token(raw: &str, config: &DecoderConfig) -> Result<String> {
    let token = token::validate(raw)?;
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
    let (unpacked, v1_items) = if parts.route == RouteKind::AnalyticsV1 {
        let (unpacked, items) = unpack_v1(parts, headers, config)?;
        (unpacked, Some(items))
    } else {
        (request::unpack(parts, config.max_inflated_bytes)?, None)
    };
    if unpacked.items.is_empty() && v1_items.is_none() {
        return Err(CoreError::EmptyBatch);
    }
    let sent_at = unpacked
        .envelope
        .sent_at
        .or_else(|| headers.sent_at.and_then(timestamp::parse_text));
    // Recordings are not located: PostHog's GeoIP transformation runs on analytics events.
    let mut enrichment = headers.enrichment;
    let locator = config
        .geoip
        .as_deref()
        .filter(|_| parts.route != RouteKind::Recording)
        .map(|geoip| Locator::new(geoip, enrichment.geoip_ip.or(enrichment.client_ip)));
    enrichment.locator = locator.as_ref();
    let ctx = ItemContext {
        route: parts.route,
        now,
        sent_at,
        historical_migration: unpacked.envelope.historical_migration,
        shared: &unpacked.envelope.shared,
        max_event_bytes: config.max_event_bytes,
        enrichment,
        cookieless: config.cookieless,
    };

    let mut events = Vec::with_capacity(unpacked.items.len());
    let mut dropped: BTreeMap<DropReason, u32> = BTreeMap::new();
    for (_, verdict) in v1_items.iter().flatten() {
        if let Some(Verdict::Drop(reason)) = verdict {
            *dropped.entry(*reason).or_default() += 1;
        }
    }
    let mut filtered = 0;
    let mut item_tokens = Vec::with_capacity(unpacked.items.len());
    let mut warnings = Vec::new();
    let mut verdicts = Vec::with_capacity(if v1_items.is_some() { unpacked.items.len() } else { 0 });
    for (index, value) in unpacked.item_values().enumerate() {
        let normalized = event::normalize(unpacked.item(index), value, &ctx, &mut warnings);
        item_tokens.push((normalized.token, matches!(normalized.outcome, Outcome::Event(_))));
        let verdict = match normalized.outcome {
            Outcome::Event(event) => {
                events.push(*event);
                Verdict::Ok
            }
            // Discarded on purpose, as PostHog's pipeline would after its capture said ok.
            Outcome::Filtered => {
                filtered += 1;
                Verdict::Ok
            }
            Outcome::Dropped(reason) => {
                *dropped.entry(reason).or_default() += 1;
                Verdict::Drop(reason)
            }
        };
        if v1_items.is_some() {
            verdicts.push(verdict);
        }
    }
    let token = resolve_token(&unpacked, &item_tokens, headers, config)?;
    let mut decoded = DecodedRequest {
        token,
        team_id: config.team_id,
        created_at: now,
        events,
        dropped,
        warnings: BTreeMap::new(),
        filtered,
        results: v1_items.map(|items| v1_results(items, verdicts)),
        source: SOURCE_POSTHOG,
    };
    for warning in warnings {
        *decoded.warnings.entry(warning).or_default() += 1;
    }
    // Capture v1 answers 200 with every event's verdict, even when none was kept.
    if decoded.events.is_empty() && !decoded.dropped.is_empty() && decoded.results.is_none() {
        let dropped = decoded
            .dropped
            .iter()
            .map(|(reason, count)| (reason.as_str(), *count))
            .collect();
        return Err(CoreError::NoValidEvent {
            dropped,
            token: decoded.token,
        });
    }
    Ok(decoded)
}

/// A capture v1 request: its token (the bearer's, checked here as any other), its body translated
/// into a legacy batch, and the verdicts of v1's own checks.
fn unpack_v1(
    parts: &RequestParts<'_>,
    headers: HeaderFacts<'_>,
    config: &DecoderConfig,
) -> Result<(request::Unpacked, analytics_v1::Checked)> {
    let token = token::validate(headers.api_key.ok_or(CoreError::NoToken)?)?;
    // Known before the body is read: a stranger's request costs no decoding.
    if config
        .project_tokens
        .as_ref()
        .is_some_and(|allowed| !allowed.contains(&token))
    {
        return Err(CoreError::UnknownToken);
    }
    if let Some(sent_at) = headers.sent_at {
        if chrono::DateTime::parse_from_rfc3339(sent_at).is_err() {
            return Err(CoreError::InvalidShape(format!(
                "PostHog-Request-Timestamp is not an RFC 3339 time: {sent_at:?}"
            )));
        }
    }
    let text = request::v1_text(parts, config.max_inflated_bytes)?;
    let sdk = headers.sdk_info.and_then(analytics_v1::sdk_info);
    let translated = analytics_v1::translate(&text, &token, sdk)?;
    drop(text);
    // The properties v1 moves in (and `$lib` from the header) could make the legacy text
    // outgrow the body it came from; it is held to the same cap.
    if translated.legacy.len() > config.max_inflated_bytes {
        return Err(CoreError::PayloadTooLarge {
            limit: config.max_inflated_bytes,
        });
    }
    let unpacked = request::unpack_json(translated.legacy, config.max_inflated_bytes)?;
    Ok((unpacked, translated.items))
}

/// Every event's verdict: v1's own, else the decoder's for the events v1 passed on (in order).
fn v1_results(items: analytics_v1::Checked, decoded: Vec<Verdict>) -> String {
    let mut decoded = decoded.into_iter();
    let verdicts: Vec<(String, Verdict)> = items
        .into_iter()
        .map(|(uuid, verdict)| {
            let verdict = match verdict {
                Some(Verdict::Drop(reason)) => Verdict::Drop(reason),
                passed => match (decoded.next().unwrap_or(Verdict::Ok), passed) {
                    (Verdict::Ok, Some(note)) => note,
                    (verdict, _) => verdict,
                },
            };
            (uuid, verdict)
        })
        .collect();
    analytics_v1::results_json(&verdicts)
}

/// The route kind for a request path, without its trailing slash.
pub fn route_for_path(path: &str) -> Option<RouteKind> {
    Some(match path.trim_end_matches('/') {
        "/i/v0/e" | "/batch" | "/i/v0/ai/batch" => RouteKind::Event,
        "/e" | "/capture" | "/track" => RouteKind::LegacyEvent,
        "/engage" => RouteKind::Engage,
        "/identify" => RouteKind::Identify,
        "/alias" => RouteKind::Alias,
        "/groups" => RouteKind::Groups,
        "/s" => RouteKind::Recording,
        "/i/v1/analytics/events" | "/i/v1/ai/events" => RouteKind::AnalyticsV1,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
