//! Reading a chunk file back ([`scan_chunk_file`]): its frames in order, a tail that a crash
//! cut short, and stretches of corrupt frames in the middle ([`Gap`]), whose records are lost
//! while the frames after them are kept; and a closed chunk's records rebuilt around such a
//! stretch ([`assemble_closed`]). The layout is in [`super::chunk_file`].

use std::ops::Range;

use super::chunk_file::{read_header, BOUND_FRAME_PREFIX, FRAME_PREFIX};
use super::meta::{ChunkMeta, DataStorage, StoredState};
use super::value::{decode_bound_value, may_end_inside_a_record, ValueRef};
use super::{assemble_decoded_into, CodecError, RecordSink};
use crate::buffer::{ChunkId, ChunkKey, DeliveredSet, Records, RetryState};

/// What a chunk file's end can be, which decides what an unreadable frame at its end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEnd {
    /// A staged chunk's file (no metadata): its end may be a group commit that a crash cut
    /// short, never acknowledged. Unreadable frames with nothing readable after them are its
    /// [`ScannedFile::tail`].
    MayBeTorn,
    /// A closed chunk's file: complete and synced before its metadata was written. An
    /// unreadable frame whose length fits the file is corruption ([`Gap`]) wherever it is,
    /// the last frame included.
    Complete,
}

/// Frames of a chunk file that could not be read although their lengths are intact (the frames
/// around them decode where those lengths say): corruption, not a write cut short. The records
/// that lie (even in part) in them are lost; the frames after the gap are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// File offset of the first frame with bytes that are not kept: the unreadable frame, or
    /// the frame before it if a record that started there ran into it.
    pub start: u64,
    /// File offset just after the last frame with bytes that are not kept: the last unreadable
    /// frame, or the frames after it up to the one where the record it cut ends.
    pub end: u64,
    /// Unreadable frames in the gap (one, unless several in a row).
    pub bad_frames: u32,
    /// Kept records before the gap: the index at which the lost records were.
    pub records_before: u64,
    /// Kept values ([`ScannedFile::values`]) before the gap.
    pub values_before: usize,
    /// Why the (first) unreadable frame could not be read.
    pub error: CodecError,
    /// [`ScannedFile::valid_len`] when the gap was found.
    valid_len_at: u64,
    /// Kept values, records and bytes before the frame ends salvaged in front of the gap.
    before_salvage: (usize, u64, u64),
}

/// What [`scan_chunk_file`] found in a chunk file.
#[derive(Debug)]
pub struct ScannedFile<'a> {
    /// Creation time of the chunk (from the header).
    pub created_ms: u64,
    /// The chunk's key (from the header; empty in a version 1 header).
    pub key: ChunkKey,
    /// The data values of every frame kept, in order, decoded (so their checksums were verified
    /// once, here), cut to whole records around gaps: frames up to the first one that cannot be
    /// read, and after a [`Gap`] the frames that follow it.
    pub values: Vec<ValueRef<'a>>,
    /// Records in those values (records that end in them).
    pub records: u64,
    /// Record bytes in those values.
    pub bytes: u64,
    /// Length of the file up to the end of the last readable frame that ends a record.
    pub valid_len: u64,
    /// Where this chunk's bytes end: the file's length, or in a file reused from a purged
    /// chunk (format 3 and 4) the first offset past `valid_len` where no frame of this chunk
    /// starts; what follows is the previous occupant's, never read. A [`ScannedFile::tail`]
    /// lies between `valid_len` and here.
    pub data_end: u64,
    /// Corrupt frames in the middle of the file, in file order; the values after each are kept.
    pub gaps: Vec<Gap>,
    /// Why the bytes after `valid_len` cannot be read, if there are any (and they are not a
    /// gap).
    pub tail: Option<CodecError>,
}

impl ScannedFile<'_> {
    /// The metadata of a chunk known only from its file (a staged chunk): its complete records,
    /// never delivered, never retried.
    pub fn meta(&self, state: StoredState) -> ChunkMeta {
        ChunkMeta {
            state,
            created_ms: self.created_ms,
            bytes: self.bytes,
            records: self.records,
            storage: DataStorage::File,
            retry: RetryState::default(),
            delivered: DeliveredSet::new(),
            key: self.key.clone(),
        }
    }
}

