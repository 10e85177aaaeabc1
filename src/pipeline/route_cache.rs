//! Routing decisions by tag, so that the patterns are matched once per distinct tag.
//!
//! Tags come from clients, so the cache is bounded by the bytes it holds, not by a count: a
//! client sending random or huge tags cannot grow memory. Tags longer than [`MAX_CACHED_TAG`]
//! are never cached (matching them costs about as much as having read them from the socket);
//! when the next entry would pass [`ROUTE_CACHE_BYTES`] the cache starts over, which costs one
//! pattern match per tag afterwards.

use std::collections::HashMap;

/// Most bytes the cache holds: tags plus 64 bytes per entry (256 KiB: about 2,500
/// entries of 40-byte tags, far more distinct tags than a deployment routes).
pub const ROUTE_CACHE_BYTES: usize = 256 * 1024;

/// Longest tag that is cached.
pub const MAX_CACHED_TAG: usize = 512;

/// What an entry costs besides its tag: the table slot (tag pointer and length, the decision,
/// a control byte) and the allocator's header of the tag.
const ENTRY_OVERHEAD: usize = 64;

/// The cache: tag → index of the first matching output (or none).
#[derive(Debug, Default)]
pub struct RouteCache {
    map: HashMap<Box<str>, Option<usize>>,
    bytes: usize,
}

impl RouteCache {
    /// The cached decision for `tag`, or `route()`'s, cached if the tag is short enough.
    pub fn get_or_route(
        &mut self,
        tag: &str,
        route: impl FnOnce() -> Option<usize>,
    ) -> Option<usize> {
        if let Some(&hit) = self.map.get(tag) {
            return hit;
        }
        let found = route();
        if tag.len() <= MAX_CACHED_TAG {
            let cost = tag.len() + ENTRY_OVERHEAD;
            if self.bytes + cost > ROUTE_CACHE_BYTES {
                self.map = HashMap::new();
                self.bytes = 0;
            }
            self.map.insert(tag.into(), found);
            self.bytes += cost;
        }
        found
    }

    /// Bytes held, as counted against [`ROUTE_CACHE_BYTES`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of cached tags.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_within_its_bytes_whatever_the_tags() {
        let mut cache = RouteCache::default();
        let mut routed = 0;
        for i in 0..20_000 {
            let tag = format!("{}{i}", "t".repeat(i % 600));
            cache.get_or_route(&tag, || {
                routed += 1;
                Some(0)
            });
            assert!(cache.bytes() <= ROUTE_CACHE_BYTES);
        }
        assert_eq!(routed, 20_000);
        let huge = "x".repeat(1 << 20);
        assert_eq!(cache.get_or_route(&huge, || None), None);
        assert!(cache.bytes() <= ROUTE_CACHE_BYTES);
    }

    #[test]
    fn short_tags_are_routed_once() {
        let mut cache = RouteCache::default();
        let mut routed = 0;
        for _ in 0..3 {
            cache.get_or_route("app.web", || {
                routed += 1;
                Some(1)
            });
        }
        assert_eq!(routed, 1);
        assert_eq!(cache.len(), 1);
    }
}
