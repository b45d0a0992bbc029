//! PostHog's cookieless server hash mode, as the decoder sees it. posthog-js with
//! `cookieless_mode` keeps no id in the browser: its events carry `$cookieless_mode: true` and
//! the distinct id `$posthog_cookieless`, and the server names the visitor by a hash of a daily
//! salt, the project, the IP, the site's root domain and the user agent. Here an event is
//! checked and what the hash needs is taken out of it, the IP and user agent then removed from
//! what is stored; the store does the hashing (`cookieless_state`), since the salt, the count
//! of identifies and the sessions are state.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use sonic_rs::{JsonValueTrait, Value};

use super::event::DropReason;
use super::rawjson::RawObject;

/// The distinct id posthog-js sends in cookieless mode, for the server to replace.
pub const SENTINEL: &str = "$posthog_cookieless";
/// Only this much of `$cookieless_extra` goes into the hash, as on PostHog.
const MAX_EXTRA_CHARS: usize = 100;
/// A calendar day begins 14 hours before UTC's in the earliest zone (UTC+14), and a day's salt
/// serves until 14 hours after UTC's ends: 12 for the latest zone (UTC−12) and, as on PostHog,
/// two more for events that arrive late.
pub(crate) const BEGINS_BEFORE_UTC_HOURS: i64 = 14;
const SERVES_AFTER_UTC_HOURS: i64 = 14;

/// `HOGFLARE_COOKIELESS_MODE`: PostHog's per-project `cookieless_server_hash_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookielessMode {
    /// Identifies and sessions of 30 minutes' inactivity are tracked in the store.
    #[default]
    Stateful,
    /// One id and one session per visitor and day, from the hash alone; `$identify` is refused.
    Stateless,
    /// Cookieless events are refused.
    Disabled,
}

impl CookielessMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stateful" => Some(Self::Stateful),
            "stateless" => Some(Self::Stateless),
            "disabled" | "off" => Some(Self::Disabled),
            _ => None,
        }
    }

    /// Whether the mode keeps state; `None` when cookieless events are refused.
    fn stateful(self) -> Option<bool> {
        match self {
            Self::Stateful => Some(true),
            Self::Stateless => Some(false),
            Self::Disabled => None,
        }
    }
}

/// Where the event's distinct id stands against identify, which decides how many of the
/// visitor's identifies go into its hash (so that a visitor who signs out is not merged into
/// the person they signed in as).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before identify: the distinct id is the sentinel, replaced by the hash.
    Anonymous,
    /// The `$identify` itself: its `$anon_distinct_id` becomes the hash.
    Identify,
    /// After identify: the distinct id is the user's own; only `$device_id` and `$session_id`
    /// come from the hash.
    Identified,
}

/// What the store needs to name a cookieless event's visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookielessEvent {
    pub stateful: bool,
    pub stage: Stage,
    /// The event's calendar day where its user is (`$timezone`, else UTC): which salt.
    pub day: NaiveDate,
    /// The start of that day, in Unix milliseconds: the time of a stateless session's id.
    pub day_start_ms: i64,
    pub timestamp_ms: i64,
    /// `{ip}-{root domain}-{user agent}`, hashed with the project and the identify count.
    pub visitor: String,
    /// `$cookieless_extra`, the site's own addition to the hash.
    pub extra: String,
}

/// What the decoder found in a cookieless event.
pub struct Sighting<'a> {
    pub mode: CookielessMode,
    pub event: &'a str,
    pub distinct_id: &'a str,
    /// The event's own `$ip`, else the request's address.
    pub ip: Option<&'a str>,
    pub properties: &'a Value,
    pub timestamp: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