/// What the frame at an offset is.
enum Frame<'a> {
    /// Its length prefix or its bytes run past the end of the file.
    Cut(CodecError),
    /// Its value decodes; the next frame starts at `next`.
    Good(ValueRef<'a>, usize),
    /// Its length fits the file but its value does not decode; the next frame (if any) starts
    /// at `next`.
    Bad(CodecError, usize),
    /// In a reused file (frames bound to their chunk): no frame of this chunk starts here (the
    /// bytes name another chunk and do not check as this chunk's, or are fewer than a frame's
    /// prefix). The end of this chunk's data.
    Foreign,
}

/// The frame at `pos`; `bound` is the chunk of a file whose frames name it (format 3 and 4).
fn frame_at(bytes: &[u8], pos: usize, bound: Option<ChunkId>) -> Frame<'_> {
    let rest = &bytes[pos..];
    let prefix = if bound.is_some() {
        BOUND_FRAME_PREFIX
    } else {
        FRAME_PREFIX
    };
    // Fewer bytes than a frame's prefix at the end of the file: a write cut short, or in a
    // reused file the previous chunk's last bytes.
    let Some(head) = rest.get(..prefix) else {
        return match bound {
            Some(_) => Frame::Foreign,
            None => Frame::Cut(CodecError::Truncated(rest.len())),
        };
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let value = rest.get(prefix..prefix.saturating_add(len));
    let next = pos + prefix + len;
    let chunk = bound.map(|c| c.0);
    if let Some(id) = chunk {
        let named = u64::from_le_bytes([
            head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11],
        ]);
        if named != id {
            // Another chunk's frame, or stale bytes, unless it is this chunk's frame with a
            // damaged id that still checks as this chunk's (the crc covers our id).
            return match value.map(|v| decode_bound_value(v, chunk)) {
                Some(Ok(v)) => Frame::Good(v, next),
                _ => Frame::Foreign,
            };
        }
    }
    let Some(value) = value else {
        return Frame::Cut(CodecError::Malformed(format!(
            "frame of {len} bytes runs past the end of the file"
        )));
    };
    match decode_bound_value(value, chunk) {
        Ok(v) => Frame::Good(v, next),
        Err(e) => Frame::Bad(e, next),
    }
}

/// The scan in progress: values kept for good, and those since the last record end.
struct Scan<'a> {
    out: ScannedFile<'a>,
    /// Values (with the file offset of their frame) since the last record end.
    pending: Vec<(usize, ValueRef<'a>)>,
    /// After a gap whose last frame may have ended inside a record: the values up to the first
    /// record end are dropped (they continue a record whose start is lost).
    skipping: bool,
}

impl<'a> Scan<'a> {
    fn keep(&mut self, v: ValueRef<'a>) {
        self.out.records += v.ends().len() as u64;
        self.out.bytes += v.data.len() as u64;
        self.out.values.push(v);
    }

    /// A readable frame from `at` to `next`.
    fn good(&mut self, v: ValueRef<'a>, at: usize, next: usize) {
        let v = if self.skipping {
            if let Some(gap) = self.out.gaps.last_mut() {
                gap.end = next as u64;
            }
            match v.without_first_record() {
                Some(rest) => {
                    self.skipping = false;
                    rest
                }
                None => return,
            }
        } else {
            v
        };
        // Whether the next value starts a record.
        let whole = match v.ends().last() {
            Some(end) => end as usize == v.data.len(),
            None => v.data.is_empty() && self.pending.is_empty(),
        };
        self.pending.push((at, v));
        if whole {
            for (_, v) in std::mem::take(&mut self.pending) {
                self.keep(v);
            }
            self.out.valid_len = next as u64;
        }
    }

    /// Unreadable frames from `at` to `resume` (a readable frame, or the end of the file),
    /// `last_len` bytes the last of them: a gap.
    fn gap(
        &mut self,
        error: CodecError,
        at: usize,
        resume: usize,
        bad_frames: u32,
        last_len: usize,
    ) {
        let before_salvage = (self.out.values.len(), self.out.records, self.out.bytes);
        // A record that started before the gap and ran into it is lost: keep the values up to
        // the last record end before it.
        let mut start = at;
        let pending = std::mem::take(&mut self.pending);
        if let Some(last) = pending.iter().rposition(|(_, v)| v.ends().len() > 0) {
            start = pending[last].0;
            for (i, (_, v)) in pending.into_iter().enumerate().take(last + 1) {
                if i == last {
                    self.keep(v.up_to_last_record_end().expect("it has a record end"));
                } else {
                    self.keep(v);
                }
            }
        } else if let Some(&(first, _)) = pending.first() {
            start = first;
        }
        self.out.gaps.push(Gap {
            start: start as u64,
            end: resume as u64,
            bad_frames,
            records_before: self.out.records,
            values_before: self.out.values.len(),
            error,
            valid_len_at: self.out.valid_len,
            before_salvage,
        });
        // Only a value that is not the last of its group commit ends inside a record, and only
        // such a value can hold a full MAX_VALUE_DATA bytes: a shorter one ended on a record
        // end, so the frame after it starts a record.
        self.skipping = may_end_inside_a_record(last_len);
    }

