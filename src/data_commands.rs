//! The subcommands that work on a stopped relay's data directory: `buffer stats|dump` and
//! `dead-letter list|replay`, and how that directory is found ([`DataDir`]). Part of the binary
//! (declared in `main.rs`), not of the library: the library's [`inspect`] and [`DeadLetter`]
//! do the reading and replaying, this module the finding and printing.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use firehose_relay::buffer::file::{inspect, Store, StoreError};
use firehose_relay::config::{Config, ConfigError, ConfigSource};
use firehose_relay::flush::deadletter::DeadLetter;

use crate::Outcome;

/// sled page cache for the inspection commands: they read metadata and one chunk at a time.
const INSPECT_CACHE: u64 = 16 << 20;

/// The data directory of `buffer` and `dead-letter`, and where it came from (for messages: a
/// newcomer running `buffer stats` bare must learn which flag or variable points it elsewhere).
pub(crate) struct DataDir {
    path: PathBuf,
    from: String,
}

impl DataDir {
    /// `--data-dir` (or `$RELAY_DATA_DIR`, which clap reads into it), else the config's
    /// `data_dir` when a config file is given, else the built-in default.
    pub(crate) fn resolve(
        explicit: Option<PathBuf>,
        cli_path: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        if let Some(path) = explicit {
            let from = if std::env::var_os("RELAY_DATA_DIR").is_some_and(|v| v == path) {
                "from $RELAY_DATA_DIR"
            } else {
                "from --data-dir"
            };
            return Ok(DataDir {
                path,
                from: from.to_owned(),
            });
        }
        let source = ConfigSource::resolve(cli_path);
        if let Some(file) = source.file.clone() {
            let cfg = Config::load(&source)?;
            return Ok(DataDir {
                path: cfg.data_dir,
                from: format!("the data_dir of {}", file.display()),
            });
        }
        let path = Config::default().data_dir;
        eprintln!(
            "firehose-relay: using the default data directory {} (set another with --data-dir \
             DIR, $RELAY_DATA_DIR, or a config file's data_dir with --config FILE)",
            path.display()
        );
        Ok(DataDir {
            path,
            from: "the default".to_owned(),
        })
    }

    /// The directory, which must exist: the tools never create a data directory where the
    /// relay never ran.
    pub(crate) fn existing(&self) -> anyhow::Result<&std::path::Path> {
        anyhow::ensure!(
            self.path.is_dir(),
            "no data directory {} ({})",
            self.path.display(),
            self.from
        );
        Ok(&self.path)
    }

    /// The buffer database of a stopped relay.
    pub(crate) fn open_store(&self) -> anyhow::Result<std::sync::Arc<Store>> {
        let dir = self.existing()?;
        Store::open_existing(dir, INSPECT_CACHE).map_err(|e| match e {
            StoreError::Missing(_) => anyhow::anyhow!(
                "no buffer database in {} ({}): is it the data directory of a relay with a \
                 file buffer?",
                dir.display(),
                self.from
            ),
            e => anyhow::Error::new(e).context(format!(
                "cannot open the buffer database in {} (is the relay still running? stop it first)",
                dir.display()
            )),
        })
    }
}

pub(crate) fn dead_letter_list(dir: &DataDir) -> Outcome {
    let dl = DeadLetter::new(dir.existing()?);
    let entries = dl
        .list()
        .with_context(|| format!("cannot read {}", dl.root().display()))?;
    if entries.is_empty() {
        println!("no dead-lettered records in {}", dl.root().display());
    }
    let mut status = ExitCode::SUCCESS;
    for e in entries {
        match e {
            Ok(e) => println!(
                "{}\toutput={}\trecords={}\tattempts={}\ttruncated={}\treason={}",
                e.meta_path.display(),
                e.meta.output,
                e.meta.records,
                e.meta.attempts,
                e.meta.truncated,
                e.meta.reason
            ),
            Err(msg) => {
                eprintln!("unreadable entry: {msg}");
                status = ExitCode::FAILURE;
            }
        }
    }
    Ok(status)
}

