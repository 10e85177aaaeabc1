//! Formatted records: the exact bytes a sink will send, one entry per record, stored back to
//! back with their end offsets so a batch of 1,000 records is two allocations.

use std::ops::Range;

/// A sequence of formatted records (e.g. `{"message":"x"}\n` each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    data: Vec<u8>,
    ends: Vec<u32>,
}

/// A record could not be added because a batch's data would exceed 4 GiB.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a batch of records cannot exceed 4 GiB")]
pub struct RecordsTooLarge;

/// A frame could not be appended by [`Records::extend_sealed`].
#[derive(Debug, thiserror::Error)]
pub enum BadFrame {
    /// The data would pass 4 GiB.
    #[error(transparent)]
    TooLarge(#[from] RecordsTooLarge),
    /// A record end is out of order or beyond the frame's data.
    #[error("record end {0} out of order or beyond the frame's data")]
    End(u32),
}

impl Records {
    /// An empty sequence.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty sequence with room for `records` records of `bytes` bytes in total.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Records {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
        }
    }

    /// Rebuilds a sequence from its parts; `ends` must be non-decreasing and end within `data`.
    /// Returns `None` when they are inconsistent (e.g. read from a corrupted store).
    pub fn from_parts(data: Vec<u8>, ends: Vec<u32>) -> Option<Self> {
        let mut prev = 0u32;
        for &e in &ends {
            if e < prev {
                return None;
            }
            prev = e;
        }
        if prev as usize > data.len() || (ends.is_empty() && !data.is_empty()) {
            return None;
        }
        if prev as usize != data.len() {
            return None;
        }
        Some(Records { data, ends })
    }

    /// From parts known to be consistent: `ends` increasing, the last one `data.len()` (as
    /// [`crate::event::EventBatch`] keeps its lines). Only checked in debug builds.
    pub(crate) fn from_trusted_parts(data: Vec<u8>, ends: Vec<u32>) -> Self {
        debug_assert!(ends.windows(2).all(|w| w[0] <= w[1]));
        debug_assert_eq!(ends.last().map_or(0, |&e| e as usize), data.len());
        Records { data, ends }
    }

    /// Appends one record.
    pub fn push(&mut self, record: &[u8]) -> Result<(), RecordsTooLarge> {
        self.data.extend_from_slice(record);
        self.seal()
    }

    /// Direct access for formatters that write a record in place; call [`Records::seal`] after.
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Marks the bytes written since the previous record as one record.
    pub fn seal(&mut self) -> Result<(), RecordsTooLarge> {
        let end = u32::try_from(self.data.len()).map_err(|_| RecordsTooLarge)?;
        self.ends.push(end);
        Ok(())
    }

    /// Drops bytes written since the previous record.
    pub fn unseal_tail(&mut self) {
        let end = self.ends.last().copied().unwrap_or(0) as usize;
        self.data.truncate(end);
    }

    /// Appends every record of `other`.
    pub fn extend(&mut self, other: &Records) -> Result<(), RecordsTooLarge> {
        // `other`'s ends are valid offsets into its data: only the size can be refused.
        self.extend_sealed(&other.data, other.ends.iter().copied())
            .map_err(|_| RecordsTooLarge)
    }

    /// Appends `data`, in which records end at `ends` (ascending offsets into `data`; the first
    /// may close a record whose start is already here, the bytes after the last stay open for
    /// [`Records::seal`] or a later call). How a stored frame becomes records in one copy.
    pub fn extend_sealed(
        &mut self,
        data: &[u8],
        ends: impl Iterator<Item = u32>,
    ) -> Result<(), BadFrame> {
        let base = self.data.len();
        if u32::try_from(base + data.len()).is_err() {
            return Err(RecordsTooLarge.into());
        }
        push_frame_ends(&mut self.ends, base, data.len(), ends)?;
        self.data.extend_from_slice(data);
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total bytes of all records.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// All records' bytes concatenated (what a file sink writes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// End offsets of each record within [`Records::as_bytes`].
    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    fn range(&self, i: usize) -> Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }

    /// Record `i`, if it exists.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i < self.ends.len() {
            Some(&self.data[self.range(i)])
        } else {
            None
        }
    }

    /// The byte range of records `indices` within [`Records::as_bytes`], if they all exist.
    pub fn byte_span(&self, indices: Range<usize>) -> Option<Range<usize>> {
        if indices.is_empty() || indices.end > self.ends.len() {
            return None;
        }
        Some(self.range(indices.start).start..self.ends[indices.end - 1] as usize)
    }

    /// Size of record `i` in bytes.
    pub fn record_len(&self, i: usize) -> usize {
        self.range(i).len()
    }

    /// The records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).map(move |i| &self.data[self.range(i)])
    }

    /// Records `range` as a new sequence (used to split a batch over chunks).
    pub fn slice(&self, range: Range<usize>) -> Records {
        if range.is_empty() {
            return Records::new();
        }
        let start = self.range(range.start).start;
        let end = self.ends[range.end - 1] as usize;
        let data = self.data[start..end].to_vec();
        let ends = self.ends[range].iter().map(|&e| e - start as u32).collect();
        Records { data, ends }
    }

    /// Splits into the raw parts (for storage encoders).
    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        (self.data, self.ends)
    }
}

