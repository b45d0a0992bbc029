//! From the outbox to Cloudflare Pipelines: outbox entries as Hogflare's stream rows (the event
//! row `PipelineEvent` and the person snapshot row), grouped into POST bodies. Each body is a JSON
//! array of at most `max_body_bytes` (Cloudflare takes 1 MB per request) and never empty. JSON
//! columns are written as JSON values, copied from the stored text; fields that are `None` are
//! left out, as Hogflare's serializer does.
//!
//! Bodies are sorted into lanes that may be POSTed side by side: every row of one distinct id
//! (events) or of one person (snapshots) is in the same lane, in outbox order, so sending each
//! lane's bodies one after another keeps their order while the lanes overlap.

use std::hash::{DefaultHasher, Hash, Hasher};

use uuid::Uuid;

use super::error::Result;
use super::rawjson::{push_key, push_string};
use super::row::{EventRowRef, PersonSnapshotRef, SOURCE_HOGFLARE};
use super::store::Store;
use super::timestamp;

/// One stream's rows, as the bodies of its POSTs, lane by lane (lanes without rows left out).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bodies {
    pub lanes: Vec<Vec<Vec<u8>>>,
    pub rows: u64,
    /// Rows that alone exceed the body limit; each is sent in a body of its own.
    pub oversized: u64,
}

impl Bodies {
    pub fn count(&self) -> usize {
        self.lanes.iter().map(Vec::len).sum()
    }
}

/// What one read of the outbox gave: the bodies of each stream and the position reached.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PipelineChunk {
    /// Outbox positions read, one per row.
    pub positions: u64,
    pub last_seq: u64,
    pub events: Bodies,
    pub persons: Bodies,
}

/// Sorts rows into lanes by a key (a distinct id, a person), each lane packed apart.
struct Lanes {
    packers: Vec<Packer>,
    rows: u64,
    oversized: u64,
}

impl Lanes {
    fn new(lanes: usize, limit: usize) -> Self {
        Self {
            packers: (0..lanes.max(1)).map(|_| Packer::new(limit)).collect(),
            rows: 0,
            oversized: 0,
        }
    }

    fn push(&mut self, key: impl Hash, row: &str) {
        // SipHash with fixed keys: within a chunk, the same key always lands in the same lane.
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let lane = (hasher.finish() % self.packers.len() as u64) as usize;
        self.rows += 1;
        self.oversized += u64::from(self.packers[lane].push(row));
    }

    fn finish(self) -> Bodies {
        Bodies {
            lanes: self
                .packers
                .into_iter()
                .map(Packer::finish)
                .filter(|bodies| !bodies.is_empty())
                .collect(),
            rows: self.rows,
            oversized: self.oversized,
        }
    }
}

/// Groups rows into JSON arrays of at most `limit` bytes.
struct Packer {
    limit: usize,
    current: Vec<u8>,
    bodies: Vec<Vec<u8>>,
}

impl Packer {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            current: Vec::new(),
            bodies: Vec::new(),
        }
    }

    /// Adds a row; true when it alone exceeds the limit (it gets a body of its own).
    fn push(&mut self, row: &str) -> bool {
        // `[` + row + `]` alone, or `,` + row appended to an open body.
        if !self.current.is_empty() && self.current.len() + 1 + row.len() + 1 > self.limit {
            self.close();
        }
        let oversized = row.len() + 2 > self.limit;
        if self.current.is_empty() {
            self.current.reserve(row.len().max(self.limit.min(1 << 20)) + 2);
            self.current.push(b'[');
        } else {
            self.current.push(b',');
        }
        self.current.extend_from_slice(row.as_bytes());
        oversized
    }

    fn close(&mut self) {
        if !self.current.is_empty() {
            let mut body = std::mem::take(&mut self.current);
            body.push(b']');
            self.bodies.push(body);
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.close();
        self.bodies
    }
}

fn rfc3339(micros: i64) -> String {
    timestamp::from_micros(micros).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Each writer below adds `,"key":value`; the row's first field, `uuid`, is written without the comma.
fn field(out: &mut String, key: &str) {
    out.push(',');
    push_key(out, key);
}

fn push_uuid(out: &mut String, key: &str, uuid: Uuid) {
    let mut buffer = Uuid::encode_buffer();
    field(out, key);
    out.push('"');
    out.push_str(uuid.hyphenated().encode_lower(&mut buffer));
    out.push('"');
}

fn push_text(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        field(out, key);
        push_string(out, value);
    }
}

fn push_integer(out: &mut String, key: &str, value: Option<i64>) {
    if let Some(value) = value {
        field(out, key);
        out.push_str(&value.to_string());
    }
}

fn push_time(out: &mut String, key: &str, micros: Option<i64>) {
    if let Some(micros) = micros {
        field(out, key);
        push_string(out, &rfc3339(micros));
    }
}

/// A JSON column: the stored JSON text as a value, left out when absent or `null`.
fn push_json(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(value) = value.map(str::trim).filter(|v| !v.is_empty() && *v != "null") {
        field(out, key);
        out.push_str(value);
    }
}

