//! The rules every buffer implementation shares: how an append is spread over the staged chunk
//! and new chunks, when a chunk is full, and what `total_limit_size` allows. Pure functions, so
//! the memory and file buffers cannot drift apart and the rules are tested once.

use std::ops::Range;

use super::key::{ChunkKey, KeyRule};
use super::{AppendError, Records};
use crate::buffer::config::{BufferConfig, FlushMode, OverflowAction, DEFAULT_MAX_OPEN_CHUNKS};

/// Fluentd's `chunk_full_threshold`: a chunk at 95 % of `chunk_limit_size` counts as full, so
/// that the next small record does not start a nearly empty chunk of its own.
pub const CHUNK_FULL_THRESHOLD: f64 = 0.95;

/// The limits of one output's buffer, resolved from its config.
#[derive(Debug, Clone)]
pub struct BufferPolicy {
    /// Output name, for error messages.
    pub output: String,
    /// `chunk_limit_size`.
    pub chunk_limit_size: u64,
    /// `chunk_limit_records`.
    pub chunk_limit_records: Option<u64>,
    /// `total_limit_size` (resolved default).
    pub total_limit_size: u64,
    /// `flush_mode`.
    pub flush_mode: FlushMode,
    /// `overflow_action`.
    pub overflow_action: OverflowAction,
    /// Chunk keys and the bound on open chunks.
    pub keys: KeyPolicy,
}

/// How an output's chunks are keyed and how many may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// What records are kept apart by.
    pub rule: KeyRule,
    /// `timekey_wait` in ms.
    pub timekey_wait_ms: u64,
    /// `max_open_chunks`.
    pub max_open_chunks: usize,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            rule: KeyRule::default(),
            timekey_wait_ms: 600_000,
            max_open_chunks: DEFAULT_MAX_OPEN_CHUNKS as usize,
        }
    }
}