/// Appends to `ends` the record ends of a frame whose `data_len` bytes start at offset `base` of
/// the records' data (`frame_ends`: ascending offsets into the frame), checking them as
/// [`Records::extend_sealed`] does; on an error `ends` is left as it was. The caller has checked
/// that `base + data_len` fits in a `u32`. Shared with the file buffer's read-back in place,
/// which places frames without copying them.
pub(crate) fn push_frame_ends(
    ends: &mut Vec<u32>,
    base: usize,
    data_len: usize,
    frame_ends: impl Iterator<Item = u32>,
) -> Result<(), BadFrame> {
    let mark = ends.len();
    let mut prev = ends.last().map_or(0, |&e| e as usize);
    for e in frame_ends {
        let end = base + e as usize;
        if end < prev || e as usize > data_len {
            ends.truncate(mark);
            return Err(BadFrame::End(e));
        }
        prev = end;
        // Cannot overflow: the caller checked that all of the frame fits.
        ends.push(end as u32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(items: &[&str]) -> Records {
        let mut r = Records::new();
        for i in items {
            r.push(i.as_bytes()).unwrap();
        }
        r
    }

    #[test]
    fn iterates_records_in_order() {
        let r = recs(&["a\n", "bb\n", "", "ccc\n"]);
        let got: Vec<_> = r.iter().collect();
        assert_eq!(got, vec![&b"a\n"[..], b"bb\n", b"", b"ccc\n"]);
        assert_eq!(r.byte_len(), 9);
        assert_eq!(r.record_len(1), 3);
    }

    #[test]
    fn slice_and_extend_round_trip() {
        let r = recs(&["a\n", "bb\n", "ccc\n", "d\n"]);
        let mut joined = r.slice(0..2);
        joined.extend(&r.slice(2..4)).unwrap();
        assert_eq!(joined, r);
        assert_eq!(r.slice(1..3), recs(&["bb\n", "ccc\n"]));
        assert!(r.slice(2..2).is_empty());
    }

    #[test]
    fn from_parts_rejects_inconsistent_offsets() {
        assert!(Records::from_parts(b"abc".to_vec(), vec![1, 3]).is_some());
        assert!(Records::from_parts(b"abc".to_vec(), vec![2, 1]).is_none());
        assert!(Records::from_parts(b"abc".to_vec(), vec![4]).is_none());
        assert!(Records::from_parts(b"abc".to_vec(), vec![]).is_none());
        assert!(Records::from_parts(b"abc".to_vec(), vec![2]).is_none());
        assert!(Records::from_parts(vec![], vec![]).is_some());
    }

    #[test]
    fn frames_append_whole_and_a_record_may_span_two_of_them() {
        let mut r = Records::new();
        // "ab" ends in the first frame; "cdef" starts there and ends in the second.
        r.extend_sealed(b"abcd", [2].into_iter()).unwrap();
        r.extend_sealed(b"efg", [2, 3].into_iter()).unwrap();
        assert_eq!(r, recs(&["ab", "cdef", "g"]));
    }

    #[test]
    fn a_frame_with_bad_ends_is_refused_and_changes_nothing() {
        let mut r = recs(&["ab"]);
        assert!(matches!(
            r.extend_sealed(b"xyz", [2, 1].into_iter()),
            Err(BadFrame::End(1))
        ));
        assert!(matches!(
            r.extend_sealed(b"xyz", [4].into_iter()),
            Err(BadFrame::End(4))
        ));
        assert_eq!(r, recs(&["ab"]));
    }
}
