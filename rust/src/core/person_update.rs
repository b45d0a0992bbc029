//! What one event asks of its person's properties: `$set`, `$set_once` and `$unset`, read while
//! decoding, outside the store's lock, and kept so that the commit applies them cheaply: keys
//! already escaped as the stored JSON has them, every key and value in one string, and the keys'
//! order and which `$set_once` entries can fill a key worked out in advance.

use std::borrow::Cow;
use std::cell::RefCell;

use super::person_properties::escaped;

/// A key and its raw value in `PropertyUpdate::text`: key start, key end (value start), value end.
type Span = [u32; 3];

/// What `PropertyUpdate::seal` works out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Order {
    /// The writes (`$set_once` entries, then `$set`'s) in key order, ties in write order.
    pub sorted: Vec<u32>,
    /// Per `$set_once` entry: whether it can fill a key, being the first of its key that no
    /// `$set` of the same key overrides.
    pub fills: Vec<bool>,
}

/// The two lists of writes an update holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    Set,
    SetOnce,
}

/// The last order a thread worked out, and the keys it was worked out for.
#[derive(Debug, Default)]
struct OrderedKeys {
    /// How many of the writes were `$set_once`'s.
    once: usize,
    /// The writes' keys one after another, each ending where `ends` says.
    keys: String,
    ends: Vec<u32>,
    order: Order,
}

thread_local! {
    static LAST_ORDER: RefCell<OrderedKeys> = RefCell::new(OrderedKeys::default());
}

impl OrderedKeys {
    fn matches(&self, update: &PropertyUpdate) -> bool {
        if self.once != update.once_writes() || self.ends.len() != update.writes() {
            return false;
        }
        let mut start = 0;
        for (index, &end) in self.ends.iter().enumerate() {
            if self.keys.get(start..end as usize) != Some(update.write(index).0) {
                return false;
            }
            start = end as usize;
        }
        true
    }

    fn remember(&mut self, update: &PropertyUpdate, order: &Order) {
        self.once = update.once_writes();
        self.keys.clear();
        self.ends.clear();
        for index in 0..update.writes() {
            self.keys.push_str(update.write(index).0);
            self.ends.push(self.keys.len() as u32);
        }
        self.order.clone_from(order);
    }
}

/// Keys are as they appear in JSON (escaped), values raw JSON text, all in one string so an
/// update costs a few allocations, not one per key and value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PropertyUpdate {
    text: String,
    set_once: Vec<Span>,
    set: Vec<Span>,
    unset: Vec<Span>,
    /// `None` until `seal`, and again after any change.
    order: Option<Order>,
}

// `clone_from` reuses the buffers it overwrites: a commit keeps a copy of the last update that
// left each person unchanged, and overwrites it often.
impl Clone for Order {
    fn clone(&self) -> Self {
        Self {
            sorted: self.sorted.clone(),
            fills: self.fills.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.sorted.clone_from(&source.sorted);
        self.fills.clone_from(&source.fills);
    }
}

impl Clone for PropertyUpdate {
    fn clone(&self) -> Self {
        Self {
            text: self.text.clone(),
            set_once: self.set_once.clone(),
            set: self.set.clone(),
            unset: self.unset.clone(),
            order: self.order.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.text.clone_from(&source.text);
        self.set_once.clone_from(&source.set_once);
        self.set.clone_from(&source.set);
        self.unset.clone_from(&source.unset);
        self.order.clone_from(&source.order);
    }
}

impl PropertyUpdate {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.set_once.is_empty() && self.unset.is_empty()
    }

    fn push(&mut self, key: &str, value: &str) -> Span {
        self.push_json(&escaped(key), value)
    }

    /// `key` as it stands between the quotes of a JSON string.
    fn push_json(&mut self, key: &str, value: &str) -> Span {
        self.order = None;
        let start = self.text.len() as u32;
        self.text.push_str(key);
        let middle = self.text.len() as u32;
        self.text.push_str(value);
        [start, middle, self.text.len() as u32]
    }

    fn pair(&self, [start, middle, end]: Span) -> (&str, &str) {
        (
            &self.text[start as usize..middle as usize],
            &self.text[middle as usize..end as usize],
        )
    }

    /// Make room for about `bytes` of keys and values, in `set` and `set_once` entries.
    pub fn reserve(&mut self, bytes: usize, set: usize, set_once: usize) {
        self.text.reserve(bytes);
        self.set.reserve(set);
        self.set_once.reserve(set_once);
    }

    /// Add a `$set` entry (key as decoded from JSON).
    pub fn push_set(&mut self, key: &str, value: &str) {
        let span = self.push(key, value);
        self.set.push(span);
    }

    /// Add a `$set_once` entry (key as decoded from JSON).
    pub fn push_set_once(&mut self, key: &str, value: &str) {
        let span = self.push(key, value);
        self.set_once.push(span);
    }

    /// Add a `$set` or `$set_once` entry whose key is read from JSON text: borrowed, it had no
    /// escapes and needs none, so it is not checked again.
    #[allow(clippy::ptr_arg)] // whether the key is borrowed is what matters
    pub fn push_read(&mut self, list: Writes, key: &Cow<'_, str>, value: &str) {
        let span = match key {
            Cow::Borrowed(key) => self.push_json(key, value),
            Cow::Owned(key) => self.push(key, value),
        };
        match list {
            Writes::Set => self.set.push(span),
            Writes::SetOnce => self.set_once.push(span),
        }
    }

