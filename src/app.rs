//! `firehose-relay run`: starts the operations endpoint, recovers the buffers, builds the
//! pipeline from the config, starts flush workers and sources, and shuts down gracefully on
//! SIGTERM/SIGINT. The endpoint comes first so that a long recovery is visible (`/readyz` 503
//! `recovering`) and does not fail liveness probes (`/healthz` 200); see [`crate::ops::http`].
//!
//! Shutdown:
//!
//! 1. sources stop accepting (forward closes its listener; in-progress messages finish);
//! 2. buffers stop accepting appends (blocked appends fail, so their clients are not acked);
//! 3. with `flush_at_shutdown`, staged chunks are queued, and workers flush until nothing is
//!    ready or `shutdown_timeout` has passed;
//! 4. exit 0. What is left stays in the file buffer and is replayed at the next start.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::buffer::config::BufferType;
use crate::buffer::file::{FileBuffer, Store};
use crate::buffer::memory::MemoryBuffer;
use crate::buffer::policy::BufferPolicy;
use crate::buffer::{Buffer, Enqueue};
use crate::config::Config;
use crate::flush::deadletter::DeadLetter;
use crate::flush::{self, FlushPhase};
use crate::ops::http::{self, Health, HttpState};
use crate::ops::metrics::{output_label, source_label, Labels, Metrics};
use crate::pipeline::format::Formatter;
use crate::pipeline::router::TagPattern;
use crate::pipeline::{FilterStage, Output, Pipeline};
use crate::shutdown::ShutdownTrigger;
use crate::source::{self, Emitter};

/// A running relay: what `run` starts and what tests drive in-process.
pub struct Relay {
    /// The routing core.
    pub pipeline: Arc<Pipeline>,
    config: Config,
    sources: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// Progress logs of recovered backlogs (they end by themselves once delivered).
    progress: Vec<JoinHandle<()>>,
    source_shutdown: ShutdownTrigger,
    flush_phase: watch::Sender<FlushPhase>,
    /// Readiness flags behind `/readyz`.
    pub health: Arc<Health>,
    /// Where the HTTP endpoint listens, if enabled.
    pub http_addr: Option<std::net::SocketAddr>,
}

/// The file buffers' counters, one family each, labelled by output.
#[derive(Default, Clone)]
struct BufferCounterFamilies {
    quarantined_chunks: Family<Labels, Counter>,
    corrupt_frames: Family<Labels, Counter>,
    tails_cut_without_copy: Family<Labels, Counter>,
}

impl BufferCounterFamilies {
    /// The counters of output `name`.
    fn of(&self, name: &str) -> crate::buffer::file::FileBufferCounters {
        let labels = output_label(name);
        crate::buffer::file::FileBufferCounters {
            quarantined_chunks: self.quarantined_chunks.get_or_create(&labels).clone(),
            corrupt_frames: self.corrupt_frames.get_or_create(&labels).clone(),
            tails_cut_without_copy: self.tails_cut_without_copy.get_or_create(&labels).clone(),
        }
    }
}

/// Creates the buffer of one output. File buffers share `store`, the one database of
/// `data_dir`, opened by [`open_store`].
fn build_buffer(
    name: &str,
    store: Option<&Arc<Store>>,
    counters: &BufferCounterFamilies,
    out: &crate::sink::OutputConfig,
) -> anyhow::Result<Arc<dyn Buffer>> {
    let policy = BufferPolicy::from_config(name, out.buffer());
    match out.buffer().kind {
        BufferType::Memory => Ok(Arc::new(MemoryBuffer::new(policy))),
        BufferType::File => {
            let store = store.context("internal error: the buffer database was not opened")?;
            let buffer = FileBuffer::open_counted(Arc::clone(store), policy, counters.of(name))
                .with_context(|| format!("output `{name}`: cannot recover its buffer"))?;
            Ok(Arc::new(buffer))
        }
    }
}