    /// Gaps with no record end kept after them are the end of a file that may be torn: the
    /// frames from the first such gap on are its tail, not corruption in the middle.
    fn gaps_at_the_end_are_a_tail(&mut self) {
        let valid_len = self.out.valid_len;
        let Some(first) = self
            .out
            .gaps
            .iter()
            .position(|g| g.valid_len_at == valid_len)
        else {
            return;
        };
        let gap = self.out.gaps.drain(first..).next().expect("found above");
        let (values, records, bytes) = gap.before_salvage;
        self.out.values.truncate(values);
        (self.out.records, self.out.bytes) = (records, bytes);
        self.out.tail = Some(gap.error);
    }
}

/// Reads a chunk file's frames. The header must be intact and name `chunk`. A frame that
/// cannot be read although its length is intact (the next frame decodes where it says, or for
/// a [`FileEnd::Complete`] file, the file ends there) is corruption: a [`Gap`], and the frames
/// after it are kept. What comes after the last readable frame that ends a record (and is not
/// a gap) is reported in [`ScannedFile::tail`], not treated as an error here: for a staged
/// chunk it is a write that was cut short by a power loss (never acknowledged), for a closed
/// chunk it is corruption, and only the caller knows which.
pub fn scan_chunk_file(
    bytes: &[u8],
    chunk: ChunkId,
    end: FileEnd,
) -> Result<ScannedFile<'_>, CodecError> {
    let header = read_header(bytes, chunk)?;
    let bound = header.bound.then_some(chunk);
    let mut scan = Scan {
        out: ScannedFile {
            created_ms: header.created_ms,
            key: header.key,
            values: Vec::new(),
            records: 0,
            bytes: 0,
            valid_len: header.len as u64,
            data_end: bytes.len() as u64,
            gaps: Vec::new(),
            tail: None,
        },
        pending: Vec::new(),
        skipping: false,
    };
    // Values are kept up to the last record end: a record split over several frames counts
    // only once all of them are readable.
    let prefix = if header.bound {
        BOUND_FRAME_PREFIX
    } else {
        FRAME_PREFIX
    };
    let mut pos = header.len;
    'frames: while pos < bytes.len() {
        let (error, mut next) = match frame_at(bytes, pos, bound) {
            Frame::Good(v, next) => {
                scan.good(v, pos, next);
                pos = next;
                continue;
            }
            Frame::Cut(e) => {
                scan.out.tail = Some(e);
                break;
            }
            Frame::Foreign => {
                scan.out.data_end = pos as u64;
                break;
            }
            Frame::Bad(e, next) => (e, next),
        };
        // An unreadable frame: a gap if the frames after it (past any further unreadable
        // ones) decode where the lengths say, else the tail. The end of this chunk's data
        // (the end of the file, or a reused file's stale bytes) after it is the end of a
        // complete file: a gap there too.
        let (mut bad_frames, mut last_len) = (1, next - pos - prefix);
        loop {
            let following = (next < bytes.len()).then(|| frame_at(bytes, next, bound));
            match following {
                None | Some(Frame::Foreign) => {
                    if following.is_some() {
                        scan.out.data_end = next as u64;
                    }
                    if end == FileEnd::Complete {
                        scan.gap(error, pos, next, bad_frames, last_len);
                    } else {
                        scan.out.tail = Some(error);
                    }
                    break 'frames;
                }
                Some(Frame::Good(..)) => break,
                Some(Frame::Cut(_)) => {
                    scan.out.tail = Some(error);
                    break 'frames;
                }
                Some(Frame::Bad(_, after)) => {
                    (bad_frames, last_len) = (bad_frames + 1, after - next - prefix);
                    next = after;
                }
            }
        }
        scan.gap(error, pos, next, bad_frames, last_len);
        pos = next;
    }
    if scan.out.tail.is_none() && !scan.pending.is_empty() {
        scan.out.tail = Some(CodecError::Malformed(
            "the file ends inside a record".into(),
        ));
    }
    if end == FileEnd::MayBeTorn {
        scan.gaps_at_the_end_are_a_tail();
    }
    Ok(scan.out)
}

