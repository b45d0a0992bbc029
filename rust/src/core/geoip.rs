//! Offline GeoIP: where an address is, read from MaxMind DB files mapped into memory once.
//!
//! Two record layouts are read. MaxMind's GeoIP2/GeoLite2 City layout is nested and carries
//! English names; the DB-IP Lite City files hogflare installs are flat (`country_code, state1,
//! state2, city, postcode, latitude, longitude, timezone`), so their country and continent names
//! come from the country code.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{Mmap, Reader};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::countries;
use super::error::{CoreError, Result};
use super::rawjson;

/// One of PostHog's GeoIP properties: the event's key (also the person's, through `$set`) and the
/// person's `$set_once` key.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub property: &'static str,
    pub initial: &'static str,
}

macro_rules! fields {
    ($($name:literal),* $(,)?) => {
        [$(Field { property: concat!("$geoip_", $name), initial: concat!("$initial_geoip_", $name) }),*]
    };
}

/// Every property a location can give, by PostHog's names.
pub const FIELDS: [Field; 16] = fields![
    "city_name",
    "country_name",
    "country_code",
    "continent_name",
    "continent_code",
    "postal_code",
    "latitude",
    "longitude",
    "accuracy_radius",
    "time_zone",
    "subdivision_1_code",
    "subdivision_1_name",
    "subdivision_2_code",
    "subdivision_2_name",
    "subdivision_3_code",
    "subdivision_3_name",
];

/// PostHog names three levels of subdivision; deeper ones are not kept.
const MAX_SUBDIVISIONS: usize = 3;

/// What a database knows about an address. Empty values in the database are `None` here.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Location {
    pub city_name: Option<String>,
    pub country_name: Option<String>,
    pub country_code: Option<String>,
    pub continent_name: Option<String>,
    pub continent_code: Option<String>,
    pub postal_code: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub accuracy_radius: Option<u32>,
    pub time_zone: Option<String>,
    /// Largest first: ISO code and English name of each level.
    pub subdivisions: Vec<(Option<String>, Option<String>)>,
}

impl Location {
    /// The `$geoip_*` properties of this location as raw JSON values, in `FIELDS` order.
    pub fn properties(&self) -> Vec<(&'static Field, String)> {
        let mut out = Vec::with_capacity(FIELDS.len());
        let mut text = |index: usize, value: Option<&String>| {
            if let Some(value) = value {
                out.push((&FIELDS[index], rawjson::string_literal(value)));
            }
        };
        text(0, self.city_name.as_ref());
        text(1, self.country_name.as_ref());
        text(2, self.country_code.as_ref());
        text(3, self.continent_name.as_ref());
        text(4, self.continent_code.as_ref());
        text(5, self.postal_code.as_ref());
        for (index, degrees) in [(6, self.latitude), (7, self.longitude)] {
            if let Some(text) = degrees.and_then(|degrees| sonic_rs::to_string(&degrees).ok()) {
                out.push((&FIELDS[index], text));
            }
        }
        if let Some(radius) = self.accuracy_radius {
            out.push((&FIELDS[8], radius.to_string()));
        }
        if let Some(zone) = &self.time_zone {
            out.push((&FIELDS[9], rawjson::string_literal(zone)));
        }
        for (level, (code, name)) in self.subdivisions.iter().take(MAX_SUBDIVISIONS).enumerate() {
            for (offset, value) in [code, name].into_iter().enumerate() {
                if let Some(value) = value {
                    out.push((&FIELDS[10 + 2 * level + offset], rawjson::string_literal(value)));
                }
            }
        }
        out
    }
}

/// Open MaxMind DB files (one per address family, or one for both), asked in order.
pub struct GeoIp {
    databases: Vec<(PathBuf, Reader<Mmap>)>,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.databases.iter().map(|(path, _)| path))
            .finish()
    }
}

impl GeoIp {
    /// Map the files into memory and read their metadata; their records are read per lookup.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let failed = |path: &Path, detail: String| CoreError::GeoIpDatabase {
            path: path.display().to_string(),
            detail,
        };
        if paths.is_empty() {
            return Err(failed(Path::new(""), "no database file given".into()));
        }
        let mut databases = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            #[allow(unsafe_code)]
            // SAFETY: a mapping is only undefined behaviour when its file is changed in place.
            // Database files are data that is replaced, not edited: npm and MaxMind's updater
            // write a new file and rename it over the old one, which leaves the mapped one intact.
            let reader = unsafe { Reader::open_mmap(path) }.map_err(|err| failed(path, err.to_string()))?;
            databases.push((path.to_path_buf(), reader));
        }
        Ok(Self { databases })
    }

    /// Where `address` is; `None` when no database knows (private and loopback addresses too).
    pub fn lookup(&self, address: IpAddr) -> Option<Location> {
        let address = address.to_canonical();
        self.databases.iter().find_map(|(_, reader)| {
            if address.is_ipv6() && reader.metadata().ip_version == 4 {
                return None;
            }
            // A record that does not decode is a database this reader does not understand:
            // the event is kept without a location rather than refused.
            let record: Record<'_> = reader.lookup(address).ok()?.decode().ok()??;
            record.into_location()
        })
    }
}

