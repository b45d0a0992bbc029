//! The rows hogflare ships: Hogflare's event row and person snapshot row (the Cloudflare
//! Pipelines schemas and the lake tables), kept in the outbox in a compact binary form until
//! every sink has them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::Result;
use super::event::NormalizedEvent;
use super::outbox_dictionary::COMPRESSED;
use super::person::Person;
pub use super::person_record::PersonRef;
use super::timestamp;

/// `source` of rows that came from an SDK.
pub const SOURCE_POSTHOG: &str = "posthog";
/// `source` of rows hogflare made itself.
pub const SOURCE_HOGFLARE: &str = "hogflare";

/// One event as it lands: the columns of Hogflare's `PipelineEvent`. JSON columns hold JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub uuid: Uuid,
    pub team_id: Option<i64>,
    pub source: String,
    pub event: String,
    pub distinct_id: String,
    /// Microseconds since the epoch, UTC.
    pub created_at: i64,
    pub timestamp: Option<i64>,
    pub properties: Option<String>,
    pub context: Option<String>,
    pub person_id: Option<String>,
    pub person_created_at: Option<i64>,
    pub person_properties: Option<String>,
    pub groups: [Option<String>; 5],
    pub group_properties: Option<String>,
    pub api_key: Option<String>,
    pub extra: Option<String>,
}

impl EventRow {
    pub fn from_event(
        event: NormalizedEvent,
        source: &str,
        token: &str,
        team_id: Option<i64>,
        created_at: i64,
    ) -> Self {
        Self {
            uuid: event.uuid,
            team_id,
            source: source.to_owned(),
            event: event.event,
            distinct_id: event.distinct_id,
            created_at,
            timestamp: Some(timestamp::to_micros(event.timestamp)),
            properties: Some(event.properties),
            context: event.context,
            person_id: None,
            person_created_at: None,
            person_properties: None,
            groups: Default::default(),
            group_properties: None,
            api_key: Some(token.to_owned()),
            extra: event.extra,
        }
    }
}

/// A person as one event left it: Hogflare's person snapshot row. The person is kept whole, in
/// the store's layout (`person_record`); the row's JSON columns are made from it when the row is
/// exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonSnapshot {
    pub uuid: Uuid,
    pub team_id: Option<i64>,
    /// `capture`, `identify`, `alias`, `merge`, `session_recording`, or `merged` for a person
    /// a merge removed.
    pub operation: String,
    #[serde(with = "stored_person")]
    pub person: Person,
    pub canonical_distinct_id: String,
    /// Microseconds since the epoch.
    pub updated_at: i64,
    pub api_key: Option<String>,
    pub source_event_uuid: Uuid,
}

