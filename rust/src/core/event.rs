//! One raw SDK event → one normalised event, or a reason to drop it. The rules are PostHog's
//! (distinct_id and token lookup, uuid, timestamps, `$set` merging), checked item by item so a
//! bad item never sinks its batch.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sonic_rs::{JsonValueTrait, Value};
use uuid::Uuid;

use super::cookieless::{self, CookielessEvent, CookielessMode, Sighting};
pub use super::drop_reason::{DropReason, Warning};
use super::enrich::{Enrichment, Entries};
use super::event_fields::{
    default_event_name, distinct_id_of, lifted_keys, offset_from_raw, stripped_from_row, timestamp_from_raw,
    truncate_chars, uuid_of, CONSUMED, GROUP_NAMING, MAX_ID_CHARS, PERSON_UPDATES,
};
pub(super) use super::event_fields::{is_true, non_null};
use super::person_event::{PersonEvent, PersonMode};
use super::properties::{group_identify_discarded, group_key_too_long, plain_keys, Known, PropertyEdits};
use super::rawjson::{self, RawObject, Validated};
use super::recording::shape_recording;
use super::request::RouteKind;
use super::timestamp::{self, ClientTime};

/// posthog-js's event for a survey put before a person, and the person property it sets.
const SURVEY_SHOWN: &str = "survey shown";
const SURVEY_LAST_SEEN_DATE: &str = "$survey_last_seen_date";

/// Events PostHog refuses with `$process_person_profile: false`.
const IDENTITY_AND_GROUP_EVENTS: [&str; 4] = ["$identify", "$create_alias", "$merge_dangerously", "$groupidentify"];

#[derive(Debug)]
pub enum Outcome {
    Event(Box<NormalizedEvent>),
    /// Silently discarded as PostHog does (`$performance_event`; an identity or group event
    /// with person processing off).
    Filtered,
    Dropped(DropReason),
}

/// An event ready to be stored: every field of the lake row except what the store adds.
#[derive(Debug, Clone)]
pub struct NormalizedEvent {
    pub uuid: Uuid,
    pub event: String,
    pub distinct_id: String,
    pub timestamp: DateTime<Utc>,
    /// The event's properties as JSON text: as sent, with hogflare's additions appended.
    pub properties: String,
    pub context: Option<String>,
    pub extra: Option<String>,
    /// What the event asks of persons and groups; not stored with the row.
    pub person: PersonEvent,
    /// For an event in cookieless mode, what names its visitor; the store replaces its ids.
    pub cookieless: Option<Box<CookielessEvent>>,
}

impl NormalizedEvent {
    /// Bytes this event takes as a row, for the per-event cap.
    pub fn size(&self) -> usize {
        self.event.len()
            + self.distinct_id.len()
            + self.properties.len()
            + self.context.as_ref().map_or(0, String::len)
            + self.extra.as_ref().map_or(0, String::len)
    }
}

/// Request-level facts every item of a request shares.
#[derive(Debug)]
pub struct ItemContext<'a> {
    pub route: RouteKind,
    pub now: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub historical_migration: bool,
    /// Fields items inherit when they lack them: key and raw JSON value.
    pub shared: &'a [(String, String)],
    pub max_event_bytes: usize,
    pub enrichment: Enrichment<'a>,
    pub cookieless: CookielessMode,
}

/// What normalising one item gives: the event or why not, and the token it carried.
#[derive(Debug)]
pub struct Normalized {
    pub outcome: Outcome,
    pub token: Option<String>,
}

/// Normalise one item (the raw JSON text of one event). `warnings` collects what was corrected.
pub fn normalize(
    raw_item: Validated<'_>,
    value: &Value,
    ctx: &ItemContext<'_>,
    warnings: &mut Vec<Warning>,
) -> Normalized {
    let mut token = None;
    let outcome = normalize_inner(raw_item, value, ctx, warnings, &mut token);
    Normalized { outcome, token }
}

