//! The data value: a run of record bytes with the end offsets of the records that end in it,
//! checksummed. It is the payload of every frame of a chunk file, and the value of the
//! `'d'` keys of chunks written by the first release.
//!
//! ```text
//! u8 version = 1 | u32 LE crc32 of everything after it | u32 LE n | n × u32 LE end | data
//! ```

use super::CodecError;
use crate::buffer::Records;

/// Version byte of data values written by this release.
pub const VALUE_V1: u8 = 1;
/// Largest data value the writer produces (record data of chunks written by the first release
/// went to sled in such values). Measured with sled 0.34: with the default 512 KiB
/// `segment_size`, ~200 KB values became separate blob files that were never reclaimed after
/// removal (6 GB of blobs for 20 MB live data); values far below `segment_size` (8 MiB in the
/// databases that hold such values, see
/// [`LEGACY_SEGMENT_SIZE`](super::super::store::LEGACY_SEGMENT_SIZE)) never become blobs, whose
/// durability and reclamation we cannot control. Chunk files reuse the same value format, so frames keep
/// this bound too.
pub const MAX_VALUE_DATA: usize = 256 * 1024;

/// Fixed part of a data value: version (1), crc32 (4), number of record ends (4).
const VALUE_HEADER: usize = 9;
/// Encodes one data value: `data` holds whole or partial records, `ends` the end offsets of
/// the records that end inside it, relative to `base` (the offset of `data` in the caller's
/// buffer; stored relative to `data`).
///
/// ```text
/// u8 version = 1 | u32 LE crc32 of everything after it | u32 LE n | n × u32 LE end | data
/// ```
pub fn encode_value(ends: &[u32], base: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_HEADER + ends.len() * 4 + data.len());
    encode_value_into(&mut v, ends, base, data);
    v
}

/// [`encode_value`], appended to `out` (no buffer of its own: the writer's hot path).
pub(super) fn encode_value_into(out: &mut Vec<u8>, ends: &[u32], base: u32, data: &[u8]) {
    encode_bound_value_into(out, ends, base, data, None);
}

/// [`encode_value_into`] for a frame of a chunk file whose frames are bound to their chunk
/// ([`super::chunk_file`]): with `chunk`, the crc32 covers the chunk id (`u64 LE`) before the
/// rest of the value, so that the value checks only as a value of that chunk.
pub(super) fn encode_bound_value_into(
    out: &mut Vec<u8>,
    ends: &[u32],
    base: u32,
    data: &[u8],
    chunk: Option<u64>,
) {
    let start = out.len();
    out.reserve(VALUE_HEADER + ends.len() * 4 + data.len());
    out.push(VALUE_V1);
    out.extend_from_slice(&[0; 4]);
    // A value holds at most MAX_VALUE_DATA bytes of a chunk below 4 GiB, so its record count
    // fits in u32.
    out.extend_from_slice(&(ends.len() as u32).to_le_bytes());
    for e in ends {
        out.extend_from_slice(&e.saturating_sub(base).to_le_bytes());
    }
    out.extend_from_slice(data);
    let crc = value_crc(&out[start + 5..], chunk);
    out[start + 1..start + 5].copy_from_slice(&crc.to_le_bytes());
}

/// The crc32 of a value's bytes after its checksum, preceded by the chunk id if it is bound.
fn value_crc(rest: &[u8], chunk: Option<u64>) -> u32 {
    match chunk {
        None => crc32fast::hash(rest),
        Some(id) => {
            let mut h = crc32fast::Hasher::new();
            h.update(&id.to_le_bytes());
            h.update(rest);
            h.finalize()
        }
    }
}

/// A decoded data value, borrowing from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRef<'a> {
    ends: &'a [u8],
    /// Record bytes (the last record may continue in the next value).
    pub data: &'a [u8],
    /// Bytes cut from the front of the stored data ([`ValueRef::without_first_record`]): the
    /// stored ends are relative to the uncut data.
    skip: u32,
}

impl<'a> ValueRef<'a> {
    /// Length of the stored value this was decoded from (header, ends and data), for a value
    /// as decoded (not cut by [`ValueRef::without_first_record`] or
    /// [`ValueRef::up_to_last_record_end`]).
    pub fn encoded_len(&self) -> usize {
        VALUE_HEADER + self.ends.len() + self.data.len()
    }

    /// End offsets (relative to [`ValueRef::data`]) of the records ending in this value.
    pub fn ends(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        let skip = self.skip;
        self.ends
            .chunks_exact(4)
            .map(move |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) - skip)
    }

    /// The value without the bytes up to its first record end (the end of a record whose start
    /// was lost), or `None` if no record ends in it.
    pub(super) fn without_first_record(self) -> Option<ValueRef<'a>> {
        let first = self.ends().next()?;
        Some(ValueRef {
            ends: &self.ends[4..],
            data: &self.data[first as usize..],
            skip: self.skip + first,
        })
    }

    /// The value cut after its last record end (the bytes after it belong to a record whose
    /// end was lost), or `None` if no record ends in it.
    pub(super) fn up_to_last_record_end(self) -> Option<ValueRef<'a>> {
        let last = self.ends().last()?;
        Some(ValueRef {
            data: &self.data[..last as usize],
            ..self
        })
    }
}

