//! Session recording items: a `$snapshot` event becomes the `$snapshot_items` row that capture
//! and Hogflare store, the rrweb events left exactly as posthog-js packed them.

use std::borrow::Cow;

use super::event::{non_null, DropReason};
use super::rawjson::{self, RawObject};

/// `$session_id` as capture validates it.
const MAX_SESSION_ID_CHARS: usize = 70;

fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_SESSION_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Turn a `$snapshot` item's properties into the `$snapshot_items` row capture and Hogflare store.
pub(super) fn shape_recording(properties: &str, distinct_id: &str) -> Result<String, DropReason> {
    let mut object = RawObject::parse(properties).map_err(|_| DropReason::InvalidProperties)?;
    let session_id = match object.get("$session_id").and_then(rawjson::as_str) {
        Some(id) if valid_session_id(&id) => id.into_owned(),
        _ => return Err(DropReason::InvalidSessionId),
    };
    let data = non_null(object.take("$snapshot_data")).or_else(|| object.take("$snapshot_items"));
    let items = match data {
        Some(items) if items.trim_start().starts_with('[') => items,
        Some(item) if item.trim_start().starts_with('{') => Cow::Owned(format!("[{item}]")),
        _ => return Err(DropReason::MissingSnapshotData),
    };
    object.set("$snapshot_items", items);
    for (key, default) in [
        ("$window_id", session_id.as_str()),
        ("$snapshot_source", "web"),
        ("$lib", "web"),
        ("distinct_id", distinct_id),
    ] {
        // Sent as `null` is as good as not sent.
        if object.get(key).is_none_or(rawjson::is_null) {
            object.set(key, rawjson::string_literal(default));
        }
    }
    Ok(object.to_json())
}
