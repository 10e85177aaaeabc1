//! The `firehose-relay` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use firehose_relay::buffer::file::{inspect, Store};
use firehose_relay::config::{Config, ConfigSource};
use firehose_relay::flush::deadletter::DeadLetter;

/// Tunes glibc malloc for this workload, before any thread starts. The relay allocates and
/// frees buffers of a few hundred KiB per message and per Firehose call: by default glibc serves
/// those with a fresh `mmap` each time (page faults were ~15 % of CPU in the e2e profile) and
/// gives every thread its own arena (RSS grows with threads). Measured in `benches/e2e.rs`;
/// mimalloc was faster still but doubled RSS, which a pod's memory limit cannot afford.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once, single-threaded,
    // before any allocation-heavy work, with documented parameter names and sane values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Ships logs from Fluentd/Fluent Bit clients to Amazon Kinesis Data Firehose.
#[derive(Debug, Parser)]
#[command(name = "firehose-relay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML). Also `$RELAY_CONFIG`.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline (the default).
    Run,
    /// Validate the config and print the effective settings (secrets redacted).
    Check,
    /// Deliver everything in the buffers with the config's outputs (no sources), then exit:
    /// 0 once every buffer is empty, 1 with a summary of what is left if --timeout passes or a
    /// signal comes first (the rest stays in the buffer). For the volume of a pod removed by a
    /// StatefulSet scale-down.
    Drain {
        /// Give up after this long (`30m`, `1h`, `90s`); default: no limit.
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
    },
    /// Inspect the on-disk chunk queue of a stopped relay.
    Buffer {
        #[command(subcommand)]
        action: BufferAction,
        /// Data directory (default: from the config).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Inspect dead-lettered records.
    DeadLetter {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// Data directory (default: from the config).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// List entries with their reason and record count.
    List,
    /// Move entries back into their output's queue (relay stopped), then delete them.
    Replay {
        /// Only entries of this output.
        #[arg(long)]
        output: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BufferAction {
    /// Per output: staged/queued chunks, records, bytes, oldest chunk; physical size on disk.
    Stats {
        /// Only this output.
        #[arg(long)]
        output: Option<String>,
    },
    /// Print the records of one chunk (or of all chunks of an output) as NDJSON.
    Dump {
        /// The output (may be omitted when there is only one).
        #[arg(long)]
        output: Option<String>,
        /// Chunk id as shown in logs (16 hex digits) or a decimal number.
        #[arg(long)]
        chunk: Option<String>,
    },
}

/// sled page cache for the inspection commands: they read metadata and one chunk at a time.
const INSPECT_CACHE: u64 = 16 << 20;

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

fn load_config(cli_path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(&ConfigSource::resolve(cli_path)).map_err(|e| {
        eprintln!("firehose-relay: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn data_dir(explicit: Option<PathBuf>, cli_path: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    match explicit {
        Some(d) => Ok(d),
        None => load_config(cli_path).map(|c| c.data_dir),
    }
}

/// Loads the config, sets up logging and the runtime: what `run` and `drain` share.
fn start(cli_path: Option<PathBuf>) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    let cfg = load_config(cli_path)?;
    firehose_relay::ops::logging::init_logging(cfg.log_format);
    firehose_relay::config::env::log_foreign(&cfg.ignored_env);
    // Few blocking threads: large decodes and encodes run there, and every extra thread is
    // another allocator heap holding freed buffers (RSS).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("firehose-relay: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })?;
    Ok((cfg, runtime))
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    firehose_relay::primitives::units::parse_duration(text).map_err(|e| e.to_string())
}

fn drain(cli_path: Option<PathBuf>, timeout: Option<std::time::Duration>) -> ExitCode {
    use firehose_relay::drain::Outcome;
    let (cfg, runtime) = match start(cli_path) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let report = match runtime.block_on(firehose_relay::drain::drain(&cfg, timeout)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("firehose-relay: drain failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let dir = cfg.data_dir.display();
    let secs = report.elapsed.as_secs_f64();
    let (status, headline) = match report.outcome {
        Outcome::NothingToDrain => (ExitCode::SUCCESS, format!("nothing to drain in {dir}")),
        Outcome::Drained => (
            ExitCode::SUCCESS,
            format!("drained {dir} in {secs:.1}s: every buffer is empty"),
        ),
        Outcome::TimedOut | Outcome::Interrupted => {
            let why = if report.outcome == Outcome::TimedOut {
                "--timeout passed"
            } else {
                "stopped by a signal"
            };
            (
                ExitCode::FAILURE,
                format!(
                    "drain of {dir} not finished after {secs:.1}s ({why}); what is left stays \
                     in the buffer for the next drain or run"
                ),
            )
        }
    };
    let text = std::iter::once(headline)
        .chain(report.lines().into_iter().map(|l| format!("  {l}")))
        .collect::<Vec<_>>()
        .join("\n");
    if status == ExitCode::SUCCESS {
        println!("{text}");
    } else {
        eprintln!("firehose-relay: {text}");
    }
    status
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match load_config(cli.config) {
            Ok(cfg) => match cfg.to_redacted_toml() {
                Ok(text) => {
                    println!("# configuration is valid; effective settings:\n{text}");
                    if !cfg.ignored_env.is_empty() {
                        println!(
                            "# RELAY_* environment variables that are not configuration keys \
                             (ignored): {}",
                            cfg.ignored_env.join(", ")
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("firehose-relay: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        Command::Drain { timeout } => drain(cli.config, timeout),
        Command::Run => {
            let (cfg, runtime) = match start(cli.config) {
                Ok(started) => started,
                Err(code) => return code,
            };
            match runtime.block_on(firehose_relay::app::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("firehose-relay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DeadLetter {
            action,
            data_dir: dir,
        } => {
            let dir = match data_dir(dir, cli.config) {
                Ok(d) => d,
                Err(code) => return code,
            };
            match action {
                DeadLetterAction::List => dead_letter_list(&dir),
                DeadLetterAction::Replay { output } => dead_letter_replay(&dir, output.as_deref()),
            }
        }
        Command::Buffer {
            action,
            data_dir: dir,
        } => {
            let dir = match data_dir(dir, cli.config) {
                Ok(d) => d,
                Err(code) => return code,
            };
            match action {
                BufferAction::Stats { output } => buffer_stats(&dir, output.as_deref()),
                BufferAction::Dump { output, chunk } => {
                    buffer_dump(&dir, output.as_deref(), chunk.as_deref())
                }
            }
        }
    }
}

fn dead_letter_list(dir: &std::path::Path) -> ExitCode {
    let dl = DeadLetter::new(dir);
    let entries = match dl.list() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("firehose-relay: cannot read {}: {e}", dl.root().display());
            return ExitCode::FAILURE;
        }
    };
    if entries.is_empty() {
        println!("no dead-lettered records in {}", dl.root().display());
    }
    let mut status = ExitCode::SUCCESS;
    for e in entries {
        match e {
            Ok(e) => println!(
                "{}\toutput={}\trecords={}\tattempts={}\treason={}",
                e.meta_path.display(),
                e.meta.output,
                e.meta.records,
                e.meta.attempts,
                e.meta.reason
            ),
            Err(msg) => {
                eprintln!("unreadable entry: {msg}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}

fn open_store(dir: &std::path::Path) -> Result<std::sync::Arc<Store>, ExitCode> {
    Store::open_existing(dir, INSPECT_CACHE).map_err(|e| {
        eprintln!("firehose-relay: {e} (is the relay still running? stop it first)");
        ExitCode::FAILURE
    })
}

fn buffer_stats(dir: &std::path::Path, only: Option<&str>) -> ExitCode {
    let store = match open_store(dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let reports = match inspect::stats(&store) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("firehose-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = firehose_relay::buffer::now_ms();
    for r in reports
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.output))
    {
        let age = r.oldest_created_ms.map_or("-".to_owned(), |t| {
            format!("{}s", now.saturating_sub(t) / 1000)
        });
        println!(
            "output={}\tstaged_chunks={}\tqueued_chunks={}\tin_flight_chunks=0\tretrying_chunks={}\t\
             records={}\tdelivered_records={}\tbytes={}\toldest_chunk_age={age}\tunreadable_chunks={}",
            r.output,
            r.staged_chunks,
            r.queued_chunks,
            r.retrying_chunks,
            r.records,
            r.delivered_records,
            r.bytes,
            r.unreadable_chunks
        );
    }
    match store.size_on_disk() {
        Ok(n) => println!("physical_bytes_on_disk={n}"),
        Err(e) => eprintln!("firehose-relay: cannot measure the database size: {e}"),
    }
    ExitCode::SUCCESS
}

/// The output to act on: the one named, or the only one there is.
fn pick_output(store: &Store, output: Option<&str>) -> Result<String, ExitCode> {
    let outputs = store.outputs();
    match output {
        Some(o) if outputs.iter().any(|x| x == o) => Ok(o.to_owned()),
        Some(o) => {
            eprintln!(
                "firehose-relay: no output `{o}` in the buffer (outputs: {})",
                outputs.join(", ")
            );
            Err(ExitCode::FAILURE)
        }
        None if outputs.len() == 1 => Ok(outputs[0].clone()),
        None => {
            eprintln!(
                "firehose-relay: name one of the outputs with --output: {}",
                outputs.join(", ")
            );
            Err(ExitCode::FAILURE)
        }
    }
}

fn buffer_dump(dir: &std::path::Path, output: Option<&str>, chunk: Option<&str>) -> ExitCode {
    let store = match open_store(dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let output = match pick_output(&store, output) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let chunk = match chunk.map(|c| (c, inspect::parse_chunk_id(c))) {
        Some((c, None)) => {
            eprintln!("firehose-relay: `{c}` is not a chunk id");
            return ExitCode::FAILURE;
        }
        Some((_, id)) => id,
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match inspect::dump(&store, &output, chunk, &mut out) {
        Ok((_, problems)) if problems.is_empty() => ExitCode::SUCCESS,
        Ok((_, problems)) => {
            for p in problems {
                eprintln!("firehose-relay: {p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("firehose-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dead_letter_replay(dir: &std::path::Path, only: Option<&str>) -> ExitCode {
    let dl = DeadLetter::new(dir);
    let entries = match dl.list() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("firehose-relay: cannot read {}: {e}", dl.root().display());
            return ExitCode::FAILURE;
        }
    };
    // Create the database if this data_dir never had one: replaying is how it gets data.
    let store = match Store::open(dir, INSPECT_CACHE) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("firehose-relay: {e} (is the relay still running? stop it first)");
            return ExitCode::FAILURE;
        }
    };
    let mut status = ExitCode::SUCCESS;
    let (mut moved, mut records) = (0u64, 0u64);
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(msg) => {
                eprintln!("firehose-relay: unreadable entry, left in place: {msg}");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        if only.is_some_and(|o| o != entry.meta.output) {
            continue;
        }
        let recs = match DeadLetter::read_records(&entry) {
            Ok(r) => r,
            Err(msg) => {
                eprintln!("firehose-relay: {msg}; left in place");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        let n = recs.len() as u64;
        let created = entry.meta.created_ms.unwrap_or(entry.meta.dead_lettered_ms);
        // Durable in the queue first, then delete: a crash in between duplicates, never loses.
        match store.import_chunk(&entry.meta.output, recs, created) {
            Ok(id) => {
                if let Err(e) = DeadLetter::remove(&entry) {
                    eprintln!(
                        "firehose-relay: replayed into chunk {id} but cannot remove {}: {e} \
                         (remove it by hand, or it will be replayed twice)",
                        entry.meta_path.display()
                    );
                    status = ExitCode::FAILURE;
                }
                println!(
                    "{}\toutput={}\trecords={n}\tchunk={id}",
                    entry.meta_path.display(),
                    entry.meta.output
                );
                moved += 1;
                records += n;
            }
            Err(e) => {
                eprintln!(
                    "firehose-relay: cannot replay {}: {e}",
                    entry.meta_path.display()
                );
                status = ExitCode::FAILURE;
            }
        }
    }
    println!(
        "replayed {moved} entries ({records} records) into the buffer in {}",
        dir.display()
    );
    status
}
