//! What the request itself says about each of its events: the client's IP, where that address
//! is, and the facts a Cloudflare edge adds in headers. They are added to an event's properties
//! only when the event does not carry them already; the SDK's own values are never overwritten.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use sonic_rs::JsonValueTrait;

use super::event_fields::is_truthy;
use super::geoip::{GeoIp, FIELDS};
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
    /// The client's address to locate events by, stored or not (`client_ip` when unset).
    pub geoip_ip: Option<&'a str>,
    /// `CF-Ray`, stored as `cf_ray`.
    pub cf_ray: Option<&'a str>,
    /// `CF-IPCountry`, stored as `$geoip_country_code` when no database locates the event.
    pub country_code: Option<&'a str>,
    /// Set by `decode` when a GeoIP database is open; callers leave it `None`.
    pub locator: Option<&'a Locator<'a>>,
}

/// Entries of an object: key and raw JSON value. Shared, since every event from one address
/// gets the same ones.
pub(super) type Entries = Arc<[(&'static str, String)]>;

/// One location, rendered once: the `$geoip_*` entries found (the event's), and every
/// `$geoip_*` and `$initial_geoip_*` key for its `$set` and `$set_once`, `null` where nothing
/// was found. As in PostHog's GeoIP transformation, a new location thus clears what an earlier
/// one knew and this one does not (a city, a postcode), rather than leave a person half in
/// each place.
#[derive(Debug)]
struct Located {
    found: Entries,
    set: Entries,
    set_once: Entries,
}

/// Locates a request's events: by their own `$ip` when they carry one, else by the request's
/// address. Each address is looked up once for a run of events that share it.
#[derive(Debug)]
pub struct Locator<'a> {
    geoip: &'a GeoIp,
    request_ip: Option<&'a str>,
    request: OnceLock<Option<Arc<Located>>>,
    /// The last address an event named itself, and what it gave.
    last_own: Mutex<Option<(String, Option<Arc<Located>>)>>,
}

impl<'a> Locator<'a> {
    pub fn new(geoip: &'a GeoIp, request_ip: Option<&'a str>) -> Self {
        Self {
            geoip,
            request_ip,
            request: OnceLock::new(),
            last_own: Mutex::new(None),
        }
    }

    fn locate(&self, address: &str) -> Option<Arc<Located>> {
        let address: IpAddr = address.trim().parse().ok()?;
        let properties = self.geoip.lookup(address)?.properties();
        if properties.is_empty() {
            return None;
        }
        let value = |field| {
            properties
                .iter()
                .find(|(found, _)| *found == field)
                .map_or_else(|| "null".to_owned(), |(_, raw)| raw.clone())
        };
        let set = FIELDS.iter().map(|field| (field.property, value(field))).collect();
        let set_once = FIELDS.iter().map(|field| (field.initial, value(field))).collect();
        let found = properties
            .into_iter()
            .map(|(field, raw)| (field.property, raw))
            .collect();
        Some(Arc::new(Located { found, set, set_once }))
    }

    fn locate_own(&self, address: &str) -> Option<Arc<Located>> {
        let Ok(mut last) = self.last_own.lock() else {
            return self.locate(address);
        };
        match &*last {
            Some((seen, located)) if seen == address => located.clone(),
            _ => {
                let located = self.locate(address);
                *last = Some((address.to_owned(), located.clone()));
                located
            }
        }
    }

    /// Add where the event comes from: to its properties, to its person through `$set`, and
    /// as `$initial_geoip_*` through `$set_once`, as PostHog's GeoIP transformation does.
    /// `false` when nothing is known about the address.
    fn apply(&self, known: &Known<'_>, edits: &mut PropertyEdits<'_>) -> bool {
        let located = if let Some(ip) = known.own_ip() {
            // The SDK named the address itself: that one or none.
            ip.as_str().and_then(|ip| self.locate_own(ip))
        } else {
            let request_ip = self.request_ip;
            self.request
                .get_or_init(|| request_ip.and_then(|ip| self.locate(ip)))
                .clone()
        };
        let Some(located) = located else {
            return false;
        };
        for (key, raw) in located.found.iter() {
            edits.add(known, key, raw.clone());
        }
        // A personless event updates no person; PostHog drops its `$set`, so none is added.
        if known
            .process_person_profile
            .is_some_and(|value| value.as_bool() == Some(false))
        {
            return true;
        }
        edits.defaults("$set", located.set.clone());
        edits.defaults("$set_once", located.set_once.clone());
        true
    }
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|value| !value.is_empty())
}

impl Enrichment<'_> {
    pub(super) fn apply(&self, known: &Known<'_>, edits: &mut PropertyEdits<'_>) {
        let internal = known.capture_internal.is_some();
        if let Some(ip) = present(self.client_ip) {
            let raw = rawjson::string_literal(if internal { INTERNAL_IP } else { ip });
            if known.ip.is_some() && known.own_ip().is_none() {
                edits.replace("$ip", raw);
            } else {
                edits.add(known, "$ip", raw);
            }
        }
        if let Some(ray) = present(self.cf_ray) {
            edits.add(known, "cf_ray", rawjson::string_literal(ray));
        }
        // Where the client is: meaningless for internal events, and unwanted when the SDK
        // turned GeoIP off (`$geoip_disable`, server SDKs by default).
        if internal || is_truthy(known.geoip_disable) {
            return;
        }
        if self.locator.is_some_and(|locator| locator.apply(known, edits)) {
            return;
        }
        // Cloudflare's country is the sender's, not that of an address the event names.
        if known.own_ip().is_some() {
            return;
        }
        // Cloudflare sends `XX` when it does not know and `T1` for Tor; neither is a country.
        let country = present(self.country_code).filter(|code| !matches!(*code, "XX" | "T1"));
        if let Some(country) = country {
            edits.add(known, "$geoip_country_code", rawjson::string_literal(country));
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use serde_json::{json, Value};

    use super::Enrichment;
    use crate::core::decode::{decode, DecoderConfig, HeaderFacts};
    use crate::core::geoip::GeoIp;
    use crate::core::request::{RequestParts, RouteKind};

    const CLOUDFLARE: Enrichment<'static> = Enrichment {
        client_ip: Some("203.0.113.9"),
        geoip_ip: None,
        cf_ray: Some("8f1e2d3c4b5a6978-AMS"),
        country_code: Some("NL"),
        locator: None,
    };

    /// The properties text of each event of `body`, decoded as the server would.
    pub(crate) fn decoded(
        route: RouteKind,
        body: &str,
        enrichment: Enrichment<'_>,
        geoip: Option<Arc<GeoIp>>,
    ) -> Vec<String> {
        let parts = RequestParts::posted(route, body.as_bytes());
        let headers = HeaderFacts {
            enrichment,
            ..HeaderFacts::default()
        };
        let config = DecoderConfig {
            geoip,
            ..DecoderConfig::default()
        };
        let decoded = decode(&parts, headers, &config, Utc::now()).unwrap();
        decoded.events.into_iter().map(|event| event.properties).collect()
    }

    fn enriched(properties: &Value, enrichment: Enrichment<'_>) -> Value {
        let body = json!({"api_key": "phc", "event": "e", "distinct_id": "d", "properties": properties}).to_string();
        serde_json::from_str(&decoded(RouteKind::Event, &body, enrichment, None)[0]).unwrap()
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
            cf_ray: Some(" "),
            country_code: Some("XX"),
            ..Enrichment::default()
        };
        assert_eq!(
            enriched(&json!({"capture_internal": true}), unknown_country),
            json!({"capture_internal": true})
        );
    }
}
