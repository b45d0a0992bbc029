//! Cookieless mode through the whole core: events as posthog-js sends them with
//! `cookieless_mode`, decoded, committed, and read back from the outbox.
#![allow(clippy::needless_pass_by_value)] // `json!` values read best handed over whole

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::cookieless::{day_in_use, first_day_in_use, flags_visitor, root_domain, CookielessMode, Visitor, SENTINEL};
use super::person_store_tests::{Harness, TOKEN};
use super::request::RouteKind;
use super::row::EventRow;

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// An event as posthog-js sends it in cookieless mode.
fn cookieless(event: &str, distinct_id: &str, user_agent: &str, extra: Value) -> Value {
    let mut properties = json!({
        "$cookieless_mode": true,
        "$ip": "203.0.113.7",
        "$raw_user_agent": user_agent,
        "$host": "www.example.com",
        "$timezone": "Europe/Amsterdam",
        "$set_once": {"$initial_raw_user_agent": user_agent, "$initial_host": "www.example.com"},
    });
    if let (Some(properties), Some(extra)) = (properties.as_object_mut(), extra.as_object()) {
        properties.extend(extra.clone());
    }
    json!({"event": event, "distinct_id": distinct_id, "uuid": Uuid::now_v7().to_string(), "properties": properties})
}

fn anonymous(user_agent: &str) -> Value {
    cookieless("$pageview", SENTINEL, user_agent, json!({}))
}

/// 10:00 UTC today: an hour either side stays in the same day where the events say they are.
fn today_at_ten() -> chrono::DateTime<Utc> {
    Utc::now().date_naive().and_hms_opt(10, 0, 0).unwrap().and_utc()
}

fn at(mut event: Value, timestamp: chrono::DateTime<Utc>) -> Value {
    event["timestamp"] = timestamp.to_rfc3339().into();
    event
}

fn properties(row: &EventRow) -> Value {
    serde_json::from_str(row.properties.as_deref().unwrap_or("{}")).unwrap()
}

fn session_of(row: &EventRow) -> String {
    properties(row)["$session_id"].as_str().unwrap().to_owned()
}

fn one(harness: &mut Harness, event: Value) -> EventRow {
    let (mut events, _, _) = harness.send(json!([event]));
    assert_eq!(events.len(), 1);
    events.remove(0)
}

#[test]
fn a_visitor_is_named_by_the_hash_and_what_identifies_them_is_not_kept() {
    let mut harness = Harness::new();
    let first = one(&mut harness, anonymous(CHROME));
    let mut on_subdomain = anonymous(CHROME);
    on_subdomain["properties"]["$host"] = "shop.example.com".into();
    let second = one(&mut harness, on_subdomain);
    let other = one(&mut harness, anonymous(FIREFOX));

    assert!(first.distinct_id.starts_with("cookieless_"), "{}", first.distinct_id);
    assert_eq!(
        second.distinct_id, first.distinct_id,
        "one visitor across the site's subdomains"
    );
    assert_ne!(other.distinct_id, first.distinct_id);
    let props = properties(&first);
    assert!(props["$device_id"].as_str().unwrap().starts_with("cookielessd_"));
    assert_eq!(props["$device_id"], properties(&second)["$device_id"]);
    assert_eq!(session_of(&first), session_of(&second));
    assert_ne!(session_of(&first), session_of(&other));
    for key in ["$ip", "$raw_user_agent", "$distinct_id"] {
        assert!(props.get(key).is_none(), "{key} kept: {props}");
    }
    assert!(props["$set_once"].get("$initial_raw_user_agent").is_none());
    assert_eq!(props["$set_once"]["$initial_host"], "www.example.com");
    let person = harness.person(&first.distinct_id).expect("the visitor's person");
    assert!(!person.properties_json().contains("raw_user_agent"));
    assert!(harness.person(SENTINEL).is_none());
}

#[test]
fn extra_hash_contents_tell_visitors_apart_and_are_not_kept() {
    let mut harness = Harness::new();
    let plain = one(&mut harness, anonymous(CHROME));
    let extra = cookieless("$pageview", SENTINEL, CHROME, json!({"$cookieless_extra": "tenant-2"}));
    let with_extra = one(&mut harness, extra);
    assert_ne!(with_extra.distinct_id, plain.distinct_id);
    assert!(properties(&with_extra).get("$cookieless_extra").is_none());
}

