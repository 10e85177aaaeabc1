//! Which records of a chunk have been delivered: a plain bitset, so that partial delivery
//! (Firehose accepted 480 of 500 records) can be remembered and persisted cheaply.

use serde::{Deserialize, Serialize};

/// A set of record indices within one chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredSet {
    words: Vec<u64>,
    count: usize,
}

impl DeliveredSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `index`; returns true if it was not already present.
    pub fn insert(&mut self, index: usize) -> bool {
        let (w, b) = (index / 64, index % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << b;
        if self.words[w] & mask == 0 {
            self.words[w] |= mask;
            self.count += 1;
            true
        } else {
            false
        }
    }

    /// True when `index` is in the set.
    pub fn contains(&self, index: usize) -> bool {
        self.words
            .get(index / 64)
            .is_some_and(|w| w & (1u64 << (index % 64)) != 0)
    }

    /// Number of indices in the set.
    pub fn count(&self) -> usize {
        self.count
    }

    /// True when nothing was delivered.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds every index of `other`.
    pub fn union_with(&mut self, other: &DeliveredSet) {
        for i in other.iter() {
            self.insert(i);
        }
    }

    /// The indices in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }

    /// Rebuilds the set from stored words, recomputing the count (never trust a stored count).
    pub fn from_words(words: Vec<u64>) -> Self {
        let count = words.iter().map(|w| w.count_ones() as usize).sum();
        DeliveredSet { words, count }
    }

    /// The raw words, for storage.
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

impl FromIterator<usize> for DeliveredSet {
    fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
        let mut s = DeliveredSet::new();
        for i in iter {
            s.insert(i);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_count_and_iter_agree() {
        let mut s = DeliveredSet::new();
        assert!(s.insert(3));
        assert!(s.insert(130));
        assert!(!s.insert(3));
        assert!(s.contains(3) && s.contains(130) && !s.contains(4) && !s.contains(10_000));
        assert_eq!(s.count(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 130]);
        assert_eq!(DeliveredSet::from_words(s.words().to_vec()), s);
    }
}
