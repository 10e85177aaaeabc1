//! The counters a [`FileBuffer`](super::FileBuffer) counts in.

use prometheus_client::metrics::counter::Counter;

/// The Prometheus counters a [`FileBuffer`](super::FileBuffer) counts in (the caller registers them, labelled
/// with the output).
#[derive(Debug, Clone, Default)]
pub struct FileBufferCounters {
    /// Chunks moved to quarantine (`firehose_relay_buffer_quarantined_chunks_total`).
    pub quarantined_chunks: Counter,
    /// Corrupt frames in the middle of chunk files whose records were moved to quarantine, the
    /// rest of their chunk kept (`firehose_relay_buffer_corrupt_frames_total`).
    pub corrupt_frames: Counter,
    /// Unfinished ends of staged chunks cut at startup without a quarantine copy, for lack of
    /// room (`firehose_relay_buffer_tails_cut_without_copy_total`).
    pub tails_cut_without_copy: Counter,
}
