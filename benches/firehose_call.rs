//! What one PutRecordBatch call costs the relay's flush side, measured where it is spent: the
//! CPU time of the one thread that runs the sink (a current-thread runtime: building the body,
//! the SDK's orchestration, SigV4, hyper and rustls writing and reading, TCP on loopback,
//! reading the answer) and the allocations that thread makes, per call. The fake Firehose
//! (HTTPS, answering every record with a 56-digit `RecordId` like the e2e bench's fake) runs on
//! threads of its own, so none of its work is counted.
//!
//! ```sh
//! cargo bench --bench firehose_call                 # 10 rounds of 200 calls
//! cargo bench --bench firehose_call -- 20 400       # rounds, calls per round
//! ```
//!
//! Thread CPU time is far steadier than wall time on a loaded machine (it does not count the
//! time the thread waits for a core), and the allocation count is exact; both make an A/B of
//! two builds readable when the e2e bench's process CPU varies by ±30 %.

#[path = "common/firehose_answers.rs"]
mod firehose_answers;
#[path = "../tests/common/http_server.rs"]
#[allow(dead_code)]
mod http_server;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use firehose_relay::ops::metrics::Metrics;
use firehose_relay::sink::firehose::{FirehoseConfig, FirehoseSink};
use firehose_relay::sink::Sink;

const RECORDS_PER_CHUNK: usize = 5_000;
const RECORD_BYTES: usize = 200;
/// 5,000 records of 200 bytes go out in calls of 500 records.
const CALLS_PER_CHUNK: usize = 10;

/// Counts the allocations of the thread that sets `COUNTING`.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static ALLOC_BYTES: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// thread-local `Cell`s with const initializers (no allocation, no lazy initialization).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count(bytes: usize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
            let _ = ALLOC_BYTES.try_with(|n| n.set(n.get() + bytes as u64));
        }
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// CPU time of the calling thread (std has no thread CPU clock).
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Answers every record of a call, as Firehose spells it (record ids as long as real ones).
fn handler() -> http_server::Handler {
    Arc::new(|req: http_server::Request| {
        Box::pin(async move {
            let n = memchr::memmem::find_iter(&req.body, b"{\"Data\":\"").count();
            let body = firehose_answers::put_record_batch_answer(&vec![false; n]);
            http_server::Reply::Response {
                status: 200,
                content_type: "application/x-amz-json-1.1",
                body,
            }
        })
    })
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse::<usize>().expect("rounds and calls per round"));
    let rounds = args.next().unwrap_or(10);
    let calls = args.next().unwrap_or(200).max(CALLS_PER_CHUNK);
    let chunks = calls / CALLS_PER_CHUNK;

    let fake_rt = http_server::OwnedRuntime::new();
    let ca = http_server::TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let ca_path = tmp.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    let tls = Arc::clone(&ca.server_config);
    let addr = fake_rt.block_on(async move { http_server::serve(Some(tls), handler()).await });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = format!(
        "delivery_stream = \"bench\"\nregion = \"us-east-1\"\nendpoint_url = \"https://127.0.0.1:{}\"\ntls_ca_file = \"{}\"\n[credentials]\ntype = \"static\"\naccess_key_id = \"AKIDBENCH\"\nsecret_access_key = \"x\"\n",
        addr.port(),
        ca_path.display()
    );
    let cfg: FirehoseConfig = toml::from_str(&text).unwrap();
    let sink = rt
        .block_on(FirehoseSink::build(
            "bench",
            &cfg,
            &Arc::new(Metrics::new()),
        ))
        .unwrap();
    let chunk = firehose_answers::chunk(RECORDS_PER_CHUNK, RECORD_BYTES);
    let deliver = |n: usize| {
        rt.block_on(async {
            for _ in 0..n {
                let d = sink.deliver(&chunk).await;
                assert!(d.error.is_none(), "{:?}", d.error);
                assert_eq!(d.delivered.count(), RECORDS_PER_CHUNK);
            }
        })
    };
    // Warm up: TLS handshake, connection pool, credentials, allocator.
    deliver(3);

    println!(
        "firehose_call: {rounds} rounds of {} calls ({RECORDS_PER_CHUNK} records of {RECORD_BYTES} B per chunk, {CALLS_PER_CHUNK} calls each)",
        chunks * CALLS_PER_CHUNK
    );
    let mut cpu_us = Vec::new();
    let mut allocs = Vec::new();
    for _ in 0..rounds {
        ALLOCS.with(|n| n.set(0));
        ALLOC_BYTES.with(|n| n.set(0));
        COUNTING.with(|on| on.set(true));
        let start = thread_cpu();
        deliver(chunks);
        let cpu = thread_cpu() - start;
        COUNTING.with(|on| on.set(false));
        let n = (chunks * CALLS_PER_CHUNK) as f64;
        let per_call = cpu.as_secs_f64() * 1e6 / n;
        let a = ALLOCS.with(Cell::get) as f64 / n;
        let bytes = ALLOC_BYTES.with(Cell::get) as f64 / n;
        println!(
            "  {per_call:8.1} µs CPU per call   {a:8.1} allocations ({:.1} KiB) per call",
            bytes / 1024.0
        );
        cpu_us.push(per_call);
        allocs.push(a);
    }
    cpu_us.sort_by(f64::total_cmp);
    allocs.sort_by(f64::total_cmp);
    println!(
        "median {:.1} µs CPU per call (min {:.1}), {:.1} allocations per call",
        cpu_us[cpu_us.len() / 2],
        cpu_us[0],
        allocs[allocs.len() / 2]
    );
}