impl Sighting<'_> {
    /// The event's hash inputs, or why PostHog would drop it.
    pub fn read(&self) -> Result<CookielessEvent, DropReason> {
        let stateful = self.mode.stateful().ok_or(DropReason::CookielessDisabled)?;
        if matches!(self.event, "$create_alias" | "$merge_dangerously") || !stateful && self.event == "$identify" {
            return Err(DropReason::CookielessDisallowedEvent);
        }
        let text = |key: &str| {
            self.properties
                .get(key)
                .and_then(JsonValueTrait::as_str)
                .filter(|value| !value.is_empty())
        };
        let user_agent = text("$raw_user_agent").ok_or(DropReason::CookielessMissingUserAgent)?;
        let ip = self
            .ip
            .filter(|ip| !ip.is_empty())
            .ok_or(DropReason::CookielessMissingIp)?;
        let host = text("$host").ok_or(DropReason::CookielessMissingHost)?;
        let extra = match self.properties.get("$cookieless_extra") {
            None => String::new(),
            Some(value) if value.is_null() => String::new(),
            Some(value) => value.as_str().map_or_else(|| value.to_string(), str::to_owned),
        };
        let stage = if self.event == "$identify" {
            Stage::Identify
        } else if self.distinct_id == SENTINEL {
            Stage::Anonymous
        } else {
            Stage::Identified
        };
        let visitor = Visitor {
            ip,
            host,
            user_agent,
            timezone: text("$timezone"),
            extra: &extra,
        };
        let event = visitor.event(stateful, stage, self.timestamp);
        if !day_in_use(event.day, self.now) {
            return Err(DropReason::CookielessDayOutOfRange);
        }
        Ok(event)
    }
}

/// What a cookieless visitor's hash is made of.
#[derive(Clone, Copy)]
pub struct Visitor<'a> {
    pub ip: &'a str,
    /// `$host`, or a URL such as the `Origin` of a flags request.
    pub host: &'a str,
    pub user_agent: &'a str,
    pub timezone: Option<&'a str>,
    pub extra: &'a str,
}

impl Visitor<'_> {
    /// The visitor's hash inputs, for an event at `timestamp`.
    pub fn event(&self, stateful: bool, stage: Stage, timestamp: DateTime<Utc>) -> CookielessEvent {
        let (day, day_start) = local_day(timestamp, self.timezone);
        CookielessEvent {
            stateful,
            stage,
            day,
            day_start_ms: day_start.timestamp_millis(),
            timestamp_ms: timestamp.timestamp_millis(),
            visitor: format!("{}-{}-{}", self.ip, root_domain(self.host), self.user_agent),
            extra: self.extra.chars().take(MAX_EXTRA_CHARS).collect(),
        }
    }
}

/// The hash inputs of a `/flags` request from a cookieless visitor (its distinct id the
/// sentinel), made as for an anonymous event now; `None` when the mode is off or an input is
/// missing (an `Origin` of `null`, from a sandboxed frame, names no site), and the flags are
/// then for the sentinel itself.
pub fn flags_visitor(mode: CookielessMode, visitor: &Visitor<'_>, now: DateTime<Utc>) -> Option<CookielessEvent> {
    let stateful = mode.stateful()?;
    let missing = [visitor.ip, visitor.host, visitor.user_agent]
        .iter()
        .any(|input| input.is_empty());
    if missing || visitor.host == "null" {
        return None;
    }
    let user_agent = as_posthog_js_sends(visitor.user_agent);
    let visitor = Visitor {
        user_agent: &user_agent,
        ..*visitor
    };
    Some(visitor.event(stateful, Stage::Anonymous, now))
}

/// A `User-Agent` header as posthog-js writes it into `$raw_user_agent`: past 1,000 characters,
/// its first 997 and `...`.
fn as_posthog_js_sends(user_agent: &str) -> Cow<'_, str> {
    if user_agent.chars().nth(1000).is_none() {
        return Cow::Borrowed(user_agent);
    }
    let mut cut: String = user_agent.chars().take(997).collect();
    cut.push_str("...");
    Cow::Owned(cut)
}

