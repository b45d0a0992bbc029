//! A `/flags` or `/decide` body as the SDKs send it, read in one pass: each field with the alias
//! older SDKs use, the property objects kept as the JSON text the evaluation reads.

use std::collections::BTreeMap;

use serde::Deserialize;
use sonic_rs::error::Category;
use sonic_rs::LazyValue;

use crate::core::geoip::Location;
use crate::core::nesting::{check_depth, MAX_DEPTH};
use crate::core::rawjson::{self, RawObject};

/// PostHog's flags service cuts a distinct id to this many characters.
pub(super) const MAX_DISTINCT_ID: usize = 200;

/// PostHog's answer (400) to a request that asks for flags without saying for whom.
pub const MISSING_DISTINCT_ID: &str =
    "The distinct_id field is missing from the request. Please include a valid identifier.";

/// Why a body is not a flags request.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not strict JSON: the caller may still read it as JSON5 or base64, as PostHog does.
    NotJson,
    TooDeep,
    /// JSON, but a field has the wrong type.
    Invalid(String),
}

/// A flags request body. Absent objects read as `{}`.
#[derive(Debug, Default)]
pub struct FlagsBody {
    pub token: Option<String>,
    pub distinct_id: Option<String>,
    pub person_properties: String,
    /// `{type: key}` JSON text, the keys written out as text (others left out).
    pub groups: String,
    pub group_properties: String,
    pub anon_distinct_id: Option<String>,
    pub device_id: Option<String>,
    pub flag_keys: Option<Vec<String>>,
    pub environments: Option<Vec<String>>,
    pub disable_flags: bool,
    /// No location from the request's address (posthog-node and posthog-python send it).
    pub geoip_disable: bool,
    /// The visitor's IANA time zone and the site's own hash contents, for cookieless mode.
    pub timezone: Option<String>,
    pub cookieless_hash_extra: Option<String>,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    token: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "$token")]
    dollar_token: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    api_key: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    distinct_id: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "$distinct_id")]
    dollar_distinct_id: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    person_properties: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "$properties")]
    dollar_properties: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    groups: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "$groups")]
    dollar_groups: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    group_properties: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "$group_properties")]
    dollar_group_properties: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "$anon_distinct_id")]
    anon_distinct_id: Option<LazyValue<'a>>,
    #[serde(borrow, default, rename = "$device_id")]
    device_id: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    flag_keys_to_evaluate: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    flag_keys: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    evaluation_contexts: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    evaluation_environments: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    disable_flags: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    geoip_disable: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    timezone: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    cookieless_hash_extra: Option<LazyValue<'a>>,
}

impl FlagsBody {
    pub fn parse(text: &str) -> Result<Self, BodyError> {
        check_depth(text.as_bytes(), MAX_DEPTH).map_err(|_| BodyError::TooDeep)?;
        if !text.trim_start().starts_with('{') {
            // Valid JSON of another kind is a wrong request; anything else may be JSON5 or base64.
            return Err(match sonic_rs::from_str::<sonic_rs::Value>(text) {
                Ok(_) => BodyError::Invalid("the body is not a JSON object".to_owned()),
                Err(_) => BodyError::NotJson,
            });
        }
        let fields: Fields<'_> = sonic_rs::from_str(text).map_err(|err| match err.classify() {
            Category::TypeUnmatched => BodyError::Invalid(err.to_string()),
            _ => BodyError::NotJson,
        })?;
        let group_properties = either(fields.group_properties, fields.dollar_group_properties);
        let group_properties = object("group_properties", group_properties.as_ref())?;
        if let Some(text) = group_properties {
            let groups: BTreeMap<String, LazyValue<'_>> = parse("group_properties", text)?;
            for properties in groups.values() {
                object("group_properties", Some(properties))?;
            }
        }
        let person_properties = either(fields.person_properties, fields.dollar_properties);
        let mut token = None;
        for raw in [&fields.token, &fields.api_key, &fields.dollar_token] {
            let value = string("token", raw.as_ref())?;
            token = token.or(value.filter(|value| !value.is_empty()));
        }
        Ok(Self {
            token,
            distinct_id: identifier(
                "distinct_id",
                either(fields.distinct_id, fields.dollar_distinct_id).as_ref(),
            )?
            .map(|id| id.chars().take(MAX_DISTINCT_ID).collect()),
            person_properties: object("person_properties", person_properties.as_ref())?
                .unwrap_or("{}")
                .to_owned(),
            groups: groups(either(fields.groups, fields.dollar_groups).as_ref())?,
            group_properties: group_properties.unwrap_or("{}").to_owned(),
            anon_distinct_id: identifier("$anon_distinct_id", fields.anon_distinct_id.as_ref())?,
            device_id: identifier("$device_id", fields.device_id.as_ref())?,
            flag_keys: list(
                "flag_keys",
                either(fields.flag_keys_to_evaluate, fields.flag_keys).as_ref(),
            )?,
            environments: list(
                "evaluation_contexts",
                either(fields.evaluation_contexts, fields.evaluation_environments).as_ref(),
            )?,
            disable_flags: fields.disable_flags.as_ref().is_some_and(truthy),
            geoip_disable: fields.geoip_disable.as_ref().is_some_and(truthy),
            timezone: string("timezone", fields.timezone.as_ref())?,
            cookieless_hash_extra: string("cookieless_hash_extra", fields.cookieless_hash_extra.as_ref())?,
        })
    }

    /// The request's person properties with where its address is, as PostHog's flags service
    /// fills them: the seven keys its lookup gives, each only where the request has none (or
    /// `null`), so a flag on country works for a visitor with no person yet.
    pub fn locate(&mut self, location: &Location) {
        let found = [
            ("$geoip_city_name", &location.city_name),
            ("$geoip_country_name", &location.country_name),
            ("$geoip_country_code", &location.country_code),
            ("$geoip_continent_name", &location.continent_name),
            ("$geoip_continent_code", &location.continent_code),
            ("$geoip_postal_code", &location.postal_code),
            ("$geoip_time_zone", &location.time_zone),
        ];
        let Ok(mut properties) = RawObject::parse(&self.person_properties) else {
            return;
        };
        let mut changed = false;
        for (key, value) in found {
            let Some(value) = value else { continue };
            if properties.get(key).is_none_or(rawjson::is_null) {
                properties.set(key, rawjson::string_literal(value));
                changed = true;
            }
        }
        if changed {
            self.person_properties = properties.to_json();
        }
    }

    /// Whom the flags are for: `distinct_id`; nobody (`""`) when flags are disabled; `None`
    /// when flags are asked for without one.
    pub fn subject(&self) -> Option<&str> {
        match (&self.distinct_id, self.disable_flags) {
            (Some(id), _) => Some(id),
            (None, true) => Some(""),
            (None, false) => None,
        }
    }
}

