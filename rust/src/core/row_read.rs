//! The rows of an outbox entry read back borrowed, from the store's memory map (or a
//! decompressed copy) for as long as the read lasts.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::stored_person;
use super::PersonRef;
use crate::core::error::{CoreError, Result};

/// The text fields of an entry, checked for UTF-8 with `simdutf8`, as a stored person's text is:
/// the export reads every row's properties through here, and the standard library's check takes
/// about twice as long on ASCII JSON and five times as long once some of it is not ASCII.
/// postcard writes a string as it writes bytes, so the fields are read as bytes and checked here.
mod stored_text {
    use serde::{Deserialize, Deserializer};
    use std::borrow::Cow;

    fn checked<E: serde::de::Error>(bytes: &[u8]) -> Result<&str, E> {
        simdutf8::basic::from_utf8(bytes).map_err(|_| E::custom("a stored text is not UTF-8"))
    }

    pub fn borrow<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<&'a str, D::Error> {
        checked(<&'de [u8]>::deserialize(deserializer)?)
    }

    pub fn borrow_option<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'a str>, D::Error> {
        Option::<&'de [u8]>::deserialize(deserializer)?.map(checked).transpose()
    }

    pub fn borrow_cow_option<'de: 'a, 'a, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Cow<'a, str>>, D::Error> {
        Ok(borrow_option(deserializer)?.map(Cow::Borrowed))
    }

    pub fn borrow_groups<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<[Option<&'a str>; 5], D::Error> {
        let groups = <[Option<&'de [u8]>; 5]>::deserialize(deserializer)?;
        let mut checked_groups = [None; 5];
        for (slot, group) in checked_groups.iter_mut().zip(groups) {
            *slot = group.map(checked).transpose()?;
        }
        Ok(checked_groups)
    }
}

/// An `EventRow` read back from the store without copying its text: the same encoding,
/// borrowed from the store's memory map for as long as the read transaction lasts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventRowRef<'a> {
    pub uuid: Uuid,
    pub team_id: Option<i64>,
    #[serde(borrow, deserialize_with = "stored_text::borrow")]
    pub source: &'a str,
    #[serde(borrow, deserialize_with = "stored_text::borrow")]
    pub event: &'a str,
    #[serde(borrow, deserialize_with = "stored_text::borrow")]
    pub distinct_id: &'a str,
    pub created_at: i64,
    pub timestamp: Option<i64>,
    #[serde(borrow, deserialize_with = "stored_text::borrow_option")]
    pub properties: Option<&'a str>,
    #[serde(borrow, deserialize_with = "stored_text::borrow_option")]
    pub context: Option<&'a str>,
    #[serde(borrow, deserialize_with = "stored_text::borrow_option")]
    pub person_id: Option<&'a str>,
    pub person_created_at: Option<i64>,
    #[serde(borrow, deserialize_with = "stored_text::borrow_cow_option")]
    pub person_properties: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "stored_text::borrow_groups")]
    pub groups: [Option<&'a str>; 5],
    #[serde(borrow, deserialize_with = "stored_text::borrow_option")]
    pub group_properties: Option<&'a str>,
    #[serde(borrow, deserialize_with = "stored_text::borrow_option")]
    pub api_key: Option<&'a str>,
    #[serde(borrow, deserialize_with = "stored_text::borrow_option")]
    pub extra: Option<&'a str>,
}

/// How a snapshot's person is read: in place (`PersonRef`), or left as the bytes the store wrote
/// where another entry holds the person (`HeldElsewhere`).
pub trait SnapshotPerson<'a>: Sized {
    fn read<'de: 'a, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error>;
}

impl<'a> SnapshotPerson<'a> for PersonRef<'a> {
    fn read<'de: 'a, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        stored_person::borrow(deserializer)
    }
}

/// The person of a snapshot whose entry points to the entry that holds it: empty until that
/// entry is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldElsewhere;

