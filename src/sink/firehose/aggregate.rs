//! Turns the pending records of a chunk into Firehose records.
//!
//! Without aggregation each chunk record becomes one Firehose record. With aggregation,
//! consecutive pending records are packed into one Firehose record of at most
//! [`MAX_RECORD_BYTES`]: Firehose bills every record rounded up to 5 KB and counts records
//! against the stream's records/s quota, so packing 200-byte log lines cuts both by orders of
//! magnitude. Records stay newline-terminated (the formatter appends `\n` before anything else
//! happens), so the S3 objects remain newline-delimited JSON and an aggregate splits back into
//! exactly its input records.
//!
//! With gzip each Firehose record is compressed on its own (a consumer can decompress any
//! record without its neighbours). The limit applies to the bytes sent, i.e. after compression.

use std::ops::Range;

use crate::buffer::Chunk;
use crate::sink::aws_batch::gzip;

/// Largest data blob of one Firehose record: 1,000 KiB before base64, exactly 1,024,000 bytes
/// (not 1 MiB). Firehose counts only the data bytes; there is no partition key or other
/// per-record overhead as in Kinesis Data Streams.
pub const MAX_RECORD_BYTES: usize = 1_024_000;

/// Fraction of the limit kept free when packing raw data that will be gzipped (1/256, 4,000
/// bytes of 1,024,000), so that even incompressible data (deflate stored blocks add ~5 bytes per
/// 64 KiB plus an 18-byte gzip frame) fits after compression without a second pass.
const GZIP_SLACK_DIVISOR: usize = 256;

pub use crate::sink::aws_batch::Data;

/// One Firehose record and the chunk records it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The bytes to send (compressed if gzip is on); see [`Packed::bytes`].
    pub data: Data,
    /// Which entries of [`Encoded::sources`] this record carries (consecutive).
    pub sources: Range<usize>,
}

impl Packed {
    /// The bytes to send. `chunk` must be the chunk this record was encoded from.
    pub fn bytes<'a>(&'a self, chunk: &'a Chunk) -> &'a [u8] {
        match &self.data {
            Data::Span(r) => chunk.records.as_bytes().get(r.clone()).unwrap_or(&[]),
            Data::Owned(d) => d,
        }
    }

    /// Size of the data in bytes (what Firehose meters, before base64).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a record with no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of encoding a chunk.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Firehose records in chunk order.
    pub records: Vec<Packed>,
    /// Chunk indices of the records that are carried by `records`, in order.
    pub sources: Vec<usize>,
    /// Records that can never be sent (too large), with the reason, as chunk indices.
    pub rejected: Vec<(usize, String)>,
}

impl Encoded {
    /// The chunk indices carried by Firehose record `i`.
    pub fn chunk_indices(&self, i: usize) -> &[usize] {
        match self.records.get(i) {
            Some(p) => self.sources.get(p.sources.clone()).unwrap_or(&[]),
            None => &[],
        }
    }
}

/// How chunk records become Firehose records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoder {
    /// Pack consecutive records into one Firehose record.
    pub aggregation: bool,
    /// Gzip each Firehose record.
    pub gzip: bool,
    /// Largest Firehose record, normally [`MAX_RECORD_BYTES`] (lower in tests).
    pub max_record_bytes: usize,
}

impl Encoder {
    /// Encodes the records of `chunk` that are not delivered yet.
    pub fn encode(&self, chunk: &Chunk) -> Encoded {
        let mut out = Encoded::default();
        let mut group: Vec<usize> = Vec::new();
        let mut group_bytes = 0usize;
        let pack_limit = if self.gzip {
            self.max_record_bytes - self.max_record_bytes / GZIP_SLACK_DIVISOR
        } else {
            self.max_record_bytes
        };
        for i in chunk.pending() {
            let Some(record) = chunk.records.get(i) else {
                continue;
            };
            if !self.aggregation {
                self.push_group(chunk, &[i], &mut out);
                continue;
            }
            if record.len() > pack_limit {
                // Too large to share a record: send it alone (or reject it) in order.
                self.flush_group(chunk, &mut group, &mut group_bytes, &mut out);
                self.push_group(chunk, &[i], &mut out);
                continue;
            }
            if group_bytes + record.len() > pack_limit {
                self.flush_group(chunk, &mut group, &mut group_bytes, &mut out);
            }
            group.push(i);
            group_bytes += record.len();
        }
        self.flush_group(chunk, &mut group, &mut group_bytes, &mut out);
        out
    }