fn open_row(out: &mut String, uuid: Uuid) {
    let mut buffer = Uuid::encode_buffer();
    out.push_str("{\"uuid\":\"");
    out.push_str(uuid.hyphenated().encode_lower(&mut buffer));
    out.push('"');
}

const GROUP_KEYS: [&str; 5] = ["group0", "group1", "group2", "group3", "group4"];

fn is_empty_object(text: &str) -> bool {
    text.trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|inside| inside.trim().is_empty())
}

/// Hogflare's event row: `uuid, team_id?, source, event, distinct_id, created_at, timestamp?,
/// properties?, context?, person_id?, person_created_at?, person_properties?, group0..4?,
/// group_properties?, api_key?, extra?` (`extra` left out when empty).
pub fn event_row(row: &EventRowRef<'_>, out: &mut String) {
    open_row(out, row.uuid);
    push_integer(out, "team_id", row.team_id);
    push_text(out, "source", Some(row.source));
    push_text(out, "event", Some(row.event));
    push_text(out, "distinct_id", Some(row.distinct_id));
    push_time(out, "created_at", Some(row.created_at));
    push_time(out, "timestamp", row.timestamp);
    push_json(out, "properties", row.properties);
    push_json(out, "context", row.context);
    push_text(out, "person_id", row.person_id);
    push_time(out, "person_created_at", row.person_created_at);
    push_json(out, "person_properties", row.person_properties.as_deref());
    for (key, group) in GROUP_KEYS.iter().zip(row.groups) {
        push_text(out, key, group);
    }
    push_json(out, "group_properties", row.group_properties);
    push_text(out, "api_key", row.api_key);
    push_json(out, "extra", row.extra.filter(|extra| !is_empty_object(extra)));
    out.push('}');
}

/// Hogflare's person snapshot row: `uuid, team_id?, source, operation, person_id, person_int_id,
/// canonical_distinct_id, distinct_ids, created_at, updated_at, version, properties,
/// properties_set_once, merged_properties, api_key?, source_event_uuid`.
pub fn person_row(row: &PersonSnapshotRef<'_>, out: &mut String) {
    let person = &row.person;
    open_row(out, row.uuid);
    push_integer(out, "team_id", row.team_id);
    push_text(out, "source", Some(SOURCE_HOGFLARE));
    push_text(out, "operation", Some(row.operation));
    push_uuid(out, "person_id", person.uuid);
    push_integer(out, "person_int_id", Some(i64::try_from(person.id).unwrap_or(i64::MAX)));
    push_text(out, "canonical_distinct_id", Some(row.canonical_distinct_id));
    field(out, "distinct_ids");
    out.push('[');
    for (index, id) in person.distinct_ids.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_string(out, id);
    }
    out.push(']');
    push_time(out, "created_at", Some(person.created_at));
    push_time(out, "updated_at", Some(row.updated_at));
    push_integer(out, "version", Some(i64::try_from(person.version).unwrap_or(i64::MAX)));
    // The split objects are written in place, as the lake's columns are; neither is ever empty.
    field(out, "properties");
    person.write_split(false, out);
    field(out, "properties_set_once");
    person.write_split(true, out);
    push_json(out, "merged_properties", Some(person.json()));
    push_text(out, "api_key", row.api_key);
    push_uuid(out, "source_event_uuid", row.source_event_uuid);
    out.push('}');
}

/// How to cut a chunk of the outbox into POST bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub max_body_bytes: usize,
    /// How many lanes the rows are sorted into (at least one).
    pub lanes: usize,
    /// Whether to make person snapshot rows (Hogflare writes them only when a persons stream is
    /// configured).
    pub persons: bool,
}

/// Read the outbox entries after `after` (up to `max_rows` and about `max_bytes` of them) and
/// make the POST bodies of each stream.
pub fn pipeline(
    store: &Store,
    after: u64,
    max_rows: usize,
    max_bytes: u64,
    limits: BodyLimits,
) -> Result<PipelineChunk> {
    let BodyLimits {
        max_body_bytes,
        lanes,
        persons,
    } = limits;
    store.with_outbox(after, max_rows, max_bytes, |read| {
        let mut events = Lanes::new(lanes, max_body_bytes);
        let mut snapshots = Lanes::new(lanes, max_body_bytes);
        let mut row = String::with_capacity(4096);
        let mut last_seq = after;
        read.for_each_row(|seq, event, person| {
            last_seq = seq;
            row.clear();
            if let Some(person) = person.filter(|_| persons) {
                person_row(&person, &mut row);
                snapshots.push(person.person.uuid, &row);
                row.clear();
            }
            if let Some(event) = event {
                event_row(&event, &mut row);
                events.push(event.distinct_id, &row);
            }
            Ok(())
        })?;
        Ok(PipelineChunk {
            positions: read.positions(),
            last_seq,
            events: events.finish(),
            persons: snapshots.finish(),
        })
    })
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
