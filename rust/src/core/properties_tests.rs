//! The property edits: defaults merged per key, splices, strips and the personless rewrite.

use super::*;

#[test]
fn defaults_given_twice_for_one_key_are_spliced_once() {
    // A `survey shown` with a `$set` of its own, from a client GeoIP places: the survey's
    // default and GeoIP's both go into the one `$set`, the client's values winning.
    let properties = r#"{"$ip":"8.8.8.8","$set":{"plan":"pro","$geoip_city_name":"Mine"}}"#;
    let value: Value = sonic_rs::from_str(properties).unwrap();
    let known = Known::scan(&value);
    let mut edits = PropertyEdits::new();
    edits.defaults(
        "$set",
        Entries::from([("$survey_last_seen_date", r#""2024-01-03""#.to_owned())]),
    );
    edits.defaults(
        "$set",
        Entries::from([
            ("$geoip_city_name", r#""Mountain View""#.to_owned()),
            ("$survey_last_seen_date", r#""later""#.to_owned()),
        ]),
    );
    let finished = edits.finish(&known, Cow::Borrowed(properties)).unwrap();
    let finished: serde_json::Value = serde_json::from_str(&finished).unwrap();
    assert_eq!(
        finished["$set"],
        serde_json::json!({"plan": "pro", "$geoip_city_name": "Mine", "$survey_last_seen_date": "2024-01-03"})
    );
}
