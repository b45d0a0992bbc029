//! The state behind cookieless ids, kept in the store and changed in the commit that stores the
//! event: a random salt per calendar day, forgotten once no place on earth is in that day (after
//! which no hash can be traced back to an IP); per visitor and day, how many times they
//! identified; and per id, its session, which ends after 30 minutes without an event.

use std::hash::Hasher;
use std::io::Write as _;
use std::ops::Bound;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use heed::types::Bytes;
use heed::{Database, Env, RoTxn, RwTxn};
use siphasher::sip128::{Hasher128, SipHasher24};
use uuid::Uuid;

use super::cookieless::{self, CookielessEvent, Stage};
use super::error::{CoreError, Result};
use super::event::NormalizedEvent;
use super::person_event::{IdentityKind, IdentityOp};
use super::rawjson;

/// Key tags: day ‖ salt; day ‖ base hash ‖ identifies; day ‖ hash ‖ session.
const SALT: u8 = b's';
const IDENTIFIES: u8 = b'i';
const SESSIONS: u8 = b't';
const SESSION_INACTIVITY_MS: i64 = 30 * 60 * 1000;

type Hash = [u8; 16];

#[derive(Clone, Copy)]
pub struct CookielessDb {
    db: Database<Bytes, Bytes>,
}

fn key(tag: u8, day: NaiveDate, hash: Option<&Hash>) -> Vec<u8> {
    let mut key = Vec::with_capacity(27);
    key.push(tag);
    // `YYYY-MM-DD`, so that keys sort by day; std's formatting, not chrono's slower formatter.
    let _ = write!(key, "{:04}-{:02}-{:02}", day.year(), day.month(), day.day());
    if let Some(hash) = hash {
        key.extend_from_slice(hash);
    }
    key
}

/// The project is named by its token, which the events and the flags requests of a visitor
/// both carry.
fn hash(salt: &Hash, token: &str, event: &CookielessEvent, identifies_before: i64) -> Hash {
    let mut hasher = SipHasher24::new_with_key(salt);
    let input = format!("{token}-{}-{identifies_before}-{}", event.visitor, event.extra);
    hasher.write(input.as_bytes());
    hasher.finish128().as_bytes()
}

/// The hash of the visitor's id after `identifies` identifies: the base hash when none.
fn counted(salt: &Hash, token: &str, event: &CookielessEvent, base: Hash, identifies: i64) -> Hash {
    if identifies == 0 {
        base
    } else {
        hash(salt, token, event, identifies)
    }
}

fn encoded(prefix: &str, hash: &Hash) -> String {
    let mut text = String::with_capacity(prefix.len() + 22);
    text.push_str(prefix);
    STANDARD_NO_PAD.encode_string(hash, &mut text);
    text
}