/// Opens the buffer database of `data_dir` if any output uses a file buffer (blocking work:
/// runs on the blocking pool).
async fn open_store(
    config: &Config,
    dead_letter: &DeadLetter,
) -> anyhow::Result<Option<Arc<Store>>> {
    let needed = config
        .outputs
        .values()
        .any(|o| o.buffer().kind == BufferType::File);
    if !needed {
        return Ok(None);
    }
    let dir = config.data_dir.clone();
    let cache = config.storage.cache_capacity.0;
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, cache))
        .await
        .context("opening the buffer database panicked")?
        .with_context(|| {
            format!(
                "cannot open the buffer database in {}",
                config.data_dir.display()
            )
        })?;
    store.set_quarantine_budget(dead_letter.quarantine_budget());
    Ok(Some(store))
}

/// Opens the buffer of every output, in matching order; file buffers recover what `data_dir`
/// holds (blocking work: on the blocking pool, so the runtime keeps serving the operations
/// endpoint meanwhile). `drain` looks at them before it builds any sink (and so before any AWS
/// call).
pub(crate) async fn open_buffers(
    config: &Config,
    metrics: &Metrics,
    dead_letter: &DeadLetter,
) -> anyhow::Result<Vec<(String, Arc<dyn Buffer>)>> {
    let store = open_store(config, dead_letter).await?;
    let counters = BufferCounterFamilies::default();
    metrics.register(
        "buffer_quarantined_chunks",
        "Buffer chunks moved to data_dir/quarantine because their stored bytes were unreadable",
        counters.quarantined_chunks.clone(),
    );
    metrics.register(
        "buffer_corrupt_frames",
        "Frames of buffer chunk files found corrupt (intact length, bad checksum) and moved to \
         data_dir/quarantine with their records; the rest of their chunks was kept",
        counters.corrupt_frames.clone(),
    );
    metrics.register(
        "buffer_tails_cut_without_copy",
        "Unfinished ends of staged chunks (unacknowledged appends cut short by a crash) cut at \
         startup without a copy in data_dir/quarantine, for lack of room (described in the log)",
        counters.tails_cut_without_copy.clone(),
    );
    let mut buffers = Vec::new();
    for name in config.output_order() {
        let out = config.outputs[name].clone();
        let (name, store, counters) = (name.to_owned(), store.clone(), counters.clone());
        let buffer = tokio::task::spawn_blocking(move || {
            build_buffer(&name, store.as_ref(), &counters, &out).map(|b| (name, b))
        })
        .await
        .context("recovering a buffer panicked")??;
        buffers.push(buffer);
    }
    Ok(buffers)
}

/// Builds the sink of every output and joins it to its buffer (from [`open_buffers`]).
pub(crate) async fn build_outputs(
    config: &Config,
    metrics: &Arc<Metrics>,
    buffers: Vec<(String, Arc<dyn Buffer>)>,
) -> anyhow::Result<Vec<Arc<Output>>> {
    let mut outputs = Vec::new();
    for (name, buffer) in buffers {
        let out = &config.outputs[&name];
        let sink = out
            .build_sink(&name, metrics)
            .await
            .with_context(|| format!("output `{name}`"))?;
        tracing::info!(output = %name, sink = %sink.describe(), "output ready");
        outputs.push(Arc::new(Output {
            pattern: TagPattern::parse(out.pattern())?,
            formatter: Formatter::new(out.format(), Some(out.max_record_bytes())),
            buffer,
            sink,
            config: out.clone(),
            name,
        }));
    }
    Ok(outputs)
}

/// The filter stages, in matching order.
fn build_filters(config: &Config) -> anyhow::Result<Vec<FilterStage>> {
    let mut filters = Vec::new();
    for name in config.filter_order() {
        let f = &config.filters[name];
        filters.push(FilterStage {
            label: f.label().map(str::to_owned),
            pattern: TagPattern::parse(f.pattern())?,
            filter: f.build(),
        });
    }
    Ok(filters)
}

/// Starts the flush workers of every output.
fn spawn_flush_workers(
    pipeline: &Arc<Pipeline>,
    dead_letter: &Arc<DeadLetter>,
    phase: watch::Receiver<FlushPhase>,
) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    for output in pipeline.outputs() {
        workers.extend(flush::spawn(
            Arc::clone(output),
            Arc::clone(pipeline.metrics()),
            Arc::clone(dead_letter),
            phase.clone(),
        ));
    }
    workers
}

