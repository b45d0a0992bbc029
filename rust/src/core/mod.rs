//! The pure-Rust core: no Python here. Everything that touches bytes, events or the store.

pub mod analytics_v1;
pub mod codec;
pub mod columns;
pub mod commit_thread;
pub mod compaction;
#[cfg(test)]
mod continuity_tests;
pub mod cookieless;
mod cookieless_state;
#[cfg(test)]
mod cookieless_tests;
pub mod countries;
pub mod decode;
pub mod dictionary_training;
mod drop_reason;
pub mod enrich;
pub mod error;
pub mod event;
mod event_fields;
pub mod export;
pub mod flags;
pub mod geoip;
#[cfg(test)]
mod geoip_tests;
pub mod groups;
pub mod javascript;
pub mod json_entries;
pub mod lake_table;
pub mod lz64;
pub mod nesting;
pub mod outbox_dictionary;
#[cfg(test)]
mod outbox_held_tests;
pub mod own_event;
pub mod person;
#[cfg(test)]
mod person_commit_tests;
pub mod person_event;
mod person_initial;
#[cfg(test)]
mod person_model_tests;
pub mod person_properties;
pub mod person_record;
#[cfg(test)]
mod person_store_tests;
pub mod person_update;
pub mod persons;
pub mod pipeline;
mod properties;
pub mod rawjson;
mod recording;
pub mod request;
pub mod row;
pub mod signing;
pub mod store;
pub mod timestamp;
pub mod token;