#[test]
fn identify_joins_the_anonymous_visitor_and_a_later_visitor_on_the_device_is_someone_else() {
    let mut harness = Harness::new();
    let before = one(&mut harness, anonymous(CHROME));
    let identify = cookieless("$identify", "user-1", CHROME, json!({"$anon_distinct_id": SENTINEL}));
    let identified = one(&mut harness, identify.clone());
    assert_eq!(identified.distinct_id, "user-1");
    assert_eq!(
        properties(&identified)["$anon_distinct_id"],
        before.distinct_id.as_str()
    );
    let person = harness.person("user-1").expect("identified");
    assert_eq!(harness.person(&before.distinct_id).map(|p| p.uuid), Some(person.uuid));

    let after = one(&mut harness, cookieless("$pageview", "user-1", CHROME, json!({})));
    assert_eq!(after.distinct_id, "user-1");
    assert_eq!(
        session_of(&after),
        session_of(&before),
        "the session goes on through identify"
    );
    assert_eq!(properties(&after)["$device_id"], properties(&before)["$device_id"]);

    // Signed out, the next anonymous visitor from the same browser is a new id, not user-1.
    let signed_out = one(&mut harness, anonymous(CHROME));
    assert_ne!(signed_out.distinct_id, before.distinct_id);
    assert_ne!(
        harness.person(&signed_out.distinct_id).map(|p| p.uuid),
        Some(person.uuid)
    );

    // A retried identify (same uuid) is a duplicate and does not count again.
    let (retried, _, _) = harness.send(json!([identify]));
    assert!(retried.is_empty());
    assert_eq!(one(&mut harness, anonymous(CHROME)).distinct_id, signed_out.distinct_id);
}

/// The id a flags request from the browser of `anonymous(CHROME)` is answered for.
fn flags_id(harness: &Harness) -> String {
    let visitor = Visitor {
        ip: "203.0.113.7",
        host: "https://www.example.com",
        user_agent: CHROME,
        timezone: Some("Europe/Amsterdam"),
        extra: "",
    };
    let visitor = flags_visitor(harness.cookieless, &visitor, Utc::now()).expect("all inputs there");
    harness.store.cookieless_id(TOKEN, &visitor).unwrap()
}

#[test]
fn flags_are_for_the_id_the_visitors_events_get() {
    let mut harness = Harness::new();
    // Before any event of the day the salt is made by the flags request, and the events use it.
    let before_events = flags_id(&harness);
    assert_eq!(one(&mut harness, anonymous(CHROME)).distinct_id, before_events);
    let identify = cookieless("$identify", "user-1", CHROME, json!({"$anon_distinct_id": SENTINEL}));
    one(&mut harness, identify);
    let signed_out = flags_id(&harness);
    assert_ne!(signed_out, before_events);
    assert_eq!(one(&mut harness, anonymous(CHROME)).distinct_id, signed_out);

    let mut stateless = Harness::new();
    stateless.cookieless = CookielessMode::Stateless;
    assert_eq!(one(&mut stateless, anonymous(CHROME)).distinct_id, flags_id(&stateless));
    let visitor = Visitor {
        ip: "203.0.113.7",
        host: "www.example.com",
        user_agent: CHROME,
        timezone: None,
        extra: "",
    };
    assert!(flags_visitor(CookielessMode::Disabled, &visitor, Utc::now()).is_none());
    assert!(flags_visitor(
        CookielessMode::Stateful,
        &Visitor {
            user_agent: "",
            ..visitor
        },
        Utc::now()
    )
    .is_none());
}

#[test]
fn a_days_salt_is_forgotten_once_no_place_is_in_that_day() {
    let mut harness = Harness::new();
    let today = one(&mut harness, anonymous(CHROME)).distinct_id;
    // The other days in use get their salts ahead of their first event; then there is nothing to do.
    harness.store.maintain_cookieless(Utc::now()).unwrap();
    assert_eq!(harness.store.maintain_cookieless(Utc::now()).unwrap(), 0);
    assert_eq!(flags_id(&harness), today);
    // Three days on, today's salt and the visitor's session are gone: they can no longer be recognised.
    assert!(
        harness
            .store
            .maintain_cookieless(Utc::now() + Duration::days(3))
            .unwrap()
            >= 2
    );
    assert_ne!(flags_id(&harness), today);
}

#[test]
fn a_flags_request_hashes_what_posthog_js_would_have_sent() {
    let mut harness = Harness::new();
    let long_agent = format!("{CHROME} {}", "x".repeat(1200));
    let mut event = anonymous(CHROME);
    event["properties"]["$raw_user_agent"] = format!("{}...", &long_agent[..997]).into();
    let id = one(&mut harness, event).distinct_id;
    let visitor = Visitor {
        ip: "203.0.113.7",
        host: "https://www.example.com",
        user_agent: &long_agent,
        timezone: Some("Europe/Amsterdam"),
        extra: "",
    };
    let flags = flags_visitor(CookielessMode::Stateful, &visitor, Utc::now()).unwrap();
    assert_eq!(harness.store.cookieless_id(TOKEN, &flags).unwrap(), id);
    let sandboxed = Visitor {
        host: "null",
        ..visitor
    };
    assert!(flags_visitor(CookielessMode::Stateful, &sandboxed, Utc::now()).is_none());
}