impl KeyPolicy {
    /// True when the open chunk of `key` is due under `which` (`created_ms`: its creation).
    pub fn due(&self, which: super::Enqueue, key: &ChunkKey, created_ms: u64) -> bool {
        match which {
            super::Enqueue::All => true,
            super::Enqueue::CreatedBefore(t) => created_ms <= t,
            super::Enqueue::SlotEndedBefore(now_ms) => {
                match (key.timekey, self.rule.timekey_secs) {
                    (Some(slot), Some(size)) => {
                        let end_ms = slot.saturating_add(size).saturating_mul(1000);
                        u64::try_from(end_ms)
                            .unwrap_or(0)
                            .saturating_add(self.timekey_wait_ms)
                            <= now_ms
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Size of the staged chunk an append may add to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StagedSize {
    /// Logical bytes.
    pub bytes: u64,
    /// Records.
    pub records: u64,
}

/// One part of an append: a range of its records that goes into one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPart {
    /// Which records of the append.
    pub range: Range<usize>,
    /// Bytes of those records.
    pub bytes: u64,
    /// False: into the current staged chunk. True: into a new chunk created for it.
    pub new_chunk: bool,
    /// Queue the chunk right after this part is written (it is full, or `immediate` mode).
    pub close_after: bool,
}

/// Where the records of one append go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendPlan {
    /// Queue the current staged chunk before writing (the append does not fit into it).
    pub close_staged_first: bool,
    /// The parts, in record order.
    pub parts: Vec<PlacedPart>,
    /// Total bytes of the append.
    pub bytes: u64,
}

impl BufferPolicy {
    /// Resolves the limits of output `output` from its buffer config.
    pub fn from_config(output: &str, cfg: &BufferConfig) -> Self {
        BufferPolicy {
            output: output.to_owned(),
            chunk_limit_size: cfg.chunk_limit_size.0,
            chunk_limit_records: cfg.chunk_limit_records,
            total_limit_size: cfg.effective_total_limit(),
            flush_mode: cfg.flush_mode,
            overflow_action: cfg.overflow_action,
            keys: KeyPolicy {
                rule: cfg.key_rule(),
                timekey_wait_ms: u64::try_from(cfg.timekey_wait.0.as_millis()).unwrap_or(u64::MAX),
                max_open_chunks: cfg.max_open_chunks.max(1) as usize,
            },
        }
    }

    /// True when a chunk of this size must be queued.
    pub fn is_full(&self, size: StagedSize) -> bool {
        size.bytes as f64 >= self.chunk_limit_size as f64 * CHUNK_FULL_THRESHOLD
            || self.chunk_limit_records.is_some_and(|n| size.records >= n)
    }

    fn fits(&self, size: StagedSize, add_bytes: u64) -> bool {
        size.bytes + add_bytes <= self.chunk_limit_size
            && self.chunk_limit_records.is_none_or(|n| size.records < n)
    }

    /// Spreads `records` over the staged chunk (of size `staged`, if there is one) and new
    /// chunks. Fails when a single record is larger than `chunk_limit_size`: splitting a record
    /// would corrupt it, and silently dropping it would lose data.
    pub fn plan(
        &self,
        staged: Option<StagedSize>,
        records: &Records,
    ) -> Result<AppendPlan, AppendError> {
        let mut plan = AppendPlan::default();
        let mut current = staged;
        let mut current_is_new = false;
        let mut part_start = 0usize;
        let mut part_bytes = 0u64;
        for i in 0..records.len() {
            let size = records.record_len(i) as u64;
            if size > self.chunk_limit_size {
                return Err(AppendError::RecordTooLarge {
                    output: self.output.clone(),
                    size: size as usize,
                    limit: self.chunk_limit_size,
                });
            }
            let fits = current.is_some_and(|c| self.fits(c, size));
            if !fits {
                if i > part_start {
                    plan.parts.push(PlacedPart {
                        range: part_start..i,
                        bytes: part_bytes,
                        new_chunk: current_is_new,
                        close_after: true,
                    });
                } else if current.is_some() {
                    plan.close_staged_first = true;
                }
                current = Some(StagedSize::default());
                current_is_new = true;
                part_start = i;
                part_bytes = 0;
            }
            if let Some(c) = current.as_mut() {
                c.bytes += size;
                c.records += 1;
            }
            part_bytes += size;
            plan.bytes += size;
        }
        if records.len() > part_start {
            let full = current.is_some_and(|c| self.is_full(c));
            plan.parts.push(PlacedPart {
                range: part_start..records.len(),
                bytes: part_bytes,
                new_chunk: current_is_new,
                close_after: full || self.flush_mode == FlushMode::Immediate,
            });
        }
        Ok(plan)
    }

    /// The overflow error for an append of `adding` bytes when `used` are kept.
    pub fn overflow_error(&self, used: u64) -> AppendError {
        AppendError::Overflow {
            output: self.output.clone(),
            used,
            limit: self.total_limit_size,
        }
    }

    /// True when `adding` more bytes fit under `total_limit_size`. An append larger than the
    /// whole limit is let through into an empty buffer, so that it can never block forever.
    pub fn has_room(&self, used: u64, adding: u64) -> bool {
        used + adding <= self.total_limit_size || used == 0
    }
}

/// A buffer's locked state as [`BufferPolicy::reserve`] needs it.
pub trait Reservable {
    /// Logical bytes kept.
    fn used_bytes(&self) -> u64;
    /// Removes the oldest *queued* chunk (never staged or in flight) of output `output`,
    /// counting and logging it; false when there is none.
    fn drop_oldest_queued(&mut self, output: &str) -> bool;
}

impl BufferPolicy {
    /// Makes room for `adding` bytes according to `overflow_action` and returns the locked state
    /// once the append may proceed: at once when there is room, after dropping the oldest queued
    /// chunks (`drop_oldest_chunk`), after waiting for `space_freed` (`block`), or an error
    /// (`throw_exception`, closed buffer, nothing left to drop). Shared by every buffer so they
    /// cannot drift apart.
    pub async fn reserve<'a, S: Reservable + 'a>(
        &self,
        adding: u64,
        closed: &std::sync::atomic::AtomicBool,
        space_freed: &tokio::sync::Notify,
        lock: impl Fn() -> std::sync::MutexGuard<'a, S>,
    ) -> Result<std::sync::MutexGuard<'a, S>, AppendError> {
        use std::sync::atomic::Ordering;
        loop {
            // Registered before checking, so a commit between the check and the wait is seen.
            let freed = space_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut st = lock();
                if closed.load(Ordering::Acquire) {
                    return Err(AppendError::Closed(self.output.clone()));
                }
                if self.has_room(st.used_bytes(), adding) {
                    return Ok(st);
                }
                match self.overflow_action {
                    OverflowAction::ThrowException => {
                        return Err(self.overflow_error(st.used_bytes()))
                    }
                    OverflowAction::DropOldestChunk => {
                        while !self.has_room(st.used_bytes(), adding) {
                            if !st.drop_oldest_queued(&self.output) {
                                return Err(self.overflow_error(st.used_bytes()));
                            }
                        }
                        return Ok(st);
                    }
                    OverflowAction::Block => {}
                }
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u64, records: Option<u64>, mode: FlushMode) -> BufferPolicy {
        BufferPolicy {
            output: "out".into(),
            chunk_limit_size: limit,
            chunk_limit_records: records,
            total_limit_size: 1 << 30,
            flush_mode: mode,
            overflow_action: OverflowAction::Block,
            keys: Default::default(),
        }
    }

    fn recs(sizes: &[usize]) -> Records {
        let mut r = Records::new();
        for &s in sizes {
            r.push(&vec![b'x'; s]).unwrap();
        }
        r
    }

    #[test]
    fn small_append_goes_into_the_staged_chunk() {
        let p = policy(100, None, FlushMode::Interval);
        let plan = p
            .plan(
                Some(StagedSize {
                    bytes: 10,
                    records: 1,
                }),
                &recs(&[10, 10]),
            )
            .unwrap();
        assert!(!plan.close_staged_first);
        assert_eq!(
            plan.parts,
            vec![PlacedPart {
                range: 0..2,
                bytes: 20,
                new_chunk: false,
                close_after: false
            }]
        );
    }

    #[test]
    fn without_a_staged_chunk_a_new_one_is_created() {
        let p = policy(100, None, FlushMode::Interval);
        let plan = p.plan(None, &recs(&[10])).unwrap();
        assert!(plan.parts[0].new_chunk);
    }

    #[test]
    fn overflowing_append_spills_into_new_chunks_at_record_boundaries() {
        let p = policy(100, None, FlushMode::Interval);
        let plan = p
            .plan(
                Some(StagedSize {
                    bytes: 80,
                    records: 8,
                }),
                &recs(&[15, 60, 30, 40]),
            )
            .unwrap();
        assert!(!plan.close_staged_first);
        let shape: Vec<_> = plan
            .parts
            .iter()
            .map(|p| (p.range.clone(), p.new_chunk, p.close_after))
            .collect();
        // 80+15 fits the staged chunk; 60+30 make a new chunk; 40 starts another.
        assert_eq!(
            shape,
            vec![(0..1, false, true), (1..3, true, true), (3..4, true, false)]
        );
        assert_eq!(plan.bytes, 145);
    }

    #[test]
    fn append_that_does_not_fit_at_all_closes_the_staged_chunk_first() {
        let p = policy(100, None, FlushMode::Interval);
        let plan = p
            .plan(
                Some(StagedSize {
                    bytes: 90,
                    records: 9,
                }),
                &recs(&[20]),
            )
            .unwrap();
        assert!(plan.close_staged_first);
        assert_eq!(plan.parts.len(), 1);
        assert!(plan.parts[0].new_chunk);
    }

    #[test]
    fn record_limit_closes_chunks() {
        let p = policy(1000, Some(2), FlushMode::Interval);
        let plan = p.plan(None, &recs(&[1, 1, 1])).unwrap();
        let shape: Vec<_> = plan
            .parts
            .iter()
            .map(|p| (p.range.clone(), p.close_after))
            .collect();
        assert_eq!(shape, vec![(0..2, true), (2..3, false)]);
    }

    #[test]
    fn chunk_at_95_percent_is_full() {
        let p = policy(100, None, FlushMode::Interval);
        let plan = p.plan(None, &recs(&[95])).unwrap();
        assert!(plan.parts[0].close_after);
        let plan = p.plan(None, &recs(&[94])).unwrap();
        assert!(!plan.parts[0].close_after);
    }

    #[test]
    fn immediate_mode_closes_after_every_append() {
        let p = policy(100, None, FlushMode::Immediate);
        let plan = p.plan(None, &recs(&[1])).unwrap();
        assert!(plan.parts[0].close_after);
    }

    #[test]
    fn a_record_larger_than_a_chunk_is_rejected_not_split() {
        let p = policy(100, None, FlushMode::Interval);
        let err = p.plan(None, &recs(&[10, 101])).unwrap_err();
        assert!(
            err.to_string()
                .contains("101 bytes is larger than chunk_limit_size"),
            "{err}"
        );
    }

    #[test]
    fn room_check_lets_an_oversized_append_into_an_empty_buffer() {
        let mut p = policy(100, None, FlushMode::Interval);
        p.total_limit_size = 1000;
        assert!(p.has_room(900, 100));
        assert!(!p.has_room(901, 100));
        assert!(p.has_room(0, 5000));
    }
}
