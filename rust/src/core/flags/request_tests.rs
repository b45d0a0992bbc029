//! Reading a `/flags` body: each field and its alias, the wrong shapes refused, the token rules,
//! and the location a request's address adds.

use super::request::*;
use crate::core::geoip::Location;

fn parsed(text: &str) -> FlagsBody {
    FlagsBody::parse(text).unwrap()
}

#[test]
fn fields_and_their_aliases() {
    let body = parsed(
        r#"{"$token":"phc_b","api_key":"","distinct_id":null,"$distinct_id":"u\u00e9","$properties":{"a":1},
           "$groups":{"company":"acme","team":7,"bad":[1],"none":null},"$group_properties":{"company":{"size":3}},
           "$anon_distinct_id":"anon","$device_id":12,"flag_keys":["a"],"evaluation_environments":["web"],
           "unknown":{"x":[1,2]}}"#,
    );
    assert_eq!(body.token.as_deref(), Some("phc_b"));
    assert_eq!(body.distinct_id.as_deref(), Some("ué"));
    assert_eq!(body.person_properties, r#"{"a":1}"#);
    assert_eq!(body.groups, r#"{"company":"acme","team":"7"}"#);
    assert_eq!(body.group_properties, r#"{"company":{"size":3}}"#);
    assert_eq!(body.anon_distinct_id.as_deref(), Some("anon"));
    assert_eq!(body.device_id.as_deref(), Some("12"));
    assert_eq!(body.flag_keys, Some(vec!["a".to_owned()]));
    assert_eq!(body.environments, Some(vec!["web".to_owned()]));
    assert!(!body.disable_flags);
}

#[test]
fn the_field_wins_over_its_alias_and_absent_objects_are_empty() {
    let body = parsed(
        r#"{"token":"phc_a","$token":"phc_b","distinct_id":5.5,"flag_keys_to_evaluate":["x"],"flag_keys":["y"]}"#,
    );
    assert_eq!(body.token.as_deref(), Some("phc_a"));
    assert_eq!(body.distinct_id.as_deref(), Some("5.5"));
    assert_eq!(body.flag_keys, Some(vec!["x".to_owned()]));
    assert_eq!((body.person_properties.as_str(), body.groups.as_str()), ("{}", "{}"));
    assert_eq!(body.group_properties, "{}");
}

#[test]
fn flags_need_a_distinct_id_unless_they_are_disabled() {
    assert_eq!(parsed(r#"{"distinct_id":"u"}"#).subject(), Some("u"));
    assert_eq!(parsed(r#"{"disable_flags":true}"#).subject(), Some(""));
    assert_eq!(parsed(r#"{"token":"t"}"#).subject(), None);
}

#[test]
fn a_long_distinct_id_is_cut_to_200_characters() {
    let body = parsed(&format!(r#"{{"distinct_id":"{}"}}"#, "é".repeat(300)));
    assert_eq!(body.distinct_id.unwrap().chars().count(), MAX_DISTINCT_ID);
}

#[test]
fn disable_flags_as_the_sdks_mean_it() {
    for (value, disabled) in [
        ("true", true),
        ("false", false),
        ("\"yes\"", true),
        ("\" TRUE \"", true),
        ("\"no\"", false),
        ("1", true),
        ("0", false),
        ("0.0", false),
        ("[]", false),
        ("[0]", true),
        ("{}", false),
        ("null", false),
    ] {
        let body = parsed(&format!(r#"{{"disable_flags":{value}}}"#));
        assert_eq!(body.disable_flags, disabled, "{value}");
    }
}

#[test]
fn wrong_shapes_say_which_field() {
    for (text, field) in [
        (r#"{"groups":[1]}"#, "groups"),
        (r#"{"person_properties":"a"}"#, "person_properties"),
        (r#"{"group_properties":{"company":5}}"#, "group_properties"),
        (r#"{"distinct_id":true}"#, "distinct_id"),
        (r#"{"token":5}"#, "token"),
        (r#"{"flag_keys":"a"}"#, "flag_keys"),
        ("[1, 2]", "JSON object"),
    ] {
        match FlagsBody::parse(text) {
            Err(BodyError::Invalid(why)) => assert!(why.contains(field), "{text}: {why}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn what_is_not_strict_json_is_left_to_the_lenient_readings() {
    for text in ["{not json", r#"{"a": NaN}"#, "eyJ0b2tlbiI6InQifQ==", ""] {
        assert_eq!(FlagsBody::parse(text).err(), Some(BodyError::NotJson), "{text}");
    }
    let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(1000), "]".repeat(1000));
    assert_eq!(FlagsBody::parse(&deep).err(), Some(BodyError::TooDeep));
}

#[test]
fn tokens_refused_as_posthog_refuses_them() {
    let allowed = ["phc_a".to_owned()];
    assert!(token_refusal(None, None).unwrap().contains("No API token"));
    assert!(token_refusal(Some("phx_key"), None).unwrap().contains("invalid"));
    assert!(token_refusal(Some("phc_b"), Some(&allowed))
        .unwrap()
        .contains("invalid"));
    assert_eq!(token_refusal(Some("phc_a"), Some(&allowed)), None);
    assert_eq!(token_refusal(Some("anything"), Some(&[])), None);
}

#[test]
fn the_location_fills_only_what_the_request_lacks() {
    let london = Location {
        city_name: Some("London".into()),
        country_code: Some("GB".into()),
        country_name: Some("United Kingdom".into()),
        time_zone: Some("Europe/London".into()),
        latitude: Some(51.5),
        ..Location::default()
    };
    let mut body = parsed(
        r#"{"distinct_id":"d","person_properties":{"$geoip_country_code":"AU","$geoip_city_name":null,"plan":"pro"}}"#,
    );
    body.locate(&london);
    let properties: serde_json::Value = serde_json::from_str(&body.person_properties).unwrap();
    assert_eq!(
        properties,
        serde_json::json!({
            "$geoip_country_code": "AU",
            "$geoip_city_name": "London",
            "plan": "pro",
            "$geoip_country_name": "United Kingdom",
            "$geoip_time_zone": "Europe/London",
        })
    );
    let mut none = parsed(r#"{"distinct_id":"d"}"#);
    none.locate(&Location::default());
    assert_eq!(none.person_properties, "{}");
    assert!(parsed(r#"{"distinct_id":"d","geoip_disable":true}"#).geoip_disable);
    assert!(!parsed(r#"{"distinct_id":"d","geoip_disable":false}"#).geoip_disable);
}