#[test]
fn a_session_ends_after_thirty_minutes_without_events() {
    let mut harness = Harness::new();
    let start = today_at_ten();
    let first = one(&mut harness, at(anonymous(CHROME), start));
    let soon = one(&mut harness, at(anonymous(CHROME), start + Duration::minutes(29)));
    let later = one(&mut harness, at(anonymous(CHROME), start + Duration::minutes(61)));
    assert_eq!(first.distinct_id, later.distinct_id);
    assert_eq!(session_of(&first), session_of(&soon));
    assert_ne!(session_of(&soon), session_of(&later));
    let session = Uuid::parse_str(&session_of(&later)).unwrap();
    let (seconds, _) = session.get_timestamp().unwrap().to_unix();
    let later_seconds = u64::try_from((start + Duration::minutes(61)).timestamp()).unwrap();
    assert_eq!(seconds, later_seconds, "a session's uuid is of its first event");
}

#[test]
fn stateless_mode_gives_one_id_and_session_per_day_and_refuses_identify() {
    let mut harness = Harness::new();
    harness.cookieless = CookielessMode::Stateless;
    let first = one(&mut harness, at(anonymous(CHROME), today_at_ten()));
    let later = one(
        &mut harness,
        at(anonymous(CHROME), today_at_ten() + Duration::minutes(45)),
    );
    assert!(first.distinct_id.starts_with("cookieless_"));
    assert_eq!(first.distinct_id, later.distinct_id);
    assert_eq!(session_of(&first), session_of(&later));
    assert_eq!(properties(&first)["$distinct_id"], first.distinct_id.as_str());
    let identify = cookieless("$identify", "user-1", CHROME, json!({"$anon_distinct_id": SENTINEL}));
    let (rows, _, _) = harness.send(json!([identify, anonymous(CHROME)]));
    assert_eq!(rows.len(), 1);
    assert!(harness.person("user-1").is_none());
}

/// The drop reasons of one request's items, decoded as the server would.
fn dropped(mode: CookielessMode, items: Value) -> Vec<(String, u32)> {
    let mut harness = Harness::new();
    harness.cookieless = mode;
    let decoded = harness.decode(RouteKind::Event, &items).unwrap();
    decoded
        .dropped
        .iter()
        .map(|(r, n)| (r.as_str().to_owned(), *n))
        .collect()
}

#[test]
fn events_the_hash_cannot_be_made_for_are_dropped_alone() {
    let without = |key: &str| {
        let mut event = anonymous(CHROME);
        event["properties"].as_object_mut().unwrap().remove(key);
        event
    };
    let alias = cookieless("$create_alias", "user-1", CHROME, json!({"alias": "other"}));
    let old = at(anonymous(CHROME), Utc::now() - Duration::days(3));
    let items = json!([
        without("$raw_user_agent"),
        without("$ip"),
        without("$host"),
        alias,
        old,
        anonymous(CHROME)
    ]);
    let mut reasons = dropped(CookielessMode::Stateful, items);
    reasons.sort();
    let expected = [
        "cookieless_day_out_of_range",
        "cookieless_disallowed_event",
        "cookieless_missing_host",
        "cookieless_missing_ip",
        "cookieless_missing_ua",
    ];
    assert_eq!(reasons, expected.map(|reason| (reason.to_owned(), 1)));
    let off = dropped(
        CookielessMode::Disabled,
        json!([anonymous(CHROME), {"event": "e", "distinct_id": "d"}]),
    );
    assert_eq!(off, [("cookieless_disabled".to_owned(), 1)]);
}

#[test]
fn the_stores_ids_replace_any_the_sdk_sent() {
    let mut harness = Harness::new();
    let sent = json!({"$device_id": null, "$session_id": "sdk-session", "$distinct_id": SENTINEL});
    let row = one(&mut harness, cookieless("$pageview", SENTINEL, CHROME, sent));
    let text = row.properties.as_deref().unwrap();
    for key in ["\"$device_id\"", "\"$session_id\""] {
        assert_eq!(text.matches(key).count(), 1, "{key} once in {text}");
    }
    assert!(!text.contains("\"$distinct_id\""), "{text}");
    assert!(!text.contains("sdk-session"));
    assert!(properties(&row)["$device_id"]
        .as_str()
        .unwrap()
        .starts_with("cookielessd_"));
}

#[test]
fn root_domains() {
    for (host, root) in [
        ("www.example.com", "example.com"),
        ("app.example.co.uk", "example.co.uk"),
        ("shop.example.com:8443", "example.com:8443"),
        ("https://a.b.example.com/path?q=1", "example.com"),
        ("localhost:8000", "127.0.0.1:8000"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("::1", "[::1]"),
        ("[2001:db8::1]:443", "[2001:db8::1]:443"),
        ("Example.COM", "example.com"),
    ] {
        assert_eq!(root_domain(host), root, "{host}");
    }
}

#[test]
fn a_day_is_in_use_while_somewhere_on_earth_is_in_it() {
    let day = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
    let utc = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
    // Kiribati (UTC+14) enters the day at 10:00 UTC the day before.
    assert!(!day_in_use(day, utc(2, 9)));
    assert!(day_in_use(day, utc(2, 10)));
    assert!(day_in_use(day, utc(4, 13)));
    assert!(!day_in_use(day, utc(4, 14)));
    assert_eq!(first_day_in_use(utc(4, 13)), day);
    assert_eq!(first_day_in_use(utc(4, 14)), day.succ_opt().unwrap());
}