    fn flush_group(
        &self,
        chunk: &Chunk,
        group: &mut Vec<usize>,
        bytes: &mut usize,
        out: &mut Encoded,
    ) {
        if !group.is_empty() {
            self.push_group(chunk, group, out);
            group.clear();
            *bytes = 0;
        }
    }

    /// Adds one Firehose record made of `indices`; if it is too large after compression it is
    /// split in halves, and a single record that is still too large is rejected.
    fn push_group(&self, chunk: &Chunk, indices: &[usize], out: &mut Encoded) {
        let span = if self.gzip {
            None
        } else {
            adjacent_span(chunk, indices)
        };
        let (data, raw_len) = match span {
            Some(span) => {
                let len = span.len();
                (Data::Span(span), len)
            }
            None => {
                let mut raw = Vec::new();
                for &i in indices {
                    if let Some(r) = chunk.records.get(i) {
                        raw.extend_from_slice(r);
                    }
                }
                let raw_len = raw.len();
                if !self.gzip {
                    (Data::Owned(raw), raw_len)
                } else {
                    match gzip(&raw) {
                        Ok(d) => (Data::Owned(d), raw_len),
                        Err(e) => {
                            reject(out, indices, &format!("gzip compression failed: {e}"));
                            return;
                        }
                    }
                }
            }
        };
        let len = data.len();
        if len > self.max_record_bytes {
            if indices.len() > 1 {
                let (a, b) = indices.split_at(indices.len() / 2);
                self.push_group(chunk, a, out);
                self.push_group(chunk, b, out);
                return;
            }
            let what = if self.gzip {
                format!("{raw_len} bytes, {len} bytes after gzip")
            } else {
                format!("{len} bytes")
            };
            let limit = self.max_record_bytes;
            reject(
                out,
                indices,
                &format!("record is {what}, over the Firehose limit of {limit} bytes per record"),
            );
            return;
        }
        let start = out.sources.len();
        out.sources.extend_from_slice(indices);
        out.records.push(Packed {
            data,
            sources: start..out.sources.len(),
        });
    }
}

/// Reports every record of `indices` as never sendable, for `reason`.
fn reject(out: &mut Encoded, indices: &[usize], reason: &str) {
    out.rejected
        .extend(indices.iter().map(|&i| (i, reason.to_owned())));
}