impl<'a> SnapshotPerson<'a> for HeldElsewhere {
    fn read<'de: 'a, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        <&'de [u8]>::deserialize(deserializer).map(|_| HeldElsewhere)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(bound(deserialize = "'de: 'a, P: SnapshotPerson<'a>"))]
pub struct PersonSnapshotRef<'a, P = PersonRef<'a>> {
    pub uuid: Uuid,
    pub team_id: Option<i64>,
    #[serde(deserialize_with = "stored_text::borrow")]
    pub operation: &'a str,
    #[serde(deserialize_with = "P::read")]
    pub person: P,
    #[serde(deserialize_with = "stored_text::borrow")]
    pub canonical_distinct_id: &'a str,
    pub updated_at: i64,
    #[serde(deserialize_with = "stored_text::borrow_option")]
    pub api_key: Option<&'a str>,
    pub source_event_uuid: Uuid,
}

/// The snapshot row of an entry whose person another entry holds.
pub type PersonSnapshotAtRef<'a> = PersonSnapshotRef<'a, HeldElsewhere>;

impl<'a> PersonSnapshotAtRef<'a> {
    fn with_person(self, person: PersonRef<'a>) -> PersonSnapshotRef<'a> {
        PersonSnapshotRef {
            uuid: self.uuid,
            team_id: self.team_id,
            operation: self.operation,
            person,
            canonical_distinct_id: self.canonical_distinct_id,
            updated_at: self.updated_at,
            api_key: self.api_key,
            source_event_uuid: self.source_event_uuid,
        }
    }
}

/// `OutboxRecord`, borrowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[allow(clippy::large_enum_variant)] // read one at a time and split into its rows at once
pub enum OutboxRecordRef<'a> {
    #[serde(borrow)]
    Event(EventRowRef<'a>),
    #[serde(borrow)]
    Person(PersonSnapshotRef<'a>),
    PersonEvent(#[serde(borrow)] EventRowRef<'a>, #[serde(borrow)] PersonSnapshotRef<'a>),
    PersonEventShown(
        #[serde(borrow)] EventRowRef<'a>,
        #[serde(borrow)] PersonSnapshotRef<'a>,
        #[serde(borrow, deserialize_with = "stored_text::borrow")] &'a str,
    ),
    /// `PersonEvent` whose person is the one the entry at the given position holds: the same
    /// person, unchanged, as an earlier event of the same commit left it.
    PersonEventAt(
        u64,
        #[serde(borrow)] EventRowRef<'a>,
        #[serde(borrow)] PersonSnapshotAtRef<'a>,
    ),
    /// `PersonEventShown`, its person held as in `PersonEventAt`.
    PersonEventShownAt(
        u64,
        #[serde(borrow)] EventRowRef<'a>,
        #[serde(borrow)] PersonSnapshotAtRef<'a>,
        #[serde(borrow, deserialize_with = "stored_text::borrow")] &'a str,
    ),
}

impl<'a> OutboxRecordRef<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        Ok(postcard::from_bytes(bytes)?)
    }

    /// The rows the entry holds: an event row (its person's properties filled in from the
    /// snapshot it came with, with what the event showed over them), a person snapshot row, or
    /// both. `earlier` finds the person of an entry that holds it elsewhere: the person the
    /// entry at a position holds.
    pub fn rows(
        self,
        earlier: impl FnOnce(u64) -> Result<PersonRef<'a>>,
    ) -> Result<(Option<EventRowRef<'a>>, Option<PersonSnapshotRef<'a>>)> {
        Ok(match self {
            Self::Event(event) => (Some(event), None),
            Self::Person(person) => (None, Some(person)),
            Self::PersonEvent(event, person) => event_of_person(event, person, None),
            Self::PersonEventShown(event, person, shown) => event_of_person(event, person, Some(shown)),
            Self::PersonEventAt(at, event, person) => event_of_person(event, person.with_person(earlier(at)?), None),
            Self::PersonEventShownAt(at, event, person, shown) => {
                event_of_person(event, person.with_person(earlier(at)?), Some(shown))
            }
        })
    }

    /// The person the entry holds itself: the one the entries that point to it take.
    pub fn person(&self) -> Option<PersonRef<'a>> {
        match self {
            Self::Person(snapshot) | Self::PersonEvent(_, snapshot) | Self::PersonEventShown(_, snapshot, _) => {
                Some(snapshot.person)
            }
            Self::Event(_) | Self::PersonEventAt(..) | Self::PersonEventShownAt(..) => None,
        }
    }
}

/// An event row and its person's snapshot: the row's person properties are the snapshot's, with
/// what the event showed (`shown`) laid over them.
fn event_of_person<'a>(
    mut event: EventRowRef<'a>,
    person: PersonSnapshotRef<'a>,
    shown: Option<&str>,
) -> (Option<EventRowRef<'a>>, Option<PersonSnapshotRef<'a>>) {
    let json = Cow::Borrowed(person.person.json());
    event.person_properties = Some(match shown {
        None => json,
        Some(shown) => person.person.json_with(shown).map_or(json, Cow::Owned),
    });
    (Some(event), Some(person))
}

/// The position of the entry that holds the person of this (decompressed) entry, read from its
/// head without decoding the rest, or `None` for an entry that holds its own.
pub fn person_held_at(bytes: &[u8]) -> Option<u64> {
    match bytes.split_first() {
        Some((4 | 5, rest)) => postcard::take_from_bytes::<u64>(rest).ok().map(|(at, _)| at),
        _ => None,
    }
}

/// A person to be found in another entry, where there is none to look in.
pub fn unresolved<'a>(at: u64) -> Result<PersonRef<'a>> {
    Err(CoreError::Store(format!(
        "an outbox entry takes its person from the entry at {at}, which is not there"
    )))
}