/// A closed chunk's records, read back from its file by [`assemble_closed`].
#[derive(Debug)]
pub struct ClosedRecords {
    /// Every record in order; those lost in a gap are empty placeholders at their index.
    pub records: Records,
    /// Indices of the records lost in a gap (empty if none): the caller marks them delivered
    /// (so they are never sent) and says what was lost.
    pub lost: Range<u64>,
}

/// Rebuilds a closed chunk's records from its file, scanned as [`FileEnd::Complete`], against
/// the counts of its metadata. Records lost in a [`Gap`] become empty placeholders at their
/// index, so that the indices of the delivered-record set stay right. Fails, and the chunk must
/// be quarantined whole, on a [`ScannedFile::tail`] (the file's structure is lost), on records
/// lost in more than one gap (which of them were where is unknown), when no record is left,
/// or when the counts do not fit the metadata.
pub fn assemble_closed(
    scan: ScannedFile<'_>,
    expect_records: u64,
    expect_bytes: u64,
) -> Result<ClosedRecords, CodecError> {
    let cap_records = usize::try_from(expect_records).unwrap_or(0).min(1 << 24);
    let records = Records::with_capacity(cap_records, scan.bytes as usize);
    let (records, lost) = assemble_closed_into(scan, expect_records, expect_bytes, records)?;
    Ok(ClosedRecords { records, lost })
}

/// [`assemble_closed`] into any [`RecordSink`]: the records, and the indices of those lost in
/// a gap ([`ClosedRecords::lost`]).
pub fn assemble_closed_into<'a, S: RecordSink<'a>>(
    scan: ScannedFile<'a>,
    expect_records: u64,
    expect_bytes: u64,
    mut records: S,
) -> Result<(S, Range<u64>), CodecError> {
    if let Some(e) = scan.tail {
        return Err(e);
    }
    let lost = expect_records
        .checked_sub(scan.records)
        .filter(|_| scan.bytes <= expect_bytes)
        .ok_or_else(|| {
            CodecError::Malformed(format!(
                "chunk data holds {} records / {} bytes, metadata says {expect_records} / \
                 {expect_bytes}",
                scan.records, scan.bytes
            ))
        })?;
    if lost == 0 {
        // No record lost: gaps, if any, were found and counted when a staged chunk was
        // recovered (its metadata counts only what was kept), or held no record.
        let records = assemble_decoded_into(scan.values, expect_records, expect_bytes, records)?;
        return Ok((records, 0..0));
    }
    let gap = match scan.gaps.as_slice() {
        [_] if scan.records == 0 => {
            return Err(CodecError::Malformed(format!(
                "every record is lost in corrupt frames ({})",
                scan.gaps[0].error
            )))
        }
        [gap] => gap,
        [] => {
            return Err(CodecError::Malformed(format!(
                "chunk data holds {} records / {} bytes, metadata says {expect_records} / \
                 {expect_bytes}",
                scan.records, scan.bytes
            )))
        }
        gaps => {
            return Err(CodecError::Malformed(format!(
                "{lost} records lost in {} separate stretches of corrupt frames (first: {})",
                gaps.len(),
                gaps[0].error
            )))
        }
    };
    let placeholders = |records: &mut S| -> Result<(), CodecError> {
        for _ in 0..lost {
            records.seal()?;
        }
        Ok(())
    };
    let (values_before, records_before) = (gap.values_before, gap.records_before);
    let values = scan.values.len();
    for (i, value) in scan.values.into_iter().enumerate() {
        if i == values_before {
            placeholders(&mut records)?;
        }
        let ends = value.ends();
        records.extend_sealed(value.data, ends)?;
    }
    if values_before >= values {
        placeholders(&mut records)?;
    }
    if records.record_count() as u64 != expect_records || records.last_end() != records.byte_len() {
        return Err(CodecError::Malformed(format!(
            "chunk data around a gap holds {} records, metadata says {expect_records}",
            records.record_count()
        )));
    }
    Ok((records, records_before..records_before + lost))
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