fn normalize_inner(
    raw_item: Validated<'_>,
    value: &Value,
    ctx: &ItemContext<'_>,
    warnings: &mut Vec<Warning>,
    token: &mut Option<String>,
) -> Outcome {
    if !raw_item.as_str().trim_start().starts_with('{') {
        return Outcome::Dropped(DropReason::NotAnObject);
    }
    let Ok(mut item) = RawObject::parse_validated(raw_item) else {
        return Outcome::Dropped(DropReason::NotAnObject);
    };
    if !ctx.shared.is_empty() {
        // The item's keys once in a set: an envelope may share many fields with an item of many.
        let present: HashSet<&str> = item.entries.iter().map(|(key, _)| key.as_ref()).collect();
        let missing: Vec<&(String, String)> = ctx
            .shared
            .iter()
            .filter(|(key, _)| !present.contains(key.as_str()))
            .collect();
        for (key, value) in missing {
            item.entries.push((Cow::Owned(key.clone()), Cow::Owned(value.clone())));
        }
    }

    // The item's own token first, so that even a dropped item tells which project it was for.
    *token = ["token", "$token", "api_key"]
        .into_iter()
        .find_map(|key| item.get(key).and_then(rawjson::as_str).filter(|t| !t.trim().is_empty()))
        .map(Cow::into_owned);
    let had_properties = item.contains("properties");
    let properties_raw = non_null(item.take("properties")).unwrap_or(Cow::Borrowed("{}"));
    let empty = Value::new_object();
    // Properties an envelope shares with its items were not in the item's parsed value.
    let shared_properties = if had_properties && value.get("properties").is_none() {
        sonic_rs::from_str::<Value>(&properties_raw).ok()
    } else {
        None
    };
    let properties = match value.get("properties") {
        None => shared_properties
            .as_ref()
            .filter(|shared| JsonValueTrait::is_object(*shared))
            .unwrap_or(&empty),
        Some(properties) if properties.is_null() => &empty,
        Some(properties) if properties.is_object() => properties,
        Some(_) => return Outcome::Dropped(DropReason::InvalidProperties),
    };
    let known = Known::scan(properties);
    if token.is_none() {
        *token = known
            .token
            .and_then(JsonValueTrait::as_str)
            .filter(|t| !t.trim().is_empty())
            .map(str::to_owned);
    }
    // PostHog's capture refuses a `$cookieless_mode` that is not a boolean (its whole request;
    // a recording's may also be null); here only the item goes.
    let cookieless_refused = |mode: &Value| !(mode.is_boolean() || mode.is_null() && ctx.route == RouteKind::Recording);
    if known.cookieless_mode.is_some_and(cookieless_refused) {
        return Outcome::Dropped(DropReason::InvalidCookielessMode);
    }

    let event = match non_null(item.take("event")) {
        Some(raw) => match rawjson::as_str(&raw) {
            Some(name) if !name.is_empty() => truncate_chars(name.into_owned(), MAX_ID_CHARS),
            Some(_) => match default_event_name(ctx.route, &item) {
                Some(name) => name.to_owned(),
                None => return Outcome::Dropped(DropReason::MissingEventName),
            },
            None => return Outcome::Dropped(DropReason::InvalidEventName),
        },
        None => match default_event_name(ctx.route, &item) {
            Some(name) => name.to_owned(),
            None => return Outcome::Dropped(DropReason::MissingEventName),
        },
    };
    if event == "$performance_event" {
        return Outcome::Filtered;
    }
    // An event whose only purpose is a person or group change, sent with person processing off,
    // is discarded, as PostHog's ingestion does (`invalid_event_when_process_person_profile_is_false`).
    let personless = known
        .process_person_profile
        .is_some_and(|value| value.as_bool() == Some(false));
    if personless && IDENTITY_AND_GROUP_EVENTS.contains(&event.as_str()) {
        return Outcome::Filtered;
    }
    if event == "$groupidentify" && group_identify_discarded(properties) {
        return Outcome::Filtered;
    }

    let Some(distinct_id) = distinct_id_of(ctx.route, &item, &known, properties) else {
        return Outcome::Dropped(DropReason::MissingDistinctId);
    };
    let uuid = match uuid_of(&mut item) {
        Ok(uuid) => uuid,
        Err(reason) => return Outcome::Dropped(reason),
    };

    let raw_timestamp = non_null(item.take("timestamp"));
    let client_timestamp = raw_timestamp.as_deref().and_then(timestamp_from_raw);
    if raw_timestamp.is_some() && client_timestamp.is_none() {
        warnings.push(Warning::InvalidTimestamp);
    }
    // An item's own `sent_at` is read only from recordings (posthog-js puts one on each `/s/`
    // item); on the event routes PostHog ignores it, and an import that kept its events'
    // original `sent_at` would otherwise see every timestamp moved to now.
    let item_sent_at = non_null(item.take("sent_at")).as_deref().and_then(timestamp_from_raw);
    let sent_at = ctx
        .sent_at
        .or(item_sent_at.filter(|_| ctx.route == RouteKind::Recording));
    let client = ClientTime {
        timestamp: client_timestamp,
        sent_at,
        offset_ms: non_null(item.take("offset")).as_deref().and_then(offset_from_raw),
        ignore_sent_at: is_true(known.ignore_sent_at),
    };
    let (timestamp, adjusted) = timestamp::resolve(ctx.now, client);
    if adjusted {
        warnings.push(Warning::TimestampAdjusted);
    }
    // posthog-js in cookieless mode keeps no id; the store names the visitor from a hash.
    let cookieless = if ctx.route != RouteKind::Recording && is_true(known.cookieless_mode) {
        let own_ip = known.own_ip().and_then(JsonValueTrait::as_str);
        let sighting = Sighting {
            mode: ctx.cookieless,
            event: &event,
            distinct_id: &distinct_id,
            ip: own_ip.or(ctx.enrichment.geoip_ip).or(ctx.enrichment.client_ip),
            properties,
            timestamp,
            now: ctx.now,
        };
        match sighting.read() {
            Ok(cookieless) => Some(Box::new(cookieless)),
            Err(reason) => return Outcome::Dropped(reason),
        }
    } else {
        None
    };

    // An event that updates no person loses its person updates, top level and in its
    // properties, as on PostHog: they would read as if they had been applied.
    let updates_no_person = event == "$groupidentify" || personless;
    let mut edits = PropertyEdits::new();
    if event == SURVEY_SHOWN {
        // PostHog records when a person last saw a survey (surveys' wait period reads it), as
        // the client's timestamp, unless the event's `$set` says otherwise.
        if let Some(raw) = &raw_timestamp {
            edits.defaults(
                "$set",
                Entries::from([(SURVEY_LAST_SEEN_DATE, raw.clone().into_owned())]),
            );
        }
    }
    for key in PERSON_UPDATES {
        // Only `/engage` has a top-level `$unset`; PostHog's capture reads the top-level `$set`
        // and `$set_once` and drops any other key, as Hogflare's capture routes do.
        if key == "$unset" && ctx.route != RouteKind::Engage {
            continue;
        }
        if let Some(raw) = non_null(item.take(key)) {
            edits.top_level(&known, key, raw);
        }
    }
    edits.strip(stripped_from_row(&event, personless));
    // Keys of Hogflare's shapes taken under PostHog's names: from the item's top level, and on
    // `/groups` unprefixed among the properties too (the top level first).
    let mut taken: Vec<(&'static str, String)> = lifted_keys(ctx.route, &item)
        .iter()
        .filter_map(|(from, to)| non_null(item.take(from)).map(|raw| (*to, raw.into_owned())))
        .collect();
    // Among `/groups`' properties, what names the group or the project is no group property.
    let mut unprefixed: Vec<&str> = Vec::new();
    if ctx.route == RouteKind::Groups {
        unprefixed.push("token");
        for (from, to) in GROUP_NAMING {
            if let Ok(raw) = sonic_rs::get(&*properties_raw, [from]) {
                if !rawjson::is_null(raw.as_raw_str()) {
                    taken.push((to, raw.as_raw_str().to_owned()));
                }
                unprefixed.push(from);
            }
        }
    }
    for (to, raw) in taken {
        // PostHog's ingestion discards a group identify whose key is too long, however named.
        if to == "$group_key" && event == "$groupidentify" && !known.has(to) && group_key_too_long(&raw) {
            return Outcome::Filtered;
        }
        edits.add(&known, to, raw);
    }
    match ctx.route {
        // Hogflare's /identify treats plain properties as the person's `$set`.
        RouteKind::Identify if !known.has("$set") && !known.has("$set_once") && !updates_no_person => {
            let set = plain_keys(&properties_raw, &["distinct_id", "token"]);
            if set != "{}" {
                edits.add(&known, "$set", set);
            }
        }
        RouteKind::Groups => edits.add(&known, "$group_set", plain_keys(&properties_raw, &unprefixed)),
        _ => {}
    }
    if let Some(sent_at) = sent_at {
        edits.add(
            &known,
            "$sent_at",
            rawjson::string_literal(&timestamp::format_rfc3339(sent_at)),
        );
    }
    if known.os_name_only.is_some() {
        // PostHog reads `$os_name` as `$os` where an SDK sends only the former (its person then
        // gets `$os` and `$initial_os`, never `$os_name`). The value as the SDK wrote it.
        if let Ok(os_name) = sonic_rs::get(&*properties_raw, ["$os_name"]) {
            edits.add(&known, "$os", os_name.as_raw_str().to_owned());
        }
    }
    ctx.enrichment.apply(&known, &mut edits);

    let Some(mut properties_json) = edits.finish(&known, properties_raw) else {
        return Outcome::Dropped(DropReason::InvalidProperties);
    };
    // A recording in cookieless mode keeps its sentinel id (replays are not hashed), but not
    // the address or the user agent either.
    let recorded_cookieless = ctx.route == RouteKind::Recording && is_true(known.cookieless_mode);
    if cookieless.is_some() || recorded_cookieless {
        if let Some(kept) = cookieless::without_identifying(&properties_json, cookieless.is_some()) {
            properties_json = kept;
        }
    }

    let event = if ctx.route == RouteKind::Recording {
        if !had_properties && (item.contains("metadata") || item.contains("chunk")) {
            // posthog-js's pre-2022 chunked recordings: kept whole, as Hogflare does.
            let mut data = RawObject::default();
            for (key, value) in item.entries.drain(..) {
                if !CONSUMED.contains(&key.as_ref()) {
                    data.entries.push((key, value));
                }
            }
            properties_json = format!("{{\"data\":{}}}", data.to_json());
            "$snapshot".to_owned()
        } else {
            if event != "$snapshot" && event != "$snapshot_items" {
                return Outcome::Dropped(DropReason::UnsupportedRecordingEvent);
            }
            match shape_recording(&properties_json, &distinct_id) {
                Ok(shaped) => properties_json = shaped,
                Err(reason) => return Outcome::Dropped(reason),
            }
            "$snapshot_items".to_owned()
        }
    } else {
        event
    };

    let context = non_null(item.take("context")).map(Cow::into_owned);
    item.entries
        .retain(|(key, value)| !CONSUMED.contains(&key.as_ref()) && !rawjson::is_null(value));
    if ctx.historical_migration {
        item.set("historical_migration", "true");
    }
    let extra = (!item.is_empty()).then(|| item.to_json());

    // A recording goes with the person its distinct id has; its (large) properties are not read.
    let person = if ctx.route == RouteKind::Recording {
        PersonEvent {
            mode: PersonMode::Existing,
            ..PersonEvent::default()
        }
    } else {
        let mut person = PersonEvent::read_normalizing(&event, &mut properties_json);
        if ctx.route == RouteKind::Groups {
            // Hogflare's own route: its distinct id is the group's key, not a person's.
            person.mode = PersonMode::Without;
        }
        person
    };
    let normalized = NormalizedEvent {
        uuid,
        event,
        distinct_id,
        timestamp,
        properties: properties_json,
        context,
        extra,
        person,
        cookieless,
    };
    if ctx.route != RouteKind::Recording && normalized.size() > ctx.max_event_bytes {
        return Outcome::Dropped(DropReason::EventTooLarge);
    }
    Outcome::Event(Box::new(normalized))
}