/// Every source and output has its series from the start (0 until traffic), so `top`,
/// dashboards and rate() see idle ones too.
fn create_series(config: &Config, pipeline: &Pipeline) {
    let metrics = pipeline.metrics();
    for name in config.sources.keys() {
        let _ = metrics.records_in.get_or_create(&source_label(name));
    }
    for o in pipeline.outputs() {
        let labels = output_label(&o.name);
        let _ = metrics.records_buffered.get_or_create(&labels);
        let _ = metrics.records_delivered.get_or_create(&labels);
    }
}

/// Starts every source; the trigger stops them.
async fn spawn_sources(
    config: &Config,
    pipeline: &Arc<Pipeline>,
) -> anyhow::Result<(ShutdownTrigger, Vec<JoinHandle<()>>)> {
    let (source_shutdown, _) = ShutdownTrigger::new();
    // Sized now that buffers, outputs and the HTTP endpoint hold their descriptors.
    let fds = crate::fds::client_budget();
    let mut sources = Vec::new();
    for (name, src) in &config.sources {
        let emitter = Emitter::new(name, src.label(), Arc::clone(pipeline));
        let shutdown = source_shutdown.subscribe();
        let handle = source::spawn(name, src.clone(), emitter, shutdown, fds.clone())
            .await
            .with_context(|| format!("source `{name}`"))?;
        sources.push(handle);
    }
    Ok((source_shutdown, sources))
}

