//! What the request itself says about each of its events: the client's IP and the facts a
//! Cloudflare edge adds in headers. They are added to an event's properties only when the event
//! does not carry them already; the SDK's own values are never overwritten.

use super::event::is_true;
use super::properties::{Known, PropertyEdits};
use super::rawjson;

/// The IP capture records for events tagged `capture_internal` (PostHog's capture does the
/// same, so that events a server sends on a user's behalf do not carry the server's address).
const INTERNAL_IP: &str = "127.0.0.1";

/// Request-level facts, found by the server from headers and the connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Enrichment<'a> {
    /// The client's address, or `None` when it is not to be stored.
    pub client_ip: Option<&'a str>,
    /// `CF-Ray`, stored as `cf_ray`.
    pub cf_ray: Option<&'a str>,
    /// `CF-IPCountry`, stored as `$geoip_country_code`.
    pub country_code: Option<&'a str>,
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|value| !value.is_empty())
}

impl Enrichment<'_> {
    pub(super) fn apply(&self, known: &Known<'_>, edits: &mut PropertyEdits<'_>) {
        let internal = known.capture_internal.is_some();
        if let Some(ip) = present(self.client_ip) {
            let ip = if internal { INTERNAL_IP } else { ip };
            edits.add(known, "$ip", rawjson::string_literal(ip));
        }
        if let Some(ray) = present(self.cf_ray) {
            edits.add(known, "cf_ray", rawjson::string_literal(ray));
        }
        // The country describes the connecting address: meaningless for internal events, and
        // unwanted when the SDK turned GeoIP off (`$geoip_disable`, server SDKs by default).
        // Cloudflare sends `XX` when it does not know and `T1` for Tor; neither is a country.
        let country = present(self.country_code).filter(|code| !matches!(*code, "XX" | "T1"));
        if let Some(country) = country {
            if !internal && !is_true(known.geoip_disable) {
                edits.add(known, "$geoip_country_code", rawjson::string_literal(country));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::{json, Value};

    use super::Enrichment;
    use crate::core::decode::{decode, DecoderConfig, HeaderFacts};
    use crate::core::request::{RequestParts, RouteKind};

    const CLOUDFLARE: Enrichment<'static> = Enrichment {
        client_ip: Some("203.0.113.9"),
        cf_ray: Some("8f1e2d3c4b5a6978-AMS"),
        country_code: Some("NL"),
    };

    fn enriched(properties: &Value, enrichment: Enrichment<'_>) -> Value {
        let body = json!({"api_key": "phc", "event": "e", "distinct_id": "d", "properties": properties}).to_string();
        let parts = RequestParts {
            route: RouteKind::Event,
            body: body.as_bytes(),
            query: b"",
            content_type: None,
            content_encoding: None,
        };
        let headers = HeaderFacts {
            enrichment,
            ..HeaderFacts::default()
        };
        let config = DecoderConfig {
            team_id: None,
            project_tokens: None,
            max_inflated_bytes: 1 << 20,
            max_event_bytes: 1 << 20,
        };
        let decoded = decode(&parts, headers, &config, Utc::now()).unwrap();
        serde_json::from_str(&decoded.events[0].properties).unwrap()
    }

    #[test]
    fn request_facts_are_added_when_absent() {
        let props = enriched(&json!({"plan": "pro"}), CLOUDFLARE);
        assert_eq!(props["$ip"], "203.0.113.9");
        assert_eq!(props["cf_ray"], "8f1e2d3c4b5a6978-AMS");
        assert_eq!(props["$geoip_country_code"], "NL");
        assert_eq!(props["plan"], "pro");
    }

    #[test]
    fn the_events_own_values_win() {
        let own = json!({"$ip": "198.51.100.1", "cf_ray": "mine", "$geoip_country_code": "DE"});
        let props = enriched(&own, CLOUDFLARE);
        assert_eq!(props, own);
    }

    #[test]
    fn internal_events_and_geoip_opt_out() {
        let props = enriched(&json!({"capture_internal": false}), CLOUDFLARE);
        assert_eq!(props["$ip"], "127.0.0.1");
        assert!(props.get("$geoip_country_code").is_none());
        let props = enriched(&json!({"$geoip_disable": true}), CLOUDFLARE);
        assert_eq!(props["$ip"], "203.0.113.9");
        assert!(props.get("$geoip_country_code").is_none());
    }

    #[test]
    fn nothing_known_adds_nothing() {
        assert_eq!(enriched(&json!({}), Enrichment::default()), json!({}));
        let unknown_country = Enrichment {
            client_ip: None,
            cf_ray: Some(" "),
            country_code: Some("XX"),
        };
        assert_eq!(
            enriched(&json!({"capture_internal": true}), unknown_country),
            json!({"capture_internal": true})
        );
    }
}