    /// Add a `$set_once` entry under one of PostHog's `$initial_*` names, which need no escapes.
    pub fn push_set_once_initial(&mut self, name: &'static str, value: &str) {
        debug_assert!(matches!(escaped(name), Cow::Borrowed(_)));
        let span = self.push_json(name, value);
        self.set_once.push(span);
    }

    /// Add an `$unset` key (as decoded from JSON).
    pub fn push_unset(&mut self, key: &str) {
        let span = self.push(key, "");
        self.unset.push(span);
    }

    /// An update of decoded keys and raw values.
    pub fn of(set: &[(&str, &str)], set_once: &[(&str, &str)], unset: &[&str]) -> Self {
        let mut update = Self::default();
        for (key, value) in set {
            update.push_set(key, value);
        }
        for (key, value) in set_once {
            update.push_set_once(key, value);
        }
        for key in unset {
            update.push_unset(key);
        }
        update.seal();
        update
    }

    /// `$set`: escaped key, raw value.
    pub fn set(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.set.iter().map(|span| self.pair(*span))
    }

    /// `$set_once`: escaped key, raw value.
    pub fn set_once(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.set_once.iter().map(|span| self.pair(*span))
    }

    /// `$unset`: escaped keys.
    pub fn unset(&self) -> impl Iterator<Item = &str> + '_ {
        self.unset.iter().map(|span| self.pair(*span).0)
    }

    /// The bytes its keys and values take.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// How many writes there are: the `$set_once` entries, then the `$set` ones.
    pub fn writes(&self) -> usize {
        self.set_once.len() + self.set.len()
    }

    /// How many of the writes are `$set_once`'s.
    pub fn once_writes(&self) -> usize {
        self.set_once.len()
    }

    /// A write's escaped key and raw value.
    pub fn write(&self, index: usize) -> (&str, &str) {
        match index.checked_sub(self.set_once.len()) {
            None => self.pair(self.set_once[index]),
            Some(set) => self.pair(self.set[set]),
        }
    }

    fn order_of(&self) -> Order {
        // Key, then write index: ties stay in write order. The keys' first bytes, zero-padded,
        // order them as the keys do and settle most comparisons without comparing the text.
        let mut sorted: Vec<(u128, &str, u32)> = (0..self.writes())
            .map(|index| {
                let key = self.write(index).0;
                let mut head = [0u8; 16];
                let len = key.len().min(16);
                head[..len].copy_from_slice(&key.as_bytes()[..len]);
                (u128::from_be_bytes(head), key, index as u32)
            })
            .collect();
        sorted.sort_unstable();
        let mut fills = vec![false; self.set_once.len()];
        let once = self.set_once.len() as u32;
        for run in sorted.chunk_by(|a, b| a.1 == b.1) {
            // In write order, so a `$set` of the key would come last.
            if run[run.len() - 1].2 < once {
                fills[run[0].2 as usize] = true;
            }
        }
        Order {
            sorted: sorted.into_iter().map(|(_, _, index)| index).collect(),
            fills,
        }
    }

    /// Sort the keys and find the `$set_once` entries that can fill one, so the commit need not.
    /// An order depends on the keys alone, and the events one SDK sends mostly write the same
    /// keys in the same order (PostHog's `$initial_*` names among them), so the last order
    /// worked out on this thread is taken as it is when the keys match it.
    pub fn seal(&mut self) {
        let order = LAST_ORDER.with_borrow_mut(|last| {
            if last.matches(self) {
                last.order.clone()
            } else {
                let order = self.order_of();
                last.remember(self, &order);
                order
            }
        });
        self.order = Some(order);
    }

    pub fn order(&self) -> Cow<'_, Order> {
        match &self.order {
            Some(order) => Cow::Borrowed(order),
            None => Cow::Owned(self.order_of()),
        }
    }

    pub fn has_unset(&self) -> bool {
        !self.unset.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_taken_from_the_last_one_only_for_the_same_keys() {
        type Entries<'a> = &'a [(&'a str, &'a str)];
        let updates: [(Entries, Entries); 9] = [
            (&[("b", "1"), ("a", "2")], &[("a", "3"), ("c", "4")]),
            // The same keys again, other values: the last order is taken.
            (&[("b", "5"), ("a", "6")], &[("a", "7"), ("c", "8")]),
            // The same keys in the same order, but one more of them `$set`'s: `fills` differs.
            (&[("c", "1"), ("b", "2"), ("a", "3")], &[("a", "4")]),
            (&[("a", "1")], &[("a", "2"), ("c", "3"), ("b", "4")]),
            (&[], &[]),
            (&[("é\"", "1"), ("a", "2")], &[]),
            (&[("a", "1"), ("é\"", "2")], &[]),
            // Keys of the same lengths, in another order.
            (&[("b", "1"), ("a", "2")], &[]),
            (&[("a", "1"), ("b", "2")], &[]),
        ];
        for _ in 0..2 {
            for (set, set_once) in updates {
                let update = PropertyUpdate::of(set, set_once, &[]);
                assert_eq!(update.order, Some(update.order_of()), "{set:?} {set_once:?}");
            }
        }
    }
}
