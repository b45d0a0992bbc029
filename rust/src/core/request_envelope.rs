//! The envelopes SDKs wrap their events in (a bare array, `{batch: […]}`, `{data: …}`, or one
//! event on its own), and where each item of a request sits in its text and parsed document.

use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use super::{into_text, Envelope};
use crate::core::codec::{self, Compression};
use crate::core::error::{CoreError, Result};
use crate::core::json_entries;
use crate::core::rawjson::{self, RawObject, Validated};
use crate::core::timestamp;

/// Where the items of a request sit in its document.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Array,
    Batch,
    Single,
}

/// The JSON of a request: its text, the parsed document, and where each event sits in both.
#[derive(Debug)]
pub struct Unpacked {
    pub text: String,
    document: sonic_rs::Value,
    layout: Layout,
    pub items: Vec<std::ops::Range<usize>>,
    pub envelope: Envelope,
}

impl Unpacked {
    fn new(
        text: String,
        items: Vec<std::ops::Range<usize>>,
        document: sonic_rs::Value,
        layout: Layout,
        envelope: &mut Envelope,
    ) -> Self {
        Self {
            text,
            document,
            layout,
            items,
            envelope: std::mem::take(envelope),
        }
    }

    /// The text of one item; `classify` validated all of it.
    pub fn item(&self, index: usize) -> Validated<'_> {
        Validated(&self.text[self.items[index].clone()])
    }

    /// The parsed value of each item, in order. The envelope's `batch` is looked up once: a
    /// lookup by key scans the envelope's keys, and an envelope may have many.
    pub fn item_values(&self) -> impl Iterator<Item = &sonic_rs::Value> {
        let (single, array) = match self.layout {
            Layout::Array => (None, Some(&self.document)),
            Layout::Batch => (None, self.document.get("batch")),
            Layout::Single => (Some(&self.document), None),
        };
        let elements = array.and_then(|array| array.as_array()).map(|array| array.iter());
        single
            .into_iter()
            .chain(elements.into_iter().flatten())
            .chain(std::iter::repeat(&NULL))
            .take(self.items.len())
    }
}

static NULL: sonic_rs::Value = sonic_rs::Value::new();

/// Where `inner` (a slice of `outer`) starts and ends within `outer`.
fn range_in(outer: &str, inner: &str) -> std::ops::Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

/// Sort out the envelopes: a bare array, `{batch: […]}`, `{data: …}`, or one event.
///
/// The text is parsed once into a document, which validates all of it; the raw text of each
/// item is then found with unchecked (fast) iteration over the same, now validated, text.
pub(super) fn classify(
    text: String,
    envelope: &mut Envelope,
    hint: Compression,
    cap: usize,
    depth: u8,
) -> Result<Unpacked> {
    let document = rawjson::value(&text)?;
    let validated = Validated(&text);
    if document.is_array() {
        let items = element_ranges(&text, 0)?;
        return Ok(Unpacked::new(text, items, document, Layout::Array, envelope));
    }
    if !document.is_object() {
        return Err(CoreError::InvalidShape("expected a json object or array".into()));
    }
    if document.get("batch").is_some_and(JsonValueTrait::is_array) {
        envelope.token = ["api_key", "token"]
            .into_iter()
            .find_map(|key| {
                document
                    .get(key)
                    .and_then(JsonValueTrait::as_str)
                    .filter(|t| !t.trim().is_empty())
            })
            .map(str::to_owned)
            .or(envelope.token.take());
        if let Some(sent_at) = document.get("sent_at").and_then(timestamp::parse_value) {
            envelope.sent_at = Some(sent_at);
        }
        envelope.historical_migration =
            document.get("historical_migration").and_then(JsonValueTrait::as_bool) == Some(true);
        // The array is read once, element by element, from where it starts; its elements end
        // where it does, whatever entries of the envelope follow it.
        let start = json_entries::value_start(&text, "batch")
            .ok_or_else(|| CoreError::InvalidShape("the `batch` array could not be found".into()))?;
        let items = element_ranges(&text, start)?;
        return Ok(Unpacked::new(text, items, document, Layout::Batch, envelope));
    }
    if depth == 0 && document.get("data").is_some() && document.get("event").is_none() {
        let object = RawObject::parse_validated(validated)?;
        let data = object.get("data").unwrap_or("null");
        let inner_hint = document
            .get("compression")
            .and_then(JsonValueTrait::as_str)
            .map_or(hint, Compression::from_hint);
        let inner = if let Some(encoded) = rawjson::as_str(data) {
            let raw = encoded.as_bytes().to_vec();
            // A JSON string cannot hold gzip's bytes: without a packing named, or with gzip named,
            // it is most likely the base64 the old SDKs wrote (of JSON, or of gzip). lz-string and
            // base64 are text packings of their own, applied as they are.
            let bytes = if matches!(inner_hint, Compression::None | Compression::Gzip) {
                codec::base64_decode(&raw).unwrap_or(raw)
            } else {
                raw
            };
            into_text(codec::decompress(bytes, inner_hint, cap)?)?
        } else if data.starts_with('[') || data.starts_with('{') {
            data.to_owned()
        } else {
            return Err(CoreError::InvalidShape(
                "`data` must be an object, an array or a string".into(),
            ));
        };
        for (key, value) in &object.entries {
            if key != "data" && !key.starts_with("compression") {
                envelope.share(key, value.to_string());
            }
        }
        drop(object);
        return classify(inner, envelope, hint, cap, depth + 1);
    }
    let whole = range_in(&text, text.trim());
    Ok(Unpacked::new(text, vec![whole], document, Layout::Single, envelope))
}

/// Where each element of the (validated) array starting at `start` sits in `text`.
fn element_ranges(text: &str, start: usize) -> Result<Vec<std::ops::Range<usize>>> {
    Ok(rawjson::validated_elements(Validated(&text[start..]))?
        .into_iter()
        .map(|item| range_in(text, item))
        .collect())
}
