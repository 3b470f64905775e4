//! An insert-only map from user id to a value, compact for the registry's millions of users.
//!
//! Slots hold a 32-bit tag of the hash and the entry's index (linear probing, at most half full:
//! 16 to 32 bytes per user); entries sit in insertion order, one cache line each (the id inline,
//! the view and the cell's pointer). With 1M users the registry holds 386 MiB against 445 with a
//! `HashMap` of the same entries (docs/benchmarks.md, batch query). Users are never removed (a
//! partition's state goes as a whole), so there are no tombstones.
//!
//! A batch query overlaps its users' cache misses by prefetching each user's slot, then its
//! entry, a few users ahead of the look-up ([`CellMap::prefetch_slot`], [`CellMap::prefetch_entry`]):
//! 221 against 273 µs of registry CPU per 500-id query. Splitting the look-ups into passes (all
//! slots, then all entries) did not pay: 309 against 282 µs (docs/benchmarks.md, batch query).

use std::hash::BuildHasher;

use compact_str::CompactString;

/// An empty slot.
const EMPTY: u64 = 0;

/// Where a key's probe starts, and what is there.
#[derive(Debug, Clone, Copy)]
struct FirstSlot {
    hash: u64,
    slot: u64,
}

/// A key's hash, computed once for its look-up and the prefetches that come before it.
#[derive(Debug, Clone, Copy)]
pub struct Hashed(u64);

#[repr(align(64))]
struct Entry<V> {
    key: CompactString,
    value: V,
}

pub struct CellMap<V> {
    hasher: foldhash::fast::RandomState,
    /// `tag << 32 | (index + 1)`, or [`EMPTY`]; a power of two long.
    slots: Vec<u64>,
    entries: Vec<Entry<V>>,
}

impl<V> Default for CellMap<V> {
    fn default() -> Self {
        Self { hasher: foldhash::fast::RandomState::default(), slots: vec![EMPTY; 8], entries: Vec::new() }
    }
}

impl<V> CellMap<V> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.get_hashed(key, self.hashed(key))
    }

    pub fn hashed(&self, key: &str) -> Hashed {
        Hashed(self.hash(key))
    }

    /// [`CellMap::get`] of a key hashed before.
    pub fn get_hashed(&self, key: &str, hashed: Hashed) -> Option<&V> {
        self.find(key, self.first_slot_hashed(hashed.0)).map(|index| &self.entries[index].value)
    }

    /// Starts loading the cache line of the key's first slot (a look-up's first miss).
    pub fn prefetch_slot(&self, hashed: Hashed) {
        prefetch(&self.slots[hashed.0 as usize & self.mask()]);
    }

    /// Starts loading the entry of the first slot on the key's probe that carries its tag (a
    /// look-up's second miss: the first slot often holds another key's entry, which the look-up
    /// never reads); the slot should have been prefetched a while before.
    pub fn prefetch_entry(&self, hashed: Hashed) {
        let first = self.first_slot_hashed(hashed.0);
        if let Some(entry) = self.candidates(first).next().and_then(|index| self.entries.get(index)) {
            prefetch(entry);
        }
    }

    /// Hashes `key` and reads its first slot.
    fn first_slot(&self, key: &str) -> FirstSlot {
        self.first_slot_hashed(self.hash(key))
    }

    fn first_slot_hashed(&self, hash: u64) -> FirstSlot {
        FirstSlot { hash, slot: self.slots[hash as usize & self.mask()] }
    }

    /// The index of `key`'s entry, probing from its [`FirstSlot`].
    fn find(&self, key: &str, first: FirstSlot) -> Option<usize> {
        self.candidates(first)
            .find(|index| self.entries.get(*index).is_some_and(|entry| same_key(&entry.key, key)))
    }

    /// The entries of the slots on the probe from `first` that carry its hash's tag, in probe
    /// order up to the first empty slot: where its key may be.
    fn candidates(&self, first: FirstSlot) -> impl Iterator<Item = usize> + '_ {
        let tag = first.hash >> 32;
        let mut at = first.hash as usize & self.mask();
        let (mut slot, mut moved_on) = (first.slot, false);
        // The next slot is read only when the caller asks past this one, as a plain loop would.
        std::iter::from_fn(move || {
            loop {
                if moved_on {
                    at = (at + 1) & self.mask();
                    slot = self.slots[at];
                }
                moved_on = true;
                if slot == EMPTY {
                    return None;
                }
                if slot >> 32 == tag {
                    return Some(entry_index(slot));
                }
            }
        })
    }

    /// `key`'s value, inserted with `make` if absent.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &V {
        let first = self.first_slot(key);
        if let Some(found) = self.find(key, first) {
            return &self.entries[found].value;
        }
        if (self.entries.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let index = self.entries.len();
        self.entries.push(Entry { key: CompactString::from(key), value: make() });
        self.place(first.hash, index);
        &self.entries[index].value
    }

    /// Inserts or replaces `key`'s value.
    pub fn insert(&mut self, key: &str, value: V) {
        match self.find(key, self.first_slot(key)) {
            Some(found) => self.entries[found].value = value,
            None => {
                self.get_or_insert_with(key, || value);
            }
        }
    }

    fn place(&mut self, hash: u64, index: usize) {
        let mut at = hash as usize & self.mask();
        while self.slots[at] != EMPTY {
            at = (at + 1) & self.mask();
        }
        // Indexes past u32::MAX - 1 (4 billion users of one app in one partition) do not occur.
        self.slots[at] = ((hash >> 32) << 32) | (index as u64 + 1);
    }

    fn grow(&mut self) {
        self.slots = vec![EMPTY; self.slots.len() * 2];
        for index in 0..self.entries.len() {
            let hash = self.hash(&self.entries[index].key);
            self.place(hash, index);
        }
    }
}