impl Relay {
    /// Builds everything and starts flush workers and sources.
    pub async fn start(config: Config) -> anyhow::Result<Relay> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create data_dir {} (set it with `data_dir` in the config or \
                     $RELAY_DATA_DIR; default /var/lib/firehose-relay)",
                config.data_dir.display()
            )
        })?;
        let metrics = Arc::new(Metrics::new());
        let dead_letter = Arc::new(DeadLetter::with_limits(
            &config.data_dir,
            config.storage.dead_letter_limit_size.0,
            config.storage.quarantine_limit_size.0,
        ));

        // The endpoint first: recovering a large backlog can take minutes, and probes must see
        // a live process (/healthz) that is not ready yet (/readyz 503 "recovering").
        let health = Arc::new(Health::default());
        let http_state = HttpState::new(
            Arc::clone(&metrics),
            Arc::clone(&health),
            config.http.ready_max_buffer_fill,
        );
        let http_addr = if config.http.listen.is_empty() {
            None
        } else {
            Some(http::serve(&config.http.listen, http_state.clone()).await?)
        };

        let filters = build_filters(&config)?;
        let buffers = open_buffers(&config, &metrics, &dead_letter).await?;
        health.set_recovered();
        let outputs = build_outputs(&config, &metrics, buffers).await?;
        let pipeline = Arc::new(Pipeline::new(
            filters,
            outputs,
            Arc::clone(&metrics),
            Arc::clone(&dead_letter),
        ));
        http_state.set_pipeline(Arc::clone(&pipeline));

        let (flush_phase, phase_rx) = watch::channel(FlushPhase::Running);
        let workers = spawn_flush_workers(&pipeline, &dead_letter, phase_rx);
        let progress = pipeline
            .outputs()
            .iter()
            .filter_map(|o| {
                flush::progress::spawn(Arc::clone(o), "backlog replay", flush::progress::EVERY)
            })
            .collect();
        create_series(&config, &pipeline);
        let (source_shutdown, sources) = spawn_sources(&config, &pipeline).await?;
        health.set_ready();
        Ok(Relay {
            pipeline,
            config,
            sources,
            workers,
            progress,
            source_shutdown,
            flush_phase,
            health,
            http_addr,
        })
    }

    /// Stops gracefully (see the module documentation).
    pub async fn shutdown(mut self) {
        let timeout = self.config.shutdown_timeout.0;
        let deadline = tokio::time::Instant::now() + timeout;
        self.health.set_shutting_down();
        tracing::info!(
            timeout_s = timeout.as_secs_f64(),
            "shutting down: stopping sources"
        );
        self.source_shutdown.trigger();
        for s in std::mem::take(&mut self.sources) {
            // A source that does not stop in time is abandoned; its unacked data is resent.
            let _ = tokio::time::timeout_at(deadline, s).await;
        }
        // What came in, final now that sources stopped: with the delivered counts at exit, an
        // operator (and the end-to-end tests) can tell whether the end of a run was lost.
        let metrics = self.pipeline.metrics();
        for name in self.config.sources.keys() {
            let n = metrics.records_in.get_or_create(&source_label(name)).get();
            tracing::info!(source = %name, records_in = n, "source stopped");
        }
        let delivered_before = self.close_buffers().await;
        self.flush_phase.send_replace(FlushPhase::Draining);
        let mut workers = std::mem::take(&mut self.workers);
        let all = futures::future::join_all(workers.iter_mut());
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!("shutdown_timeout reached; stopping flush workers");
            for w in &workers {
                w.abort();
            }
        }
        for p in &self.progress {
            p.abort();
        }
        self.log_exit(delivered_before);
    }

    /// Closes every buffer to appends and, with `flush_at_shutdown`, queues its staged chunks.
    /// Returns what each output had delivered so far, to tell what the shutdown delivered.
    async fn close_buffers(&self) -> Vec<u64> {
        let metrics = self.pipeline.metrics();
        let mut delivered_before = Vec::new();
        for output in self.pipeline.outputs() {
            output.buffer.close();
            delivered_before.push(delivered(metrics, output));
            if output.config.buffer().flush_at_shutdown {
                match output.buffer.enqueue_staged(Enqueue::All).await {
                    Ok(chunks) => tracing::info!(output = %output.name, staged_chunks = chunks,
                        records_buffered = output.buffer.stats().records,
                        "shutting down: flushing the buffer"),
                    Err(e) => {
                        tracing::error!(output = %output.name, error = %e, "cannot queue staged chunks")
                    }
                }
            }
        }
        delivered_before
    }

    /// Logs, per output and in total, what was delivered during the shutdown and what is left:
    /// on disk (file buffers, replayed at the next start) or lost (memory buffers).
    fn log_exit(&self, delivered_before: Vec<u64>) {
        let metrics = self.pipeline.metrics();
        let (mut flushed, mut on_disk, mut lost) = (0, 0, 0);
        for (output, before) in self.pipeline.outputs().iter().zip(delivered_before) {
            let total = delivered(metrics, output);
            flushed += total - before;
            let s = output.buffer.stats();
            tracing::info!(output = %output.name, records_delivered = total,
                flushed_at_shutdown = total - before, records_left = s.records, "output stopped");
            if s.records == 0 {
                continue;
            }
            if output.config.buffer().kind == BufferType::File {
                on_disk += s.records;
                tracing::warn!(output = %output.name, records = s.records, bytes = s.bytes,
                    "records left in the buffer at exit: kept on disk, replayed at the next start");
            } else {
                lost += s.records;
                tracing::error!(output = %output.name, records = s.records, bytes = s.bytes,
                    "records left in the buffer at exit are lost: a memory buffer does not outlive the process");
            }
        }
        let dir = self
            .config
            .data_dir
            .join(crate::buffer::file::store::DB_DIR);
        let left = match (on_disk, lost) {
            (0, 0) => "nothing left in the buffers".to_owned(),
            (n, 0) => format!("{n} records left on disk in {}", dir.display()),
            (0, l) => format!("{l} records lost (memory buffers)"),
            (n, l) => format!(
                "{n} records left on disk in {}, {l} lost (memory buffers)",
                dir.display()
            ),
        };
        tracing::info!("stopped: {flushed} records delivered during shutdown, {left}");
    }
}

/// Records `output` delivered since start.
fn delivered(metrics: &Metrics, output: &Output) -> u64 {
    let labels = output_label(&output.name);
    metrics.records_delivered.get_or_create(&labels).get()
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}

/// Runs until a signal, then shuts down.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let relay = Relay::start(config).await?;
    tracing::info!("firehose-relay started");
    wait_for_signal().await?;
    relay.shutdown().await;
    Ok(())
}