/// A UUIDv7 of the given time whose random part is `random`'s first ten bytes: the same
/// visitor and day always get the same session without any state.
fn session_of_day(day_start_ms: i64, random: &Hash) -> Uuid {
    let mut bytes = [0u8; 16];
    let millis = u64::try_from(day_start_ms).unwrap_or(0).to_be_bytes();
    bytes[..6].copy_from_slice(&millis[2..]);
    bytes[6..].copy_from_slice(&random[..10]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

fn session_at(timestamp_ms: i64) -> Uuid {
    let millis = u64::try_from(timestamp_ms).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(uuid::NoContext, millis / 1000, ((millis % 1000) * 1_000_000) as u32);
    Uuid::new_v7(timestamp)
}

impl CookielessDb {
    pub fn create(env: &Env, txn: &mut RwTxn) -> Result<Self> {
        Ok(Self {
            db: env.create_database(txn, Some("cookieless"))?,
        })
    }

    /// Forget the salts, identifies and sessions of days no longer in use; how many entries went.
    pub fn forget_past_days(&self, txn: &mut RwTxn, now: DateTime<Utc>) -> Result<usize> {
        let first = cookieless::first_day_in_use(now);
        let mut forgotten = 0;
        for tag in [SALT, IDENTIFIES, SESSIONS] {
            let (lower, upper) = ([tag], key(tag, first, None));
            let range = (Bound::Included(&lower[..]), Bound::Excluded(&upper[..]));
            forgotten += self.db.delete_range(txn, &range)?;
        }
        Ok(forgotten)
    }

    fn stored_salt(&self, txn: &RoTxn, day: NaiveDate) -> Result<Option<Hash>> {
        let key = key(SALT, day, None);
        Ok(self.db.get(txn, &key)?.and_then(|bytes| Hash::try_from(bytes).ok()))
    }

    fn salt(&self, txn: &mut RwTxn, day: NaiveDate) -> Result<Hash> {
        if let Some(salt) = self.stored_salt(txn, day)? {
            return Ok(salt);
        }
        let key = key(SALT, day, None);
        let mut salt = Hash::default();
        getrandom::fill(&mut salt).map_err(|err| CoreError::Store(format!("no randomness for a salt: {err}")))?;
        self.db.put(txn, &key, &salt)?;
        Ok(salt)
    }

    fn identifies(&self, txn: &RoTxn, key: &[u8]) -> Result<i64> {
        Ok(self
            .db
            .get(txn, key)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map_or(0, i64::from_be_bytes))
    }

    /// The visitor's identify count before this event, counting the event in when it is an
    /// `$identify` (its uuid was checked for duplicates already, so a retry is not counted twice).
    fn identifies_before(&self, txn: &mut RwTxn, event: &CookielessEvent, base: &Hash) -> Result<i64> {
        let key = key(IDENTIFIES, event.day, Some(base));
        let stored = self.identifies(txn, &key)?;
        Ok(match event.stage {
            Stage::Identify => {
                self.db.put(txn, &key, &(stored + 1).to_be_bytes())?;
                stored
            }
            Stage::Anonymous => stored,
            // PostHog's count for an identified event; -1 when the identify is not known (it
            // came on another day), which still names one id per visitor and day.
            Stage::Identified => stored - 1,
        })
    }

    /// The id's session: the one it had unless 30 minutes passed since its last event.
    fn session(&self, txn: &mut RwTxn, day: NaiveDate, id_hash: &Hash, timestamp_ms: i64) -> Result<Uuid> {
        let key = key(SESSIONS, day, Some(id_hash));
        let current = self.db.get(txn, &key)?.and_then(|bytes| {
            let session = Uuid::from_slice(bytes.get(..16)?).ok()?;
            let last = i64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
            (timestamp_ms - last <= SESSION_INACTIVITY_MS).then_some(session)
        });
        let session = current.unwrap_or_else(|| session_at(timestamp_ms));
        let mut value = [0u8; 24];
        value[..16].copy_from_slice(session.as_bytes());
        value[16..].copy_from_slice(&timestamp_ms.to_be_bytes());
        self.db.put(txn, &key, &value)?;
        Ok(session)
    }

    /// Give a cookieless event its ids: the distinct id (or, for `$identify`, the anonymous id it
    /// joins), `$device_id` and `$session_id`.
    pub fn resolve(&self, txn: &mut RwTxn, token: &str, event: &mut NormalizedEvent) -> Result<()> {
        let Some(cookieless) = event.cookieless.take() else {
            return Ok(());
        };
        let salt = self.salt(txn, cookieless.day)?;
        let base = hash(&salt, token, &cookieless, 0);
        let device_id = encoded("cookielessd_", &base);
        let mut text = Uuid::encode_buffer();
        if !cookieless.stateful {
            let distinct_id = encoded("cookieless_", &base);
            let session = session_of_day(cookieless.day_start_ms, &base);
            let session = session.hyphenated().encode_lower(&mut text);
            set_properties(
                event,
                &[
                    ("$distinct_id", &distinct_id),
                    ("$device_id", &device_id),
                    ("$session_id", session),
                ],
            );
            event.distinct_id = distinct_id;
            return Ok(());
        }
        let before = self.identifies_before(txn, &cookieless, &base)?;
        let id_hash = counted(&salt, token, &cookieless, base, before);
        let id = encoded("cookieless_", &id_hash);
        let session = self.session(txn, cookieless.day, &id_hash, cookieless.timestamp_ms)?;
        let session = session.hyphenated().encode_lower(&mut text);
        let mut ids = vec![("$device_id", device_id.as_str()), ("$session_id", &*session)];
        if cookieless.stage == Stage::Identify {
            ids.push(("$anon_distinct_id", &id));
        }
        set_properties(event, &ids);
        match cookieless.stage {
            Stage::Identify => {
                event.person.identity = Some(IdentityOp {
                    kind: IdentityKind::Identify,
                    other: id,
                });
            }
            Stage::Anonymous => event.distinct_id = id,
            Stage::Identified => {}
        }
        Ok(())
    }

    /// The distinct id an anonymous visitor's events get now, for their flags, read outside any
    /// commit; `None` while no salt of the day exists.
    pub fn stored_visitor_id(&self, env: &Env, token: &str, visitor: &CookielessEvent) -> Result<Option<String>> {
        let read = env.read_txn()?;
        let Some(salt) = self.stored_salt(&read, visitor.day)? else {
            return Ok(None);
        };
        let base = hash(&salt, token, visitor, 0);
        let identifies = if visitor.stateful {
            self.identifies(&read, &key(IDENTIFIES, visitor.day, Some(&base)))?
        } else {
            0
        };
        Ok(Some(encoded(
            "cookieless_",
            &counted(&salt, token, visitor, base, identifies),
        )))
    }

    /// `stored_visitor_id`, the day's salt made (and synced) when neither an event nor the
    /// maintenance has made it yet: there is then no identify of the day either.
    pub fn visitor_id(&self, env: &Env, token: &str, visitor: &CookielessEvent) -> Result<String> {
        if let Some(id) = self.stored_visitor_id(env, token, visitor)? {
            return Ok(id);
        }
        let mut txn = env.write_txn()?;
        let salt = self.salt(&mut txn, visitor.day)?;
        txn.commit()?;
        // The store's environment defers the meta page's flush (see `store.rs`).
        env.force_sync()?;
        Ok(encoded("cookieless_", &hash(&salt, token, visitor, 0)))
    }

    /// Make the salts of the days in use that do not exist yet, so that a flags request seldom
    /// has to write; how many were made.
    pub fn prepare_days(&self, txn: &mut RwTxn, now: DateTime<Utc>) -> Result<usize> {
        let last = (now + chrono::Duration::hours(cookieless::BEGINS_BEFORE_UTC_HOURS)).date_naive();
        let mut made = 0;
        let mut day = cookieless::first_day_in_use(now);
        while day <= last {
            if self.stored_salt(txn, day)?.is_none() {
                self.salt(txn, day)?;
                made += 1;
            }
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        Ok(made)
    }
}

/// The ids appended to the event's text: the decoder removed any the SDK sent (`$anon_distinct_id`
/// is replaced, for an `$identify`, where posthog-js names the sentinel).
fn set_properties(event: &mut NormalizedEvent, ids: &[(&str, &str)]) {
    let literals: Vec<(&str, String)> = ids
        .iter()
        .map(|(key, value)| (*key, rawjson::string_literal(value)))
        .collect();
    let (anon, appended): (Vec<_>, Vec<_>) = literals.into_iter().partition(|(key, _)| *key == "$anon_distinct_id");
    let mut properties = rawjson::append_entries(&event.properties, &appended);
    if let Some((key, literal)) = anon.into_iter().next() {
        if let Ok(mut object) = rawjson::RawObject::parse(&properties) {
            object.set(key, literal);
            properties = object.to_json();
        }
    }
    event.properties = properties;
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    #[test]
    fn keys_name_days_as_their_text_sorts_them() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(super::key(b's', day(2026, 12, 3), None), b"s2026-12-03");
        assert_eq!(super::key(b't', day(987, 1, 9), Some(&[7; 16]))[..11], *b"t0987-01-09");
    }
}