/// The entry a non-empty slot points to.
fn entry_index(slot: u64) -> usize {
    (slot & u64::from(u32::MAX)) as usize - 1
}

/// `stored == key`, compared in words. User ids are short, and the look-up of a batch query
/// compares one per user: glibc's `memcmp` behind `==` took 15 % of the registry's query profile.
#[inline]
fn same_key(stored: &str, key: &str) -> bool {
    let (stored, key) = (stored.as_bytes(), key.as_bytes());
    if stored.len() != key.len() {
        return false;
    }
    // Words and the tail as integers: a byte loop or a slice `==` would be turned back into a
    // call to `memcmp`.
    let word = |bytes: &[u8]| bytes.iter().fold(0u64, |word, byte| word << 8 | u64::from(*byte));
    let (stored_words, key_words) = (stored.chunks_exact(8), key.chunks_exact(8));
    word(stored_words.remainder()) == word(key_words.remainder())
        && stored_words.zip(key_words).all(|(a, b)| word(a) == word(b))
}

/// Asks the CPU to start loading `item`'s cache line: a hint, which changes no result.
#[inline(always)]
fn prefetch<T>(item: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault; `item` is valid anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(item).cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = item;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_across_growth_and_nothing_else() {
        let mut map = CellMap::default();
        for i in 0..10_000u32 {
            assert_eq!(*map.get_or_insert_with(&format!("user-{i}"), || i), i);
        }
        assert_eq!(map.len(), 10_000);
        assert!(map.slots.len() >= 20_000, "at most half full");
        for i in 0..10_000u32 {
            assert_eq!(map.get(&format!("user-{i}")), Some(&i));
        }
        assert_eq!(map.get("user-10000"), None);
        assert_eq!(map.get(""), None);
        assert_eq!(*map.get_or_insert_with("user-7", || 0), 7, "an existing value is kept");
        map.insert("user-7", 70);
        assert_eq!((map.get("user-7"), map.len()), (Some(&70), 10_000));
    }

    #[test]
    fn keys_that_share_slots_and_tags_are_told_apart_by_the_key() {
        let mut map = CellMap::default();
        // One hash for every key: one probe sequence, equal tags, wrapping past the last slot.
        let hash = 0xdead_beef_0000_0007;
        let keys = ["a", "b", "a-much-longer-user-id-than-fits-inline", "é"];
        for (index, key) in keys.iter().enumerate() {
            map.entries.push(Entry { key: CompactString::from(*key), value: index });
            map.place(hash, index);
        }
        let first = FirstSlot { hash, slot: map.slots[hash as usize & map.mask()] };
        for (index, key) in keys.iter().enumerate() {
            assert_eq!(map.find(key, first), Some(index), "{key}");
        }
        assert_eq!(map.find("c", first), None, "the probe ends at an empty slot");
    }

    #[test]
    fn keys_compare_equal_only_when_every_byte_is() {
        let ids = [
            "",
            "a",
            "b",
            "ab",
            "q1234567",
            "q1234568",
            "q12345678",
            "q12345679",
            "é",
            "a-much-longer-user-id",
        ];
        for a in ids {
            for b in ids {
                assert_eq!(same_key(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
        assert!(!same_key("\0a", "a\0"), "the tail's bytes keep their places");
    }

    #[test]
    fn an_entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry<[u64; 5]>>(), 64);
    }
}
