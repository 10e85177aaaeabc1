//! Progress of a long delivery: while an output delivers the backlog its file buffer
//! recovered from disk at startup (after a restart with a backlog, and in `drain`), a line every
//! few seconds says how many records and bytes are left, the rate so far and the time to go,
//! until the backlog is delivered. The counts come from the buffer
//! ([`BufferStats::backlog`](crate::buffer::BufferStats)), which knows exactly which chunks
//! were recovered, so records arriving meanwhile do not blur them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::buffer::Backlog;
use crate::pipeline::Output;

/// How often progress is logged.
pub const EVERY: Duration = Duration::from_secs(5);

/// Starts logging the progress of `output`'s recovered backlog every `every`, under the name
/// `what` ("backlog replay", "drain"); `None` when there is no backlog. The task ends by itself
/// once the backlog is delivered.
pub fn spawn(output: Arc<Output>, what: &'static str, every: Duration) -> Option<JoinHandle<()>> {
    let start = output.buffer.stats().backlog;
    if start.chunks == 0 {
        return None;
    }
    tracing::info!(output = %output.name, chunks = start.chunks, records = start.records,
        bytes = start.bytes, "{what}: delivering the backlog recovered from disk");
    Some(tokio::spawn(report(output, what, start, every)))
}

async fn report(output: Arc<Output>, what: &'static str, start: Backlog, every: Duration) {
    let began = Instant::now();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        let left = output.buffer.stats().backlog;
        let elapsed = began.elapsed().as_secs_f64();
        if left.chunks == 0 {
            tracing::info!(output = %output.name, records = start.records, bytes = start.bytes,
                seconds = elapsed.round(), "{what}: the backlog recovered from disk is delivered");
            return;
        }
        let done = start.records.saturating_sub(left.records);
        let rate = done as f64 / elapsed.max(0.001);
        let eta = time_to_go(left.records, rate);
        tracing::info!(output = %output.name, records_left = left.records,
            bytes_left = left.bytes, chunks_left = left.chunks,
            records_per_second = rate.round(), eta = %eta, "{what} in progress");
    }
}

/// `left / rate` as `1h02m`, `3m05s` or `12s`; `unknown` while nothing was delivered yet.
fn time_to_go(left: u64, rate: f64) -> String {
    if rate < 0.01 {
        return "unknown".to_owned();
    }
    let secs = (left as f64 / rate).ceil().min(u64::MAX as f64) as u64;
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::time_to_go;

    #[test]
    fn time_to_go_reads_like_a_clock() {
        assert_eq!(time_to_go(100, 0.0), "unknown");
        assert_eq!(time_to_go(100, 10.0), "10s");
        assert_eq!(time_to_go(1_850, 10.0), "3m05s");
        assert_eq!(time_to_go(37_300, 10.0), "1h02m");
    }
}
