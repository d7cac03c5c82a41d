//! An in-process cache of key-index entries. A key's owner never changes once claimed, so
//! an entry is never stale; the cache only ever holds committed claims. Bounded: when full
//! it is cleared and refills with the keys in use.

use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// (model, key) → reference.
pub struct KeyCache {
    map: DashMap<(String, String), String>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl KeyCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Splits `keys` into the owners known here and the keys still to look up.
    pub fn split(&self, model: &str, keys: Vec<String>) -> (HashMap<String, String>, Vec<String>) {
        if self.capacity == 0 {
            return (HashMap::new(), keys);
        }
        let mut known = HashMap::new();
        let mut missing = Vec::new();
        for key in keys {
            match self.map.get(&(model.to_string(), key.clone())) {
                Some(r) => {
                    known.insert(key, r.value().clone());
                }
                None => missing.push(key),
            }
        }
        self.hits.fetch_add(known.len() as u64, Ordering::Relaxed);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        (known, missing)
    }

    /// Remembers committed owners.
    pub fn remember<'a>(
        &self,
        model: &str,
        owners: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            self.map.clear();
        }
        for (key, reference) in owners {
            self.map
                .insert((model.to_string(), key.clone()), reference.clone());
        }
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}
