//! Splits a chunk's service records into batch-put calls.
//!
//! Each service caps a call at a number of records and of bytes, counted its own way, and the
//! service's face gives both: the limits ([`CallLimits::within`]) and the size of each record
//! as the service meters it. PutRecordBatch (Firehose) takes at most 500 records and 4 MiB of
//! data before base64 (no partition key), so four maximum-size records (4 × 1,024,000 bytes)
//! fit in one call; PutRecords (Kinesis Data Streams) takes 500 records and 5 MiB counting
//! each record's data *and* partition key. Records keep their order: calls are consecutive
//! slices.

use std::ops::Range;

/// Limits for one call; both are at most the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Records per call.
    pub max_records: usize,
    /// Metered bytes per call.
    pub max_bytes: usize,
}

impl CallLimits {
    /// The configured limits, capped by the service's hard ones (`service`) and at least 1.
    pub fn within(self, service: CallLimits) -> CallLimits {
        CallLimits {
            max_records: self.max_records.clamp(1, service.max_records.max(1)),
            max_bytes: self.max_bytes.clamp(1, service.max_bytes.max(1)),
        }
    }

    /// Groups records of the given sizes into consecutive calls, greedily. A record larger than
    /// `max_bytes` (only possible when `max_bytes_per_call` was set below the record limit) is
    /// sent in a call of its own.
    pub fn split(&self, sizes: impl IntoIterator<Item = usize>) -> Vec<Range<usize>> {
        let max_records = self.max_records.max(1);
        let max_bytes = self.max_bytes.max(1);
        let mut calls = Vec::new();
        let (mut start, mut count, mut bytes) = (0usize, 0usize, 0usize);
        let mut end = 0usize;
        for (i, size) in sizes.into_iter().enumerate() {
            if count > 0 && (count == max_records || bytes + size > max_bytes) {
                calls.push(start..i);
                start = i;
                count = 0;
                bytes = 0;
            }
            count += 1;
            bytes += size;
            end = i + 1;
        }
        if count > 0 {
            calls.push(start..end);
        }
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// PutRecordBatch's limits.
    const MAX_RECORDS_PER_CALL: usize = 500;
    const MAX_BYTES_PER_CALL: usize = 4 * 1024 * 1024;
    const FIREHOSE: CallLimits = CallLimits {
        max_records: MAX_RECORDS_PER_CALL,
        max_bytes: MAX_BYTES_PER_CALL,
    };

    #[test]
    fn five_hundred_records_per_call_at_most() {
        let calls = FIREHOSE.split(std::iter::repeat_n(10, 1201));
        assert_eq!(calls, vec![0..500, 500..1000, 1000..1201]);
    }

    #[test]
    fn four_maximum_records_fit_in_one_call_but_not_five() {
        let calls = FIREHOSE.split(std::iter::repeat_n(1_024_000, 5));
        assert_eq!(calls, vec![0..4, 4..5]);
    }

    #[test]
    fn a_record_over_a_small_byte_limit_goes_alone() {
        let limits = CallLimits {
            max_records: 500,
            max_bytes: 100,
        };
        assert_eq!(
            limits.split([40, 150, 40, 40, 40]),
            vec![0..1, 1..2, 2..4, 4..5]
        );
    }

    proptest! {
        // Regression seeds next to this file, not in a top-level directory.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

        #[test]
        fn calls_cover_every_record_once_in_order_within_limits(
            sizes in proptest::collection::vec(1usize..300_000, 0..2000),
            max_records in 1usize..600,
            max_bytes in 300_000usize..5_000_000,
        ) {
            let limits = CallLimits { max_records, max_bytes }.within(FIREHOSE);
            let calls = limits.split(sizes.iter().copied());
            let mut next = 0;
            for c in &calls {
                prop_assert_eq!(c.start, next);
                prop_assert!(!c.is_empty());
                prop_assert!(c.len() <= max_records.min(500));
                let bytes: usize = sizes[c.clone()].iter().sum();
                prop_assert!(bytes <= max_bytes.min(MAX_BYTES_PER_CALL));
                next = c.end;
            }
            prop_assert_eq!(next, sizes.len());
        }
    }
}