pub(crate) fn buffer_stats(dir: &DataDir, only: Option<&str>) -> Outcome {
    let store = dir.open_store()?;
    let reports = inspect::stats(&store).map_err(anyhow::Error::new)?;
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
    let space = store.space();
    let health = space.health_now();
    println!(
        "storage={}\tavailable_bytes={}\treserve_bytes={}\tballast={}{}",
        health.state(),
        space.available(),
        space.reserve(),
        if space.has_ballast() {
            "present"
        } else {
            "missing"
        },
        health
            .reason()
            .map(|r| format!("\treason={r:?}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// The output to act on: the one named, or the only one there is.
fn pick_output(store: &Store, output: Option<&str>) -> anyhow::Result<String> {
    let outputs = store.outputs();
    match output {
        Some(o) if outputs.iter().any(|x| x == o) => Ok(o.to_owned()),
        Some(o) => anyhow::bail!(
            "no output `{o}` in the buffer (outputs: {})",
            outputs.join(", ")
        ),
        None if outputs.len() == 1 => Ok(outputs[0].clone()),
        None => anyhow::bail!(
            "name one of the outputs with --output: {}",
            outputs.join(", ")
        ),
    }
}

pub(crate) fn buffer_dump(dir: &DataDir, output: Option<&str>, chunk: Option<&str>) -> Outcome {
    let store = dir.open_store()?;
    let output = pick_output(&store, output)?;
    let chunk = match chunk {
        Some(c) => {
            Some(inspect::parse_chunk_id(c).with_context(|| format!("`{c}` is not a chunk id"))?)
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (_, problems) =
        inspect::dump(&store, &output, chunk, &mut out).map_err(anyhow::Error::new)?;
    for p in &problems {
        eprintln!("firehose-relay: {p}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How `dead-letter replay` reports: a progress bar on a terminal (indicatif, on stderr), one
/// line per replayed entry otherwise (for scripts and logs); a summary line either way.
enum ReplayReport {
    Bar(indicatif::ProgressBar),
    Lines,
}

impl ReplayReport {
    fn new(entries: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return ReplayReport::Lines;
        }
        let bar = indicatif::ProgressBar::new(entries);
        let style = indicatif::ProgressStyle::with_template(
            "replaying dead letters [{bar:30}] {pos}/{len} entries, {msg} ({elapsed}, eta {eta})",
        )
        .map(|s| s.progress_chars("#>-"))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message("0 records");
        ReplayReport::Bar(bar)
    }

    /// One more entry looked at.
    fn next(&self) {
        if let ReplayReport::Bar(b) = self {
            b.inc(1);
        }
    }

    /// An entry moved into the buffer; `records` replayed so far.
    fn replayed(&self, line: String, records: u64) {
        match self {
            ReplayReport::Bar(b) => b.set_message(format!("{records} records")),
            ReplayReport::Lines => println!("{line}"),
        }
    }

    fn error(&self, msg: String) {
        let print = || eprintln!("firehose-relay: {msg}");
        match self {
            ReplayReport::Bar(b) => b.suspend(print),
            ReplayReport::Lines => print(),
        }
    }

    /// Leaves the bar at its final state on screen.
    fn finish(&self, records: u64) {
        if let ReplayReport::Bar(b) = self {
            b.finish_with_message(format!("{records} records"));
        }
    }
}

pub(crate) fn dead_letter_replay(dir: &DataDir, only: Option<&str>) -> Outcome {
    use firehose_relay::flush::deadletter::ReplayError;
    let dir = dir.existing()?;
    let dl = DeadLetter::new(dir);
    let entries = dl
        .list()
        .with_context(|| format!("cannot read {}", dl.root().display()))?;
    // Create the database if this data_dir never had one: replaying is how it gets data.
    let store = Store::open(dir, INSPECT_CACHE)
        .context("cannot open the buffer database (is the relay still running? stop it first)")?;
    let mut status = ExitCode::SUCCESS;
    let (mut moved, mut records) = (0u64, 0u64);
    let report = ReplayReport::new(entries.len() as u64);
    for entry in entries {
        report.next();
        let entry = match entry {
            Ok(e) => e,
            Err(msg) => {
                report.error(format!("unreadable entry, left in place: {msg}"));
                status = ExitCode::FAILURE;
                continue;
            }
        };
        if only.is_some_and(|o| o != entry.meta.output) {
            continue;
        }
        if entry.meta.truncated {
            println!(
                "{}\toutput={}\tskipped: it describes records too large to keep, not the records",
                entry.meta_path.display(),
                entry.meta.output
            );
            continue;
        }
        let chunk = match DeadLetter::replay(&entry, &store) {
            Ok((chunk, _)) => chunk,
            Err(e) => {
                report.error(e.to_string());
                status = ExitCode::FAILURE;
                // Queued but not removed: the records did move.
                let ReplayError::Remove { chunk, .. } = e else {
                    continue;
                };
                chunk
            }
        };
        let n = entry.meta.records as u64;
        moved += 1;
        records += n;
        report.replayed(
            format!(
                "{}\toutput={}\trecords={n}\tchunk={chunk}",
                entry.meta_path.display(),
                entry.meta.output
            ),
            records,
        );
    }
    report.finish(records);
    println!(
        "replayed {moved} entries ({records} records) into the buffer in {}",
        dir.display()
    );
    Ok(status)
}