fn text(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// One record in either layout; every key is optional.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Record<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    state1: Option<&'a str>,
    #[serde(borrow)]
    state2: Option<&'a str>,
    #[serde(borrow)]
    postcode: Option<&'a str>,
    #[serde(borrow)]
    timezone: Option<&'a str>,
    latitude: Option<Number>,
    longitude: Option<Number>,
    /// A name in DB-IP's layout, a place with names in MaxMind's.
    #[serde(borrow)]
    city: Option<NameOrPlace<'a>>,
    #[serde(borrow)]
    country: Option<Place<'a>>,
    #[serde(borrow)]
    continent: Option<Place<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Subdivisions<'a>>,
    #[serde(borrow)]
    postal: Option<Place<'a>>,
    #[serde(borrow)]
    location: Option<Position<'a>>,
}

impl Record<'_> {
    fn into_location(self) -> Option<Location> {
        let country = self.country.unwrap_or_default();
        let continent = self.continent.unwrap_or_default();
        let position = self.location.unwrap_or_default();
        let country_code = text(country.iso_code.or(self.country_code)).map(|code| code.to_ascii_uppercase());
        let known = country_code.as_deref().and_then(countries::country);
        let continent_code = text(continent.code).or_else(|| known.map(|k| k.continent_code.to_owned()));
        let continent_name = text(continent.english()).or_else(|| {
            continent_code
                .as_deref()
                .and_then(countries::continent_name)
                .map(str::to_owned)
        });
        let subdivisions = if let Some(Subdivisions(places)) = self.subdivisions {
            places
                .into_iter()
                .map(|place| (text(place.iso_code), text(place.english())))
                .collect()
        } else {
            let mut levels = vec![(None, text(self.state1)), (None, text(self.state2))];
            while levels.last().is_some_and(|(_, name)| name.is_none()) {
                levels.pop();
            }
            levels
        };
        let location = Location {
            city_name: match self.city {
                Some(NameOrPlace::Name(name)) => text(Some(name)),
                Some(NameOrPlace::Place(place)) => text(place.english()),
                None => None,
            },
            country_name: text(country.english()).or_else(|| known.map(|k| k.name.to_owned())),
            country_code,
            continent_name,
            continent_code,
            postal_code: text(self.postal.and_then(|postal| postal.code).or(self.postcode)),
            latitude: position.latitude.or(self.latitude).map(|c| c.0),
            longitude: position.longitude.or(self.longitude).map(|c| c.0),
            accuracy_radius: position
                .accuracy_radius
                .map(|radius| radius.0)
                .filter(|radius| radius.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(radius))
                .map(|radius| radius as u32),
            time_zone: text(position.time_zone.or(self.timezone)),
            subdivisions,
        };
        (location != Location::default()).then_some(location)
    }
}

/// A MaxMind place: country, continent, subdivision, city or postal code.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Place<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    code: Option<&'a str>,
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

impl<'a> Place<'a> {
    fn english(&self) -> Option<&'a str> {
        self.names.as_ref().and_then(|names| names.en)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Names<'a> {
    #[serde(borrow)]
    en: Option<&'a str>,
}

/// MaxMind's `location`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Position<'a> {
    latitude: Option<Number>,
    longitude: Option<Number>,
    accuracy_radius: Option<Number>,
    #[serde(borrow)]
    time_zone: Option<&'a str>,
}

enum NameOrPlace<'a> {
    Name(&'a str),
    Place(Place<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for NameOrPlace<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Either<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Either<'a> {
            type Value = NameOrPlace<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name or a map with names")
            }
            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(NameOrPlace::Name(name))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> std::result::Result<Self::Value, M::Error> {
                Place::deserialize(MapAccessDeserializer::new(map)).map(NameOrPlace::Place)
            }
        }
        deserializer.deserialize_any(Either(PhantomData))
    }
}

/// The first `MAX_SUBDIVISIONS` subdivisions; the rest are skipped without being decoded.
struct Subdivisions<'a>(Vec<Place<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Subdivisions<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Levels<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Levels<'a> {
            type Value = Subdivisions<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of subdivisions")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> std::result::Result<Self::Value, S::Error> {
                let mut places = Vec::new();
                while places.len() < MAX_SUBDIVISIONS {
                    match seq.next_element()? {
                        Some(place) => places.push(place),
                        None => return Ok(Subdivisions(places)),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Subdivisions(places))
            }
        }
        deserializer.deserialize_seq(Levels(PhantomData))
    }
}

/// A number of any of the widths MMDB has (GeoIP2 writes `accuracy_radius` as a 16-bit integer,
/// which serde's `u32` refuses). DB-IP stores degrees as single precision floats: they are read
/// as the shortest decimal that names them (`37.422`, not `37.42200088500977`).
#[derive(Clone, Copy)]
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Degrees;
        impl Visitor<'_> for Degrees {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f32<E: de::Error>(self, value: f32) -> std::result::Result<Number, E> {
                let shortest = sonic_rs::to_string(&value).ok().and_then(|text| text.parse().ok());
                Ok(Number(shortest.unwrap_or(f64::from(value))))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> std::result::Result<Number, E> {
                Ok(Number(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> std::result::Result<Number, E> {
                Ok(Number(value as f64))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> std::result::Result<Number, E> {
                Ok(Number(value as f64))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> std::result::Result<Number, E> {
                value.trim().parse().map(Number).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Degrees)
    }
}