/// The event's day and its start, in the IANA zone `$timezone` names (UTC when it names none).
fn local_day(timestamp: DateTime<Utc>, zone: Option<&str>) -> (NaiveDate, DateTime<Utc>) {
    let zone = zone.and_then(|name| name.parse::<chrono_tz::Tz>().ok());
    let Some(zone) = zone else {
        let day = timestamp.date_naive();
        return (day, day.and_time(chrono::NaiveTime::MIN).and_utc());
    };
    let day = timestamp.with_timezone(&zone).date_naive();
    // A zone may skip midnight (a DST change at 00:00): the day then starts at its first instant.
    let start = (0..=2)
        .find_map(|hour| zone.from_local_datetime(&day.and_hms_opt(hour, 0, 0)?).earliest())
        .map_or_else(
            || day.and_time(chrono::NaiveTime::MIN).and_utc(),
            |start| start.with_timezone(&Utc),
        );
    (day, start)
}

/// Whether some place on earth is, or was recently enough, in `day`; events of any other day
/// are dropped.
pub fn day_in_use(day: NaiveDate, now: DateTime<Utc>) -> bool {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    now >= start - Duration::hours(BEGINS_BEFORE_UTC_HOURS)
        && now < start + Duration::hours(24 + SERVES_AFTER_UTC_HOURS)
}

/// The first day still in use at `now`: earlier days' salts can be forgotten.
pub fn first_day_in_use(now: DateTime<Utc>) -> NaiveDate {
    (now - Duration::hours(24 + SERVES_AFTER_UTC_HOURS)).date_naive() + Duration::days(1)
}

/// The site a `$host` belongs to: its registrable domain (`app.example.co.uk` →
/// `example.co.uk`) with the port kept, so that one visitor is one visitor across a site's
/// subdomains. An address stays as it is (IPv6 in brackets), and `localhost` is `127.0.0.1`.
pub fn root_domain(host: &str) -> String {
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return format!("[{v6}]");
    }
    let rest = host.split_once("://").map_or(host, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, after)| after);
    let (name, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((address, after)) => match address.parse::<Ipv6Addr>() {
                Ok(v6) => (format!("[{v6}]"), after.strip_prefix(':')),
                Err(_) => return host.to_owned(),
            },
            None => return host.to_owned(),
        }
    } else {
        let (name, port) = match authority.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (name, Some(port)),
            _ => (authority, None),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let domain = if name.parse::<IpAddr>().is_ok() {
            name
        } else if name == "localhost" {
            "127.0.0.1".to_owned()
        } else {
            psl::domain_str(&name).map_or(name.clone(), str::to_owned)
        };
        (domain, port)
    };
    match port.filter(|port| !port.is_empty()) {
        Some(port) => format!("{name}:{port}"),
        None => name,
    }
}

/// The properties without what went into the hash and must not be kept without consent: the IP,
/// the raw user agent and `$cookieless_extra`, and the raw user agent from `$set` (and as
/// `$initial_raw_user_agent` from `$set_once`). With `ids`, also without the ids the store
/// gives the event (`$distinct_id`, `$device_id`, `$session_id`: posthog-js sends a null
/// `$device_id`), so that the store's can be appended to the text as they are. `None` when
/// there is nothing to remove.
pub fn without_identifying(properties: &str, ids: bool) -> Option<String> {
    const KEYS: [&str; 3] = ["$ip", "$raw_user_agent", "$cookieless_extra"];
    let removed: &[&str] = if ids {
        &[KEYS[0], KEYS[1], KEYS[2], "$distinct_id", "$device_id", "$session_id"]
    } else {
        &KEYS
    };
    if !removed.iter().any(|key| properties.contains(&key[1..])) {
        return None;
    }
    let mut object = RawObject::parse(properties).ok()?;
    object.entries.retain(|(key, _)| !removed.contains(&key.as_ref()));
    for (update, key) in [("$set", "$raw_user_agent"), ("$set_once", "$initial_raw_user_agent")] {
        let Some(raw) = object.get(update) else { continue };
        let Ok(mut inner) = RawObject::parse(raw) else { continue };
        if inner.take(key).is_some() {
            let text = inner.to_json();
            object.set(update, text);
        }
    }
    Some(object.to_json())
}