fn is_null(raw: &LazyValue<'_>) -> bool {
    raw.as_raw_str() == "null"
}

/// The field, else its alias; JSON `null` counts as absent (contexts win over environments).
fn either<'a>(value: Option<LazyValue<'a>>, alias: Option<LazyValue<'a>>) -> Option<LazyValue<'a>> {
    value.filter(|raw| !is_null(raw)).or(alias)
}

fn parse<'de, T: Deserialize<'de>>(name: &str, text: &'de str) -> Result<T, BodyError> {
    sonic_rs::from_str(text).map_err(|err| BodyError::Invalid(format!("{name}: {err}")))
}

fn first_byte(raw: &LazyValue<'_>) -> Option<u8> {
    raw.as_raw_str().as_bytes().first().copied()
}

fn string(name: &str, raw: Option<&LazyValue<'_>>) -> Result<Option<String>, BodyError> {
    match raw.map(first_byte) {
        None | Some(Some(b'n')) => Ok(None),
        Some(Some(b'"')) => parse(name, raw.map_or("", LazyValue::as_raw_str)).map(Some),
        Some(_) => Err(BodyError::Invalid(format!("{name}: expected a string"))),
    }
}

/// A distinct id or group key as PostHog reads it: a string, or a number written out.
fn identifier(name: &str, raw: Option<&LazyValue<'_>>) -> Result<Option<String>, BodyError> {
    let Some(raw) = raw else { return Ok(None) };
    match first_byte(raw) {
        Some(b'"') => parse(name, raw.as_raw_str()).map(Some),
        Some(b'-' | b'0'..=b'9') => Ok(Some(parse::<sonic_rs::Number>(name, raw.as_raw_str())?.to_string())),
        Some(b'n') => Ok(None),
        _ => Err(BodyError::Invalid(format!("{name}: expected a string or a number"))),
    }
}

/// The JSON text of an object field, `None` for `null`.
fn object<'r>(name: &str, raw: Option<&'r LazyValue<'_>>) -> Result<Option<&'r str>, BodyError> {
    let Some(raw) = raw else { return Ok(None) };
    match first_byte(raw) {
        Some(b'{') => Ok(Some(raw.as_raw_str())),
        Some(b'n') => Ok(None),
        _ => Err(BodyError::Invalid(format!("{name}: expected an object"))),
    }
}

fn groups(raw: Option<&LazyValue<'_>>) -> Result<String, BodyError> {
    let Some(text) = object("groups", raw)? else {
        return Ok("{}".to_owned());
    };
    let named: BTreeMap<String, LazyValue<'_>> = parse("groups", text)?;
    let mut keys = BTreeMap::new();
    for (group_type, key) in named {
        // A group key that is neither text nor a number names no group.
        if let Ok(Some(key)) = identifier("groups", Some(&key)) {
            keys.insert(group_type, key);
        }
    }
    sonic_rs::to_string(&keys).map_err(|err| BodyError::Invalid(format!("groups: {err}")))
}

fn list(name: &str, raw: Option<&LazyValue<'_>>) -> Result<Option<Vec<String>>, BodyError> {
    raw.map_or(Ok(None), |raw| parse(name, raw.as_raw_str()))
}

/// `disable_flags` as the SDKs mean it: `"true"`, `"1"`, `"yes"`, or any truthy JSON value.
fn truthy(raw: &LazyValue<'_>) -> bool {
    let text = raw.as_raw_str();
    match first_byte(raw) {
        Some(b'"') => sonic_rs::from_str::<String>(text)
            .is_ok_and(|value| matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")),
        Some(b't') => true,
        Some(b'f' | b'n') => false,
        Some(b'[') => text[1..].trim_start() != "]",
        Some(b'{') => text[1..].trim_start() != "}",
        _ => sonic_rs::from_str::<f64>(text).is_ok_and(|value| value != 0.0),
    }
}

/// Why a token may not ask for flags, as PostHog's flags service says it (401).
pub fn token_refusal(token: Option<&str>, project_tokens: Option<&[String]>) -> Option<&'static str> {
    match token {
        None => Some("No API token provided. Please include a valid API token in your request."),
        Some(token)
            if token.starts_with("phx_")
                || project_tokens.is_some_and(|tokens| !tokens.is_empty() && !tokens.iter().any(|t| t == token)) =>
        {
            Some("The provided API key is invalid or has expired. Please check your API key and try again.")
        }
        Some(_) => None,
    }
}
