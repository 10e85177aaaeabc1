//! firehose-relay: takes log records from Fluentd-compatible clients, keeps them in a
//! crash-safe on-disk chunk queue, and delivers them to Amazon Kinesis Data Firehose.
//!
//! # Data flow
//!
//! Records move one way, and each step is a module:
//!
//! ```text
//!  client ──▶ source ──▶ pipeline ─────────────────────▶ buffer ──▶ flush ──▶ sink ──▶ Firehose
//!            (forward,   (filters → first output whose   (one per   (workers, (PutRecordBatch,
//!             sample)     `match` covers the tag →       output:    retries,   file, stdout)
//!                         format to JSON lines)          chunks)    dead letters)
//! ```
//!
//! 1. A [`source`] decodes what a client sends into an [`event::EventBatch`] (one tag, many
//!    records, kept as JSON text) and hands it to an [`source::Emitter`].
//! 2. The [`pipeline`] applies the filters, routes the batch to the first output whose `match`
//!    covers its tag ([`pipeline::router`]), formats the records ([`pipeline::format`]) and
//!    appends them to that output's buffer. Records the output can never deliver (too large)
//!    go to the dead-letter directory here.
//! 3. The [`buffer`] groups records into chunks: staged while they accept appends, queued once
//!    closed (size, record count or age), in flight while a worker delivers them. The `file`
//!    buffer ([`buffer::file`]) keeps them on disk; the `memory` buffer does not.
//! 4. [`flush`] workers take queued chunks, hand them to the output's sink, and turn the answer
//!    into buffer operations: commit what was delivered, release the rest with a retry time,
//!    and dead-letter ([`flush::deadletter`]) what can never be delivered or ran out of retries.
//! 5. A [`sink`] delivers the records of one chunk and says, record by record, what it
//!    delivered. The AWS outputs are faces of one batch-put layer ([`sink::aws_batch`]): it
//!    splits a chunk into calls, paces them, and resends only what a call refused; the
//!    Firehose face ([`sink::firehose`]) packs records into PutRecordBatch calls.
//!
//! # Threads and tasks
//!
//! * One tokio multi-thread runtime (a worker thread per core, at most 8 blocking threads for
//!   large decodes, gzip and chunk reads).
//! * Per source: the forward source's accept loop, one task per client connection and, if
//!   enabled, the UDP heartbeat task; the sample source's timer task.
//! * Per output: `flush_thread_count` worker tasks, plus one enqueue timer task in `interval`
//!   flush mode, a progress-logging task while a recovered backlog drains, and, for STS-based
//!   credentials, the credentials refresh task ([`aws::credentials::refresher`]).
//! * One OS thread per data directory, `buffer-writer`, through which every write of every file
//!   buffer goes (group commit: many appends share one `fdatasync`; [`buffer::file`]), and the
//!   threads sled starts for its own I/O.
//! * The operations HTTP endpoint ([`ops::http`]) and the signal handler
//!   ([`app`]) are tasks too. The endpoint starts first, before the buffers are recovered (on
//!   the blocking pool), so probes see a live process that is not ready yet.
//!
//! A source waits for its emit: there is no queue between a client and the buffer, so a full
//! buffer pushes back on the client's TCP connection.
//!
//! # What each layer relies on
//!
//! * **Source → client: an ack means stored.** The forward source acknowledges a message only
//!   after [`source::Emitter::emit`] resolved; when it fails, nothing is acknowledged and the
//!   client resends.
//! * **Pipeline: an emit resolves only once every record of the batch is stored** by its
//!   output's buffer (for the file buffer: on disk, fdatasynced) or durably dead-lettered.
//!   Routing, filtering and formatting happen exactly once, at intake.
//! * **Buffer: nothing acknowledged is lost, and a chunk is in flight for one worker at a
//!   time.** The file buffer's contract (layout, group commit, invariants, recovery) is in
//!   [`buffer::file`]; memory and file buffers share the chunking rules ([`buffer::policy`]).
//! * **Flush: a chunk leaves the buffer only when each of its records was delivered or
//!   durably dead-lettered.** Partial delivery is kept with the chunk, so a retry resends only
//!   the rest; retries are per chunk, so one failing chunk does not hold back the others.
//! * **Sink: it never drops.** It reports what it delivered, what it can never deliver (with
//!   why), and an error class for the rest ([`sink::ErrorClass`]). Duplicates are possible
//!   exactly where a delivery was not confirmed (Firehose has no idempotency key).
//!
//! # Where things live
//!
//! | concern | module |
//! |---|---|
//! | command line, subcommands | `main.rs` (`buffer` and `dead-letter` in `data_commands.rs`), [`app`] (`run`), [`drain`] |
//! | configuration: file + environment, validation | [`config`] (above every component), [`primitives`] (sizes, durations, `${VAR}` references, reading one component: a leaf) |
//! | running a Fluentd config | [`fluentd`] |
//! | forward protocol | [`source::forward`] |
//! | tag patterns, filters, formatting | [`pipeline`] |
//! | chunk queue, on-disk format, crash recovery | [`buffer`], [`buffer::file`] |
//! | flush workers, retry schedule, dead letters | [`flush`] |
//! | AWS batch-put outputs: calls, partial failures, pacing, errors, metrics | [`sink::aws_batch`] |
//! | Firehose: aggregation, PutRecordBatch request/response | [`sink::firehose`] |
//! | AWS credentials (IRSA web identity, STS), HTTP client | [`aws`] |
//! | metrics, `/healthz` `/readyz` `/status`, logging, `top` | [`ops`], [`ops::top`] |
//! | file descriptor limit and the client connection budget | [`fds`] |
//! | JSON text escaping, file-system helpers, shutdown signal | [`json_text`], [`fsutil`], [`shutdown`] |
//!
//! Configuration dependencies point one way: the loader in [`config`] imports the components'
//! configs (each next to its component: the buffer section in [`buffer::config`], the log
//! format in [`ops::logging`]…), the components import [`primitives`], and [`primitives`]
//! imports nothing from the crate. The fluent.conf reader ([`fluentd`]) sits under the loader,
//! which uses it to convert a Fluentd config, and over [`primitives`]. Nothing but the binary,
//! [`app`] and [`drain`] imports the loader. The dead-letter directory is shared by the pipeline (records refused at intake) and
//! the flush workers; metrics ([`ops::metrics`]) are bumped by every layer.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod aws;
pub mod buffer;
pub mod config;
pub mod drain;
pub mod event;
pub mod fds;
pub mod fluentd;
pub mod flush;
pub mod fsutil;
pub mod json_text;
pub mod ops;
pub mod pipeline;
pub mod primitives;
pub mod shutdown;
pub mod sink;
pub mod source;