/// Whether a stored value of `encoded_len` bytes can hold [`MAX_VALUE_DATA`] record bytes, and
/// so be a value that is not the last of its group commit and may end inside a record (only
/// the last value of a group commit is shorter, and it always ends on a record end). Used when
/// the value itself cannot be read.
pub(super) fn may_end_inside_a_record(encoded_len: usize) -> bool {
    encoded_len
        .checked_sub(VALUE_HEADER + MAX_VALUE_DATA)
        .is_some_and(|ends| ends % 4 == 0)
}

/// Decodes a data value, verifying version, checksum and offsets.
pub fn decode_value(bytes: &[u8]) -> Result<ValueRef<'_>, CodecError> {
    decode_bound_value(bytes, None)
}

/// [`decode_value`] of a value bound to chunk `chunk` (see [`encode_bound_value_into`]): it
/// checks only if it was written for that chunk.
pub(super) fn decode_bound_value(
    bytes: &[u8],
    chunk: Option<u64>,
) -> Result<ValueRef<'_>, CodecError> {
    if bytes.len() < VALUE_HEADER {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if bytes[0] != VALUE_V1 {
        return Err(CodecError::UnknownVersion(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let computed = value_crc(&bytes[5..], chunk);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let n = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let rest = &bytes[VALUE_HEADER..];
    let ends_len = n
        .checked_mul(4)
        .filter(|&l| l <= rest.len())
        .ok_or_else(|| CodecError::Malformed(format!("{n} record ends do not fit")))?;
    let (ends, data) = rest.split_at(ends_len);
    let value = ValueRef {
        ends,
        data,
        skip: 0,
    };
    let mut prev = 0u32;
    for e in value.ends() {
        if e < prev || e as usize > data.len() {
            return Err(CodecError::Malformed(format!(
                "record end {e} out of order or beyond {} data bytes",
                data.len()
            )));
        }
        prev = e;
    }
    Ok(value)
}

/// Encodes the records one group commit adds to a chunk as data values of at most
/// [`MAX_VALUE_DATA`] record bytes each, in order. A record may straddle two values; the
/// records' end offsets say where each one ends. Always at least one value.
pub fn split_values(records: &Records) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for_each_value(records, |ends, base, data| {
        out.push(encode_value(ends, base, data))
    });
    out
}

/// Calls `f(ends, base, data)` for each data value `records` is split into (see
/// [`split_values`]): `data` is at most [`MAX_VALUE_DATA`] bytes starting at offset `base`,
/// `ends` the end offsets of the records that end in it.
pub(super) fn for_each_value(records: &Records, mut f: impl FnMut(&[u32], u32, &[u8])) {
    let data = records.as_bytes();
    let ends = records.ends();
    let pieces = data.len().div_ceil(MAX_VALUE_DATA).max(1);
    let mut next_end = 0usize;
    for p in 0..pieces {
        let start = p * MAX_VALUE_DATA;
        let stop = if p + 1 == pieces {
            data.len()
        } else {
            start + MAX_VALUE_DATA
        };
        let first = next_end;
        while next_end < ends.len() && (ends[next_end] as usize <= stop || p + 1 == pieces) {
            next_end += 1;
        }
        // `start` is below 4 GiB because a Records buffer is.
        f(&ends[first..next_end], start as u32, &data[start..stop]);
    }
}

/// Rebuilds a chunk's records from its stored data values (in key order), checking them
/// against the chunk's metadata. Any mismatch means the chunk cannot be trusted as a whole.
pub fn assemble<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    expect_records: u64,
    expect_bytes: u64,
) -> Result<Records, CodecError> {
    let decoded = values
        .into_iter()
        .map(decode_value)
        .collect::<Result<Vec<_>, _>>()?;
    assemble_decoded(decoded, expect_records, expect_bytes)
}

/// [`assemble`] for values already decoded (a chunk file's, from [`scan_chunk_file`](super::scan_chunk_file)). Each
/// value's bytes are copied at once and its record ends shifted, not record by record.
pub fn assemble_decoded<'a>(
    values: impl IntoIterator<Item = ValueRef<'a>>,
    expect_records: u64,
    expect_bytes: u64,
) -> Result<Records, CodecError> {
    let cap_bytes = usize::try_from(expect_bytes)
        .unwrap_or(0)
        .min(u32::MAX as usize);
    let cap_records = usize::try_from(expect_records).unwrap_or(0).min(1 << 24);
    let records = Records::with_capacity(cap_records, cap_bytes);
    assemble_decoded_into(values, expect_records, expect_bytes, records)
}

