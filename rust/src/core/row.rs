//! The rows hogflare ships: Hogflare's event row (the Cloudflare Pipelines schema and the lake
//! table), kept in the outbox in a compact binary form until every sink has it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::Result;
use super::event::NormalizedEvent;
use super::timestamp;

/// `source` of rows that came from an SDK.
pub const SOURCE_POSTHOG: &str = "posthog";

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
    pub fn from_event(event: NormalizedEvent, token: &str, team_id: Option<i64>, created_at: i64) -> Self {
        Self {
            uuid: event.uuid,
            team_id,
            source: SOURCE_POSTHOG.to_owned(),
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

/// An `EventRow` read back from the store without copying its text: the same encoding,
/// borrowed from the store's memory map for as long as the read transaction lasts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventRowRef<'a> {
    pub uuid: Uuid,
    pub team_id: Option<i64>,
    pub source: &'a str,
    pub event: &'a str,
    pub distinct_id: &'a str,
    pub created_at: i64,
    pub timestamp: Option<i64>,
    pub properties: Option<&'a str>,
    pub context: Option<&'a str>,
    pub person_id: Option<&'a str>,
    pub person_created_at: Option<i64>,
    pub person_properties: Option<&'a str>,
    #[serde(borrow)]
    pub groups: [Option<&'a str>; 5],
    pub group_properties: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub extra: Option<&'a str>,
}

/// `OutboxRecord`, borrowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum OutboxRecordRef<'a> {
    #[serde(borrow)]
    Event(EventRowRef<'a>),
}

impl<'a> OutboxRecordRef<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

/// What one outbox entry holds. New kinds are appended at the end so stored entries keep
/// their meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutboxRecord {
    Event(EventRow),
}

impl OutboxRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(postcard::to_stdvec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_records_round_trip() {
        let row = EventRow {
            uuid: Uuid::now_v7(),
            team_id: Some(1),
            source: SOURCE_POSTHOG.into(),
            event: "$pageview".into(),
            distinct_id: "user".into(),
            created_at: 1_700_000_000_000_000,
            timestamp: Some(1_700_000_000_000_001),
            properties: Some(r#"{"a":1}"#.into()),
            context: None,
            person_id: None,
            person_created_at: None,
            person_properties: None,
            groups: [Some("g".into()), None, None, None, None],
            group_properties: None,
            api_key: Some("phc".into()),
            extra: None,
        };
        let record = OutboxRecord::Event(row.clone());
        let encoded = record.encode().unwrap();
        assert_eq!(OutboxRecord::decode(&encoded).unwrap(), record);
        let OutboxRecordRef::Event(borrowed) = OutboxRecordRef::decode(&encoded).unwrap();
        assert_eq!(
            (borrowed.uuid, borrowed.properties, borrowed.groups[0]),
            (row.uuid, Some(r#"{"a":1}"#), Some("g"))
        );
    }
}