/// The byte range of `indices` in the chunk's record data when they are consecutive records.
fn adjacent_span(chunk: &Chunk, indices: &[usize]) -> Option<Range<usize>> {
    let (&first, &last) = (indices.first()?, indices.last()?);
    if last - first + 1 != indices.len() || indices.windows(2).any(|w| w[1] != w[0] + 1) {
        return None;
    }
    chunk.records.byte_span(first..last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{ChunkId, Records, RetryState};
    use std::io::Read;

    fn chunk(records: &[Vec<u8>], delivered: &[usize]) -> Chunk {
        let mut r = Records::new();
        for rec in records {
            r.push(rec).unwrap();
        }
        Chunk::new(ChunkId(1), 0, r)
            .with_history(delivered.iter().copied().collect(), RetryState::default())
    }

    fn line(n: usize, len: usize) -> Vec<u8> {
        let mut s = format!("{{\"n\":{n},\"p\":\"").into_bytes();
        while s.len() < len - 3 {
            s.push(b'x');
        }
        s.extend_from_slice(b"\"}\n");
        s
    }

    fn gunzip(d: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(d)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn without_aggregation_each_pending_record_is_one_firehose_record() {
        let recs: Vec<_> = (0..4).map(|n| line(n, 50)).collect();
        let c = chunk(&recs, &[1]);
        let e = Encoder {
            aggregation: false,
            gzip: false,
            max_record_bytes: MAX_RECORD_BYTES,
        }
        .encode(&c);
        assert_eq!(e.records.len(), 3);
        assert_eq!(e.chunk_indices(0), &[0]);
        assert_eq!(e.chunk_indices(1), &[2]);
        assert_eq!(e.records[2].bytes(&c), recs[3]);
        assert!(
            e.records.iter().all(|p| matches!(p.data, Data::Span(_))),
            "records are sent from the chunk without copies"
        );
    }

    #[test]
    fn aggregation_packs_up_to_the_limit_and_splits_back_into_the_input() {
        let recs: Vec<_> = (0..100).map(|n| line(n, 100)).collect();
        let c = chunk(&recs, &[5, 6]);
        let e = Encoder {
            aggregation: true,
            gzip: false,
            max_record_bytes: 1000,
        }
        .encode(&c);
        assert!(e.records.iter().all(|p| p.len() <= 1000));
        assert_eq!(
            e.records.len(),
            10,
            "98 records of 100 bytes, 10 per record"
        );
        // The first record skips the delivered 5 and 6, so it is a copy; the next ones are
        // runs of adjacent records, sent from the chunk as they are.
        assert!(matches!(e.records[0].data, Data::Owned(_)));
        assert!(e.records[1..]
            .iter()
            .all(|p| matches!(p.data, Data::Span(_))));
        let mut back: Vec<Vec<u8>> = Vec::new();
        for p in &e.records {
            back.extend(
                p.bytes(&c)
                    .split_inclusive(|&b| b == b'\n')
                    .map(<[u8]>::to_vec),
            );
        }
        let expected: Vec<_> = recs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 5 && *i != 6)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(back, expected);
        let carried: Vec<usize> = (0..e.records.len())
            .flat_map(|i| e.chunk_indices(i).to_vec())
            .collect();
        assert_eq!(
            carried,
            (0..100).filter(|i| *i != 5 && *i != 6).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_record_over_the_limit_is_rejected_and_the_rest_goes_on() {
        let recs = vec![line(0, 50), line(1, 2000), line(2, 50)];
        for aggregation in [false, true] {
            let c = chunk(&recs, &[]);
            let e = Encoder {
                aggregation,
                gzip: false,
                max_record_bytes: 1000,
            }
            .encode(&c);
            assert_eq!(e.rejected.len(), 1);
            assert_eq!(e.rejected[0].0, 1);
            assert!(
                e.rejected[0]
                    .1
                    .contains("over the Firehose limit of 1000 bytes"),
                "{}",
                e.rejected[0].1
            );
            assert_eq!(e.sources, vec![0, 2]);
        }
    }

    #[test]
    fn gzip_records_decompress_to_newline_delimited_json() {
        let recs: Vec<_> = (0..50).map(|n| line(n, 80)).collect();
        let c = chunk(&recs, &[]);
        let e = Encoder {
            aggregation: true,
            gzip: true,
            max_record_bytes: MAX_RECORD_BYTES,
        }
        .encode(&c);
        assert_eq!(e.records.len(), 1);
        assert_eq!(gunzip(e.records[0].bytes(&c)), recs.concat());
        let e = Encoder {
            aggregation: false,
            gzip: true,
            max_record_bytes: MAX_RECORD_BYTES,
        }
        .encode(&c);
        assert_eq!(gunzip(e.records[7].bytes(&c)), recs[7]);
    }

    #[test]
    fn incompressible_aggregates_are_split_to_fit_after_gzip() {
        use rand::RngCore;
        let mut rng = rand::thread_rng();
        let recs: Vec<Vec<u8>> = (0..40)
            .map(|_| {
                let mut r = vec![0u8; 99];
                rng.fill_bytes(&mut r);
                r.push(b'\n');
                r
            })
            .collect();
        let c = chunk(&recs, &[]);
        let e = Encoder {
            aggregation: true,
            gzip: true,
            max_record_bytes: 1000,
        }
        .encode(&c);
        assert!(e.rejected.is_empty());
        assert!(e.records.iter().all(|p| p.len() <= 1000));
        let all: Vec<u8> = e.records.iter().flat_map(|p| gunzip(p.bytes(&c))).collect();
        assert_eq!(all, recs.concat());
    }
}