/// A person field in the outbox: the person's stored layout, as bytes.
mod stored_person {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Person, PersonRef};

    pub fn serialize<S: Serializer>(person: &Person, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        person.encode(&mut bytes);
        serializer.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Person, D::Error> {
        Person::decode(<&[u8]>::deserialize(deserializer)?).map_err(D::Error::custom)
    }

    pub fn serialize_encoded<S: Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn borrow<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<PersonRef<'a>, D::Error> {
        PersonRef::parse(<&'de [u8]>::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

/// `PersonSnapshot` as the store writes it, with the person already encoded
/// (`Person::encode`).
#[derive(Debug, Serialize)]
pub struct PersonSnapshotOf<'a> {
    pub uuid: Uuid,
    pub team_id: Option<i64>,
    pub operation: &'a str,
    #[serde(serialize_with = "stored_person::serialize_encoded")]
    pub person: &'a [u8],
    pub canonical_distinct_id: &'a str,
    pub updated_at: i64,
    pub api_key: Option<&'a str>,
    pub source_event_uuid: Uuid,
}

/// The entries as the store writes them: `OutboxRecordRef`'s variants in the same order, the
/// persons already encoded.
#[derive(Serialize)]
enum EntryOf<'b, 'c> {
    #[allow(dead_code)]
    Event(()),
    Person(&'b PersonSnapshotOf<'c>),
    PersonEvent(&'b EventRow, &'b PersonSnapshotOf<'c>),
    PersonEventShown(&'b EventRow, &'b PersonSnapshotOf<'c>, &'b str),
    PersonEventAt(u64, &'b EventRow, &'b PersonSnapshotOf<'c>),
    PersonEventShownAt(u64, &'b EventRow, &'b PersonSnapshotOf<'c>, &'b str),
}

impl PersonSnapshotOf<'_> {
    /// Append the outbox entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        *out = postcard::to_extend(&EntryOf::Person(self), std::mem::take(out))?;
        Ok(())
    }

    /// Append the outbox entry of an event and this snapshot of the person it resolved to.
    /// The event's `person_properties` are left out: they are the snapshot's, with `shown` (the
    /// event's `$set` values the person did not take) laid over them. With `at`, the person is
    /// the one the entry at that position holds, and this snapshot's `person` is empty.
    pub fn encode_with_event(
        &self,
        event: &EventRow,
        shown: Option<&str>,
        at: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        debug_assert!(event.person_properties.is_none());
        debug_assert!(at.is_none() || self.person.is_empty());
        let entry = match (shown, at) {
            (None, None) => EntryOf::PersonEvent(event, self),
            (Some(shown), None) => EntryOf::PersonEventShown(event, self, shown),
            (None, Some(at)) => EntryOf::PersonEventAt(at, event, self),
            (Some(shown), Some(at)) => EntryOf::PersonEventShownAt(at, event, self, shown),
        };
        *out = postcard::to_extend(&entry, std::mem::take(out))?;
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// How many rows an entry holds, from its first byte (the variant's index, with
/// `outbox_dictionary::COMPRESSED` set when the entry is compressed).
pub fn rows_in_entry(bytes: &[u8]) -> u64 {
    match bytes.first().map(|kind| kind & !COMPRESSED) {
        Some(2..=5) => 2,
        _ => 1,
    }
}

/// An outbox entry takes one position per row, from its key on; this is the last of them, the
/// position a sink that has the entry is at.
pub fn last_position(key: u64, bytes: &[u8]) -> u64 {
    key + rows_in_entry(bytes) - 1
}

/// What one outbox entry holds. New kinds are appended at the end so stored entries keep
/// their meaning. The kinds whose person is held by another entry
/// (`OutboxRecordRef::PersonEventAt`) are read borrowed only, where that entry is at hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // made one at a time and encoded at once, never held in bulk
pub enum OutboxRecord {
    Event(EventRow),
    Person(PersonSnapshot),
    /// An event and the snapshot of the person it resolved to, in one entry: the person's
    /// properties are kept once, in the snapshot, and the event row's `person_properties` are
    /// left out (`None`) until the entry is read.
    PersonEvent(EventRow, PersonSnapshot),
    /// `PersonEvent`, with the event's `$set` values (a JSON object) its row shows over the
    /// person's properties: fast-changing keys the person does not take on their own.
    PersonEventShown(EventRow, PersonSnapshot, String),
}

impl OutboxRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(postcard::to_stdvec(self)?)
    }

    /// Append the encoded entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        *out = postcard::to_extend(self, std::mem::take(out))?;
        Ok(())
    }

    /// The rows the entry holds, as `OutboxRecordRef::rows`. The store reads entries borrowed;
    /// the owned reading is the tests'.
    #[cfg(test)]
    pub fn rows(self) -> (Option<EventRow>, Option<PersonSnapshot>) {
        match self {
            Self::Event(event) => (Some(event), None),
            Self::Person(person) => (None, Some(person)),
            Self::PersonEvent(event, person) | Self::PersonEventShown(event, person, _) => (Some(event), Some(person)),
        }
    }

    #[cfg(test)]
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(match postcard::from_bytes(bytes)? {
            Self::PersonEvent(mut event, person) => {
                event.person_properties = Some(person.person.properties_json());
                Self::PersonEvent(event, person)
            }
            Self::PersonEventShown(mut event, person, shown) => {
                // As the export makes it: the borrowed reading's row.
                let (row, _) = OutboxRecordRef::decode(bytes)?.rows(unresolved)?;
                event.person_properties = row
                    .and_then(|row| row.person_properties)
                    .map(std::borrow::Cow::into_owned);
                Self::PersonEventShown(event, person, shown)
            }
            record => record,
        })
    }
}

#[path = "row_read.rs"]
mod read;
pub use read::{person_held_at, unresolved, EventRowRef, OutboxRecordRef, PersonSnapshotAtRef, PersonSnapshotRef};

#[cfg(test)]
#[path = "row_tests.rs"]
mod tests;