/// Where [`assemble_decoded_into`] and [`assemble_closed_into`](super::assemble_closed_into)
/// put a chunk's records: [`Records`] (a copy of every value's bytes), or a plan of where the
/// bytes are in the buffer the values borrow from, to move them there
/// (`buffer::file::read::InPlace`). Both check the record ends the same way.
pub trait RecordSink<'a> {
    /// [`Records::extend_sealed`]; an error is the chunk's.
    fn extend_sealed(
        &mut self,
        data: &'a [u8],
        ends: impl Iterator<Item = u32>,
    ) -> Result<(), CodecError>;
    /// [`Records::seal`] (an empty record, for a record lost in a gap).
    fn seal(&mut self) -> Result<(), CodecError>;
    /// Records so far.
    fn record_count(&self) -> usize;
    /// Bytes so far.
    fn byte_len(&self) -> usize;
    /// End of the last record so far (0 if none).
    fn last_end(&self) -> usize;
}

impl<'a> RecordSink<'a> for Records {
    fn extend_sealed(
        &mut self,
        data: &'a [u8],
        ends: impl Iterator<Item = u32>,
    ) -> Result<(), CodecError> {
        Records::extend_sealed(self, data, ends).map_err(|e| CodecError::Malformed(e.to_string()))
    }
    fn seal(&mut self) -> Result<(), CodecError> {
        Records::seal(self).map_err(|e| CodecError::Malformed(e.to_string()))
    }
    fn record_count(&self) -> usize {
        Records::len(self)
    }
    fn byte_len(&self) -> usize {
        Records::byte_len(self)
    }
    fn last_end(&self) -> usize {
        self.ends().last().map_or(0, |&e| e as usize)
    }
}

/// [`assemble_decoded`] into any [`RecordSink`].
pub fn assemble_decoded_into<'a, S: RecordSink<'a>>(
    values: impl IntoIterator<Item = ValueRef<'a>>,
    expect_records: u64,
    expect_bytes: u64,
    mut records: S,
) -> Result<S, CodecError> {
    for value in values {
        if (records.byte_len() + value.data.len()) as u64 > expect_bytes {
            return Err(CodecError::Malformed(format!(
                "chunk data exceeds the {expect_bytes} bytes its metadata records"
            )));
        }
        let ends = value.ends();
        records.extend_sealed(value.data, ends)?;
    }
    let sealed = records.last_end();
    if sealed != records.byte_len() {
        return Err(CodecError::Malformed(format!(
            "{} bytes after the last record end",
            records.byte_len() - sealed
        )));
    }
    if records.record_count() as u64 != expect_records || records.byte_len() as u64 != expect_bytes
    {
        return Err(CodecError::Malformed(format!(
            "chunk data holds {} records / {} bytes, metadata says {expect_records} / {expect_bytes}",
            records.record_count(),
            records.byte_len()
        )));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_values_round_trip_through_assemble_at_any_size() {
        let mut r = Records::new();
        r.push(b"").unwrap();
        r.push(&vec![b'a'; MAX_VALUE_DATA - 1]).unwrap();
        r.push(b"b").unwrap(); // ends exactly on the value boundary
        r.push(b"").unwrap(); // empty record right at the boundary
        r.push(&vec![b'c'; 2 * MAX_VALUE_DATA + 7]).unwrap(); // spans three values
        r.push(b"d\n").unwrap();
        let values = split_values(&r);
        assert_eq!(values.len(), r.byte_len().div_ceil(MAX_VALUE_DATA));
        assert!(values.iter().all(|v| v.len() <= MAX_VALUE_DATA + 64));
        let back = assemble(values.iter().map(Vec::as_slice), 6, r.byte_len() as u64).unwrap();
        assert_eq!(back, r);
        assert!(assemble(values.iter().map(Vec::as_slice), 5, r.byte_len() as u64).is_err());
        assert!(assemble(
            values[..1].iter().map(Vec::as_slice),
            6,
            r.byte_len() as u64
        )
        .is_err());
    }

    #[test]
    fn empty_records_make_one_value() {
        let mut r = Records::new();
        r.push(b"").unwrap();
        r.push(b"").unwrap();
        let values = split_values(&r);
        assert_eq!(values.len(), 1);
        assert_eq!(assemble(values.iter().map(Vec::as_slice), 2, 0).unwrap(), r);
    }

    #[test]
    fn values_round_trip() {
        let v = encode_value(&[2, 5, 5], 0, b"ab\ncdxyz");
        let d = decode_value(&v).unwrap();
        assert_eq!(d.ends().collect::<Vec<_>>(), vec![2, 5, 5]);
        assert_eq!(d.data, b"ab\ncdxyz");
    }

    #[test]
    fn any_flipped_bit_in_a_value_is_detected() {
        let v = encode_value(&[3], 0, b"abc");
        for i in 0..v.len() {
            for bit in 0..8 {
                let mut bad = v.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode_value(&bad).is_err(),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn inconsistent_values_with_a_valid_checksum_are_refused() {
        // Ends out of order.
        assert!(matches!(
            decode_value(&encode_value(&[3, 1], 0, b"abc")),
            Err(CodecError::Malformed(_))
        ));
        // End beyond the data.
        assert!(matches!(
            decode_value(&encode_value(&[4], 0, b"abc")),
            Err(CodecError::Malformed(_))
        ));
    }
}
